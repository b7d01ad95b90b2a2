"""``metis train modpo``: MODPO (Zhou et al. 2024, arXiv:2310.03708) on HelpSteer, resumable, locally or on Modal.

Pure (no torch; importable in default CI):

- :mod:`~metis_pytest.train.modpo.loss`: the MODPO loss in plain Python, and its change of variables onto
  TRL's DPO loss;
- :mod:`~metis_pytest.train.modpo.stages`: the resumable stage runner;
- :mod:`~metis_pytest.train.modpo.config`: a run's settings; :mod:`~metis_pytest.train.modpo.data`: its
  data, from the HelpSteer evaluation's loader and pairs; :mod:`~metis_pytest.train.modpo.pipeline`: its
  stages; :mod:`~metis_pytest.train.modpo.launch`: a Modal launch; :mod:`~metis_pytest.train.modpo.cli`:
  the subcommand.

With the ``train`` extra (torch, transformers, peft, trl): :mod:`~metis_pytest.train.modpo.trainer`
(MODPO on TRL's ``DPOTrainer``, implicit rewards), :mod:`~metis_pytest.train.modpo.steps` (the stages),
:mod:`~metis_pytest.train.modpo.tiny` (the tiny CPU model). With ``modal``:
:mod:`~metis_pytest.train.modpo.modal_app`. Importing this package imports none of them.
"""

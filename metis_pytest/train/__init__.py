"""Training with the benchmarks' scorers as rewards: ``metis train grpo`` (verl's GRPO on Modal).

- :mod:`metis_pytest.train.grpo`: :class:`~metis_pytest.train.grpo.GrpoConfig` and
  :func:`~metis_pytest.train.grpo.verl_command`, the exact verl command line of a run (pure: no verl,
  no Modal, no network);
- :mod:`metis_pytest.train.grpo_modal`: the Modal app that runs that command on GPUs (imports ``modal``);
- :mod:`metis_pytest.train.cli`: the ``metis train grpo`` subcommand.

Importing this package imports none of them.
"""

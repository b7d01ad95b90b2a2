"""Baselines and paired regression gates (``--metis-save-baseline``, ``--metis-compare``,
``--metis-compare-fail``): ``stats`` (the paired tests), ``rules``, ``baseline`` (the committed file),
``compare`` (pairing and the report) and ``hooks`` (the pytest side: the item's gate, JUnit
properties, the terminal section)."""

"""Fixtures of the Fireworks RFT tests: the loopback fake of the Fireworks API."""

from metis_pytest.testing.fake_fireworks import fake_fireworks  # noqa: F401  (registers the fixture here)

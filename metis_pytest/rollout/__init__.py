"""Eval Protocol rollout processors. Rollout code never scores."""

from metis_pytest.rollout.single_turn import SingleTurnProcessor

__all__ = ["SingleTurnProcessor"]

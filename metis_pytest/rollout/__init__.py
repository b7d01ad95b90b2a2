"""Eval Protocol rollout processors, chosen by name. Rollout code never scores."""

from metis_pytest.rollout.base import StoredCompletion, processor_factory, register_processor
from metis_pytest.rollout.single_turn import SingleTurnProcessor

__all__ = ["SingleTurnProcessor", "StoredCompletion", "processor_factory", "register_processor"]

"""Eval Protocol rollout processors, chosen by name. Rollout code never scores.

The names below are imported on first use, so ``metis_pytest.rollout.http`` (the transport) can be
imported without loading Eval Protocol.
"""

from __future__ import annotations

import importlib
from typing import Any

_NAMES = {
    "SingleTurnProcessor": "metis_pytest.rollout.single_turn",
    "StoredCompletion": "metis_pytest.rollout.base",
    "processor_factory": "metis_pytest.rollout.base",
    "register_processor": "metis_pytest.rollout.base",
}
__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        value = getattr(importlib.import_module(_NAMES[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

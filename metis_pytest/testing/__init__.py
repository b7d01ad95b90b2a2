"""Test helpers for Metis: a scripted OpenAI-compatible chat server and its pytest fixtures.

Importing this package is cheap: the server module (and aiohttp) is only imported when one of
the names below is first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from metis_pytest.testing.scripted_server import (
        Fault,
        RecordedRequest,
        Reply,
        Rule,
        ScriptedServer,
        SubprocessServer,
        run_in_subprocess,
    )

__all__ = [
    "Fault",
    "RecordedRequest",
    "Reply",
    "Rule",
    "ScriptedServer",
    "SubprocessServer",
    "run_in_subprocess",
]


def __getattr__(name: str) -> Any:
    """Import the public names from :mod:`metis_pytest.testing.scripted_server` on first use."""
    if name in __all__:
        module = importlib.import_module("metis_pytest.testing.scripted_server")
        value = getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)

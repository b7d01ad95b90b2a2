"""Tools for tool-using rollouts: the :class:`~metis_pytest.tools.base.Toolbox` protocol and the web tools.

- :mod:`~metis_pytest.tools.web`: live clients (SearchAPI.io search, Jina Reader pages) and :class:`ToolError`.
- :mod:`~metis_pytest.tools.safety`: :func:`check_url` / :func:`acheck_url` (public http(s) hosts only).
- :mod:`~metis_pytest.tools.snapshot`: :class:`Snapshot` (record a live run's web, replay it offline).
- :mod:`~metis_pytest.tools.toolbox`: :class:`WebToolbox` (``web_search`` and ``browse_page``).

Names are imported on first use, so ``import metis_pytest.tools.base`` stays cheap (no aiohttp).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from metis_pytest.tools.base import Toolbox, ToolOutcome
    from metis_pytest.tools.safety import UnsafeURL, acheck_url, check_url
    from metis_pytest.tools.snapshot import Snapshot, SnapshotWeb
    from metis_pytest.tools.toolbox import WebToolbox
    from metis_pytest.tools.web import (
        JinaReaderClient,
        LiveWeb,
        Page,
        SearchAPIClient,
        SearchResult,
        ToolError,
        WebBackend,
    )

_EXPORTS = {
    "Toolbox": "base", "ToolOutcome": "base",
    "JinaReaderClient": "web", "LiveWeb": "web", "Page": "web", "SearchAPIClient": "web",
    "SearchResult": "web", "ToolError": "web", "WebBackend": "web",
    "UnsafeURL": "safety", "acheck_url": "safety", "check_url": "safety",
    "Snapshot": "snapshot", "SnapshotWeb": "snapshot",
    "WebToolbox": "toolbox",
}

__all__ = [
    "JinaReaderClient",
    "LiveWeb",
    "Page",
    "SearchAPIClient",
    "SearchResult",
    "Snapshot",
    "SnapshotWeb",
    "ToolError",
    "ToolOutcome",
    "Toolbox",
    "UnsafeURL",
    "WebBackend",
    "WebToolbox",
    "acheck_url",
    "check_url",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value

"""Pytest fixtures that start :class:`~metis_pytest.testing.scripted_server.ScriptedServer` s.

Register with ``pytest_plugins = ["metis_pytest.testing.fixtures"]``. The server module (and
aiohttp) is imported only when a fixture is used, so registering this plugin stays cheap.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import pytest

if TYPE_CHECKING:
    from metis_pytest.testing.scripted_server import Fault, Latency, ReplySpec, Rule, ScriptedServer


class ScriptedServerFactory(Protocol):
    """Starts a :class:`ScriptedServer`; every server it started is stopped at teardown."""

    def __call__(
        self,
        rules: Sequence[Rule] = (),
        default: ReplySpec = "OK",
        latency: Latency = 0.0,
        faults: Sequence[Fault] = (),
        **kwargs: Any,
    ) -> ScriptedServer: ...


@pytest.fixture
def scripted_llm_factory() -> Iterator[ScriptedServerFactory]:
    """A factory for started scripted servers, with ``ScriptedServer``'s arguments."""
    from metis_pytest.testing.scripted_server import ScriptedServer

    servers: list[ScriptedServer] = []

    def start(
        rules: Sequence[Rule] = (),
        default: ReplySpec = "OK",
        latency: Latency = 0.0,
        faults: Sequence[Fault] = (),
        **kwargs: Any,
    ) -> ScriptedServer:
        server = ScriptedServer(rules, default, latency, faults, **kwargs)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def scripted_llm(scripted_llm_factory: ScriptedServerFactory) -> ScriptedServer:
    """A started scripted server answering ``"OK"``; script it with ``.script(...)``."""
    return scripted_llm_factory()

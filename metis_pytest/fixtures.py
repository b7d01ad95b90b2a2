"""Fixtures of the Metis plugin (registered by ``metis_pytest.plugin`` at configure time).

- ``metis_session``: the session object (options, targets, run store).
- ``metis_local_server``: the embedded llama.cpp server, started once per session (one server shared
  by every pytest-xdist worker through a file lock) and stopped when the last user is done.
- an autouse fixture that, for an evaluation item on a backend that needs something running,
  brings it up before the item's rollouts start.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from metis_pytest.session import MetisSession, current


def item_model_label(item: pytest.Item, session: MetisSession) -> str | None:
    """The ``--model`` label an evaluation item runs, or None for any other test."""
    if getattr(getattr(item, "obj", None), "__metis_benchmark__", None) is None:
        return None
    callspec = getattr(item, "callspec", None)
    params = callspec.params.get("completion_params") if callspec else None
    return session.label_for(params) if isinstance(params, dict) else None


def local_server_factory(session: MetisSession) -> Any:
    """A function that builds (not starts) the llama.cpp server for this session's options."""
    from metis_pytest.backends.local import alias_for
    from metis_pytest.backends.local_model import resolve_gguf
    from metis_pytest.backends.local_server import LocalServer

    cfg = session.cfg

    def build() -> LocalServer:
        gguf = resolve_gguf(cfg.local_model)
        return LocalServer(gguf, log_path=cfg.output_dir / "local-server.log", alias=alias_for(cfg.local_model))

    return build


@pytest.fixture(scope="session", name="metis_session")
def metis_session_fixture() -> MetisSession:
    """The session object: parsed options (``.cfg``), model targets, the run store."""
    return current()


@pytest.fixture(scope="session")
def metis_local_server(metis_session: MetisSession) -> Iterator[Any]:
    """The embedded model's server, shared by all workers; yields its ``ServerInfo`` (``base_url``)."""
    from metis_pytest.backends.local_server import SharedLocalServer

    shared = SharedLocalServer(metis_session.state_dir, local_server_factory(metis_session))
    info = shared.acquire()
    try:
        yield info
    finally:
        shared.release()


@pytest.fixture(autouse=True)
def _metis_backend_ready(request: pytest.FixtureRequest, metis_session: MetisSession) -> None:
    label = item_model_label(request.node, metis_session)
    if label is None or not metis_session.needs_runtime(label):
        return
    target = metis_session.target(label)
    if target.backend == "local":
        info = request.getfixturevalue("metis_local_server")
        metis_session.set_runtime_base(label, info.base_url)
    else:
        raise pytest.UsageError(f"backend {target.backend!r} needs a runtime that this version cannot start")

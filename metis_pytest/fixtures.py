"""Fixtures of the Metis plugin (registered by ``metis_pytest.plugin`` at configure time).

- ``metis_session``: the session object (options, targets, runtimes, run store).
- ``metis_local_server``: the embedded llama.cpp server's :class:`~metis_pytest.backends.base.Runtime`
  (``api_base``), started by the process that owns the session and stopped at session end.
- an autouse fixture that, for an evaluation item whose model (or judge) needs something running,
  prepares it before the item's rollouts start.
"""

from __future__ import annotations

from typing import Any

import pytest

from metis_pytest.session import MetisSession, current


def item_benchmark(item: pytest.Item) -> Any:
    return getattr(getattr(item, "obj", None), "__metis_benchmark__", None)


def item_model_label(item: pytest.Item, session: MetisSession) -> str | None:
    """The ``--model`` label an evaluation item runs, or None for any other test."""
    if item_benchmark(item) is None:
        return None
    callspec = getattr(item, "callspec", None)
    params = callspec.params.get("completion_params") if callspec else None
    return session.label_for(params) if isinstance(params, dict) else None


@pytest.fixture(scope="session", name="metis_session")
def metis_session_fixture() -> MetisSession:
    """The session object: parsed options (``.cfg``), model targets, the run store."""
    return current()


@pytest.fixture(scope="session")
def metis_local_server(metis_session: MetisSession) -> Any:
    """The embedded model's server (``.api_base``), started once by the session's owner."""
    from metis_pytest.options import LOCAL_MODEL

    if metis_session.target(LOCAL_MODEL).backend != "local":
        pytest.skip("--model local is not served by the local backend in this session")
    return metis_session.prepare(LOCAL_MODEL)


@pytest.fixture(autouse=True)
def _metis_backend_ready(request: pytest.FixtureRequest, metis_session: MetisSession) -> None:
    label = item_model_label(request.node, metis_session)
    if label is None:
        return
    if metis_session.needs_prepare(label):
        metis_session.prepare(label)
    bench = item_benchmark(request.node)
    judge = metis_session.judge_label(bench) if bench.judge_prompt_version is not None else None
    if judge and metis_session.needs_prepare(judge):
        metis_session.prepare(judge)

"""pytest hooks of the Metis plugin, and nothing else (options: options.py; state: session.py)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from metis_pytest import session as metis_session
from metis_pytest.options import add_options, read_config

# LiteLLM must never fetch a price list; this has to be set before anything imports it.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

MARKERS = (
    "metis_requires_env(*names): skip unless every named environment variable is set (API keys)",
    "metis_gpu: needs a CUDA GPU; skipped when nvidia-smi is not on PATH (METIS_GPU=1 forces it)",
    "metis_network: reaches the internet; skipped unless --allow-network",
)


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    for line in MARKERS:
        config.addinivalue_line("markers", line)
    cfg = read_config(config)
    workerinput = getattr(config, "workerinput", None)
    session = metis_session.MetisSession(
        cfg,
        session_id=workerinput.get("metis_session_id") if workerinput else None,
        worker=workerinput["workerid"] if workerinput else "main",
        repo_dir=config.rootpath,
    )
    metis_session.register(session)
    config.pluginmanager.register(session, metis_session.PLUGIN_NAME)
    config.pluginmanager.import_plugin("metis_pytest.fixtures")
    config.pluginmanager.import_plugin("metis_pytest.testing.fixtures")
    if not cfg.ep_upload:
        os.environ["EP_NO_UPLOAD"] = "1"  # Eval Protocol's own switch: never upload unless asked


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """pytest-xdist: every worker joins the controller's session (same run folder, same local server)."""
    node.workerinput["metis_session_id"] = metis_session.current().session_id


def _skip_reason(item: pytest.Item, session: metis_session.MetisSession) -> str | None:
    from metis_pytest.fixtures import item_model_label

    for mark in item.iter_markers("metis_requires_env"):
        missing = [name for name in mark.args if not os.environ.get(name)]
        if missing:
            return f"needs {', '.join(missing)} (not set in the environment)"
    if item.get_closest_marker("metis_gpu") and not (shutil.which("nvidia-smi") or os.environ.get("METIS_GPU")):
        return "needs a GPU: no nvidia-smi on PATH (set METIS_GPU=1 to force)"
    if item.get_closest_marker("metis_network") and not session.cfg.allow_network:
        return "needs the network: pass --allow-network"
    label = item_model_label(item, session)
    if label is not None:
        missing = session.target(label).missing_env()
        if missing:
            return f"model {label!r} needs {', '.join(missing)} (not set in the environment)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    session = metis_session.current()
    for item in items:
        reason = _skip_reason(item, session)
        if reason:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    """Fail an evaluation item whose errored rows exceed ``--max-error-rate`` (after retries)."""
    from metis_pytest.fixtures import item_model_label

    session = metis_session.current()
    label = item_model_label(item, session)
    bench = getattr(getattr(item, "obj", None), "__metis_benchmark__", None)
    if label is None or bench is None:
        return (yield)
    key = (bench.name, label)
    before = dict(session.store.counts.get(key, {}))
    from metis_pytest.ep import flush_ep_logs  # an evaluation item: Eval Protocol is loaded already

    try:
        result = yield
    finally:
        flush_ep_logs()
    after = session.store.counts.get(key, {})
    errored = after.get("errored", 0) - before.get("errored", 0)
    total = errored + after.get("scored", 0) - before.get("scored", 0)
    if total and errored / total > session.cfg.max_error_rate:
        raise AssertionError(
            f"{bench.name} [{label}]: {errored} of {total} rows errored after retries (they are recorded as "
            f"errored and retryable in {session.store.model_dir(bench.name, label)}; rerun to retry them, or "
            f"raise --max-error-rate, now {session.cfg.max_error_rate:g})")
    return result


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    metis = metis_session.current()
    metis.store.close()
    if not metis.is_controller:
        return
    summaries = metis.store.merge(absorb_stale=metis.cfg.resume)
    session.config.stash[_SUMMARIES] = summaries
    if summaries:
        from metis_pytest.store.plot import plot_benchmark

        for bench_dir in sorted({Path(s["path"]).parent.parent for s in summaries}):
            plot_benchmark(bench_dir)
    if metis.state_dir.exists():
        from metis_pytest.backends.local_server import SharedLocalServer

        SharedLocalServer(metis.state_dir, lambda: None).force_stop()  # type: ignore[arg-type,return-value]
        shutil.rmtree(metis.state_dir, ignore_errors=True)


_SUMMARIES = pytest.StashKey[list]()


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    summaries = config.stash.get(_SUMMARIES, [])
    if not summaries:
        return
    terminalreporter.section("metis")
    for s in summaries:
        terminalreporter.write_line(format_summary_line(s))


def format_summary_line(s: dict[str, Any]) -> str:
    score = "n/a" if s["score"] is None else f"{s['score']:.3f}"
    se = "" if s.get("stderr") is None else f" ± {s['stderr']:.3f}"
    others = " ".join(f"{name}={m['mean']:.3f}" for name, m in s.get("metrics", {}).items()
                      if m.get("mean") is not None and name != s.get("primary_metric"))
    resumed = f", resumed={s['n_resumed']}" if s.get("n_resumed") else ""
    return (f"{s['benchmark']} [{s['model']}] {s.get('primary_metric') or 'score'}={score}{se} "
            f"(n={s['n']}, errored={s['n_errored']}{resumed}) {others} -> {s['path']}").replace("  ", " ")


def pytest_unconfigure(config: pytest.Config) -> None:
    session = config.pluginmanager.get_plugin(metis_session.PLUGIN_NAME)
    if session is not None:
        metis_session.unregister(session)

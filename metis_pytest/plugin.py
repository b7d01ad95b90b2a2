"""pytest hooks of the Metis plugin, and nothing else (options: options.py; state: session.py)."""

from __future__ import annotations

import gc
import os
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from metis_pytest import session as metis_session
from metis_pytest.options import add_options, read_config

MARKERS = (
    "metis_requires_env(*names): skip unless every named environment variable is set (API keys)",
    "metis_gpu: needs a CUDA GPU; skipped when nvidia-smi is not on PATH (--gpu forces it)",
    "metis_network: reaches the internet; skipped unless --allow-network",
)

# Eval Protocol's flags (and the variables they set) that would silently change what a Metis
# evaluation runs; each is refused with the Metis option that does the same.
EP_FLAGS = {
    "--ep-num-runs": ("EP_NUM_RUNS", "--runs"),
    "--ep-max-rows": ("EP_MAX_DATASET_ROWS", "--max-rows"),
    "--ep-max-concurrent-rollouts": ("EP_MAX_CONCURRENT_ROLLOUTS", "--concurrency"),
    "--ep-max-concurrent-evaluations": ("EP_MAX_CONCURRENT_EVALUATIONS", "--concurrency"),
    "--ep-input-param": ("EP_INPUT_PARAMS_JSON", "--temperature / --max-tokens"),
    "--ep-reasoning-effort": ("EP_INPUT_PARAMS_JSON", "--temperature / --max-tokens"),
    "--ep-completion-params": ("EP_COMPLETION_PARAMS", "--model / --temperature / --max-tokens"),
    "--ep-jsonl-path": ("EP_JSONL_PATH", "--dataset"),
    "--ep-no-op-rollout-processor": ("EP_USE_NO_OP_ROLLOUT_PROCESSOR", "--replay"),
    "--ep-max-retry": ("EP_MAX_RETRY", "--max-retries"),
    "--ep-success-threshold": ("EP_PASSED_THRESHOLD", "--max-error-rate"),
    "--ep-se-threshold": ("EP_PASSED_THRESHOLD", "--max-error-rate"),
}


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    """Before Eval Protocol's plugin configures itself: uploads stay off unless ``--ep-upload``,
    through Eval Protocol's own ``--ep-no-upload`` (which sets its ``EP_NO_UPLOAD``)."""
    if not config.getoption("metis_ep_upload") and not config.getini("metis_ep_upload"):
        if hasattr(config.option, "ep_no_upload"):
            config.option.ep_no_upload = True


def _refuse_ep_overrides(config: pytest.Config) -> None:
    for flag, (_, ours) in EP_FLAGS.items():
        value = config.getoption(flag, default=None)
        if value not in (None, False, [], ()):
            raise pytest.UsageError(f"{flag} is Eval Protocol's and would override Metis silently; use {ours}")
    for variable, ours in {v: o for v, o in EP_FLAGS.values()}.items():
        if os.environ.get(variable):
            raise pytest.UsageError(f"{variable} is set in the environment: Eval Protocol would override Metis "
                                    f"silently; unset it and use {ours}")


def _check_output_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".metis-write-probe-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise pytest.UsageError(f"--output-dir {path}: not writable ({exc.strerror or exc})") from None


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    for line in MARKERS:
        config.addinivalue_line("markers", line)
    cfg = read_config(config)
    workerinput = getattr(config, "workerinput", None)
    if workerinput is None:
        _refuse_ep_overrides(config)
        _check_output_dir(cfg.output_dir)
    session = metis_session.MetisSession(
        cfg,
        session_id=workerinput.get("metis_session_id") if workerinput else None,
        worker=workerinput["workerid"] if workerinput else "main",
        repo_dir=config.rootpath,
        shared_runtimes=workerinput is not None,
    )
    metis_session.register(session)
    config.pluginmanager.register(session, metis_session.PLUGIN_NAME)
    config.pluginmanager.import_plugin("metis_pytest.fixtures")
    config.pluginmanager.import_plugin("metis_pytest.testing.fixtures")
    config.pluginmanager.import_plugin("metis_pytest.testing.fake_web")
    config.pluginmanager.import_plugin("metis_pytest.gates.hooks")  # baselines, gates, JUnit properties
    if workerinput and workerinput.get("metis_controller_pid"):
        _watch_controller(int(workerinput["metis_controller_pid"]), session)


def _watch_controller(pid: int, session: metis_session.MetisSession, interval: float = 0.2) -> None:
    """An xdist worker stops within ``interval`` of its controller's death: no request after a kill.

    Its finished rows are already on disk (each is flushed as it is recorded); a rerun with
    ``--resume`` picks them up."""
    from metis_pytest.backends.local_server import pid_alive

    def watch() -> None:
        while True:
            time.sleep(interval)
            if os.getppid() != pid or not pid_alive(pid):
                session.store.close()
                os._exit(70)

    threading.Thread(target=watch, name="metis-controller-watch", daemon=True).start()


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """pytest-xdist: every worker joins the controller's session (same run store, its runtimes)."""
    node.workerinput["metis_session_id"] = metis_session.current().session_id
    node.workerinput["metis_controller_pid"] = os.getpid()


_HANDED_OVER = pytest.StashKey[bool]()


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node: Any, ids: list[str]) -> None:
    """pytest-xdist controller: once the first worker has collected, and before any test is sent,
    start what the collected evaluation items' models need and hand the URLs to the workers."""
    config = node.config
    if config.stash.get(_HANDED_OVER, False) or config.option.collectonly:
        return
    config.stash[_HANDED_OVER] = True
    session = metis_session.current()
    params = [i[i.index("[") + 1:] for i in ids if "[" in i]
    used = [label for label in session.cfg.models
            if any(p == f"{label}]" or p.startswith(f"{label}-") for p in params)]
    labels = [label for label in used if session.needs_prepare(label)]
    judge = f"{metis_session.JUDGE_PREFIX}{session.cfg.judge_model}" if session.cfg.judge_model else None
    if used and judge and session.needs_prepare(judge):
        labels.append(judge)
    session.hand_over(labels)


def _skip_reason(item: pytest.Item, session: metis_session.MetisSession) -> str | None:
    from metis_pytest.fixtures import item_benchmark, item_model_label

    for mark in item.iter_markers("metis_requires_env"):
        missing = [name for name in mark.args if not os.environ.get(name)]
        if missing:
            return f"needs {', '.join(missing)} (not set in the environment)"
    if item.get_closest_marker("metis_gpu") and not (shutil.which("nvidia-smi") or session.cfg.gpu):
        return "needs a GPU: no nvidia-smi on PATH (pass --gpu to force)"
    if item.get_closest_marker("metis_network") and not session.cfg.allow_network:
        return "needs the network: pass --allow-network"
    label = item_model_label(item, session)
    if label is None or session.cfg.replay is not None:
        return None
    missing = session.target(label).missing_env()
    if missing:
        return f"model {label!r} needs {', '.join(missing)} (not set in the environment)"
    bench = item_benchmark(item)
    needed = [name for name in (bench.requires_env(session.cfg) if bench.requires_env else ()) if not os.environ.get(name)]
    if needed:
        return f"{bench.name} needs {', '.join(needed)} (not set in the environment)"
    if bench.judge_prompt_version is not None:
        judge = session.judge_label(bench)
        if judge is None:
            return "a judged benchmark: pass --judge-model"
        missing = session.target(judge).missing_env()
        if missing:
            return f"judge {bench.judge_for(session.cfg)!r} needs {', '.join(missing)} (not set in the environment)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    session = metis_session.current()
    for item in items:
        reason = _skip_reason(item, session)
        if reason:
            item.add_marker(pytest.mark.skip(reason=reason))


def pytest_collection_finish(session: pytest.Session) -> None:
    """Bad input is refused before the first request: load every selected benchmark's rows now.

    One process: a one-line usage error. An xdist worker cannot stop the session that way (xdist
    reports it as an internal error), so its evaluation items of that benchmark fail at setup with
    the same one line, before anything is sent."""
    from metis_pytest.errors import DATA_ERRORS
    from metis_pytest.fixtures import item_benchmark

    metis = metis_session.current()
    benches = {}
    wrapped_by_ep = False
    for item in session.items:
        bench = item_benchmark(item)
        if bench is not None and not item.get_closest_marker("skip"):
            benches[bench.name] = bench
            wrapped_by_ep |= getattr(getattr(item, "obj", None), "__metis_runner__", None) is None
    if wrapped_by_ep and not session.config.option.collectonly:
        from metis_pytest import lazy_imports

        for name in lazy_imports.DEFERRED:  # Eval Protocol's wrapper would import it in the first item
            lazy_imports.load_now(name)
    for bench in benches.values():
        try:
            metis.rows(bench)
        except DATA_ERRORS as exc:
            metis.data_problems.setdefault(bench.name, f"{bench.name}: {exc}")
        if metis.replay_source is not None:  # the recorded completions are the replay's data: read with it
            try:
                for label in metis.cfg.models:
                    metis.replay_source.load(bench.name, label)
            except (OSError, ValueError) as exc:
                metis.data_problems.setdefault(bench.name, f"{bench.name}: --replay: {exc}")
    if metis.data_problems and not metis.shared_runtimes:
        raise pytest.UsageError("\n".join(metis.data_problems.values()))
    if benches and not session.config.option.collectonly and not gc.get_freeze_count():
        # Everything alive now (modules, Eval Protocol's models, the rows) lives to the end of the
        # session: out of the collector's reach, a full collection during an item does not walk it
        # (about 0.1-0.3 s of a 1,319-row item: README, "Speed"). Unfrozen at the end of the session.
        gc.freeze()
        session.config.stash[_FROZE] = True


_FROZE = pytest.StashKey[bool]()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    from metis_pytest.fixtures import item_benchmark

    bench = item_benchmark(item)
    problem = metis_session.current().data_problems.get(bench.name) if bench is not None else None
    if problem:
        pytest.fail(problem, pytrace=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    """Fail an evaluation item whose errored rows exceed ``--max-error-rate`` (after retries)."""
    from metis_pytest.fixtures import item_benchmark, item_model_label

    session = metis_session.current()
    label = item_model_label(item, session)
    bench = item_benchmark(item)
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
            f"errored in {session.store.model_dir(bench.name, label)}; rerun with --resume to retry the "
            f"retryable ones, or raise --max-error-rate, now {session.cfg.max_error_rate:g})")
    return result


def _selection(config: pytest.Config) -> dict[str, Any]:
    cfg = metis_session.current().cfg
    return {"max_rows": cfg.max_rows, "keyword": config.option.keyword or None,
            "markexpr": config.option.markexpr or None, "replay": str(cfg.replay) if cfg.replay else None}


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    try:
        _finish_session(session)
    finally:
        ep_store = sys.modules.get("metis_pytest.ep_store")
        if ep_store is not None:  # rows still being written to Eval Protocol's store, behind the items
            session.config.stash[_EP_STORE_FAILURES] = ep_store.drain()


_EP_STORE_FAILURES = pytest.StashKey[list]()


def _finish_session(session: pytest.Session) -> None:
    metis = metis_session.current()
    for finalize in reversed(metis.finalizers):
        finalize()
    metis.store.close()
    if not metis.is_controller:
        return
    try:
        summaries = metis.store.merge(selection=_selection(session.config), resume=metis.cfg.resume)
        session.config.stash[_SUMMARIES] = summaries
        if summaries:
            from metis_pytest.store.plot import plot_benchmark

            for bench_dir in sorted({Path(s["path"]).parent.parent for s in summaries}):
                plot_benchmark(bench_dir)
    finally:
        metis.close_runtimes()
        shutil.rmtree(metis.state_dir, ignore_errors=True)


_SUMMARIES = pytest.StashKey[list]()


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    for failure in config.stash.get(_EP_STORE_FAILURES, []):
        terminalreporter.write_line(f"WARNING: {failure} (the run store has them; `ep logs` will not show them)",
                                    yellow=True)
    summaries = config.stash.get(_SUMMARIES, [])
    if not summaries:
        return
    terminalreporter.section("metis")
    for s in summaries:
        terminalreporter.write_line(format_summary_line(s))
        resume = s.get("resume")
        if resume:
            note = f"; {resume['note']}" if resume.get("note") else ""
            terminalreporter.write_line(f"  resume: reused {resume['reused']} stored completions, "
                                        f"sent {resume['sent']} rows{note}")
        for note in s.get("notes") or []:
            terminalreporter.write_line(f"  NOTE: {note}")
        for metric, note in (s.get("metric_notes") or {}).items():
            terminalreporter.write_line(f"  note: {metric}: {note}")


def format_summary_line(s: dict[str, Any]) -> str:
    score = "n/a" if s["score"] is None else f"{s['score']:.3f}"
    se = "" if s.get("stderr") is None else f" ± {s['stderr']:.3f}"
    others = " ".join(f"{name}={m['mean']:.3f}" for name, m in s.get("metrics", {}).items()
                      if m.get("mean") is not None and name != s.get("primary_metric"))
    resumed = f", resumed={s['n_resumed']}" if s.get("n_resumed") else ""
    return (f"{s['benchmark']} [{s['model']}] {s.get('primary_metric') or 'score'}={score}{se} "
            f"(n={s['n']}, errored={s['n_errored']}{resumed}) {others} -> {s['path']}").replace("  ", " ")


def pytest_unconfigure(config: pytest.Config) -> None:
    if config.stash.get(_FROZE, False):
        gc.unfreeze()
    session = config.pluginmanager.get_plugin(metis_session.PLUGIN_NAME)
    if session is not None:
        metis_session.unregister(session)

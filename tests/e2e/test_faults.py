"""Faults around the run store: kill -9 of the controller or of a worker, two sessions in one folder,
a resumed run against another server, repeated kill/resume with ``--runs 2``, and the resume note.

Every test ends with: each (row, run index) appears exactly once in ``rows.jsonl``; records files are
append-only (what was there before is still a prefix of what is there after); after a kill, the
scripted server receives no further request.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from tests.e2e.conftest import SMOKE, last_user, read_jsonl
from tests.e2e.test_gsm8k_scripted import GOLDS, correct, openai_args, summary

ROW_IDS = [f"gsm8k-gsm8k_smoke-{i:05d}" for i in range(12)]
QUESTIONS = list(GOLDS)  # in the smoke file's order
LATENCY = 0.5  # per request until a kill: rows keep coming, yet a kill lands long before the last one


# ----------------------------------------------------------------------------- helpers


def start(pytester, *args: str, log: str = "child.log") -> subprocess.Popen:
    """A child pytest on the GSM8K evaluation in its own session (so a kill of its pid hits it alone)."""
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--output-dir", "out", "--dataset", str(SMOKE),
           *args, "test_eval.py"]
    out = (pytester.path / log).open("wb")
    return subprocess.Popen(cmd, cwd=pytester.path, env=os.environ.copy(), stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)


def wait_for(cond: Callable[[], bool], proc: subprocess.Popen | None = None, timeout: float = 180) -> None:
    """Poll ``cond`` until it holds; fail if ``proc`` exits first or the (generous) deadline passes."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert proc is None or proc.poll() is None, f"child exited early with {proc.returncode}"
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def kill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)  # this pid only, not its process group: no teardown, no merge
    proc.wait(timeout=30)


def records_dir(out: Path, model: str = "scripted") -> Path:
    return out / "gsm8k" / model / "records"


def records(out: Path, model: str = "scripted", name: str = "*") -> list[dict[str, Any]]:
    """Every complete record (a line cut short by kill -9 is skipped, as the store does)."""
    found = []
    for path in sorted(records_dir(out, model).glob(f"{name}.jsonl")):
        for line in path.read_text().splitlines():
            try:
                found.append(json.loads(line))
            except ValueError:
                pass
    return found


def snapshot(out: Path) -> dict[Path, str]:
    return {p: p.read_text() for p in out.glob("gsm8k/*/records/*.jsonl")}


def assert_append_only(before: dict[Path, str]) -> None:
    for path, text in before.items():
        assert path.exists(), f"{path} was deleted"
        assert path.read_text().startswith(text), f"{path} was rewritten"


def assert_quiet_after_kill(server, model: str | None = None) -> None:
    """No request reaches the server after a kill (1 s grace for the worker watchdog, then 2 s more)."""
    def count() -> int:
        return sum(1 for r in server.requests if model is None or (r.body or {}).get("model") == model)

    time.sleep(1.0)
    seen = count()
    time.sleep(2.0)
    assert count() == seen, "requests reached the server after the kill"


def assert_rows_once(out: Path, model: str = "scripted", runs: int = 1) -> list[dict[str, Any]]:
    rows = read_jsonl(out / "gsm8k" / model / "rows.jsonl")
    assert sorted((r["row_id"], r["run_index"]) for r in rows) == [(i, k) for i in ROW_IDS for k in range(runs)]
    assert all(r["status"] in ("scored", "errored") for r in rows)
    return rows


def workers_of(proc: subprocess.Popen) -> list[psutil.Process]:
    return psutil.Process(proc.pid).children(recursive=True)


def gone(p: psutil.Process) -> bool:
    try:
        return p.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def reap(procs: list[psutil.Process]) -> None:
    """Test cleanup: kill (by pid) any worker this test started that is still alive."""
    for p in procs:
        if not gone(p):
            p.kill()


# ----------------------------------------------------------------------------- 1. controller kill


def test_kill_9_of_the_xdist_controller_stops_its_workers_and_resume_finishes(scripted_llm_factory, run_eval,
                                                                                pytester) -> None:
    server = scripted_llm_factory(default=correct, latency=LATENCY)
    proc = start(pytester, *openai_args(server, "a", "b"), "-n", "2", "--concurrency", "1")
    workers: list[psutil.Process] = []
    try:
        wait_for(lambda: len(records(run_eval.out, "a")) + len(records(run_eval.out, "b")) >= 3, proc)
        workers = workers_of(proc)
        assert len(workers) == 2
        kill(proc)
        wait_for(lambda: all(gone(w) for w in workers), timeout=60)  # the watchdog: within 0.2 s, say 60
        assert_quiet_after_kill(server)
    finally:
        reap(workers)
    kept = {m: len(records(run_eval.out, m)) for m in ("a", "b")}
    assert 3 <= sum(kept.values()) < 24 and all(n < 12 for n in kept.values())
    assert not list(run_eval.out.glob("gsm8k/*/summary.json"))  # killed before the merge
    before = snapshot(run_eval.out)

    server.reset()
    server.set_latency(0.0)
    run_eval(*openai_args(server, "a", "b"), "--resume").assert_outcomes(passed=2)
    assert server.request_count == 24 - sum(kept.values())
    for model in ("a", "b"):
        s = summary(run_eval.out, model)
        assert (s["n"], s["n_errored"], s["n_resumed"]) == (12, 0, kept[model])
        assert_rows_once(run_eval.out, model)
    assert_append_only(before)


# ----------------------------------------------------------------------------- 2. worker kill


def test_kill_9_of_one_xdist_worker_keeps_its_rows(scripted_llm_factory, run_eval, pytester) -> None:
    server = scripted_llm_factory(default=correct, latency=LATENCY)
    proc = start(pytester, *openai_args(server, "a", "b"), "-n", "2", "--concurrency", "1")
    workers: list[psutil.Process] = []
    try:
        wait_for(lambda: len(records(run_eval.out, "a")) >= 2, proc)
        workers = workers_of(proc)
        # the worker running model a is the one holding a's records file open
        holder = [w for w in workers if any("/gsm8k/a/records/" in f.path for f in w.open_files())]
        assert len(holder) == 1
        worker_id = next(records_dir(run_eval.out, "a").glob("*.jsonl")).stem.rsplit("-", 1)[1]
        holder[0].kill()
        assert_quiet_after_kill(server, model="a")
        assert proc.wait(timeout=180) != 0  # the session still finishes; the crashed item fails
    finally:
        reap(workers)
        if proc.poll() is None:
            kill(proc)
    log = (pytester.path / "child.log").read_text()
    assert f"worker '{worker_id}' crashed while running" in log and "test_gsm8k[a]" in log
    kept = records(run_eval.out, "a")
    assert 2 <= len(kept) < 12
    # what the killed worker recorded is in the merged rows; the other model finished
    rows_a = read_jsonl(run_eval.out / "gsm8k" / "a" / "rows.jsonl")
    assert sorted(r["row_id"] for r in rows_a) == sorted(r["row_id"] for r in kept)
    assert summary(run_eval.out, "a")["n"] == len(kept)
    assert summary(run_eval.out, "b")["n"] == 12
    assert_rows_once(run_eval.out, "b")
    before = snapshot(run_eval.out)

    server.reset()
    server.set_latency(0.0)
    run_eval(*openai_args(server, "a", "b"), "--resume").assert_outcomes(passed=2)
    assert server.request_count == 12 - len(kept)
    assert all(r.body["model"] == "a" for r in server.requests)
    assert summary(run_eval.out, "a")["n_resumed"] == len(kept)
    assert summary(run_eval.out, "b")["n_resumed"] == 12
    for model in ("a", "b"):
        assert summary(run_eval.out, model)["n"] == 12
        assert_rows_once(run_eval.out, model)
    assert_append_only(before)


# ----------------------------------------------------------------------------- 3. two sessions


def test_two_sessions_in_one_output_folder(scripted_llm_factory, run_eval, pytester) -> None:
    """A short ``--max-rows 3 --resume`` run while a long run is half way: both finish, neither loses rows."""
    release = threading.Event()
    held = set(QUESTIONS[6:])  # the long run stops half way until the short run is over

    async def gated(body: dict[str, Any]) -> str:
        while last_user(body) in held and not release.is_set():
            await asyncio.sleep(0.05)
        return correct(body)

    server = scripted_llm_factory(default=gated, latency=0.3)
    # every row in flight at once, so rows 0-5 are answered whatever order they are sent in
    proc = start(pytester, *openai_args(server), "--concurrency", "12", log="long.log")
    try:
        wait_for(lambda: len(records(run_eval.out)) >= 6, proc)
        assert len(records(run_eval.out)) == 6 and proc.poll() is None
        before = snapshot(run_eval.out)
        short = run_eval(*openai_args(server), "--max-rows", "3", "--resume")
        short.assert_outcomes(passed=1)
        s_short = summary(run_eval.out)
        release.set()
        assert proc.wait(timeout=180) == 0, (pytester.path / "long.log").read_text()[-3000:]
    finally:
        release.set()
        if proc.poll() is None:
            kill(proc)
    # the short run reused the long run's completions and its summary holds every row made so far
    assert s_short["resume"] == {"reused": 3, "sent": 0}
    assert (s_short["n"], s_short["n_resumed"]) == (6, 3)
    assert s_short["selection"]["max_rows"] == 3
    assert (s_short["selection"]["rows_this_session"], s_short["selection"]["rows_in_summary"]) == (3, 6)
    assert server.request_count == 12  # the long run's twelve; the short run sent nothing
    s_long = summary(run_eval.out)
    assert (s_long["n"], s_long["n_errored"], s_long["score"]) == (12, 0, 1.0)
    assert s_long["session"] != s_short["session"] and len(list(records_dir(run_eval.out).glob("*.jsonl"))) == 2
    history = [json.loads(p.read_text()) for p in sorted((run_eval.out / "gsm8k" / "scripted" / "history").glob("*"))]
    assert [h["session"] for h in history] == [s_short["session"], s_long["session"]]
    assert_rows_once(run_eval.out)
    assert_append_only(before)


# ----------------------------------------------------------------------------- 4. port change


def test_resume_against_another_port_and_host_name_reuses_the_completions(scripted_llm_factory, run_eval,
                                                                           pytester) -> None:
    a = scripted_llm_factory(default=correct, latency=LATENCY)
    proc = start(pytester, *openai_args(a), "--concurrency", "1")
    try:
        wait_for(lambda: len(records(run_eval.out)) >= 3, proc)
    finally:
        kill(proc)
    assert_quiet_after_kill(a)
    kept = len(records(run_eval.out))
    assert 3 <= kept < 12
    sent_to_a = a.request_count
    before = snapshot(run_eval.out)

    # server B: another port, and named `localhost` where A was `127.0.0.1`; the same conditions
    b = scripted_llm_factory(default=correct)
    assert b.port != a.port and a.base_url.startswith("http://127.0.0.1:")
    result = run_eval("--backend", "openai", "--api-base", b.base_url.replace("127.0.0.1", "localhost"),
                      "--model", "scripted", "--resume")
    result.assert_outcomes(passed=1)
    s = summary(run_eval.out)
    assert (s["n"], s["n_errored"], s["n_resumed"]) == (12, 0, kept), "the endpoint's address changed the key"
    assert s["resume"] == {"reused": kept, "sent": 12 - kept}
    assert b.request_count == 12 - kept and a.request_count == sent_to_a
    answered = {last_user(r.body) for r in b.requests}
    stored = {r["messages"][-2]["content"] for r in records(run_eval.out) if r["session"] != s["session"]}
    assert answered.isdisjoint(stored)  # B got only the rows A had not answered
    assert_rows_once(run_eval.out)
    assert_append_only(before)


# ----------------------------------------------------------------------------- 5. --runs 2


def test_repeated_kill_and_resume_with_two_runs_never_shares_a_completion(scripted_llm_factory, run_eval,
                                                                           pytester) -> None:
    counter = itertools.count()
    server = scripted_llm_factory(default=lambda body: f"<answer>{GOLDS[last_user(body)]}</answer> #{next(counter)}",
                                  latency=LATENCY)
    args = [*openai_args(server), "--runs", "2", "--concurrency", "1"]
    before: dict[Path, str] = {}
    for round_, extra in enumerate([(), ("--resume",)]):
        old = {p.name for p in records_dir(run_eval.out).glob("*.jsonl")} if round_ else set()
        proc = start(pytester, *args, *extra, log=f"round{round_}.log")

        def enough(old: set[str] = old, resumed: int = len(records(run_eval.out))) -> bool:
            """3 rows sent in this round besides the (at most ``resumed``) ones copied without a request."""
            files = [p for p in records_dir(run_eval.out).glob("*.jsonl") if p.name not in old]
            return sum(len(records(run_eval.out, name=p.stem)) for p in files) >= resumed + 3

        try:
            wait_for(enough, proc)
        finally:
            kill(proc)
        assert_quiet_after_kill(server)
        assert_append_only(before)
        before = snapshot(run_eval.out)
    done = {(r["row_id"], r["run_index"]) for r in records(run_eval.out) if r["status"] == "scored"}
    assert 6 <= len(done) < 24

    server.reset()
    server.set_latency(0.0)
    run_eval(*args, "--resume").assert_outcomes(passed=1)
    assert server.request_count == 24 - len(done)
    s = summary(run_eval.out)
    assert (s["n"], s["n_scored"], s["n_errored"], s["n_resumed"]) == (12, 24, 0, len(done))
    assert (s["runs"]["n"], s["runs"]["indexes"]) == (2, [0, 1])
    rows = assert_rows_once(run_eval.out, runs=2)
    completion = {(r["row_id"], r["run_index"]): r["completion"] for r in rows}
    assert all(completion[(i, 0)] != completion[(i, 1)] for i in ROW_IDS)
    assert len(set(completion.values())) == 24  # every row and run has its own request's completion
    assert_append_only(before)


# ----------------------------------------------------------------------------- 6. resume note


def test_resume_after_changing_only_the_temperature_says_why_nothing_was_reused(scripted_llm_factory,
                                                                                run_eval) -> None:
    server = scripted_llm_factory(default=correct)
    run_eval(*openai_args(server)).assert_outcomes(passed=1)
    before = snapshot(run_eval.out)
    result = run_eval(*openai_args(server), "--resume", "--temperature", "0.5")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*resume: reused 0 stored completions, sent 12 rows; nothing reused: *temperature*"])
    resume = summary(run_eval.out)["resume"]
    assert (resume["reused"], resume["sent"]) == (0, 12)
    assert "temperature: 0.0 -> 0.5" in resume["note"]
    assert "other conditions" in resume["note"] and "max_tokens" not in resume["note"]
    assert server.request_count == 24
    assert_rows_once(run_eval.out)
    assert_append_only(before)

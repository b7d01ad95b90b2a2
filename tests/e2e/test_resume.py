"""Nothing finished is lost on a crash, and `--resume` only sends what is missing or errored."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from metis_pytest.testing import Fault
from tests.e2e.conftest import SMOKE, last_user, read_jsonl
from tests.e2e.test_gsm8k_scripted import correct, openai_args, summary


def test_resume_sends_only_errored_rows_again(scripted_llm_factory, run_eval) -> None:
    dead = "A tank holds 80 litres"
    server = scripted_llm_factory(default=correct, faults=[
        Fault("status", status=503, when=lambda i, body: dead in last_user(body))])
    first = run_eval(*openai_args(server), "--max-retries", "0", "--max-error-rate", "1")
    first.assert_outcomes(passed=1)
    assert summary(run_eval.out)["n_errored"] == 1
    server.set_faults([])
    server.reset()
    second = run_eval(*openai_args(server), "--resume")
    second.assert_outcomes(passed=1)
    assert server.request_count == 1 and dead in last_user(server.requests[0].body)
    s = summary(run_eval.out)
    assert (s["score"], s["n"], s["n_errored"], s["n_resumed"]) == (1.0, 12, 0, 11)
    second.stdout.fnmatch_lines(["*(n=12, errored=0, resumed=11)*"])


def test_changed_conditions_are_not_resumed(scripted_llm_factory, run_eval) -> None:
    server = scripted_llm_factory(default=correct)
    run_eval(*openai_args(server)).assert_outcomes(passed=1)
    server.reset()
    run_eval(*openai_args(server), "--resume", "--temperature", "0.5").assert_outcomes(passed=1)
    assert server.request_count == 12  # other sampling params: nothing reused
    assert summary(run_eval.out)["n_resumed"] == 0


def test_a_killed_run_keeps_its_rows_and_a_resumed_run_finishes_it(scripted_llm_factory, run_eval, pytester) -> None:
    server = scripted_llm_factory(default=correct, latency=0.4)
    args = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--output-dir", "out", "--dataset", str(SMOKE),
            *openai_args(server), "--concurrency", "1", "test_eval.py"]
    proc = subprocess.Popen(args, cwd=pytester.path, env=os.environ.copy(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    parts = pytester.path / "out" / "gsm8k" / "scripted" / "records"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            done = sum(len(read_jsonl(p)) for p in parts.glob("*.jsonl")) if parts.exists() else 0
            if done >= 4:
                break
            time.sleep(0.1)
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # a crash: no teardown, no merge
        proc.wait(timeout=10)
    kept = [r for p in parts.glob("*.jsonl") for r in read_jsonl(p)]
    assert 4 <= len(kept) < 12 and all(r["status"] == "scored" for r in kept)
    assert not (pytester.path / "out" / "gsm8k" / "scripted" / "summary.json").exists()

    server.reset()
    server.set_latency(0.0)
    result = run_eval(*openai_args(server), "--resume")
    result.assert_outcomes(passed=1)
    s = summary(run_eval.out)
    assert (s["n"], s["n_errored"], s["n_resumed"], s["score"]) == (12, 0, len(kept), 1.0)
    assert server.request_count == 12 - len(kept)
    assert sum(len(read_jsonl(p)) for p in parts.glob("*.jsonl")) == 12 + len(kept)  # nothing deleted
    rows = read_jsonl(pytester.path / "out" / "gsm8k" / "scripted" / "rows.jsonl")
    assert sorted(r["row_id"] for r in rows) == [f"gsm8k-gsm8k_smoke-{i:05d}" for i in range(12)]
    assert json.loads((parts.parent / "summary.json").read_text())["n_resumed"] == len(kept)

"""GSM8K end to end against the scripted OpenAI-compatible server: scores, records, faults, xdist, secrets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from evals.gsm8k import scoring
from metis_pytest.testing import Fault, ScriptedServer
from tests.e2e.conftest import SMOKE, ep_store_text, last_user, read_jsonl, smoke_golds

GOLDS = smoke_golds()
SMOKE_LINES = SMOKE.read_text().splitlines()


def correct(body: dict[str, Any]) -> str:
    return f"<think>working</think>\n<answer>{GOLDS[last_user(body)]}</answer>"


def openai_args(server: ScriptedServer, *models: str) -> list[str]:
    args = ["--backend", "openai", "--api-base", server.base_url]
    for model in models or ("scripted",):
        args += ["--model", model]
    return args


def summary(out: Path, model: str = "scripted") -> dict[str, Any]:
    return json.loads((out / "gsm8k" / model / "summary.json").read_text())


def test_scores_every_row_and_writes_the_run_record(scripted_llm_factory, run_eval) -> None:
    server = scripted_llm_factory(default=correct)
    result = run_eval(*openai_args(server), "--max-tokens", "77", "--temperature", "0.3")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*gsm8k [[]scripted[]] answer_tag=1.000*(n=12, errored=0)*"])
    s = summary(run_eval.out)
    assert (s["score"], s["n"], s["n_errored"]) == (1.0, 12, 0)
    assert s["metrics"]["strict_match"]["mean"] == 0.0 and s["metrics"]["flexible_extract"]["mean"] == 1.0
    assert s["benchmark_version"] == scoring.VERSION and s["dataset"]["id"] == "file:gsm8k_smoke.jsonl"
    assert s["prompt_hash"] and s["completion_params"]["max_tokens"] == 77
    rows = read_jsonl(run_eval.out / "gsm8k" / "scripted" / "rows.jsonl")
    assert len(rows) == 12 and all(r["status"] == "scored" and r["score"] == 1.0 for r in rows)
    assert (run_eval.out / "gsm8k" / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Every completion param reached the server; the reference answer never did.
    bodies = [r.body for r in server.requests]
    assert all(b["max_tokens"] == 77 and b["temperature"] == 0.3 and b["model"] == "scripted" for b in bodies)
    assert all([m["role"] for m in b["messages"]] == ["system", "user"] for b in bodies)
    # Rows are in Eval Protocol's store, where `ep logs` reads them.
    store = ep_store_text(run_eval.home)
    assert "gsm8k-gsm8k_smoke-00011" in store and store.count("answer tag: ") >= 12  # final, scored states


def test_one_item_per_model(scripted_llm_factory, run_eval) -> None:
    server = scripted_llm_factory(default=correct)
    result = run_eval(*openai_args(server, "model-a", "model-b,model-c"), "--co", "-q")
    result.stdout.fnmatch_lines(["*test_gsm8k[[]model-a[]]", "*test_gsm8k[[]model-b[]]", "*test_gsm8k[[]model-c[]]"])


def test_transient_faults_are_retried_and_no_row_is_lost(scripted_llm_factory, run_eval) -> None:
    faults = [Fault("status", status=429, retry_after=0.01, first_n=3),
              Fault("status", status=503, at={5}),
              Fault("malformed", at={6}),
              Fault("disconnect", at={7}),
              Fault("timeout", at={8}, hang_s=8.0)]
    server = scripted_llm_factory(default=correct, faults=faults)
    result = run_eval(*openai_args(server), "--request-timeout", "2", "--concurrency", "1")
    result.assert_outcomes(passed=1)
    s = summary(run_eval.out)
    assert (s["score"], s["n"], s["n_errored"]) == (1.0, 12, 0)
    assert server.request_count == 12 + 7


def test_rows_that_keep_failing_are_errored_not_scored(scripted_llm_factory, run_eval) -> None:
    dead = "A tank holds 80 litres"
    faults = [Fault("status", status=500, when=lambda i, body: dead in last_user(body))]
    server = scripted_llm_factory(default=correct, faults=faults)
    result = run_eval(*openai_args(server), "--max-retries", "1")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*gsm8k [[]scripted[]]: 1 of 12 rows errored after retries*"])
    s = summary(run_eval.out)
    assert (s["score"], s["n"], s["n_errored"], s["n_retryable"]) == (1.0, 11, 1, 1)
    rows = read_jsonl(run_eval.out / "gsm8k" / "scripted" / "rows.jsonl")
    errored = [r for r in rows if r["status"] == "errored"]
    assert len(rows) == 12 and len(errored) == 1
    assert errored[0]["score"] is None and "HTTP 500" in errored[0]["error"]["message"]
    assert errored[0]["error"]["retryable"] is True and errored[0]["error"]["attempts"] == 2
    # the same run passes when the user accepts some errored rows
    assert run_eval(*openai_args(server), "--max-retries", "0", "--max-error-rate", "0.1").ret == 0


def test_bad_request_is_not_retried(scripted_llm_factory, run_eval) -> None:
    server = scripted_llm_factory(default=correct, faults=[Fault("status", status=400, at={0})])
    result = run_eval(*openai_args(server), "--concurrency", "1", "--max-error-rate", "0.5")
    result.assert_outcomes(passed=1)
    assert server.request_count == 12
    assert summary(run_eval.out)["n_errored"] == 1


def test_xdist_workers_write_rows_and_the_controller_merges_one_summary(scripted_llm_factory, run_eval) -> None:
    server = scripted_llm_factory(default=correct)
    result = run_eval(*openai_args(server, "model-a", "model-b"), "-n", "2")
    result.assert_outcomes(passed=2)
    for model in ("model-a", "model-b"):
        s = summary(run_eval.out, model)
        assert (s["score"], s["n"]) == (1.0, 12)
        assert set(s["workers"]) <= {"gw0", "gw1"} and len(s["workers"]) == 1
        [records] = (run_eval.out / "gsm8k" / model / "records").glob("*.jsonl")  # the worker's, kept
        assert records.name == f"{s['session']}-{s['workers'][0]}.jsonl" and len(read_jsonl(records)) == 12
    result.stdout.fnmatch_lines(["*gsm8k [[]model-a[]] answer_tag=1.000*", "*gsm8k [[]model-b[]] answer_tag=1.000*"])


def test_no_secret_reaches_ids_records_logs_or_the_store(scripted_llm_factory, run_eval, monkeypatch) -> None:
    key, password = "sk-metis-TEST-SECRET-0042", "hunter2-TEST-SECRET"
    monkeypatch.setenv("METIS_TEST_KEY", key)
    server = scripted_llm_factory(default=correct)
    base = server.base_url.replace("http://", f"http://metis:{password}@")
    result = run_eval("--backend", "openai", "--api-base", base, "--api-key-env", "METIS_TEST_KEY",
                      "--model", "scripted", "-v", "-rA")
    result.assert_outcomes(passed=1)
    assert server.requests[0].headers.get("Authorization") == f"Bearer {key}"  # the key was used ...
    seen = [result.stdout.str(), result.stderr.str(), ep_store_text(run_eval.home)]
    seen += [p.read_text(errors="replace") for p in run_eval.out.rglob("*") if p.is_file()]
    seen += [p.read_text(errors="replace") for p in (run_eval.home / ".eval_protocol").rglob("*.json*")]
    for text in seen:  # ... and appears nowhere else
        assert key not in text and password not in text


def test_api_model_without_its_key_is_skipped_with_the_variable_named(run_eval, monkeypatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    result = run_eval("--model", "anthropic/claude-3-5-haiku-latest", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*needs ANTHROPIC_API_KEY (not set in the environment)*"])


def test_ep_logs_dashboard_serves_the_rows(scripted_llm_factory, run_eval, tmp_path) -> None:
    """`ep logs` (Eval Protocol's dashboard) reads the same store and hands the rows to its UI."""
    import asyncio
    import os
    import socket
    import subprocess
    import sys
    import time

    import websockets

    server = scripted_llm_factory(default=correct)
    run_eval(*openai_args(server)).assert_outcomes(passed=1)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "HOME": str(run_eval.home), "FIREWORKS_API_KEY": "dummy-not-a-key",
           "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    ep = Path(sys.executable).with_name("ep")
    log = (tmp_path / "ep-logs.out").open("w")
    proc = subprocess.Popen([str(ep), "logs", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)

    async def fetch_rows() -> list[dict[str, Any]]:
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws", max_size=None) as ws:
            return json.loads(await asyncio.wait_for(ws.recv(), 20))["logs"]

    try:
        deadline, rows = time.monotonic() + 90, None
        while rows is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                rows = asyncio.run(fetch_rows())
            except OSError:
                time.sleep(0.5)
        assert rows is not None, (tmp_path / "ep-logs.out").read_text()[-2000:]
        ids = {r["input_metadata"]["row_id"] for r in rows}
        assert {f"gsm8k-gsm8k_smoke-{i:05d}" for i in range(12)} <= ids
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        log.close()


def test_a_scorer_that_raises_fails_the_item_and_keeps_the_row(scripted_llm_factory, run_eval, pytester) -> None:
    pytester.makepyfile(test_buggy="""
        from eval_protocol.models import EvaluationRow
        from evals.gsm8k import scoring
        from evals.gsm8k.test_gsm8k import BENCHMARK
        from metis_pytest.ep import evaluation_test, last_assistant_text

        @evaluation_test(BENCHMARK)
        def test_buggy(row: EvaluationRow) -> EvaluationRow:
            if row.ground_truth == "-7":
                raise ZeroDivisionError("scorer bug")
            row.evaluation_result = scoring.score(last_assistant_text(row), str(row.ground_truth)).to_evaluate_result()
            return row
    """)
    server = scripted_llm_factory(default=correct)
    result = run_eval("test_buggy.py", *openai_args(server))
    result.assert_outcomes(failed=1)
    rows = read_jsonl(run_eval.out / "gsm8k" / "scripted" / "rows.jsonl")
    [bad] = [r for r in rows if r["status"] == "errored"]
    assert bad["error"] == {"message": "scorer raised ZeroDivisionError: scorer bug", "stage": "scoring",
                            "retryable": False}
    assert bad["completion"] == "<think>working</think>\n<answer>-7</answer>"  # the model's answer is kept


def test_a_bad_dataset_line_is_one_usage_error_before_any_request(scripted_llm_factory, run_eval, pytester) -> None:
    bad = pytester.path / "bad.jsonl"
    good = SMOKE_LINES[0]
    bad.write_text(f"{good}\n{good}\n{{\"question\": \"q\", \"answer\": }}\n")
    server = scripted_llm_factory(default=correct)
    line = f"gsm8k: {bad} line 3: invalid JSON (Expecting value at column 29)"
    result = run_eval(*openai_args(server), "--dataset", str(bad))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert result.stderr.lines == [f"ERROR: {line}", ""]
    # Under xdist a worker cannot end the session with a usage error: its items fail at setup, same line.
    result = run_eval(*openai_args(server), "--dataset", str(bad), "-n", "2")
    result.assert_outcomes(errors=1)
    assert line in result.stdout.lines and "Traceback" not in result.stdout.str()
    assert server.request_count == 0

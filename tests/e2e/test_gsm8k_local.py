"""GSM8K end to end on the real embedded model (SmolLM2-135M-Instruct on llama.cpp), a few rows.

Needs the `local` extra (llama-cpp-python) and the GGUF (`metis fetch-model`); skipped otherwise.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from tests.e2e.conftest import read_jsonl


@pytest.fixture(scope="module", autouse=True)
def _needs_local_model() -> None:
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed (pip install -e '.[local]')")
    from metis_pytest.backends.local_model import DEFAULT_MODEL, default_cache_dir

    if not (default_cache_dir() / "models" / DEFAULT_MODEL.filename).exists():
        pytest.skip(f"the embedded model is not in {default_cache_dir()} (run `metis fetch-model`)")


def llama_servers() -> set[int]:
    """PIDs of llama.cpp servers running now."""
    pids = set()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if b"llama_cpp.server" in (proc / "cmdline").read_bytes():
                    pids.add(int(proc.name))
            except OSError:
                continue
    return pids


def test_gsm8k_on_the_embedded_model(run_eval) -> None:
    before = llama_servers()
    result = run_eval("--model", "local", "--max-rows", "3", "--max-tokens", "48")
    result.assert_outcomes(passed=1)
    summary = json.loads((run_eval.out / "gsm8k" / "local" / "summary.json").read_text())
    assert (summary["n"], summary["n_errored"]) == (3, 0)
    assert summary["completion_params"]["model"] == "openai/smollm2-135m-instruct"
    rows = read_jsonl(run_eval.out / "gsm8k" / "local" / "rows.jsonl")
    assert all(r["completion"] and r["usage"]["completion_tokens"] > 0 for r in rows)
    log = (run_eval.out / "local-server.log").read_text()
    assert "Uvicorn running on http://127.0.0.1:" in log
    assert llama_servers() <= before  # stopped at session end


def test_xdist_workers_share_one_server(pytester: pytest.Pytester, run_eval) -> None:
    pytester.makepyfile(test_two="""
        from eval_protocol.models import EvaluationRow
        from evals.gsm8k import scoring
        from evals.gsm8k.test_gsm8k import BENCHMARK
        from metis_pytest.ep import evaluation_test, last_assistant_text

        def score(row: EvaluationRow) -> EvaluationRow:
            row.evaluation_result = scoring.score(last_assistant_text(row), str(row.ground_truth)).to_evaluate_result()
            return row

        @evaluation_test(BENCHMARK)
        def test_first_half(row: EvaluationRow) -> EvaluationRow:
            return score(row)

        @evaluation_test(BENCHMARK)
        def test_second_half(row: EvaluationRow) -> EvaluationRow:
            return score(row)
    """)
    before = llama_servers()
    result = run_eval("test_two.py", "-n", "2", "--model", "local", "--max-rows", "2", "--max-tokens", "24")
    result.assert_outcomes(passed=2)
    log = (run_eval.out / "local-server.log").read_text()
    assert log.count("Uvicorn running on") == 1  # one server, started by the controller, for both workers
    summary = json.loads((run_eval.out / "gsm8k" / "local" / "summary.json").read_text())
    # Both items scored the same two rows under the same conditions: keyed by (row, run index), the
    # summary has each row once; both items' records are kept.
    assert summary["n"] == 2 and summary["n_scored"] == 2 and sorted(summary["workers"]) == ["gw0", "gw1"]
    records = [r for p in (run_eval.out / "gsm8k" / "local" / "records").glob("*.jsonl") for r in read_jsonl(p)]
    assert len(records) == 4
    assert llama_servers() <= before

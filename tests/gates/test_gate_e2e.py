"""Baselines and gates end to end in child pytest runs: a live GSM8K run against the scripted server saved as
a baseline (no secret, byte-stable across saves), the refusal across versions and datasets, and a toy
benchmark with item axes (each item gates its own shard; the session gates their union). The passing gate
and the broken scorer failing its item (under -n 2, in JUnit XML) run on the committed fixture in
test_ci_gate.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.gates.conftest import junit_cases
from tests.gates.fixture import MODEL, mixed_answer

ITEM = f"test_gsm8k[{MODEL}]"


@pytest.fixture
def recorded(scripted_llm_factory, run_eval, pytester, monkeypatch):
    """A live run against the scripted server (credentials in the URL and a key in the environment),
    saved as the baseline ``base/gsm8k/scripted-mix.json`` and moved to ``recorded/``."""
    key, password = "sk-metis-TEST-SECRET-0077", "hunter2-TEST-SECRET"
    monkeypatch.setenv("METIS_TEST_KEY", key)
    server = scripted_llm_factory(default=mixed_answer)
    base_url = server.base_url.replace("http://", f"http://metis:{password}@")
    result = run_eval("--backend", "openai", "--api-base", base_url, "--api-key-env", "METIS_TEST_KEY",
                      "--model", MODEL, "--metis-save-baseline", "--metis-baseline-dir", str(pytester.path / "base"))
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["saved baseline */base/gsm8k/scripted-mix.json"])
    folder = pytester.path / "recorded"
    run_eval.out.rename(folder)
    return {"dir": folder / "gsm8k" / MODEL, "secrets": (key, password, f":{server.port}", str(pytester.path))}


def replay(run_eval, recorded, *args: str) -> pytest.RunResult:
    """Replay the recorded run (baselines under ``base/``: absolute, since the child's rootdir is the
    repository, found from the ``--dataset`` path)."""
    base = recorded["dir"].parents[2] / "base"
    return run_eval("--model", MODEL, "--replay", str(recorded["dir"]), "--metis-baseline-dir", str(base), *args)


def test_the_baseline_holds_no_secret_path_or_port_and_a_replay_saves_the_same_bytes(recorded, run_eval,
                                                                                        pytester) -> None:
    text = (pytester.path / "base" / "gsm8k" / f"{MODEL}.json").read_text()
    for secret in recorded["secrets"]:
        assert secret not in text
    assert "127.0.0.1" not in text and "api_base" not in text and '"/' not in text
    data = json.loads(text)
    assert [r["row_id"] for r in data["rows"]] == sorted(r["row_id"] for r in data["rows"])
    assert data["summary"]["score"] == 0.75 and data["summary"]["n"] == 12
    assert data["sampling"] == {"max_tokens": 512, "model": f"openai/{MODEL}", "temperature": 0.0}
    assert len(text) < 6000
    # another session, another output folder, no model: the same bytes
    again = str(pytester.path / "again")
    replay(run_eval, recorded, "--metis-save-baseline", "--metis-baseline-dir", again).assert_outcomes(passed=1)
    assert (pytester.path / "again" / "gsm8k" / f"{MODEL}.json").read_text() == text


def test_another_benchmark_version_or_dataset_is_refused_unless_forced(recorded, run_eval, pytester,
                                                                       scripted_llm_factory) -> None:
    path = pytester.path / "base" / "gsm8k" / f"{MODEL}.json"
    data = json.loads(path.read_text())
    data["benchmark_version"] = "0.9.0"
    path.write_text(json.dumps(data))
    # another dataset too (11 of the 12 rows): its id and content hash differ
    other = pytester.path / "other.jsonl"
    shutil.copy(Path(__file__).parents[2] / "datasets" / "gsm8k_smoke.jsonl", other)
    other.write_text("".join(other.read_text().splitlines(keepends=True)[:11]))
    server = scripted_llm_factory(default=mixed_answer)
    result = run_eval("--backend", "openai", "--api-base", server.base_url, "--model", MODEL, "--dataset", str(other),
                      "--metis-baseline-dir", str(pytester.path / "base"), "--metis-compare", "--junitxml", "other.xml")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*refused: the baseline was made under other conditions; pass --metis-compare-force*",
                                 "*benchmark_version: '0.9.0' (baseline) -> '1.1.0' (this run)*",
                                 "*dataset.id: 'file:gsm8k_smoke.jsonl' (baseline) -> 'file:other.jsonl' (this run)*",
                                 "*dataset.revision: *"])
    assert "refused" in junit_cases(pytester.path / "other.xml")[ITEM]["failure"]
    forced = replay(run_eval, recorded, "--metis-compare-force", "--metis-compare-fail", "score:-1pp")
    forced.assert_outcomes(passed=1)
    forced.stdout.fnmatch_lines(["*compared under --metis-compare-force although these differ:*",
                                 "*benchmark_version: '0.9.0' (baseline) -> '1.1.0' (this run)*",
                                 "*score: 0.750 -> 0.750*", "  passed"])


SHARDED = '''
from pathlib import Path
from eval_protocol.models import EvaluationRow, InputMetadata, Message
from metis_pytest.ep import evaluation_test, score_row
from metis_pytest.registry import Benchmark, ScoreResult

def load(spec):
    return [EvaluationRow(messages=[Message(role="user", content=f"{dom} question {i}")], ground_truth=str(i),
                          input_metadata=InputMetadata(row_id=f"{dom}-{i}", dataset_info={"domain": dom}))
            for dom in ("food", "gaming") for i in range(3)]

def score(completion, ground_truth, metadata):
    broken = Path("broken.flag").exists() and metadata["domain"] in Path("broken.flag").read_text().split()
    ok = completion.strip() == ground_truth and not broken
    return ScoreResult(score=float(ok), metrics={"exact": float(ok)})

SHARDED = Benchmark(name="sharded", version="1.0", primary_metric="exact", default_source="builtin", load=load,
                    dataset_id=lambda spec: "sharded", dataset_revision=lambda spec: "r1", score=score,
                    axes=("domain",), breakdown=("domain",))

@evaluation_test(SHARDED)
def test_sharded(row: EvaluationRow) -> EvaluationRow:
    row.evaluation_result = score_row(SHARDED, row).to_evaluate_result()
    return row
'''


def test_sharded_items_expect_their_shard_and_the_session_gates_the_union(pytester, run_eval,
                                                                         scripted_llm_factory) -> None:
    pytester.makepyfile(test_sharded=SHARDED)
    server = scripted_llm_factory(default=lambda body: body["messages"][-1]["content"].rsplit(" ", 1)[-1])
    args = ("test_sharded.py", "--backend", "openai", "--api-base", server.base_url, "--model", "m",
            "--metis-baseline-dir", str(pytester.path / "base"))
    missing = run_eval(*args, "--metis-compare-fail", "score:-2pp")
    missing.assert_outcomes(failed=2)
    missing.stdout.fnmatch_lines(["*no baseline at */base/sharded/m.json (save one with --metis-save-baseline)*"])
    run_eval(*args, "--metis-save-baseline").assert_outcomes(passed=2)
    rows = json.loads((pytester.path / "base" / "sharded" / "m.json").read_text())["rows"]
    assert [r["groups"] for r in rows] == [{"domain": "food"}] * 3 + [{"domain": "gaming"}] * 3
    # one shard broken: only its item fails, and it expected only its own 3 baseline rows
    (pytester.path / "broken.flag").write_text("food")
    result = run_eval(*args, "--metis-compare-fail", "score:-10pp", "--junitxml", "shards.xml")
    result.assert_outcomes(passed=1, failed=1)
    cases = junit_cases(pytester.path / "shards.xml")
    assert cases["test_sharded[m-gaming]"]["failure"] is None
    food = cases["test_sharded[m-food]"]["failure"]
    assert "rows: 3 paired; 0 only in the baseline, 0 only in this run" in food
    assert "FAILED score:-10pp: delta -100.00pp is below -10pp" in food
    result.stdout.fnmatch_lines(["*= metis compare =*", "*score: 1.000 -> 0.500, delta -50.00pp*n=6 (3 worse, 0 better)*"])
    # both broken: each item alone is not significant (3 of 3 worse: exact p = 2/8), the union is (p = 2/64)
    (pytester.path / "broken.flag").write_text("food gaming")
    result = run_eval(*args, "--metis-compare-fail", "score:p<0.05")
    result.assert_outcomes(passed=2)
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*McNemar exact p=0.03125, n=6 (6 worse, 0 better)*",
                                 "*FAILED score:p<0.05: p=0.03125 < 0.05 with delta -100.00pp*"])

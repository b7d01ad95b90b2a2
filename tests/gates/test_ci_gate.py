"""The project's own CI gate: the committed GSM8K recording (baselines/gsm8k/recorded/) replayed against
the committed baseline (baselines/gsm8k/scripted-mix.json) passes; with a broken scorer it fails on the
item, under pytest-xdist too, with the reason in the JUnit XML."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from metis_pytest.gates import baseline as baselines
from tests.gates.conftest import junit_cases
from tests.gates.fixture import BASELINE, MODEL, RECORDED, REPLAY_ARGS, REPO

ITEM = f"test_gsm8k[{MODEL}]"
# The CI command, as in the README (plus a private output folder and JUnit file).
GATE = ("evals/gsm8k", "-p", "no:cacheprovider", "--replay", str(RECORDED.relative_to(REPO)), *REPLAY_ARGS,
        "--metis-compare-fail", "score:-1pp")


def gate(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOME": str(tmp_path), "LITELLM_LOCAL_MODEL_COST_MAP": "True", "EP_NO_UPLOAD": "1"}
    return subprocess.run([sys.executable, "-m", "pytest", *GATE, "--output-dir", str(tmp_path / "out"),
                           "--junitxml", str(tmp_path / "junit.xml"), *extra],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_the_committed_fixture_is_what_the_baseline_summarizes() -> None:
    committed = baselines.load(BASELINE)
    rebuilt = baselines.from_run(RECORDED)
    assert committed.rows == rebuilt.rows and committed.summary == rebuilt.summary
    assert committed.identity() == rebuilt.identity() and committed.summary["score"] == 0.75
    assert sorted(p.name for p in RECORDED.iterdir()) == ["conditions", "rows.jsonl", "summary.json"]
    for path in [BASELINE, *RECORDED.rglob("*.json*")]:
        text = path.read_text()
        assert "127.0.0.1" not in text and "localhost" not in text and str(REPO) not in text


def test_the_replay_passes_the_gate(tmp_path: Path) -> None:
    result = gate(tmp_path)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "score: 0.750 -> 0.750, delta +0.00pp" in result.stdout
    case = junit_cases(tmp_path / "junit.xml")[ITEM]
    assert case["failure"] is None
    props = case["properties"]
    assert (props["score"], props["stderr"], props["n"]) == ("0.75", "0.130558", "12")
    assert (props["gate"], props["compare.score.delta"], props["compare.score.p"]) == ("passed", "0", "1")
    assert (props["compare.score.ci95"], props["compare.score.test"], props["compare.score.n"]) == ("0 0", "mcnemar", "12")
    assert props["compare.baseline"] == "baselines/gsm8k/scripted-mix.json"


def test_a_broken_scorer_fails_the_gate_on_the_item_under_xdist(tmp_path: Path) -> None:
    result = gate(tmp_path, "-p", "tests.gates.broken_scorer", "-n", "2", "--metis-compare-fail", "score:p<0.05")
    assert result.returncode == 1, result.stdout[-3000:]
    reason = "FAILED score:-1pp: delta -25.00pp is below -1pp"
    assert f"FAILED evals/gsm8k/test_gsm8k.py::{ITEM}" in result.stdout and reason in result.stdout
    case = junit_cases(tmp_path / "junit.xml")[ITEM]
    assert reason in case["failure"]
    assert "McNemar exact p=0.25, n=12 (3 worse, 0 better)" in case["failure"]
    assert "FAILED score:p<0.05" not in case["failure"]  # 3 discordant rows: p = 2/8, not significant
    props = case["properties"]
    assert (props["gate"], props["score"], props["compare.score.delta"]) == ("failed", "0.5", "-0.25")
    assert props["gate.reason"] == "score:-1pp: delta -25.00pp is below -1pp"

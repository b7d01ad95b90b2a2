"""The gate on ACE, with no harness edit: continuous task scores in [-1, 1] get the paired bootstrap, one
item per task expects only its task's baseline rows, and the baseline keeps each row's domain."""

from __future__ import annotations

import json
import shutil
from typing import Any

import pytest

from tests.e2e.test_ace import DEMO, agent, judge
from tests.gates.conftest import junit_cases


def stricter_judge(body: dict[str, Any]) -> str:
    """The same judge, except that one (not hurdle) criterion of the water bottle task now fails."""
    name = body["response_format"]["json_schema"]["name"]
    if name in ("Stage1Check", "GroundedStage1Check") and \
            "The recommended bottle holds at least 750 ml" in json.dumps(body["messages"]):
        return json.dumps({"passes": False, "evaluation_type": "holistic", "reasoning": "capacity not stated"})
    return judge(body)


def test_ace_baseline_and_a_regressed_task_failing_its_own_item(pytester: pytest.Pytester, run_eval,
                                                                 scripted_llm_factory) -> None:
    pytester.makepyfile(test_eval="from evals.ace.test_ace import test_ace  # noqa: F401\n")
    policy = scripted_llm_factory(default=agent)
    base = str(pytester.path / "base")

    def ace(grader_reply, *args: str) -> pytest.RunResult:
        grader = scripted_llm_factory(default=grader_reply)
        return run_eval("--backend", "openai", "--api-base", policy.base_url, "--model", "agent",
                        "--judge-model", "grader", "--judge-backend", "openai", "--judge-api-base", grader.base_url,
                        "--dataset", str(DEMO), "--ace-snapshot", str(DEMO / "snapshot.json"),
                        "--metis-baseline-dir", base, *args)

    ace(judge, "--metis-save-baseline").assert_outcomes(passed=3)
    saved = json.loads((pytester.path / "base" / "ace" / "agent.json").read_text())
    assert saved["judge"] == {"model": "openai/grader", "prompt_version": "1.0.0"}
    assert sorted(r["groups"]["domain"] for r in saved["rows"]) == ["food", "gaming", "shopping"]
    shutil.rmtree(run_eval.out / "ace" / ".judge-cache")  # else the same judge's verdicts are reused
    result = ace(stricter_judge, "--metis-compare-fail", "score:-10pp", "--junitxml", "ace.xml")
    result.assert_outcomes(passed=2, failed=1)
    cases = junit_cases(pytester.path / "ace.xml")
    failed = {name: case["failure"] for name, case in cases.items() if case["failure"]}
    [(name, reason)] = failed.items()
    assert name == "test_ace[agent-shopping-9001]"
    assert "rows: 1 paired; 0 only in the baseline, 0 only in this run" in reason
    assert "paired bootstrap p=n/a (fewer than 2 rows)" in reason and "FAILED score:-10pp" in reason
    # the session compares all three tasks with the bootstrap
    result.stdout.fnmatch_lines(["*= metis compare =*", "*score: 1.000 -> *paired bootstrap p=*, n=3 (1 worse, 0 better)*"])

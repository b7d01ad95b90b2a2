"""The attribute judge (JSON contract), scoring, calibration statistics, the ArmoRM head mapping."""

from __future__ import annotations

import json

import pytest

from evals.helpsteer import armorm
from evals.helpsteer.calibration import calibrate
from evals.helpsteer.dataset import Record
from evals.helpsteer.judge import PROMPT_VERSION, rate
from evals.helpsteer.scoring import attribute_result, calibration, length_stats, pearson, spearman
from metis_pytest.backends.base import ModelTarget
from metis_pytest.judge import JudgeClient
from metis_pytest.testing import ScriptedServer

RATINGS = {"helpfulness": 3, "correctness": 4, "coherence": 4, "complexity": 1, "verbosity": 2}


def judge_for(server: ScriptedServer) -> JudgeClient:
    target = ModelTarget(label="judge", backend="openai", litellm_model="openai/judge", api_base=server.base_url,
                         served_model="judge")
    return JudgeClient(target, max_invalid_retries=1)


async def test_a_valid_reply_gives_the_five_ratings_and_names_judge_and_version() -> None:
    with ScriptedServer(default=json.dumps(RATINGS)) as server:
        async with judge_for(server) as judge:
            verdict = await rate(judge, "Say hi", "Hi!")
    assert verdict.valid and verdict.data is not None and verdict.data.as_dict() == RATINGS
    result = attribute_result("Hi!", verdict.data.as_dict(), judge_record=verdict.record())
    assert result.valid and result.score == 3.0 and result.metrics["verbosity"] == 2.0
    assert result.metrics["words"] == 1.0 and result.details["judge"]["prompt_version"] == PROMPT_VERSION
    user = server.requests[0].body["messages"][-1]["content"]
    assert "Say hi" in user and "Hi!" in user


@pytest.mark.parametrize("reply", ["I would rate it highly.", json.dumps({**RATINGS, "verbosity": 5}),
                                   json.dumps({k: v for k, v in RATINGS.items() if k != "coherence"}),
                                   json.dumps({**RATINGS, "helpfulness": "3"}),
                                   json.dumps({**RATINGS, "length": 2})])
async def test_judge_json_failures_are_invalid_never_a_zero(reply: str) -> None:
    with ScriptedServer(default=reply) as server:
        async with judge_for(server) as judge:
            verdict = await rate(judge, "Say hi", "Hi!")
    assert not verdict.valid and verdict.data is None and verdict.attempts == 2  # one corrective re-ask
    result = attribute_result("Hi!", None, judge_record=verdict.record())
    assert not result.valid and result.retryable and "no valid ratings" in result.reason


def test_length_stats() -> None:
    assert length_stats("one two\n\nthree\n") == {"chars": 15.0, "words": 3.0, "lines": 2.0}


def test_correlations_and_mae() -> None:
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [10, 20, 30, 1]) == pytest.approx(-0.2)
    assert spearman([1, 1, 2], [1, 2, 3]) == pytest.approx(0.8660254)  # tied ranks averaged
    assert pearson([1, 1], [1, 2]) is None
    judged = [{**RATINGS, "helpfulness": h} for h in (0, 2, 4)]
    human = [{**RATINGS, "helpfulness": h} for h in (1, 2, 3)]
    stats = calibration(judged, human)
    assert stats["helpfulness"]["mae"] == pytest.approx(2 / 3) and stats["helpfulness"]["pearson"] == pytest.approx(1.0)
    assert stats["verbosity"]["mae"] == 0.0 and stats["verbosity"]["spearman"] is None  # constant


async def test_calibration_of_the_judge_against_human_ratings() -> None:
    records = [Record("p", f"r{i}", h, 4, 4, 1, 2, index=i) for i, h in enumerate((1, 2, 4))]
    replies = iter([{**RATINGS, "helpfulness": 0}, {**RATINGS, "helpfulness": 3}, "not json", "still not json"])

    def reply(body):
        value = next(replies)
        return value if isinstance(value, str) else json.dumps(value)

    with ScriptedServer(default=reply) as server:
        async with JudgeClient(ModelTarget(label="j", backend="openai", litellm_model="openai/j",
                                           api_base=server.base_url, served_model="j"),
                               concurrency=1, max_invalid_retries=1) as judge:
            report = await calibrate(judge, records)
    assert (report["n"], report["invalid"], report["prompt_version"]) == (2, 1, PROMPT_VERSION)
    assert report["attributes"]["helpfulness"]["mae"] == pytest.approx(1.0)
    assert report["attributes"]["correctness"]["mae"] == 0.0


def test_armorm_head_mapping_on_its_output_shape() -> None:
    class Tensor:  # what ArmoRM's output.rewards is: [batch, 19]
        def __init__(self, rows):
            self.rows = rows

        def tolist(self):
            return self.rows

    rewards = Tensor([[0.1, 0.3, 0.5, 0.7, 0.9, *[0.0] * 14], [0.9] * 19])
    got = armorm.helpsteer_ratings(rewards)
    assert got[0] == pytest.approx({"helpfulness": 0.0, "correctness": 1.0, "coherence": 2.0, "complexity": 3.0,
                                    "verbosity": 4.0})
    assert got[1]["helpfulness"] == pytest.approx(4.0)
    with pytest.raises(ValueError, match="19 objectives"):
        armorm.helpsteer_ratings([[0.5] * 5])

"""Policies over the w-grid: resumable generation, the same-prompt check, the Pareto front and its PNG."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evals.helpsteer.dataset import DatasetError, prompt_id
from evals.helpsteer.pareto import compare, non_dominated, plot_front, read_run, table_markdown
from evals.helpsteer.policies import PromptMismatch, check_same_prompts, generate, read_generations
from metis_pytest.backends.base import ModelTarget
from metis_pytest.rollout.http import RequestFailed, RetryPolicy
from metis_pytest.testing import Fault, ScriptedServer

PROMPTS = [f"prompt {i}" for i in range(6)]


def policy_target(server: ScriptedServer) -> ModelTarget:
    return ModelTarget(label="sft", backend="openai", litellm_model="openai/sft", api_base=server.base_url,
                       served_model="sft")


def asked(server: ScriptedServer) -> list[str]:
    return [r.body["messages"][-1]["content"] for r in server.requests if r.path.endswith("/chat/completions")]


async def test_generation_resumes_after_a_kill_with_nothing_duplicated_or_lost(tmp_path: Path) -> None:
    out = tmp_path / "gens" / "sft.jsonl"
    with ScriptedServer(default=lambda body: "answer to " + body["messages"][-1]["content"]) as server:
        # First run dies on one prompt (a request refused for good), the others are kept.
        server.set_faults([Fault(kind="status", status=400,
                                when=lambda i, body: body["messages"][-1]["content"] == "prompt 3")])
        with pytest.raises(RequestFailed):
            await generate(policy_target(server), [*PROMPTS, PROMPTS[0]], out, params={"max_tokens": 8},
                           policy=RetryPolicy(max_retries=0))
        assert sorted(read_generations(out)) == sorted(prompt_id(p) for p in PROMPTS if p != "prompt 3")
        # The kill also cut a line short.
        with out.open("a") as handle:
            handle.write('{"prompt_id": "helpsteer-torn", "resp')
        server.set_faults([])
        before = len(server.requests)
        got = await generate(policy_target(server), PROMPTS, out, params={"max_tokens": 8})
        assert asked(server)[before:] == ["prompt 3"]  # only what was missing
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["prompt_id"] for r in lines) == sorted(prompt_id(p) for p in PROMPTS)  # no duplicate, no torn line
    assert got == {prompt_id(p): f"answer to {p}" for p in PROMPTS}


def test_a_bad_line_that_is_not_the_last_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('not json\n{"prompt_id": "a", "response": "b"}\n')
    with pytest.raises(DatasetError, match="p.jsonl line 1: invalid JSON"):
        read_generations(path)


def test_the_same_prompt_check_fails_loudly() -> None:
    assert check_same_prompts({"a": ["x", "y"], "b": ["y", "x"]}) == ["x", "y"]
    with pytest.raises(PromptMismatch, match=r"b lacks 1 prompt\(s\) the others answered \(x\)"):
        check_same_prompts({"a": ["x", "y"], "b": ["y"]})
    with pytest.raises(PromptMismatch):
        compare({"a": {"x": {"h": 1.0}}, "b": {"y": {"h": 1.0}}}, ["h"])


def test_non_dominated_points() -> None:
    points = [{"h": 3, "v": 1}, {"h": 2, "v": 2}, {"h": 1, "v": 3}, {"h": 1, "v": 1}, {"h": 2, "v": 1},
              {"h": 3, "v": 1}]
    assert non_dominated(points, ["h", "v"]) == [True, True, True, False, False, True]  # equal points both stay


def scores() -> dict[str, dict[str, dict[str, float]]]:
    ids = [f"p{i}" for i in range(20)]
    return {"sft": {i: {"h": 2.0, "v": 1.0} for i in ids},
            "w0.5": {i: {"h": 3.0 if n % 2 else 2.0, "v": 2.0} for n, i in enumerate(ids)},
            "w1": {i: {"h": 1.0, "v": 3.0} for i in ids}}


def test_compare_marks_the_front_with_bootstrap_intervals(tmp_path: Path) -> None:
    points = compare(scores(), ["h", "v"], {"sft": 0.0, "w0.5": 0.5, "w1": 1.0}, n_boot=200)
    assert [(p.policy, p.w, p.non_dominated) for p in points] == [("sft", 0.0, False), ("w0.5", 0.5, True),
                                                                  ("w1", 1.0, True)]
    mid = points[1]
    assert mid.means == {"h": 2.5, "v": 2.0} and mid.n == 20
    lo, hi = mid.intervals["h"]
    assert 2.0 <= lo < 2.5 < hi <= 3.0 and points[0].intervals["h"] == (2.0, 2.0)
    assert compare(scores(), ["h", "v"], n_boot=200)[1].intervals == mid.intervals  # seeded
    table = table_markdown(points, ["h", "v"])
    assert "| w0.5 | 0.5 | 2.500 [" in table and table.count("| * |") == 2
    png = plot_front(points, "h", "v", tmp_path / "front.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_read_run_takes_the_scored_rows(tmp_path: Path) -> None:
    folder = tmp_path / "helpsteer" / "sft"
    folder.mkdir(parents=True)
    rows = [{"model": "sft", "row_id": "p1", "status": "scored", "metrics": {"h": 2.0}},
            {"model": "sft", "row_id": "p2", "status": "errored", "metrics": {}}]
    (folder / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert read_run(tmp_path) == {"sft": {"p1": {"h": 2.0}}}

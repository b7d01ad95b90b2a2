"""One scorer, three faces, on ACE's scripted cases: the pytest evaluation's score, verl's reward and the
Eval Protocol evaluator agree exactly, with the pages the agent read reaching each of them its own way.

The rows are the ACE demo's three tasks (``datasets/ace_demo``) and its recorded web (``snapshot.json``,
replayed); each task gets four scripted completions (a good answer after a search and a page read, the
same answer over budget, no recommendation, an answer without links and without any tool call). The
judge is a scripted OpenAI-compatible server whose verdicts follow the text it is sent, so the scores
move with the completion and with whether the page reached the grader.

(a) pytest: what the row function of ``evals/ace/test_ace.py`` computes, step by step: ``score_task`` on
    ``task_from_row(row)``, the final answer, the sources of the agent's tool records
    (``benchmark.sources_of``), the session's judge and web;
(b) verl: ``compute_score_async`` on the row as ``metis data export ace`` wrote it to parquet, its
    ``extra_info`` merged with the ``extra_fields`` the verl tools (``metis_pytest.rewards.verl_tools``,
    over the stand-in of ``tests/rewards/test_verl_tools.py``) left for the trajectory, as verl 0.9.1's
    reward-loop managers merge them, and the judge from ``reward_kwargs``;
(c) Eval Protocol: the ``@evaluation_test``-decorated ``test_ace`` called directly on the row.

Known difference, not among these cases: a link in the answer to a page the agent did not read is
fetched from the run's web by (a) and (c), and is a dead link to (b) unless its ``extra_info`` carries
the page (see ``metis_pytest.rewards.verl``).
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from eval_protocol.models import EvaluationRow, Message

from evals.ace import benchmark
from evals.ace.benchmark import BENCHMARK
from evals.ace.dataset import task_from_row
from evals.ace.scoring import score_task
from metis_pytest import ep
from metis_pytest import session as metis_session
from metis_pytest.conversation import last_assistant_text
from metis_pytest.export import export
from metis_pytest.options import MetisConfig
from metis_pytest.rewards.verl import compute_score_async
from metis_pytest.tools.toolbox import WebToolbox
from tests.e2e.test_ace import ANSWERS
from tests.rewards.test_verl_tools import AgentData, Verl, verl  # noqa: F401  (verl: the stand-in fixture)

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "datasets" / "ace_demo"
SNAPSHOT = DEMO / "snapshot.json"
URL = re.compile(r"https?://[^\s\"\\)]+")


def judge(body: dict[str, Any]) -> str:
    """Verdicts from the text sent: no recommendation and failed checks when the answer declines, failed
    checks when it says "over budget", and a source verified only when a recorded page's text is in the
    prompt."""
    name = body["response_format"]["json_schema"]["name"]
    text = json.dumps(body["messages"])
    ok = "over budget" not in text and "I cannot recommend" not in text
    replies = {
        "Recommendations": {"recommendations": [] if "I cannot recommend" in text else ["the recommended item"]},
        "SourceMap": {"recommendations": [{"number": 1, "sources": [1]}]},
        "ProductLinks": {"urls": URL.findall(body["messages"][-1]["content"])[:1]},
        "LinkCheck": {"valid": True, "page_type": "product", "reason": "a product page with a buy button"},
        "Stage1Check": {"passes": ok, "evaluation_type": "holistic", "reasoning": "as stated"},
        "GroundedStage1Check": {"passes": ok, "evaluation_type": "holistic", "reasoning": "as stated"},
        "SourceCheck": {"verified": "Price: $24.99" in text or "Serves 4" in text or "Players: exactly 2" in text,
                        "reason": "what the source says"},
    }
    return json.dumps(replies[name])


def completions(question: str) -> list[tuple[str, bool, str]]:
    """``(kind, uses tools, final answer)`` for one task."""
    _, _, answer = next(v for k, v in ANSWERS.items() if k in question)
    return [("answer", True, answer), ("over_budget", True, f"{answer} It is over budget, though."),
            ("declines", True, "I cannot recommend anything for this."),
            ("no_tools", False, URL.sub("(no link)", answer))]


def tool_calls(question: str) -> list[tuple[str, dict[str, str]]]:
    query, url, _ = next(v for k, v in ANSWERS.items() if k in question)
    return [("web_search", {"query": query}), ("browse_page", {"url": url})]


async def pytest_face(session: metis_session.MetisSession, row: EvaluationRow) -> Any:
    """The row function's steps (evals/ace/test_ace.py), without its artifacts."""
    from metis_pytest.judge import JudgeClient

    agent = (row.execution_metadata.extra or {}).get("agent") or {}
    async with JudgeClient(ep.judge_target(BENCHMARK)) as client:
        result = await score_task(task_from_row(row), last_assistant_text(row), benchmark.sources_of(agent), client,
                                  benchmark.web(session), session.cfg.extra.get("ace_semantics", "official"))
    return result.to_score_result()


def test_three_faces_agree_on_aces_scripted_cases(verl: Verl, scripted_llm_factory, tmp_path, monkeypatch) -> None:  # noqa: F811
    grader = scripted_llm_factory(default=judge)
    export("ace", tmp_path / "data", source=str(DEMO), progress=False)
    parquet = {r["extra_info"]["row_id"]: r for split in ("train", "test")
               for r in pq.read_table(tmp_path / "data" / f"{split}.parquet").to_pylist()}
    tools = verl.load_tools(REPO / "metis_pytest" / "rewards" / "ace_tools.yaml")
    replay = {"type": "native", "snapshot": str(SNAPSHOT), "snapshot_mode": "replay"}
    tools = {"web_search": verl.tools.WebSearchTool(replay, tools["web_search"].tool_schema),
             "browse_page": verl.tools.BrowsePageTool(replay, tools["browse_page"].tool_schema)}
    judged = {"judge_model": "grader", "judge_backend": "openai", "judge_api_base": grader.base_url}
    session = metis_session.MetisSession(MetisConfig(
        output_dir=tmp_path / "runs", dataset=str(DEMO), judge_model="grader", judge_backend="openai",
        judge_api_base=grader.base_url, extra={"ace_snapshot": str(SNAPSHOT), "ace_semantics": "official"}))
    recorded: list[tuple[str, Any]] = []
    monkeypatch.setattr(ep, "_record", lambda bench, row, error: recorded.append((bench.name, error)))
    metis_session.register(session)
    try:
        from evals.ace.test_ace import test_ace

        async def all_cases() -> list[tuple[str, float]]:
            seen = []
            for row in session.rows(BENCHMARK):
                question = row.messages[0].content
                for kind, with_tools, answer in completions(question):
                    calls = tool_calls(question) if with_tools else []
                    box = WebToolbox(benchmark.web(session))  # the pytest agent's toolbox, replaying the run
                    agent_data = AgentData(parquet[row.input_metadata.row_id]["extra_info"]["tools_kwargs"])
                    for name, args in calls:
                        await box.call(name, args)
                        await verl.call_tool(tools, name, json.dumps(args), agent_data)
                    case = row.model_copy(deep=True)
                    case.messages = [*row.messages, Message(role="assistant", content=answer)]
                    case.execution_metadata.extra = {"agent": {"tool_records": box.records()}}
                    where = f"{row.input_metadata.row_id} ({kind})"

                    a = await pytest_face(session, case)
                    stored = parquet[row.input_metadata.row_id]
                    extra_info = dict(stored["extra_info"])
                    extra_info.update(agent_data.extra_fields.items())  # what verl's naive reward manager does
                    b = await compute_score_async(data_source=stored["data_source"], solution_str=answer,
                                                  ground_truth=stored["reward_model"]["ground_truth"],
                                                  extra_info=extra_info, **judged)
                    c = (await test_ace(case.model_copy(deep=True))).evaluation_result
                    assert c is not None
                    assert a.valid and c.is_score_valid and b["valid"] == 1.0, where
                    assert a.score == c.score == b["score"], where
                    metrics = {name: m.score for name, m in (c.metrics or {}).items()}
                    assert dict(a.metrics) == metrics, where
                    assert {k: b[k] for k in ("ace_score", "hurdle_pass")} == {k: metrics[k] for k in
                                                                                ("ace_score", "hurdle_pass")}, where
                    assert a.reason == c.reason, where
                    seen.append((kind, a.score))
            return seen

        seen = asyncio.run(all_cases())
    finally:
        metis_session.unregister(session)
        session.store.close()
    assert len(seen) == 12 and recorded == [("ace", None)] * 12  # every case recorded as scored
    by_kind = {kind: [s for k, s in seen if k == kind] for kind in dict.fromkeys(k for k, _ in seen)}
    # Not vacuous: the completions move the score, and without the page read (no tools) the grounded
    # criteria fail: shopping (1 hurdle, 2 grounded, 1 link, no link given) and gaming (1 hurdle, 2
    # grounded); food has no grounded criterion.
    assert [row.input_metadata.row_id for row in session.rows(BENCHMARK)] == [
        "ace-shopping-9001", "ace-food-9101", "ace-gaming-9201"]
    assert by_kind == {"answer": [1.0, 1.0, 1.0], "over_budget": [0.0, 0.0, 0.0], "declines": [0.0, 0.0, 0.0],
                       "no_tools": [(1 - 1 - 1 + 0) / 4, 1.0, (1 - 1 - 1) / 3]}

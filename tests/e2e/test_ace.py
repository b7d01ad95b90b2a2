"""ACE end to end: a scripted agent that searches and reads, a scripted judge, the demo tasks and their
recorded pages replayed from the shipped snapshot; artifacts on disk, summary by domain, -n 2 merge."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from metis_pytest.testing import Reply
from tests.e2e.conftest import read_jsonl

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "datasets" / "ace_demo"
ANSWERS = {
    "water bottle": ("stainless steel water bottle 750 ml under $30 keeps cold 24 hours",
                     "https://trailgear.example/products/arctic-trail-750",
                     "I recommend the Arctic Trail 750 ml Insulated Steel Bottle: $24.99, 750 ml, cold for 24 hours. "
                     "Buy it here: https://trailgear.example/products/arctic-trail-750"),
    "vegetarian dinner": ("vegetarian dinner recipe 30 minutes serves 4",
                          "https://quickveg.example/recipes/chickpea-spinach-curry",
                          "Chickpea and Spinach Curry: vegetarian, serves 4, 25 minutes in total."),
    "board game": ("cooperative board game for two players under an hour", "https://tabletop.example/games/lantern-keepers",
                   "Lantern Keepers: fully cooperative, exactly 2 players, 40 minutes."),
}


def agent(body: dict[str, Any], answers: dict[str, tuple[str, str, str]] = ANSWERS) -> Reply | str:
    """Search, read the first result, answer: one tool call a turn."""
    question = next(m["content"] for m in body["messages"] if m["role"] == "user")
    query, url, answer = next(v for k, v in answers.items() if k in question)
    done = sum(1 for m in body["messages"] if m["role"] == "tool")
    if done == 0:
        return Reply(tool_calls=[{"name": "web_search", "arguments": {"query": query}}])
    if done == 1:
        return Reply(tool_calls=[{"name": "browse_page", "arguments": {"url": url}}])
    return answer


def judge(body: dict[str, Any]) -> str:
    """Everything passes; the reply fits the schema the judge asked for."""
    name = body["response_format"]["json_schema"]["name"]
    text = json.dumps(body["messages"])
    replies = {
        "Recommendations": {"recommendations": ["the recommended item"]},
        "SourceMap": {"recommendations": [{"number": 1, "sources": [1]}]},
        "ProductLinks": {"urls": re.findall(r"https?://[^\s\"\\]+", text)[:1]},
        "LinkCheck": {"valid": True, "page_type": "product", "reason": "a product page with a buy button"},
        "Stage1Check": {"passes": True, "evaluation_type": "holistic", "reasoning": "stated"},
        "GroundedStage1Check": {"passes": True, "evaluation_type": "holistic", "reasoning": "stated"},
        "SourceCheck": {"verified": True, "reason": "source 1 says so"},
    }
    return json.dumps(replies[name])


@pytest.fixture
def ace(pytester: pytest.Pytester, run_eval, scripted_llm_factory):
    pytester.makepyfile(test_eval="from evals.ace.test_ace import test_ace  # noqa: F401\n")
    policy = scripted_llm_factory(default=agent)
    grader = scripted_llm_factory(default=judge)

    def run(*args: str) -> pytest.RunResult:
        return run_eval("--backend", "openai", "--api-base", policy.base_url, "--model", "agent",
                        "--judge-model", "grader", "--judge-backend", "openai", "--judge-api-base", grader.base_url,
                        "--dataset", str(DEMO), "--ace-snapshot", str(DEMO / "snapshot.json"), *args)

    run.policy, run.grader, run.out = policy, grader, run_eval.out  # type: ignore[attr-defined]
    return run


def test_ace_agent_tools_judge_artifacts_and_summary(ace) -> None:
    result = ace("-v")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["*test_ace[[]agent-shopping-9001[]]*PASSED*"])
    s = json.loads((ace.out / "ace" / "agent" / "summary.json").read_text())
    assert (s["n"], s["n_errored"], s["score"]) == (3, 0, 1.0)
    assert set(s["by"]["domain"]) == {"shopping", "food", "gaming"}
    assert s["metrics"]["hurdle_pass"]["mean"] == 1.0
    assert s["judge"] == {"model": "openai/grader", "prompt_version": "1.0.0"}
    assert (ace.out / "ace" / "summary_by_domain.png").read_bytes()[:4] == b"\x89PNG"
    task = ace.out / "ace" / "agent" / "shopping" / "task_9001"
    trace = json.loads((task / "trace.json").read_text())
    assert [c["name"] for c in trace["tool_calls"]] == ["web_search", "browse_page"]
    assert trace["response"].startswith("I recommend the Arctic Trail")
    [source] = json.loads((task / "2_scraped_sources.json").read_text())
    assert source["url"].endswith("arctic-trail-750") and "$24.99" in source["content"]
    grades = json.loads((task / "3_autograder_results.json").read_text())
    text = json.dumps(grades)
    assert "openai/grader" in text and '"link"' in text
    rows = read_jsonl(ace.out / "ace" / "agent" / "rows.jsonl")
    assert all(r["messages"][-1]["role"] == "assistant" and r["metadata"]["agent"]["tool_calls"] for r in rows)
    # The agent and the judge each went to their own server; the policy's never saw a judge prompt.
    assert all("response_format" not in r.body for r in ace.policy.requests)
    assert all(r.body["model"] == "grader" for r in ace.grader.requests)


def test_ace_items_merge_under_xdist_into_the_serial_summary(ace, pytester) -> None:
    ace().assert_outcomes(passed=3)
    serial = json.loads((ace.out / "ace" / "agent" / "summary.json").read_text())
    (ace.out).rename(pytester.path / "serial")
    ace("-n", "2").assert_outcomes(passed=3)
    parallel = json.loads((ace.out / "ace" / "agent" / "summary.json").read_text())
    for key in ("score", "stderr", "n", "n_errored", "metrics", "by"):
        assert parallel[key] == serial[key], key
    assert sorted(parallel["workers"]) == ["gw0", "gw1"]


def test_ace_with_a_domain_filter_and_the_metis_semantics(ace) -> None:
    ace("--domains", "food", "--ace-semantics", "metis").assert_outcomes(passed=1)
    s = json.loads((ace.out / "ace" / "agent" / "summary.json").read_text())
    assert s["n"] == 1 and list(s["by"]["domain"]) == ["food"]


PUBLIC = "http://93.184.216.34"  # a public address literal: passes the URL check with no DNS here


def live_web(ace, fake_searchapi, fake_jina) -> None:
    """The demo's answers on a public address, served by the SearchAPI and Jina fakes; the agent links there."""
    for _, url, _ in ANSWERS.values():
        path = url.split("/", 3)[3]
        fake_jina.script({f"{PUBLIC}/{path}": {"title": path, "content": f"Everything the task asks for. {path}"}})
    fake_searchapi.script({query: [{"title": "hit", "link": f"{PUBLIC}/{url.split('/', 3)[3]}", "snippet": "s"}]
                           for query, url, _ in ANSWERS.values()})
    live = {k: (q, f"{PUBLIC}/{u.split('/', 3)[3]}", a.replace(u, f"{PUBLIC}/{u.split('/', 3)[3]}"))
            for k, (q, u, a) in ANSWERS.items()}
    ace.policy.script(default=lambda body: agent(body, live))


def test_a_live_run_records_its_web_and_the_replay_scores_the_same(ace, fake_searchapi, fake_jina, tmp_path) -> None:
    live_web(ace, fake_searchapi, fake_jina)
    snapshot = tmp_path / "web.json"
    live = ("--ace-snapshot", str(snapshot), "--searchapi-url", fake_searchapi.base_url, "--jina-url", fake_jina.base_url)
    ace(*live).assert_outcomes(passed=3)
    first = json.loads((ace.out / "ace" / "agent" / "summary.json").read_text())
    assert len(fake_searchapi.requests) == 3 and len(fake_jina.requests) >= 3 and snapshot.exists()
    fake_searchapi.stop()
    fake_jina.stop()
    ace.out.rename(tmp_path / "live-run")
    ace(*live).assert_outcomes(passed=3)  # the file exists now: replayed, with the fakes gone
    second = json.loads((ace.out / "ace" / "agent" / "summary.json").read_text())
    for key in ("score", "n", "n_errored", "metrics", "by"):
        assert second[key] == first[key], key


def test_with_several_runs_each_run_has_its_folder_and_tasks_are_aggregated(ace) -> None:
    ace("--runs", "2", "--domains", "gaming").assert_outcomes(passed=1)
    task = ace.out / "ace" / "agent" / "gaming" / "task_9201"
    assert sorted(p.name for p in task.iterdir()) == ["run_0", "run_1"]
    assert all((task / run / "3_autograder_results.json").is_file() for run in ("run_0", "run_1"))
    s = json.loads((ace.out / "ace" / "agent" / "summary.json").read_text())
    assert s["runs"]["indexes"] == [0, 1]
    assert s["task_aggregation"]["ace-gaming-9201"] == {"mean": 1.0, "std": 0.0, "n_runs": 2}


def test_a_live_run_without_the_search_key_is_skipped_naming_it(ace, monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("SEARCHAPI_IO_KEY", raising=False)
    result = ace("--ace-snapshot", str(tmp_path / "new.json"), "-rs")  # no such file yet: a live run
    result.assert_outcomes(skipped=3)
    result.stdout.fnmatch_lines(["*ace needs SEARCHAPI_IO_KEY (not set in the environment)*"])


def test_ep_logs_shows_each_task_with_its_criteria(ace, run_eval, tmp_path) -> None:
    """The real `ep logs` server, reading this run's Eval Protocol store, sends the dashboard every ACE
    task with each criterion's id, description and grade (the "Evaluation Result" panel)."""
    import os
    import socket
    import subprocess
    import sys
    import time

    from websockets.sync.client import connect

    ace().assert_outcomes(passed=3)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "HOME": str(run_eval.home), "FIREWORKS_API_KEY": "dummy", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    log = (tmp_path / "ep-logs.log").open("w")
    server = subprocess.Popen([str(Path(sys.executable).parent / "ep"), "logs", "--port", str(port)],
                              env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        deadline, payload = time.monotonic() + 90, None
        while payload is None:
            assert server.poll() is None, (tmp_path / "ep-logs.log").read_text()[-2000:]
            try:
                with connect(f"ws://127.0.0.1:{port}/ws", open_timeout=5) as ws:
                    payload = json.loads(ws.recv(timeout=30))
            except OSError:
                assert time.monotonic() < deadline, "ep logs never accepted a connection"
                time.sleep(0.5)
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
    assert payload["type"] == "initialize_logs"
    shown = {r["input_metadata"]["row_id"]: r for r in payload["logs"] if r.get("evaluation_result")}
    assert set(shown) == {"ace-shopping-9001", "ace-food-9101", "ace-gaming-9201"}
    for row_id, row in shown.items():
        expected = row["input_metadata"]["dataset_info"]["criteria"]
        graded = row["evaluation_result"]["trajectory_info"]["metis"]["details"]["criteria"]
        assert [(c["criterion_id"], c["description"]) for c in graded] == \
               [(c["id"], c["description"]) for c in expected], row_id
        assert all({"route", "hurdle", "reasoning", "score"} <= set(c) for c in graded)
        assert all(c["score"] == 1 for c in graded) and row["evaluation_result"]["score"] == 1.0


def test_replaying_a_live_run_reuses_its_web_and_its_judges_verdicts(ace, fake_searchapi, fake_jina, tmp_path,
                                                                     monkeypatch) -> None:
    """--replay of a recorded live run: no agent, no search, no page fetch and no judge call; the same scores."""
    live_web(ace, fake_searchapi, fake_jina)
    endpoints = ("--searchapi-url", fake_searchapi.base_url, "--jina-url", fake_jina.base_url)
    ace("--ace-snapshot", "", *endpoints).assert_outcomes(passed=3)  # the default: <out>/ace/snapshot.json
    recorded = tmp_path / "recorded"
    ace.out.rename(recorded)
    first = json.loads((recorded / "ace" / "agent" / "summary.json").read_text())
    assert (recorded / "ace" / "snapshot.json").exists() and any((recorded / "ace" / ".judge-cache").iterdir())
    asked = (len(ace.policy.requests), len(ace.grader.requests), len(fake_searchapi.requests), len(fake_jina.requests))
    fake_searchapi.stop()
    fake_jina.stop()
    monkeypatch.delenv("SEARCHAPI_IO_KEY", raising=False)  # a replay searches nothing: no key needed
    ace("--ace-snapshot", "", "--replay", str(recorded)).assert_outcomes(passed=3)
    second = json.loads((ace.out / "ace" / "agent" / "summary.json").read_text())
    for key in ("score", "n", "n_errored", "metrics", "by"):
        assert second[key] == first[key], key
    assert (len(ace.policy.requests), len(ace.grader.requests)) == asked[:2]  # nothing new asked of either
    assert second["selection"]["replay"] == str(recorded)

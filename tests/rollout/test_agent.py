"""The agent (tool-calling) rollout processor against the scripted server and an in-test toolbox."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
from types import SimpleNamespace
from typing import Any

import pytest
from eval_protocol.models import EvaluationRow, Message
from eval_protocol.pytest.types import RolloutProcessorConfig

from metis_pytest.conversation import dump_messages
from metis_pytest.rollout.agent import (
    CAP_PROMPT,
    AgentProcessor,
    normalise_tool_calls,
    resolve_toolbox_factory,
)
from metis_pytest.rollout.base import StoredCompletion, processor_factory
from metis_pytest.rollout.http import RetryPolicy
from metis_pytest.rollout.single_turn import target_from_params
from metis_pytest.testing import Fault, Reply, ScriptedServer
from metis_pytest.testing.scripted_server import count_words, prompt_tokens
from metis_pytest.tools.base import ToolOutcome

FAST = RetryPolicy(max_retries=2, base_delay=0.01, max_delay=0.05, timeout=5.0)

SCHEMAS = [
    {"type": "function", "function": {"name": "lookup", "description": "Look something up.",
                                      "parameters": {"type": "object", "properties": {"q": {"type": "string"}},
                                                     "required": ["q"]}}},
    {"type": "function", "function": {"name": "broken", "description": "A tool whose service is down.",
                                      "parameters": {"type": "object", "properties": {}}}},
]


class FakeToolbox:
    """``lookup`` answers, ``broken`` fails retryably (a dead service), ``explode`` raises (a buggy tool)."""

    def __init__(self, delay: float = 0.0, state: dict[str, Any] | None = None) -> None:
        self.delay = delay
        self.state = state if state is not None else {}
        self.calls: list[tuple[str, str]] = []
        self._records: list[dict[str, Any]] = []
        self.closed = False

    def schemas(self) -> list[dict[str, Any]]:
        return SCHEMAS

    async def call(self, name: str, arguments: str) -> ToolOutcome:
        self.calls.append((name, arguments))
        self.state["tools_running"] = self.state.get("tools_running", 0) + 1
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
        finally:
            self.state["tools_running"] -= 1
        if name == "explode":
            raise RuntimeError("bug in the tool")
        try:
            args = json.loads(arguments)
        except ValueError as exc:
            outcome = ToolOutcome(f"Error: the arguments are not valid JSON ({exc})", error=True)
        else:
            if name == "lookup":
                outcome = ToolOutcome(f"result for {args.get('q')}", record={"full": f"all about {args.get('q')}"})
            elif name == "broken":
                outcome = ToolOutcome("Error: the search service is down (HTTP 503)", error=True, retryable=True)
            else:
                outcome = ToolOutcome(f"Error: no tool named {name!r}", error=True)
        self._records.append({"tool": name, "arguments": arguments, "error": outcome.error, **outcome.record})
        return outcome

    def records(self) -> list[dict[str, Any]]:
        return list(self._records)

    async def aclose(self) -> None:
        self.closed = True
        self.state["open"] = self.state.get("open", 0) - 1


def make_rows(n: int, *, reference: bool = False) -> list[EvaluationRow]:
    rows = []
    for i in range(n):
        messages = [Message(role="system", content="sys"), Message(role="user", content=f"question {i}")]
        if reference:
            messages.append(Message(role="assistant", content="<answer>reference</answer>"))
        rows.append(EvaluationRow(messages=messages, ground_truth=str(i)))
    return rows


def params(server: Any, **extra: Any) -> dict[str, Any]:
    return {"model": "openai/scripted", "api_base": server.base_url, "temperature": 0.0, "max_tokens": 32, **extra}


def run(rows: list[EvaluationRow], completion_params: dict[str, Any], *, concurrency: int = 4,
        policy: RetryPolicy = FAST, tool_delay: float = 0.0, state: dict[str, Any] | None = None,
        **kwargs: Any) -> tuple[list[EvaluationRow], list[FakeToolbox]]:
    boxes: list[FakeToolbox] = []
    shared = state if state is not None else {}

    def factory(row: EvaluationRow) -> FakeToolbox:
        box = FakeToolbox(tool_delay, shared)
        shared["open"] = shared.get("open", 0) + 1
        shared["peak_open"] = max(shared.get("peak_open", 0), shared["open"])
        boxes.append(box)
        return box

    kwargs.setdefault("toolbox_factory", factory)

    async def go() -> list[EvaluationRow]:
        processor = AgentProcessor(policy=policy, **kwargs)
        config = RolloutProcessorConfig(completion_params=completion_params, mcp_config_path="",
                                        semaphore=asyncio.Semaphore(concurrency))
        try:
            return list(await asyncio.gather(*processor(rows, config)))
        finally:
            await processor.acleanup()

    return asyncio.run(go()), boxes


def tool_results(body: dict[str, Any]) -> int:
    return sum(1 for m in body["messages"] if m.get("role") == "tool")


def calls_then_answer(n_calls: int, *, name: str = "lookup", arguments: Any = None, answer: str = "<answer>42</answer>"):  # type: ignore[no-untyped-def]
    """A scripted reply: a tool call while the conversation has fewer than ``n_calls`` tool results, then ``answer``."""

    def reply(body: dict[str, Any]) -> str | Reply:
        n = tool_results(body)
        if n < n_calls:
            args = arguments if arguments is not None else {"q": f"q{n}"}
            return Reply(tool_calls=[{"name": name, "arguments": args}])
        return answer

    return reply


def agent_of(row: EvaluationRow) -> dict[str, Any]:
    return row.execution_metadata.extra["agent"]


def test_two_tool_calls_end_to_end(scripted_llm_factory) -> None:
    server = scripted_llm_factory(default=calls_then_answer(2))
    out, boxes = run(make_rows(1, reference=True), params(server))
    row = out[0]
    assert not row.rollout_status.is_error()
    assert [m.role for m in row.messages] == ["system", "user", "assistant", "tool", "assistant", "tool", "assistant"]
    first, result = row.messages[2], row.messages[3]
    assert first.tool_calls[0].function.name == "lookup" and first.tool_calls[0].function.arguments == '{"q": "q0"}'
    assert result.tool_call_id == first.tool_calls[0].id and result.name == "lookup" and result.content == "result for q0"
    assert row.messages[5].content == "result for q1" and row.messages[-1].content == "<answer>42</answer>"

    agent = agent_of(row)
    assert agent["turns"] == 3 and agent["turn_cap_reached"] is False
    assert [(c["name"], c["arguments"], c["error"], c["retryable"]) for c in agent["tool_calls"]] == [
        ("lookup", '{"q": "q0"}', False, False), ("lookup", '{"q": "q1"}', False, False)]
    assert all(c["seconds"] >= 0 for c in agent["tool_calls"])
    assert agent["tool_records"] == boxes[0].records() and len(agent["tool_records"]) == 2
    assert agent["tool_records"][0]["full"] == "all about q0"
    assert agent["tool_successes"] == 2 and agent["tool_errors"] == 0 and not agent["all_tools_failed_retryable"]
    meta = row.execution_metadata
    assert meta.finish_reason == "stop" and meta.tool_call_count == 2 and meta.extra["attempts"] == 3
    assert meta.rollout_duration_seconds > 0
    assert boxes[0].calls == [("lookup", '{"q": "q0"}'), ("lookup", '{"q": "q1"}')] and boxes[0].closed

    bodies = [r.body for r in server.requests]
    assert len(bodies) == 3 and all(b["tools"] == SCHEMAS for b in bodies)
    assert all("tool_choice" not in b for b in bodies)
    assert [m["role"] for m in bodies[0]["messages"]] == ["system", "user"]  # the reference is never sent
    sent_call, sent_result = bodies[1]["messages"][2], bodies[1]["messages"][3]
    assert sent_call["role"] == "assistant" and sent_call["content"] == ""  # the server replied null: "" is sent
    assert sent_call["tool_calls"] == [{"id": first.tool_calls[0].id, "type": "function",
                                        "function": {"name": "lookup", "arguments": '{"q": "q0"}'}}]
    assert sent_result == {"role": "tool", "content": "result for q0", "name": "lookup",
                           "tool_call_id": first.tool_calls[0].id}
    assert [m["role"] for m in bodies[2]["messages"]] == ["system", "user", "assistant", "tool", "assistant", "tool"]
    assert all(m["content"] == "" for m in bodies[2]["messages"] if m.get("tool_calls"))


def test_several_calls_in_one_turn_run_in_order(scripted_llm_factory) -> None:
    def reply(body: dict[str, Any]) -> str | Reply:
        if tool_results(body):
            return "done"
        return Reply(content="Let me check both.", tool_calls=[{"name": "lookup", "arguments": {"q": "a"}},
                                                               {"name": "lookup", "arguments": {"q": "b"}}])

    server = scripted_llm_factory(default=reply)
    out, boxes = run(make_rows(1), params(server))
    row = out[0]
    assert boxes[0].calls == [("lookup", '{"q": "a"}'), ("lookup", '{"q": "b"}')]
    ids = [c.id for c in row.messages[2].tool_calls]
    assert [m.tool_call_id for m in row.messages[3:5]] == ids and row.messages[2].content == "Let me check both."
    assert [m.content for m in row.messages[3:5]] == ["result for a", "result for b"]
    assert agent_of(row)["turns"] == 2 and row.execution_metadata.tool_call_count == 2
    assert server.requests[1].body["messages"][2]["content"] == "Let me check both."


def always_tools(body: dict[str, Any]) -> str | Reply:
    if body.get("tool_choice") == "none" or "tools" not in body:
        return "my best guess"
    return Reply(tool_calls=[{"name": "lookup", "arguments": {"q": f"q{tool_results(body)}"}}])


def test_turn_cap_makes_a_last_call_with_tool_choice_none(scripted_llm_factory) -> None:
    server = scripted_llm_factory(default=always_tools)
    out, boxes = run(make_rows(1), params(server), max_turns=3)
    row = out[0]
    bodies = [r.body for r in server.requests]
    assert len(bodies) == 4 and len(boxes[0].calls) == 3
    assert all("tool_choice" not in b and b["tools"] == SCHEMAS for b in bodies[:3])
    assert bodies[3]["tool_choice"] == "none" and bodies[3]["tools"] == SCHEMAS
    assert bodies[3]["messages"][-1] == {"role": "user", "content": CAP_PROMPT.format(max_turns=3)}
    assert row.messages[-1].content == "my best guess" and row.messages[-2].role == "user"
    agent = agent_of(row)
    assert agent["turn_cap_reached"] is True and agent["turns"] == 4 and len(agent["tool_calls"]) == 3
    assert not row.rollout_status.is_error()


def test_turn_cap_last_call_can_go_without_tools(scripted_llm_factory) -> None:
    server = scripted_llm_factory(default=always_tools)
    out, _ = run(make_rows(1), params(server, tool_choice="auto", parallel_tool_calls=False,
                                      extra_body={"tool_choice": "auto", "top_k": 5}),
                 max_turns=2, final_call="no_tools", cap_prompt=None)
    bodies = [r.body for r in server.requests]
    assert len(bodies) == 3
    assert all(b["tool_choice"] == "auto" and b["parallel_tool_calls"] is False for b in bodies[:2])
    last = bodies[2]
    assert "tools" not in last and "tool_choice" not in last and "parallel_tool_calls" not in last
    assert last["top_k"] == 5 and last["messages"][-1]["role"] == "tool"  # no cap prompt asked for
    assert out[0].messages[-1].content == "my best guess" and agent_of(out[0])["turn_cap_reached"] is True


def test_tool_calls_at_the_cap_are_kept_but_not_run(scripted_llm_factory) -> None:
    """A server that ignores tool_choice "none": the reply is final anyway; its calls are not run."""
    server = scripted_llm_factory(default=Reply(tool_calls=[{"name": "lookup", "arguments": {"q": "again"}}]))
    out, boxes = run(make_rows(1), params(server), max_turns=2)
    row = out[0]
    assert server.request_count == 3 and len(boxes[0].calls) == 2
    assert row.messages[-1].role == "assistant" and row.messages[-1].tool_calls
    agent = agent_of(row)
    assert agent["ignored_final_tool_calls"] == 1 and len(agent["tool_calls"]) == 2
    assert not row.rollout_status.is_error()


def test_malformed_tool_arguments_are_passed_on_and_reported_by_the_toolbox(scripted_llm_factory) -> None:
    bad = '{"q": "unterminated'
    server = scripted_llm_factory(default=calls_then_answer(1, arguments=bad))
    out, boxes = run(make_rows(1), params(server))
    row = out[0]
    assert boxes[0].calls == [("lookup", bad)]
    assert row.messages[3].content.startswith("Error: the arguments are not valid JSON")
    assert server.requests[1].body["messages"][2]["tool_calls"][0]["function"]["arguments"] == bad
    call = agent_of(row)["tool_calls"][0]
    assert call["arguments"] == bad and call["error"] is True and call["retryable"] is False
    assert not row.rollout_status.is_error() and row.messages[-1].content == "<answer>42</answer>"


def test_a_failing_tool_is_shown_to_the_model_and_the_row_is_kept(scripted_llm_factory) -> None:
    server = scripted_llm_factory(default=calls_then_answer(1, name="broken", arguments={}))
    out, _ = run(make_rows(1), params(server))
    row = out[0]
    assert not row.rollout_status.is_error()
    assert server.requests[1].body["messages"][3]["content"] == "Error: the search service is down (HTTP 503)"
    agent = agent_of(row)
    assert agent["tool_errors"] == 1 and agent["retryable_tool_errors"] == 1 and agent["tool_successes"] == 0
    assert agent["all_tools_failed_retryable"] is True  # the scorer decides what that answer is worth
    assert agent["tool_records"][0]["error"] is True


def test_one_good_tool_result_means_not_all_failed(scripted_llm_factory) -> None:
    def reply(body: dict[str, Any]) -> str | Reply:
        n = tool_results(body)
        if n == 0:
            return Reply(tool_calls=[{"name": "broken", "arguments": {}}])
        if n == 1:
            return Reply(tool_calls=[{"name": "lookup", "arguments": {"q": "x"}}])
        return "ok"

    server = scripted_llm_factory(default=reply)
    agent = agent_of(run(make_rows(1), params(server))[0][0])
    assert agent["tool_errors"] == 1 and agent["tool_successes"] == 1 and agent["all_tools_failed_retryable"] is False


def test_a_toolbox_that_raises_gives_an_error_outcome(scripted_llm_factory) -> None:
    server = scripted_llm_factory(default=calls_then_answer(1, name="explode", arguments={}))
    out, _ = run(make_rows(1), params(server))
    row = out[0]
    assert not row.rollout_status.is_error() and row.messages[-1].content == "<answer>42</answer>"
    assert "RuntimeError: bug in the tool" in row.messages[3].content
    assert agent_of(row)["tool_calls"][0]["error"] is True


def test_a_model_call_failing_after_retries_errors_the_row_retryable(scripted_llm_factory) -> None:
    server = scripted_llm_factory(default=calls_then_answer(2),
                                  faults=[Fault("status", status=500, when=lambda i, body: tool_results(body) > 0)])
    out, boxes = run(make_rows(1), params(server))
    row = out[0]
    status = row.rollout_status
    assert status.is_error() and "HTTP 500" in status.message
    meta = status.details[0]["metadata"]
    assert meta["retryable"] is True and meta["status"] == 500 and meta["attempts"] == FAST.max_retries + 1
    assert [m.role for m in row.messages] == ["system", "user"]  # the conversation is left as it was
    assert server.request_count == 1 + FAST.max_retries + 1
    agent = agent_of(row)
    assert agent["failed"]["turn"] == 1 and agent["failed"]["status"] == 500 and len(agent["tool_calls"]) == 1
    assert len(agent["tool_records"]) == 1 and boxes[0].closed


def test_a_client_error_is_not_retried_and_not_retryable(scripted_llm_factory) -> None:
    server = scripted_llm_factory(default=calls_then_answer(1), faults=[Fault("status", status=400, at={1})])
    out, _ = run(make_rows(1), params(server))
    assert out[0].rollout_status.is_error() and server.request_count == 2
    assert out[0].rollout_status.details[0]["metadata"]["retryable"] is False


def test_a_429_is_retried_with_the_same_payload(scripted_llm_factory) -> None:
    server = scripted_llm_factory(default=calls_then_answer(2), faults=[Fault("status", status=429, at={1})])
    out, _ = run(make_rows(1), params(server))
    row = out[0]
    assert not row.rollout_status.is_error() and row.messages[-1].content == "<answer>42</answer>"
    bodies = [r.body for r in server.requests]
    assert len(bodies) == 4 and bodies[1] == bodies[2]
    assert row.execution_metadata.extra["attempts"] == 4 and agent_of(row)["turns"] == 3
    assert len(row.messages) == 7  # the retry appended nothing twice


def stored_conversation() -> list[dict[str, Any]]:
    row = EvaluationRow(messages=[
        Message(role="system", content="sys"), Message(role="user", content="question 0"),
        Message(role="assistant", content="", tool_calls=[
            {"id": "call_7", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "x"}'}}]),
        Message(role="tool", tool_call_id="call_7", name="lookup", content="result for x"),
        Message(role="assistant", content="<answer>stored</answer>"),
    ])
    return dump_messages(row)


def test_resume_restores_a_stored_conversation_and_sends_nothing(scripted_llm_factory) -> None:
    server = scripted_llm_factory(default=calls_then_answer(1))
    stored = StoredCompletion(content="<answer>stored</answer>", messages=stored_conversation(),
                              finish_reason="stop", usage={"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12},
                              source="s1/main")
    asked: list[EvaluationRow] = []

    def lookup(public: dict[str, Any], row: EvaluationRow) -> StoredCompletion | None:
        asked.append(row)
        return stored

    def no_toolbox(row: EvaluationRow) -> FakeToolbox:
        raise AssertionError("a resumed row must not make a toolbox")

    out, _ = run(make_rows(1), params(server), lookup=lookup, toolbox_factory=no_toolbox)
    row = out[0]
    assert server.request_count == 0 and len(asked) == 1
    assert [m.role for m in row.messages] == ["system", "user", "assistant", "tool", "assistant"]
    assert row.messages[2].tool_calls[0].id == "call_7" and row.messages[-1].content == "<answer>stored</answer>"
    meta = row.execution_metadata
    assert meta.extra["resumed_from"] == "s1/main" and meta.extra["attempts"] == 0
    assert meta.usage.total_tokens == 12 and meta.finish_reason == "stop" and meta.tool_call_count == 1
    agent = agent_of(row)
    assert agent["restored"] is True and agent["turns"] == 2 and agent["turn_cap_reached"] is False
    assert [(c["name"], c["arguments"]) for c in agent["tool_calls"]] == [("lookup", '{"q": "x"}')]
    assert agent["unanswered_tool_calls"] == 0


def test_usage_is_summed_over_turns(scripted_llm_factory) -> None:
    server = scripted_llm_factory(default=calls_then_answer(2))
    row = run(make_rows(1), params(server))[0][0]
    usage = row.execution_metadata.usage
    prompt = sum(prompt_tokens(r.body) for r in server.requests)
    completion = count_words('{"q": "q0"}') + count_words('{"q": "q1"}') + count_words("<answer>42</answer>")
    assert usage.prompt_tokens == prompt and usage.completion_tokens == completion
    assert usage.total_tokens == prompt + completion


class NoIdServer(ScriptedServer):
    """A server whose tool calls come without ids (some OpenAI-compatible servers do that)."""

    def _tool_call(self, call: dict[str, Any]) -> dict[str, Any]:
        out = super()._tool_call(call)
        del out["id"]
        return out


def test_tool_calls_without_ids_get_stable_ones() -> None:
    with NoIdServer(default=calls_then_answer(2)) as server:
        first = run(make_rows(1), params(server))[0][0]
        bodies = [r.body for r in server.requests]
        second = run(make_rows(1), params(server))[0][0]
    ids = [c.id for m in first.messages if m.tool_calls for c in m.tool_calls]
    assert ids == ["call_0_0", "call_1_0"]
    assert [m.tool_call_id for m in first.messages if m.role == "tool"] == ids
    assert bodies[1]["messages"][2]["tool_calls"][0]["id"] == "call_0_0"
    assert bodies[1]["messages"][3]["tool_call_id"] == "call_0_0"
    assert [c.id for m in second.messages if m.tool_calls for c in m.tool_calls] == ids
    assert not first.rollout_status.is_error()


def test_normalise_tool_calls() -> None:
    used = {"dup"}
    calls = normalise_tool_calls([
        {"id": "dup", "type": "function", "function": {"name": "a", "arguments": "{}"}},
        {"function": {"name": "b", "arguments": {"q": 1}}},
        {"id": "", "function": {"name": "c"}},
        {"id": "ok", "function": {"name": "d", "arguments": "{not json"}},
        "garbage",
    ], 3, used)
    assert [c["id"] for c in calls] == ["call_3_0", "call_3_1", "call_3_2", "ok"]
    assert [c["function"]["arguments"] for c in calls] == ["{}", '{"q": 1}', "{}", "{not json"]
    assert all(c["type"] == "function" for c in calls) and used >= {"call_3_0", "call_3_1", "call_3_2", "ok"}


def peak_tracker(seconds: float, reply: Any, state: dict[str, Any]):  # type: ignore[no-untyped-def]
    """Wrap a scripted reply: it takes ``seconds``; ``state`` records the most requests in flight at once
    and whether a request arrived while a tool was running."""

    async def slow(body: dict[str, Any]) -> str | Reply:
        state["now"] = state.get("now", 0) + 1
        state["peak"] = max(state.get("peak", 0), state["now"])
        if state.get("tools_running"):
            state["overlapped_a_tool"] = True
        try:
            await asyncio.sleep(seconds)
        finally:
            state["now"] -= 1
        return reply(body)

    return slow


def test_concurrency_is_bounded_by_the_semaphore(scripted_llm_factory) -> None:
    state: dict[str, Any] = {}
    server = scripted_llm_factory(default=peak_tracker(0.02, calls_then_answer(2), state))
    out, boxes = run(make_rows(9), params(server), concurrency=3, state=state)
    assert all(not r.rollout_status.is_error() for r in out) and server.request_count == 27
    assert state["peak"] <= 3 and state["peak_open"] == 3  # three conversations at a time, tools included
    assert all(b.closed for b in boxes) and state["open"] == 0


def test_a_one_request_server_is_held_per_model_call_not_while_tools_run(scripted_llm_factory) -> None:
    state: dict[str, Any] = {}
    server = scripted_llm_factory(default=peak_tracker(0.02, calls_then_answer(2), state))
    single = dataclasses.replace(target_from_params(params(server)), max_concurrency=1)
    out, _ = run(make_rows(3), params(server), concurrency=3, resolver=lambda p: single, tool_delay=0.3,
                 state=state)
    assert all(not r.rollout_status.is_error() for r in out)
    assert state["peak"] == 1 and state["peak_open"] == 3
    assert state.get("overlapped_a_tool") is True  # another row's model call ran during a tool


def test_an_unreachable_server_fails_rows_fast_and_retryable() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    policy = RetryPolicy(max_retries=1, base_delay=0.01, max_delay=0.02, timeout=1.0)
    out, boxes = run(make_rows(6), {"model": "openai/m", "api_base": f"http://127.0.0.1:{port}/v1"},
                     concurrency=1, policy=policy)
    assert all(r.rollout_status.is_error() and r.rollout_status.details[0]["metadata"]["retryable"] for r in out)
    assert "cannot connect" in out[0].rollout_status.message
    assert all(r.rollout_status.message.startswith("not sent:") for r in out[1:])
    assert all(b.closed for b in boxes)


def test_a_toolbox_factory_that_fails_errors_the_row(scripted_llm_factory) -> None:
    server = scripted_llm_factory(default="unused")

    def factory(row: EvaluationRow) -> FakeToolbox:
        raise LookupError("no toolbox configured")

    out, _ = run(make_rows(1), params(server), toolbox_factory=factory)
    status = out[0].rollout_status
    assert status.is_error() and "no toolbox configured" in status.message and server.request_count == 0
    meta = status.details[0]["metadata"]
    assert meta["retryable"] is False and meta["stage"] == "toolbox"


def test_the_registered_factory_finds_the_toolbox_lazily(scripted_llm_factory) -> None:
    server = scripted_llm_factory(default=calls_then_answer(1))
    made: list[tuple[Any, EvaluationRow]] = []

    def toolbox(session: Any, row: EvaluationRow) -> FakeToolbox:
        made.append((session, row))
        return FakeToolbox()

    session = SimpleNamespace(cfg=SimpleNamespace(max_retries=1, request_timeout=5.0, extra={"b_max_turns": 4}),
                              runtime_target=target_from_params)
    bench = SimpleNamespace(name="b", toolbox=toolbox)
    processor = processor_factory("agent")(session, bench, None)
    assert isinstance(processor, AgentProcessor) and processor.max_turns == 4 and not made
    assert processor.policy.max_retries == 1 and processor.policy.timeout == 5.0

    async def go() -> list[EvaluationRow]:
        config = RolloutProcessorConfig(completion_params=params(server), mcp_config_path="",
                                        semaphore=asyncio.Semaphore(2))
        try:
            return list(await asyncio.gather(*processor(make_rows(2), config)))
        finally:
            await processor.acleanup()

    out = asyncio.run(go())
    assert all(not r.rollout_status.is_error() for r in out)
    assert len(made) == 2 and made[0][0] is session


def test_toolbox_resolution_order() -> None:
    row = make_rows(1)[0]
    from_session, from_bench, from_make = FakeToolbox(), FakeToolbox(), FakeToolbox()
    bench = SimpleNamespace(name="b", toolbox=lambda session, r: from_bench, make_toolbox=lambda r: from_make)
    hooked = SimpleNamespace(toolbox_factory=lambda b: (lambda r: from_session))
    assert resolve_toolbox_factory(hooked, bench)(row) is from_session
    declining = SimpleNamespace(toolbox_factory=lambda b: None)
    assert resolve_toolbox_factory(declining, bench)(row) is from_bench
    assert resolve_toolbox_factory(SimpleNamespace(), SimpleNamespace(name="b", toolbox=None,
                                                                      make_toolbox=lambda r: from_make))(row) is from_make
    with pytest.raises(LookupError, match="gives no toolbox"):
        resolve_toolbox_factory(SimpleNamespace(), SimpleNamespace(name="b", toolbox=None))


def test_max_turns_must_be_positive() -> None:
    with pytest.raises(ValueError):
        AgentProcessor(toolbox_factory=lambda row: FakeToolbox(), max_turns=0)

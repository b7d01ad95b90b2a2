"""The single-turn rollout processor against the scripted server (in-process, fast)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from eval_protocol.models import EvaluationRow, Message
from eval_protocol.pytest.types import RolloutProcessorConfig

from metis_pytest.rollout.http import RequestFailed, RetryPolicy, build_payload, parse_completion
from metis_pytest.rollout.single_turn import SingleTurnProcessor, request_messages, target_from_params
from metis_pytest.testing import Fault, Reply

FAST = RetryPolicy(max_retries=3, base_delay=0.01, max_delay=0.05, timeout=2.0)


def make_rows(n: int, *, reference: bool = False) -> list[EvaluationRow]:
    rows = []
    for i in range(n):
        messages = [Message(role="system", content="sys"), Message(role="user", content=f"question {i}")]
        if reference:
            messages.append(Message(role="assistant", content="<answer>reference</answer>"))
        rows.append(EvaluationRow(messages=messages, ground_truth=str(i)))
    return rows


def run(rows: list[EvaluationRow], params: dict[str, Any], *, concurrency: int = 4,
        policy: RetryPolicy = FAST) -> list[EvaluationRow]:
    async def go() -> list[EvaluationRow]:
        processor = SingleTurnProcessor(policy=policy)
        config = RolloutProcessorConfig(completion_params=params, mcp_config_path="",
                                        semaphore=asyncio.Semaphore(concurrency))
        try:
            return list(await asyncio.gather(*processor(rows, config)))
        finally:
            await processor.acleanup()

    return asyncio.run(go())


def params(server, **extra: Any) -> dict[str, Any]:
    return {"model": "openai/scripted", "api_base": server.base_url, "temperature": 0.0, "max_tokens": 32, **extra}


def test_honours_every_completion_param(scripted_llm_factory) -> None:
    server = scripted_llm_factory(default="<answer>1</answer>")
    out = run(make_rows(2), params(server, temperature=0.7, max_tokens=99, top_p=0.5,
                                   extra_body={"repetition_penalty": 1.1}))
    body = server.requests[0].body
    assert body["model"] == "scripted" and body["temperature"] == 0.7 and body["max_tokens"] == 99
    assert body["top_p"] == 0.5 and body["repetition_penalty"] == 1.1
    assert "api_base" not in body and "extra_body" not in body
    assert [m.role for m in out[0].messages] == ["system", "user", "assistant"]
    assert out[0].messages[-1].content == "<answer>1</answer>"
    assert out[0].execution_metadata.finish_reason == "stop"
    assert out[0].execution_metadata.usage.total_tokens > 0


def test_reference_assistant_turn_is_never_sent_and_is_replaced(scripted_llm_factory) -> None:
    server = scripted_llm_factory(default="mine")
    out = run(make_rows(1, reference=True), params(server))
    assert [m["role"] for m in server.requests[0].body["messages"]] == ["system", "user"]
    assert [m.content for m in out[0].messages][-1] == "mine" and len(out[0].messages) == 3


def test_retries_resend_the_same_payload_and_do_not_duplicate_messages(scripted_llm_factory) -> None:
    server = scripted_llm_factory(default="ok", faults=[Fault("status", status=429, first_n=2),
                                                         Fault("malformed", malformed="no_choices", at={2})])
    out = run(make_rows(1), params(server), concurrency=1)
    bodies = [r.body for r in server.requests]
    assert len(bodies) == 4 and all(b == bodies[0] for b in bodies)
    assert len(out[0].messages) == 3 and not out[0].rollout_status.is_error()
    assert out[0].execution_metadata.extra["attempts"] == 4


def test_exhausted_retries_mark_the_row_errored_and_retryable(scripted_llm_factory) -> None:
    server = scripted_llm_factory(default="ok", faults=[Fault("status", status=503)])
    out = run(make_rows(1), params(server), concurrency=1)
    status = out[0].rollout_status
    assert status.is_error() and "HTTP 503" in status.message
    meta = status.details[0]["metadata"]
    assert meta["retryable"] is True and meta["attempts"] == FAST.max_retries + 1 and meta["status"] == 503
    assert len(out[0].messages) == 2  # nothing appended
    assert server.request_count == FAST.max_retries + 1


def test_client_errors_are_not_retried(scripted_llm_factory) -> None:
    server = scripted_llm_factory(default="ok", faults=[Fault("status", status=401)])
    out = run(make_rows(1), params(server))
    assert out[0].rollout_status.is_error() and server.request_count == 1
    assert out[0].rollout_status.details[0]["metadata"]["retryable"] is False


def peak_tracker(seconds: float):  # type: ignore[no-untyped-def]
    """A scripted reply that takes ``seconds`` and records how many requests were in flight at most."""
    state = {"now": 0, "peak": 0}

    async def slow(body: dict[str, Any]) -> str:
        state["now"] += 1
        state["peak"] = max(state["peak"], state["now"])
        await asyncio.sleep(seconds)
        state["now"] -= 1
        return "ok"

    return slow, state


def test_concurrency_is_bounded_by_the_semaphore(scripted_llm_factory) -> None:
    slow, state = peak_tracker(0.03)
    server = scripted_llm_factory(default=slow)
    out = run(make_rows(20), params(server), concurrency=3)
    assert all(not r.rollout_status.is_error() for r in out)
    assert state["peak"] == 3


def test_tool_call_turns_are_sent_with_empty_content() -> None:
    row = EvaluationRow(messages=[
        Message(role="user", content="weather?"),
        Message(role="assistant", content=None, tool_calls=[
            {"id": "call_1", "type": "function", "function": {"name": "get", "arguments": "{}"}}]),
        Message(role="tool", content="sunny", tool_call_id="call_1"),
    ])
    sent = request_messages(row)
    assert sent[1]["content"] == "" and sent[1]["tool_calls"][0]["id"] == "call_1"


def test_tool_call_replies_are_kept(scripted_llm_factory) -> None:
    server = scripted_llm_factory(default=Reply(tool_calls=[{"name": "web_search", "arguments": {"q": "x"}}]))
    out = run(make_rows(1), params(server))
    message = out[0].messages[-1]
    assert message.tool_calls[0].function.name == "web_search"
    assert out[0].execution_metadata.tool_call_count == 1


def test_payload_always_has_max_tokens() -> None:
    target = target_from_params({"model": "openai/m", "api_base": "http://127.0.0.1:1/v1"})
    payload = build_payload(target, {"model": "openai/m", "max_completion_tokens": 12}, [], None)
    assert payload == {"model": "m", "messages": [], "max_tokens": 12}


@pytest.mark.parametrize("body", [{}, {"choices": []}, {"choices": [{}]}, "oops"])
def test_malformed_bodies_are_retryable_failures(body: Any) -> None:
    with pytest.raises(RequestFailed) as info:
        parse_completion(body)
    assert info.value.retryable


def test_retry_after_is_honoured_and_backoff_is_capped() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=4.0)
    assert policy.delay(0, retry_after=2.5) == 2.5
    assert policy.delay(0, retry_after=100) == 4.0
    assert all(0.5 <= policy.delay(0) <= 1.0 for _ in range(20))
    assert all(policy.delay(10) <= 4.0 for _ in range(20))


def test_a_server_that_takes_one_request_at_a_time_gets_one(scripted_llm_factory) -> None:
    """llama.cpp's server serializes requests: more in flight would only queue and time out."""
    import dataclasses

    slow, state = peak_tracker(0.01)
    server = scripted_llm_factory(default=slow)
    single = dataclasses.replace(target_from_params(params(server)), max_concurrency=1)

    async def go() -> list[EvaluationRow]:
        processor = SingleTurnProcessor(resolver=lambda p: single, policy=FAST)
        config = RolloutProcessorConfig(completion_params=params(server), mcp_config_path="",
                                        semaphore=asyncio.Semaphore(8))
        try:
            return list(await asyncio.gather(*processor(make_rows(6), config), *processor(make_rows(4), config)))
        finally:
            await processor.acleanup()

    out = asyncio.run(go())
    assert len(out) == 10 and all(not r.rollout_status.is_error() for r in out)
    assert state["peak"] == 1


def test_an_unreachable_server_fails_rows_fast_and_retryable() -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    policy = RetryPolicy(max_retries=2, base_delay=0.05, max_delay=0.1, timeout=1.0)
    out = run(make_rows(40), {"model": "openai/m", "api_base": f"http://127.0.0.1:{port}/v1", "max_tokens": 8},
              concurrency=2, policy=policy)
    assert all(r.rollout_status.is_error() for r in out)
    metas = [r.rollout_status.details[0]["metadata"] for r in out]
    assert all(m["retryable"] for m in metas)
    assert "cannot connect to http://127.0.0.1" in out[0].rollout_status.message
    assert sum(1 for r in out if r.rollout_status.message.startswith("not sent:")) >= 30

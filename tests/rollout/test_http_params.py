"""Per-model param mapping for API providers, verbatim params for OpenAI-compatible servers, and
empty replies as errors. Request bodies are the ones the scripted server recorded."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import aiohttp
import pytest
from eval_protocol.models import EvaluationRow, Message
from eval_protocol.pytest.types import RolloutProcessorConfig

from metis_pytest.backends import resolve_target
from metis_pytest.backends.base import ModelTarget
from metis_pytest.options import MetisConfig
from metis_pytest.rollout.http import (
    LITELLM_MAPPER,
    Completion,
    RequestFailed,
    RetryPolicy,
    complete,
    map_params,
    parse_completion,
)
from metis_pytest.rollout.single_turn import SingleTurnProcessor
from metis_pytest.testing import Reply

FAST = RetryPolicy(max_retries=2, base_delay=0.01, max_delay=0.02, timeout=2.0)
MESSAGES = [{"role": "user", "content": "what is 6*7?"}]


def api_target(server: Any, model: str) -> ModelTarget:
    return ModelTarget(label=model, backend="api", litellm_model=model, api_base=server.base_url, openai_wire=True)


def public(server: Any, model: str, **params: Any) -> dict[str, Any]:
    return {"model": model, "api_base": server.base_url, "temperature": 0.0, "max_tokens": 32, **params}


def send(target: ModelTarget, params: dict[str, Any], policy: RetryPolicy = FAST) -> Completion:
    async def go() -> Completion:
        async with aiohttp.ClientSession() as session:
            return await complete(session, target, params, MESSAGES, None, policy)

    return asyncio.run(go())


def sent_body(server: Any, target: ModelTarget, params: dict[str, Any]) -> tuple[dict[str, Any], Completion]:
    completion = send(target, params)
    return server.requests[-1].body, completion


# --------------------------------------------------------------------------- api backend: LiteLLM mapping


def test_o_series_gets_max_completion_tokens_and_no_temperature(scripted_llm_factory) -> None:
    server = scripted_llm_factory(default="<answer>42</answer>")
    target = api_target(server, "openai/o3-mini")
    body, completion = sent_body(server, target, public(server, "openai/o3-mini"))
    assert body["model"] == "o3-mini"
    assert body["max_completion_tokens"] == 32
    assert "max_tokens" not in body and "temperature" not in body
    assert "stream" not in body and "extra_body" not in body and "api_base" not in body
    assert completion.message["content"] == "<answer>42</answer>"
    # the change is recorded on the completion, not made silently
    record = completion.extra["param_mapping"]
    assert record["mapper"] == LITELLM_MAPPER
    assert record["dropped"] == ["temperature"]
    assert record["renamed"] == {"max_tokens": "max_completion_tokens"}


def test_o_series_keeps_the_default_temperature_of_one(scripted_llm_factory) -> None:
    """LiteLLM keeps ``temperature=1`` for o-series models (the only value they accept)."""
    server = scripted_llm_factory()
    target = api_target(server, "openai/o3-mini")
    body, completion = sent_body(server, target, public(server, "openai/o3-mini", temperature=1))
    assert body["temperature"] == 1 and body["max_completion_tokens"] == 32 and "max_tokens" not in body
    assert completion.extra["param_mapping"]["dropped"] == []


@pytest.mark.parametrize("model", ["openai/o1", "openai/o3", "openai/o4-mini", "openai/gpt-5", "openai/gpt-5-mini"])
def test_other_reasoning_models_are_mapped_too(scripted_llm_factory, model: str) -> None:
    server = scripted_llm_factory()
    body, completion = sent_body(server, api_target(server, model), public(server, model, temperature=0.3))
    assert body["max_completion_tokens"] == 32 and "max_tokens" not in body and "temperature" not in body
    assert "temperature" in completion.extra["param_mapping"]["dropped"]


def test_reasoning_effort_passes_through_for_o_series(scripted_llm_factory) -> None:
    server = scripted_llm_factory()
    target = api_target(server, "openai/o3-mini")
    body, _ = sent_body(server, target, public(server, "openai/o3-mini", reasoning_effort="high"))
    assert body["reasoning_effort"] == "high" and body["max_completion_tokens"] == 32


def test_unsupported_params_are_dropped_and_named(scripted_llm_factory) -> None:
    server = scripted_llm_factory()
    target = api_target(server, "openai/o3-mini")
    body, completion = sent_body(server, target, public(server, "openai/o3-mini", logprobs=True, top_p=0.5))
    assert "logprobs" not in body and "top_p" not in body
    assert set(completion.extra["param_mapping"]["dropped"]) == {"temperature", "logprobs", "top_p"}


def test_gpt_4o_mini_is_sent_max_tokens_and_temperature_unchanged(scripted_llm_factory) -> None:
    server = scripted_llm_factory()
    target = api_target(server, "openai/gpt-4o-mini")
    body, completion = sent_body(server, target, public(server, "openai/gpt-4o-mini", temperature=0.7, top_p=0.9))
    assert body == {"model": "gpt-4o-mini", "messages": MESSAGES, "temperature": 0.7, "max_tokens": 32,
                    "top_p": 0.9}
    assert "param_mapping" not in completion.extra  # nothing changed, nothing to record


def test_reasoning_effort_on_a_model_without_reasoning_is_dropped_and_named(scripted_llm_factory) -> None:
    server = scripted_llm_factory()
    target = api_target(server, "openai/gpt-4o-mini")
    body, completion = sent_body(server, target, public(server, "openai/gpt-4o-mini", reasoning_effort="high"))
    assert "reasoning_effort" not in body and body["max_tokens"] == 32 and body["temperature"] == 0.0
    assert completion.extra["param_mapping"]["dropped"] == ["reasoning_effort"]


def test_extra_body_is_merged_for_api_targets(scripted_llm_factory) -> None:
    server = scripted_llm_factory()
    target = api_target(server, "openai/o3-mini")
    params = public(server, "openai/o3-mini", top_k=5, extra_body={"service_tier": "flex", "seed_text": "x"})
    body, _ = sent_body(server, target, params)
    assert body["service_tier"] == "flex" and body["seed_text"] == "x" and body["top_k"] == 5
    assert "extra_body" not in body and body["max_completion_tokens"] == 32


def test_the_api_backend_target_is_mapped(scripted_llm_factory) -> None:
    """What ``--backend api --model o3-mini`` resolves to (``openai/o3-mini``) gets the mapping."""
    server = scripted_llm_factory()
    target = resolve_target("o3-mini", MetisConfig(backend="api", api_base=server.base_url))
    assert target.backend == "api" and target.litellm_model == "openai/o3-mini" and target.openai_wire
    params = target.public_params(temperature=0.0, max_tokens=64)
    body, _ = sent_body(server, target, params)
    assert body["max_completion_tokens"] == 64 and "temperature" not in body and "max_tokens" not in body


def test_the_mapping_is_cached_per_model_and_params(scripted_llm_factory) -> None:
    server = scripted_llm_factory()
    target = api_target(server, "openai/o3-mini")
    params = public(server, "openai/o3-mini")
    first = map_params(target, params)
    assert map_params(target, dict(params)) is first
    assert map_params(target, {**params, "max_tokens": 33}) is not first
    with pytest.raises(TypeError):
        first.params["temperature"] = 0.5  # type: ignore[index]  # shared by every row: read-only


def test_the_mapping_is_recorded_on_every_row(scripted_llm_factory) -> None:
    server = scripted_llm_factory(default="<answer>1</answer>")
    target = api_target(server, "openai/o3-mini")
    params = public(server, "openai/o3-mini")
    rows = [EvaluationRow(messages=[Message(role="user", content=f"q{i}")]) for i in range(3)]

    async def go() -> list[EvaluationRow]:
        processor = SingleTurnProcessor(resolver=lambda _: target, policy=FAST)
        config = RolloutProcessorConfig(completion_params=params, mcp_config_path="",
                                        semaphore=asyncio.Semaphore(2))
        try:
            return list(await asyncio.gather(*processor(rows, config)))
        finally:
            await processor.acleanup()

    out = asyncio.run(go())
    assert all(r.execution_metadata.extra["param_mapping"]["dropped"] == ["temperature"] for r in out)
    assert all("temperature" not in r.body and r.body["max_completion_tokens"] == 32 for r in server.requests)


# --------------------------------------------------------------------------- --backend openai / local: verbatim


def test_openai_compatible_backend_sends_params_verbatim(scripted_llm_factory) -> None:
    """A server of our own (vLLM, llama.cpp) serving a model it calls ``o3-mini`` gets what the user set."""
    server = scripted_llm_factory()
    target = resolve_target("o3-mini", MetisConfig(backend="openai", api_base=server.base_url))
    assert target.backend == "openai" and target.litellm_model == "openai/o3-mini"
    body, completion = sent_body(server, target, public(server, target.litellm_model, reasoning_effort="high"))
    assert body == {"model": "o3-mini", "messages": MESSAGES, "temperature": 0.0, "max_tokens": 32,
                    "reasoning_effort": "high"}
    assert "param_mapping" not in completion.extra


def test_local_backend_always_sends_max_tokens(scripted_llm_factory) -> None:
    server = scripted_llm_factory()
    target = dataclasses.replace(api_target(server, "openai/o3-mini"), backend="local", served_model="o3-mini")
    params = {"model": "openai/o3-mini", "api_base": server.base_url, "temperature": 0.2,
              "max_completion_tokens": 16, "extra_body": {"repetition_penalty": 1.1}}
    body, completion = sent_body(server, target, params)
    assert body == {"model": "o3-mini", "messages": MESSAGES, "temperature": 0.2, "max_tokens": 16,
                    "repetition_penalty": 1.1}
    assert completion.extra["param_mapping"]["renamed"] == {"max_completion_tokens": "max_tokens"}


# --------------------------------------------------------------------------- empty replies


def body_with(message: Any, *, finish_reason: str = "stop", drop: bool = False) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": 0, "finish_reason": finish_reason}
    if not drop:
        choice["message"] = message
    return {"id": "x", "object": "chat.completion", "model": "m", "choices": [choice]}


@pytest.mark.parametrize("body", [
    body_with(None, drop=True),
    body_with(None),
    body_with({}),
    body_with({"role": "assistant"}),
    body_with({"role": "assistant", "content": None}),
    body_with({"role": "assistant", "content": ""}),
    body_with({"role": "assistant", "content": "  \n"}),
    body_with({"role": "assistant", "content": "", "tool_calls": []}),
    body_with({"role": "assistant", "content": [{"type": "text", "text": ""}]}),
    body_with({"role": "assistant", "content": None, "reasoning_content": "6*7 is 42"}, finish_reason="length"),
], ids=["missing", "null", "empty-dict", "role-only", "null-content", "empty-content", "blank-content",
        "empty-tool-calls", "empty-parts", "reasoning-only"])
def test_empty_replies_are_retryable_errors(body: dict[str, Any]) -> None:
    with pytest.raises(RequestFailed) as info:
        parse_completion(body)
    assert info.value.retryable
    message = str(info.value)
    assert "empty message" in message or "malformed completion" in message
    if "message" in body["choices"][0]:
        assert "empty message" in message


def test_a_reasoning_only_reply_says_so() -> None:
    with pytest.raises(RequestFailed, match=r"empty message \(reasoning only.*finish_reason=length"):
        parse_completion(body_with({"role": "assistant", "content": "", "reasoning_content": "hmm"},
                                   finish_reason="length"))


@pytest.mark.parametrize("message", [
    {"role": "assistant", "content": "42"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
    {"role": "assistant", "content": [{"type": "text", "text": "42"}]},
    {"role": "assistant", "content": None, "refusal": "I can't help with that."},
    {"role": "assistant", "content": "42", "reasoning_content": "6*7"},
], ids=["text", "tool-calls", "text-parts", "refusal", "text-and-reasoning"])
def test_replies_with_an_answer_are_completions(message: dict[str, Any]) -> None:
    assert parse_completion(body_with(message)).message == message


def test_an_empty_reply_is_retried_then_errors(scripted_llm_factory) -> None:
    server = scripted_llm_factory(default=Reply(content=""))
    with pytest.raises(RequestFailed, match="empty message") as info:
        send(api_target(server, "openai/gpt-4o-mini"), public(server, "openai/gpt-4o-mini"))
    assert info.value.retryable and info.value.attempts == FAST.max_retries + 1
    assert server.request_count == FAST.max_retries + 1


def test_an_empty_reply_then_an_answer_succeeds(scripted_llm_factory) -> None:
    answers = iter(["", "<answer>42</answer>"])
    server = scripted_llm_factory(default=lambda _body: next(answers))
    completion = send(api_target(server, "openai/gpt-4o-mini"), public(server, "openai/gpt-4o-mini"))
    assert completion.message["content"] == "<answer>42</answer>" and completion.attempts == 2

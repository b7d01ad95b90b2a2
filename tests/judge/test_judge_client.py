"""The LLM-judge client against the scripted server (in-process, fast)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, Field

from metis_pytest.backends.base import ModelTarget
from metis_pytest.judge import JudgeClient, JudgePrompt, Verdict, extract_json
from metis_pytest.rollout.http import RetryPolicy
from metis_pytest.testing import Fault

FAST = RetryPolicy(max_retries=3, base_delay=0.01, max_delay=0.05, timeout=2.0)

PROMPT = JudgePrompt(
    name="correctness",
    version="3",
    system='You grade answers from 0 to 10. Example reply: {"score": 7, "reason": "mostly right"}',
    user="Question: $question\nAnswer: ${answer}",
)
VARS = {"question": "What is 2+2?", "answer": "4"}
GOOD = '{"score": 9, "reason": "correct"}'


class Grade(BaseModel):
    score: int = Field(ge=0, le=10)
    reason: str


def judge_target(server: Any, **extra: Any) -> ModelTarget:
    return ModelTarget(label="judge", backend="test", litellm_model="openai/judge-model",
                       api_base=server.base_url, **extra)


def sequence(*replies: str) -> Callable[[dict[str, Any]], str]:
    """A scripted reply giving ``replies`` in order, then repeating the last one."""
    queue = list(replies)

    def reply(body: dict[str, Any]) -> str:
        return queue.pop(0) if len(queue) > 1 else queue[0]

    return reply


async def ask(client: JudgeClient, prompt: JudgePrompt = PROMPT,
              variables: dict[str, str] = VARS) -> Verdict[Grade]:
    return await client.judge(prompt, variables, Grade)


async def test_valid_json_gives_a_valid_verdict_naming_judge_and_prompt(scripted_llm_factory) -> None:
    server = scripted_llm_factory(default=GOOD)
    async with JudgeClient(judge_target(server), policy=FAST) as client:
        verdict = await ask(client)
    assert verdict.valid and isinstance(verdict.data, Grade) and verdict.data.score == 9
    assert verdict.judge_model == "openai/judge-model" and verdict.prompt_version == "3"
    assert verdict.prompt_name == "correctness" and verdict.attempts == 1 and not verdict.cached
    assert verdict.error is None and verdict.raw == GOOD
    record = verdict.record()
    assert record["judge_model"] == "openai/judge-model" and record["prompt_version"] == "3"
    assert record["data"] == {"score": 9, "reason": "correct"} and record["valid"] is True
    json.dumps(record)
    body = server.requests[0].body
    assert body["model"] == "judge-model" and body["temperature"] == 0.0 and body["max_tokens"] == 1024
    system, user = body["messages"]
    assert system["role"] == "system" and '{"score": 7, "reason": "mostly right"}' in system["content"]
    assert "JSON schema" in system["content"] and '"reason"' in system["content"]
    assert user == {"role": "user", "content": "Question: What is 2+2?\nAnswer: 4"}


async def test_prose_then_json_is_valid_after_a_corrective_retry(scripted_llm_factory) -> None:
    server = scripted_llm_factory(default=sequence("The answer looks right to me, 9/10.", GOOD))
    async with JudgeClient(judge_target(server), policy=FAST) as client:
        verdict = await ask(client)
    assert verdict.valid and verdict.attempts == 2 and verdict.data is not None and verdict.data.score == 9
    assert server.request_count == 2
    second = server.requests[1].body["messages"]
    assert [m["role"] for m in second] == ["system", "user", "assistant", "user"]
    assert second[2]["content"] == "The answer looks right to me, 9/10."
    assert "not JSON" in second[3]["content"]


async def test_prose_forever_is_invalid_and_retryable_with_no_score(scripted_llm_factory) -> None:
    server = scripted_llm_factory(default="I think it is fine.")
    async with JudgeClient(judge_target(server), policy=FAST, max_invalid_retries=2) as client:
        verdict = await ask(client)
    assert not verdict.valid and verdict.retryable and verdict.data is None
    assert verdict.attempts == 3 and server.request_count == 3
    assert verdict.raw == "I think it is fine." and verdict.error and "no valid verdict" in verdict.error
    assert verdict.record()["data"] is None


async def test_json_that_fails_the_schema_is_retried(scripted_llm_factory) -> None:
    server = scripted_llm_factory(default=sequence('{"score": 42, "reason": "great"}', '{"score": 8}', GOOD))
    async with JudgeClient(judge_target(server), policy=FAST) as client:
        verdict = await ask(client)
    assert verdict.valid and verdict.attempts == 3 and verdict.data is not None and verdict.data.score == 9
    corrections = [r.body["messages"][-1]["content"] for r in server.requests[1:]]
    assert "schema" in corrections[0] and "score" in corrections[0]
    assert "reason" in corrections[1]


async def test_a_fenced_json_block_with_prose_is_accepted(scripted_llm_factory) -> None:
    reply = f"Here is my verdict:\n```json\n{GOOD}\n```\nHope that helps."
    server = scripted_llm_factory(default=reply)
    async with JudgeClient(judge_target(server), policy=FAST) as client:
        verdict = await ask(client)
    assert verdict.valid and verdict.attempts == 1 and verdict.raw == reply


@pytest.mark.parametrize("text", [
    GOOD,
    f"```json\n{GOOD}\n```",
    f"```\n{GOOD}```",
    f"Sure! {GOOD} That is all.",
    f"<think>maybe {{score}}?</think>{GOOD}",
    f"Scores are in {{0..10}}. Verdict: {GOOD}",
])
def test_extract_json_finds_the_object(text: str) -> None:
    assert extract_json(text) == {"score": 9, "reason": "correct"}


def test_extract_json_keeps_braces_inside_strings() -> None:
    assert extract_json('ok: {"score": 1, "reason": "uses {x} and }"} end') == {"score": 1, "reason": "uses {x} and }"}


@pytest.mark.parametrize("text", ["", "no json here", "[1, 2]", "{broken"])
def test_extract_json_refuses_non_objects(text: str) -> None:
    with pytest.raises(ValueError):
        extract_json(text)


async def test_a_429_then_ok_is_retried_by_the_transport(scripted_llm_factory) -> None:
    server = scripted_llm_factory(default=GOOD, faults=[Fault("status", status=429, first_n=1)])
    async with JudgeClient(judge_target(server), policy=FAST) as client:
        verdict = await ask(client)
    assert verdict.valid and verdict.attempts == 1 and server.request_count == 2


async def test_http_400_is_invalid_and_not_retryable(scripted_llm_factory) -> None:
    server = scripted_llm_factory(default=GOOD, faults=[Fault("status", status=400, message="bad schema")])
    async with JudgeClient(judge_target(server), policy=FAST) as client:
        verdict = await ask(client)
    assert not verdict.valid and not verdict.retryable and verdict.data is None
    assert verdict.error and "HTTP 400" in verdict.error and server.request_count == 1


async def test_exhausted_transport_retries_are_invalid_and_retryable(scripted_llm_factory) -> None:
    server = scripted_llm_factory(default=GOOD, faults=[Fault("status", status=503)])
    async with JudgeClient(judge_target(server), policy=FAST) as client:
        verdict = await ask(client)
    assert not verdict.valid and verdict.retryable and server.request_count == FAST.max_retries + 1


async def test_a_cache_hit_sends_no_request(scripted_llm_factory, tmp_path: Path) -> None:
    server = scripted_llm_factory(default=GOOD)
    async with JudgeClient(judge_target(server), policy=FAST, cache_dir=tmp_path) as client:
        first = await ask(client)
    async with JudgeClient(judge_target(server), policy=FAST, cache_dir=tmp_path) as client:
        second = await ask(client)
        assert server.request_count == 1
        assert second.valid and second.cached and second.attempts == 0 and second.data == first.data
        assert second.judge_model == "openai/judge-model" and second.prompt_version == "3"
        bumped = JudgePrompt(PROMPT.name, "4", PROMPT.system, PROMPT.user)
        third = await ask(client, bumped)
        other_answer = await ask(client, variables={**VARS, "answer": "5"})
    assert not first.cached and not third.cached and not other_answer.cached
    assert server.request_count == 3
    files = sorted(tmp_path.glob("*.json"))
    assert len(files) == 3 and not list(tmp_path.glob(".*.tmp"))
    entry = json.loads(files[0].read_text())
    assert entry["judge_model"] == "openai/judge-model" and "data" in entry


async def test_other_sampling_params_miss_the_cache(scripted_llm_factory, tmp_path: Path) -> None:
    server = scripted_llm_factory(default=GOOD)
    async with JudgeClient(judge_target(server), policy=FAST, cache_dir=tmp_path) as client:
        await ask(client)
    async with JudgeClient(judge_target(server), policy=FAST, cache_dir=tmp_path,
                           params={"temperature": 0.7}) as client:
        verdict = await ask(client)
    assert not verdict.cached and server.request_count == 2
    assert server.requests[1].body["temperature"] == 0.7 and server.requests[1].body["max_tokens"] == 1024


async def test_invalid_verdicts_are_not_cached(scripted_llm_factory, tmp_path: Path) -> None:
    server = scripted_llm_factory(default="no json, sorry")
    async with JudgeClient(judge_target(server), policy=FAST, cache_dir=tmp_path, max_invalid_retries=1) as client:
        first = await ask(client)
        assert not first.valid and server.request_count == 2
        assert not list(tmp_path.glob("*.json"))
        server.set_rules([], default=GOOD)
        second = await ask(client)
    assert second.valid and not second.cached and server.request_count == 3
    assert len(list(tmp_path.glob("*.json"))) == 1


async def test_a_corrupt_cache_file_is_a_miss(scripted_llm_factory, tmp_path: Path) -> None:
    server = scripted_llm_factory(default=GOOD)
    async with JudgeClient(judge_target(server), policy=FAST, cache_dir=tmp_path) as client:
        await ask(client)
        (path,) = tmp_path.glob("*.json")
        path.write_text("{half a fi")
        verdict = await ask(client)
    assert verdict.valid and not verdict.cached and server.request_count == 2
    assert json.loads(path.read_text())["data"]["score"] == 9  # rewritten


async def test_no_api_key_reaches_the_cache_or_the_record(scripted_llm_factory, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "sk-judge-secret-0123456789"
    monkeypatch.setenv("METIS_TEST_JUDGE_KEY", secret)
    server = scripted_llm_factory(default=GOOD)
    target = judge_target(server, api_key_env="METIS_TEST_JUDGE_KEY")
    async with JudgeClient(target, policy=FAST, cache_dir=tmp_path) as client:
        verdict = await ask(client)
        cached = await ask(client)
    assert server.requests[0].headers["Authorization"] == f"Bearer {secret}"  # the transport sends it
    assert verdict.valid and cached.cached
    for text in [json.dumps(verdict.record()), json.dumps(cached.record()), repr(verdict),
                 *(p.read_text() for p in tmp_path.iterdir())]:
        assert secret not in text
    with pytest.raises(ValueError, match="api_key"):
        JudgeClient(target, params={"api_key": secret})


async def test_concurrency_is_bounded(scripted_llm_factory) -> None:
    state = {"now": 0, "peak": 0}

    async def slow(body: dict[str, Any]) -> str:
        state["now"] += 1
        state["peak"] = max(state["peak"], state["now"])
        await asyncio.sleep(0.03)
        state["now"] -= 1
        return GOOD

    server = scripted_llm_factory(default=slow)
    async with JudgeClient(judge_target(server), policy=FAST, concurrency=3) as client:
        verdicts = await asyncio.gather(*(ask(client, variables={**VARS, "answer": str(i)}) for i in range(12)))
    assert all(v.valid for v in verdicts) and server.request_count == 12
    assert state["peak"] == 3

    state["peak"] = 0
    async with JudgeClient(judge_target(server, max_concurrency=1), policy=FAST, concurrency=8) as client:
        verdicts = await asyncio.gather(*(ask(client, variables={**VARS, "answer": str(i)}) for i in range(4)))
    assert all(v.valid for v in verdicts) and state["peak"] == 1


async def test_response_format_carries_the_schema_when_supported(scripted_llm_factory) -> None:
    server = scripted_llm_factory(default=GOOD)
    async with JudgeClient(judge_target(server), policy=FAST) as client:
        await ask(client)
    async with JudgeClient(judge_target(server), policy=FAST, supports_response_format=False) as client:
        plain = await ask(client)
    with_format, without = (r.body for r in server.requests)
    assert with_format["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "Grade", "schema": Grade.model_json_schema(), "strict": False},
    }
    assert "response_format" not in without and plain.valid
    assert "JSON schema" in without["messages"][0]["content"]  # the prompt still asks for it


async def test_llama_cpp_gets_the_schema_as_a_json_object_format(scripted_llm_factory) -> None:
    """llama-cpp-python's server refuses OpenAI's json_schema (HTTP 500); it takes json_object + schema."""
    from dataclasses import replace

    server = scripted_llm_factory(default=GOOD)
    async with JudgeClient(replace(judge_target(server), json_format="json_object"), policy=FAST) as client:
        assert (await ask(client)).valid
    assert server.requests[0].body["response_format"] == {"type": "json_object", "schema": Grade.model_json_schema()}


async def test_the_judge_only_talks_to_its_own_target(scripted_llm_factory) -> None:
    policy_server = scripted_llm_factory(default="policy answer")
    judge_server = scripted_llm_factory(default=sequence("prose first", GOOD))
    # A harness might hand over the policy's public params: their model and api_base are ignored.
    leaked = {"model": "openai/policy-model", "api_base": policy_server.base_url, "temperature": 0.0}
    async with JudgeClient(judge_target(judge_server), policy=FAST, params=leaked) as client:
        verdicts = await asyncio.gather(*(ask(client, variables={**VARS, "answer": str(i)}) for i in range(3)))
    assert all(v.valid for v in verdicts)
    assert policy_server.request_count == 0
    assert judge_server.request_count == 4
    assert {r.body["model"] for r in judge_server.requests} == {"judge-model"}


def test_the_client_works_across_event_loops(scripted_llm_factory) -> None:
    server = scripted_llm_factory(default=GOOD)
    client = JudgeClient(judge_target(server), policy=FAST)

    async def once(answer: str) -> Verdict[Grade]:
        try:
            return await ask(client, variables={**VARS, "answer": answer})
        finally:
            await client.aclose()

    verdicts = [asyncio.run(once(answer)) for answer in ("4", "5", "6")]
    assert all(v.valid for v in verdicts) and server.request_count == 3


def test_a_missing_variable_is_an_error_not_a_verdict() -> None:
    with pytest.raises(KeyError, match="answer"):
        PROMPT.render({"question": "q"})
    system, user = JudgePrompt("p", "1", "Cost: $$5", "Say $word").render({"word": "hi"})
    assert system == "Cost: $5" and user == "Say hi"


def test_a_fallback_cache_is_read_after_this_one_and_a_hit_there_is_copied_here(tmp_path) -> None:
    from metis_pytest.judge.cache import JudgeCache

    key = "a" * 64
    recorded = JudgeCache(tmp_path / "recorded")
    recorded.put(key, {"verdict": {"passes": True}})
    cache = JudgeCache(tmp_path / "new", fallbacks=(tmp_path / "recorded", tmp_path / "absent"))
    assert cache.get("b" * 64) is None
    assert cache.get(key)["verdict"] == {"passes": True}
    assert (tmp_path / "new" / f"{key}.json").exists()  # this run's folder now holds what it used
    assert JudgeCache(tmp_path / "new").get(key)["verdict"] == {"passes": True}

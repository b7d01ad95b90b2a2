"""Tests for the scripted OpenAI-compatible chat server."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from openai import AsyncOpenAI, OpenAI

from metis_pytest.testing import Fault, Reply, Rule, ScriptedServer, run_in_subprocess
from metis_pytest.testing.fixtures import ScriptedServerFactory

MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "What is 6 times 7?"}]


def post_chat(base_url: str, body: dict[str, Any], timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    """POST a chat request with urllib; return status, headers and raw body (errors included)."""
    request = urllib.request.Request(
        f"{base_url}/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, dict(error.headers), error.read()


def client(server: ScriptedServer, **kwargs: Any) -> OpenAI:
    """A synchronous OpenAI client for ``server`` that does not retry."""
    return OpenAI(base_url=server.base_url, api_key="x", max_retries=0, **kwargs)


def ask(server: ScriptedServer, text: str = "What is 6 times 7?", **kwargs: Any) -> Any:
    """Send one chat completion with the openai client."""
    with client(server) as c:
        return c.chat.completions.create(
            model="test-model", messages=[{"role": "user", "content": text}], **kwargs
        )


# ------------------------------------------------------------------ shape and scripting


async def test_default_reply_shape_with_async_openai_client(scripted_llm: ScriptedServer) -> None:
    async with AsyncOpenAI(base_url=scripted_llm.base_url, api_key="x", max_retries=0) as c:
        completion = await c.chat.completions.create(model="my-model", messages=MESSAGES)
    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == "my-model"
    assert completion.created > 0
    choice = completion.choices[0]
    assert choice.index == 0
    assert choice.message.role == "assistant"
    assert choice.message.content == "OK"
    assert choice.message.tool_calls is None
    assert choice.finish_reason == "stop"
    assert choice.logprobs is None
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 7  # "be brief" + "What is 6 times 7?"
    assert completion.usage.completion_tokens == 1
    assert completion.usage.total_tokens == 8


def test_other_endpoints_and_unprefixed_paths(scripted_llm: ScriptedServer) -> None:
    root = scripted_llm.base_url.removesuffix("/v1")
    with urllib.request.urlopen(f"{root}/health", timeout=5) as response:
        assert json.load(response) == {"status": "ok"}
    for url in (f"{root}/v1/models", f"{root}/models"):
        with urllib.request.urlopen(url, timeout=5) as response:
            models = json.load(response)
        assert models["object"] == "list" and models["data"][0]["object"] == "model"
    status, _, raw = post_chat(root, {"model": "m", "messages": MESSAGES})
    assert status == 200 and json.loads(raw)["choices"][0]["message"]["content"] == "OK"
    with client(scripted_llm) as c:
        assert [m.id for m in c.models.list()] == ["scripted-model"]


def test_regex_and_callable_rules(scripted_llm_factory: ScriptedServerFactory) -> None:
    server = scripted_llm_factory(
        rules=[
            Rule(r"capital of France", "Paris"),
            Rule(lambda body: body.get("temperature") == 0.5, "warm"),
            Rule(r"echo", lambda body: f"you said: {body['messages'][-1]['content']}"),
        ],
        default="dunno",
    )
    assert ask(server, "What is the capital of France?").choices[0].message.content == "Paris"
    assert ask(server, "hi", temperature=0.5).choices[0].message.content == "warm"
    assert ask(server, "echo this").choices[0].message.content == "you said: echo this"
    assert ask(server, "something else").choices[0].message.content == "dunno"


def test_regex_matches_last_user_message_only(scripted_llm: ScriptedServer) -> None:
    scripted_llm.script((r"apple", "fruit"))
    messages = [
        {"role": "user", "content": "apple"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{"type": "text", "text": "banana"}]},
    ]
    status, _, raw = post_chat(scripted_llm.base_url, {"model": "m", "messages": messages})
    assert status == 200 and json.loads(raw)["choices"][0]["message"]["content"] == "OK"


async def test_async_callable_reply_and_runtime_rescript(scripted_llm: ScriptedServer) -> None:
    async def slow_reply(body: dict[str, Any]) -> Reply:
        await asyncio.sleep(0)
        return Reply(content="async " + body["model"], finish_reason="length")

    scripted_llm.set_rules([Rule(None, slow_reply)])
    async with AsyncOpenAI(base_url=scripted_llm.base_url, api_key="x", max_retries=0) as c:
        first = await c.chat.completions.create(model="m1", messages=MESSAGES)
        scripted_llm.script(default="changed")
        second = await c.chat.completions.create(model="m2", messages=MESSAGES)
    assert first.choices[0].message.content == "async m1"
    assert first.choices[0].finish_reason == "length"
    assert second.choices[0].message.content == "changed"


def test_tool_call_reply_parsed_by_openai_client(scripted_llm: ScriptedServer) -> None:
    scripted_llm.script(
        (
            r"weather",
            Reply(tool_calls=[
                {"name": "get_weather", "arguments": {"city": "Paris"}},
                {"name": "get_time", "arguments": '{"tz": "CET"}'},
            ]),
        )
    )
    message = ask(scripted_llm, "weather in Paris?").choices[0]
    assert message.finish_reason == "tool_calls"
    assert message.message.content is None
    calls = message.message.tool_calls
    assert calls is not None and len(calls) == 2
    assert calls[0].id == "call_0" and calls[1].id == "call_1"
    assert calls[0].type == "function"
    assert calls[0].function.name == "get_weather"
    assert json.loads(calls[0].function.arguments) == {"city": "Paris"}
    assert json.loads(calls[1].function.arguments) == {"tz": "CET"}


def test_logprobs(scripted_llm: ScriptedServer) -> None:
    scripted_llm.script(default="the answer is 42")
    choice = ask(scripted_llm, logprobs=True, top_logprobs=3).choices[0]
    assert choice.logprobs is not None and choice.logprobs.content is not None
    tokens = choice.logprobs.content
    assert [t.token for t in tokens] == ["the", " answer", " is", " 42"]
    assert [t.logprob for t in tokens] == pytest.approx([-0.01, -0.11, -0.21, -0.31])
    assert tokens[1].bytes == list(b" answer")
    assert len(tokens[0].top_logprobs) == 3
    assert tokens[0].top_logprobs[0].token == "the"
    assert ask(scripted_llm, logprobs=True).choices[0].logprobs.content[0].top_logprobs == []


def test_scripted_reply_error_is_a_500(scripted_llm: ScriptedServer) -> None:
    scripted_llm.script(default=lambda body: 1 / 0)
    status, _, raw = post_chat(scripted_llm.base_url, {"model": "m", "messages": MESSAGES})
    assert status == 500 and "ZeroDivisionError" in json.loads(raw)["error"]["message"]


def test_bad_request_bodies(scripted_llm: ScriptedServer) -> None:
    request = urllib.request.Request(f"{scripted_llm.base_url}/chat/completions", data=b"{nope")
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(request, timeout=5)
    error.value.close()
    assert error.value.code == 400
    status, _, _ = post_chat(scripted_llm.base_url, {"model": "m", "messages": MESSAGES, "stream": True})
    assert status == 400
    assert [r.status for r in scripted_llm.requests] == [400, 400]
    assert scripted_llm.requests[0].body is None


# ------------------------------------------------------------------ latency and faults


def test_latency_is_applied_per_request(scripted_llm_factory: ScriptedServerFactory) -> None:
    server = scripted_llm_factory(latency=0.2)
    assert post_chat(server.base_url, {"model": "m", "messages": MESSAGES})[0] == 200
    server.set_latency(lambda index: 0.0)
    post_chat(server.base_url, {"model": "m", "messages": MESSAGES})
    server.set_latency(lambda index: 0.01 * index)
    post_chat(server.base_url, {"model": "m", "messages": MESSAGES})
    assert [r.latency_s for r in server.requests] == pytest.approx([0.2, 0.0, 0.02])
    assert [r.status for r in server.requests] == [200, 200, 200]


async def test_latency_holds_concurrent_requests_in_flight_together(
    scripted_llm_factory: ScriptedServerFactory,
) -> None:
    # Each request waits on a barrier inside the latency window, so the server can only answer
    # if it holds all of them at once: the latency does not serialise requests.
    server = scripted_llm_factory(latency=0.05)
    arrived = asyncio.Event()
    count = 0

    async def wait_for_all(body: dict[str, Any]) -> str:
        nonlocal count
        count += 1
        if count == 5:
            arrived.set()
        await arrived.wait()
        return "together"

    server.script(default=wait_for_all)
    async with AsyncOpenAI(base_url=server.base_url, api_key="x", max_retries=0, timeout=30.0) as c:
        answers = await asyncio.gather(*(
            c.chat.completions.create(model="m", messages=MESSAGES) for _ in range(5)
        ))
    assert [a.choices[0].message.content for a in answers] == ["together"] * 5
    assert server.peak_in_flight == 5
    assert all(r.latency_s == pytest.approx(0.05) for r in server.requests)


def test_429_with_retry_after_and_error_json(scripted_llm_factory: ScriptedServerFactory) -> None:
    server = scripted_llm_factory(faults=[Fault("status", status=429, retry_after=2)])
    status, headers, raw = post_chat(server.base_url, {"model": "m", "messages": MESSAGES})
    assert status == 429
    assert headers["Retry-After"] == "2"
    error = json.loads(raw)["error"]
    assert error["type"] == "rate_limit_error" and error["code"] == "rate_limit_exceeded"
    with pytest.raises(openai.RateLimitError):
        ask(server)


def test_500_fault(scripted_llm: ScriptedServer) -> None:
    scripted_llm.set_faults([Fault("status", status=500, message="boom")])
    with pytest.raises(openai.InternalServerError) as error:
        ask(scripted_llm)
    assert error.value.status_code == 500
    assert "boom" in str(error.value)


def test_first_n_faults_then_success(scripted_llm_factory: ScriptedServerFactory) -> None:
    server = scripted_llm_factory(faults=[Fault("status", status=503, retry_after=0.01, first_n=2)])
    statuses = [post_chat(server.base_url, {"model": "m", "messages": MESSAGES})[0] for _ in range(4)]
    assert statuses == [503, 503, 200, 200]
    assert [r.fault for r in server.requests] == ["status", "status", None, None]
    # The openai client's own retries (honouring Retry-After) get through the first two failures.
    server.reset()
    with OpenAI(base_url=server.base_url, api_key="x", max_retries=2, timeout=5.0) as c:
        completion = c.chat.completions.create(model="m", messages=MESSAGES)
    assert completion.choices[0].message.content == "OK"
    assert server.request_count == 3


def test_faults_by_index_predicate_and_probability(scripted_llm: ScriptedServer) -> None:
    scripted_llm.set_faults([
        Fault("status", status=418, at=[1]),
        Fault("status", status=502, when=lambda index, body: body.get("model") == "bad"),
    ])
    base = scripted_llm.base_url
    assert [post_chat(base, {"model": "m", "messages": MESSAGES})[0] for _ in range(3)] == [200, 418, 200]
    assert post_chat(base, {"model": "bad", "messages": MESSAGES})[0] == 502

    def run_probability() -> list[int]:
        scripted_llm.reset()
        return [post_chat(base, {"model": "m", "messages": MESSAGES})[0] for _ in range(20)]

    scripted_llm.set_faults([Fault("status", status=500, probability=0.5, seed=7)])
    first = run_probability()
    assert first == run_probability()
    assert 200 in first and 500 in first


def test_malformed_bodies(scripted_llm: ScriptedServer) -> None:
    scripted_llm.set_faults([Fault("malformed", at=[0]), Fault("malformed", malformed="no_choices", at=[1])])
    status, _, raw = post_chat(scripted_llm.base_url, {"model": "m", "messages": MESSAGES})
    assert status == 200
    with pytest.raises(ValueError):
        json.loads(raw)
    status, _, raw = post_chat(scripted_llm.base_url, {"model": "m", "messages": MESSAGES})
    assert status == 200 and "choices" not in json.loads(raw)


async def test_disconnect(scripted_llm: ScriptedServer) -> None:
    scripted_llm.set_faults([Fault("disconnect")])
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await session.post(f"{scripted_llm.base_url}/chat/completions", json={"messages": MESSAGES})
    with pytest.raises(openai.APIConnectionError):
        ask(scripted_llm)
    assert [(r.fault, r.status) for r in scripted_llm.requests] == [("disconnect", None)] * 2


def test_timeout_fault_and_prompt_stop() -> None:
    server = ScriptedServer(faults=[Fault("timeout", hang_s=5.0, first_n=1)]).start()
    try:
        with client(server, timeout=0.5) as c:
            with pytest.raises(openai.APITimeoutError):
                c.chat.completions.create(model="m", messages=MESSAGES)
            assert c.chat.completions.create(model="m", messages=MESSAGES).choices[0].message.content == "OK"
        assert [r.fault for r in server.requests] == ["timeout", None]
        # A third request hangs for an hour; stopping the server must end that hang, so it is answered.
        server.set_faults([Fault("timeout", hang_s=3600.0)])
        answered: list[int] = []
        hung = threading.Thread(
            target=lambda: answered.append(post_chat(server.base_url, {"messages": MESSAGES}, 60.0)[0])
        )
        hung.start()
        while server.request_count < 3:  # wait until the server holds it
            time.sleep(0.01)
    finally:
        server.stop()
    hung.join(120)  # a safety net only: the assertion is on the answer, not on how long it took
    assert answered == [200]
    assert (server.requests[2].fault, server.requests[2].status) == ("timeout", 200)
    assert not any(t.name == "scripted-llm-server" for t in threading.enumerate())


# ------------------------------------------------------------------ records, fixtures, lifecycle


def test_requests_are_recorded(scripted_llm: ScriptedServer) -> None:
    ask(scripted_llm, "first", max_tokens=16, temperature=0.0)
    ask(scripted_llm, "second")
    records = scripted_llm.requests
    assert scripted_llm.request_count == 2
    assert [r.index for r in records] == [0, 1]
    assert [r.status for r in records] == [200, 200]
    assert records[0].path == "/v1/chat/completions"
    assert records[0].body["max_tokens"] == 16
    assert "max_tokens" not in records[1].body
    assert records[1].body["messages"] == [{"role": "user", "content": "second"}]
    assert records[0].headers["Authorization"] == "Bearer x"
    scripted_llm.reset()
    assert scripted_llm.request_count == 0 and scripted_llm.requests == []


def test_factory_starts_independent_servers(scripted_llm_factory: ScriptedServerFactory) -> None:
    a = scripted_llm_factory(default="from a")
    b = scripted_llm_factory(default="from b")
    assert a.port != b.port
    assert ask(a).choices[0].message.content == "from a"
    assert ask(b).choices[0].message.content == "from b"


def test_context_manager_start_stop() -> None:
    with ScriptedServer(default="ctx") as server:
        port = server.port
        assert server.base_url == f"http://127.0.0.1:{port}/v1"
        assert ask(server).choices[0].message.content == "ctx"
    with pytest.raises(RuntimeError):
        _ = server.port
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
    server.stop()  # idempotent


def test_used_from_another_event_loop_thread(scripted_llm: ScriptedServer) -> None:
    async def one() -> str:
        async with AsyncOpenAI(base_url=scripted_llm.base_url, api_key="x", max_retries=0) as c:
            completion = await c.chat.completions.create(model="m", messages=MESSAGES)
        return completion.choices[0].message.content or ""

    assert asyncio.run(one()) == "OK"


def pid_alive(pid: int) -> bool:
    """Whether a process with ``pid`` exists (and is not a zombie)."""
    status = Path(f"/proc/{pid}/status")
    if status.exists():
        return "zombie" not in status.read_text()
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_subprocess_cli_helper(tmp_path: Path) -> None:
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({
        "rules": [{"match": "tool", "reply": {"tool_calls": [{"name": "f", "arguments": {"x": 1}}]}}],
        "faults": [{"kind": "status", "status": 503, "at": [0]}],
    }))
    with run_in_subprocess(latency=0.01, reply="<answer>42</answer>", reply_file=rules) as proc:
        assert proc.base_url == f"http://127.0.0.1:{proc.port}/v1"
        assert pid_alive(proc.pid)
        assert post_chat(proc.base_url, {"model": "m", "messages": MESSAGES})[0] == 503
        with OpenAI(base_url=proc.base_url, api_key="x", max_retries=0) as c:
            answer = c.chat.completions.create(model="m", messages=MESSAGES)
            tool = c.chat.completions.create(model="m", messages=[{"role": "user", "content": "tool"}])
        assert answer.choices[0].message.content == "<answer>42</answer>"
        assert tool.choices[0].message.tool_calls[0].function.name == "f"
        pid = proc.pid
    assert proc.process.returncode == 0
    assert not pid_alive(pid)


def test_cli_prints_one_port_line_and_exits_on_sigint() -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    process = subprocess.Popen(
        [sys.executable, "-m", "metis_pytest.testing.scripted_server", "--port", "0", "--reply", "hi"],
        stdout=subprocess.PIPE,
        env=env,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().decode()
        port = int(line.removeprefix("PORT "))
        assert post_chat(f"http://127.0.0.1:{port}/v1", {"messages": MESSAGES})[0] == 200
        process.send_signal(signal.SIGINT)
        stdout, _ = process.communicate(timeout=5)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert line == f"PORT {port}\n" and stdout == b""
    assert process.returncode == 0


async def test_300_concurrent_requests_all_answered(scripted_llm_factory: ScriptedServerFactory) -> None:
    server = scripted_llm_factory(latency=0.05)
    url = f"{server.base_url}/chat/completions"
    body = {"model": "m", "messages": MESSAGES, "max_tokens": 8}
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> str:
            async with session.post(url, json=body) as response:
                return (await response.json())["choices"][0]["message"]["content"]

        answers = await asyncio.gather(*(one() for _ in range(300)))
    assert answers == ["OK"] * 300
    records = server.requests
    assert sorted(r.index for r in records) == list(range(300))
    assert {(r.status, r.latency_s) for r in records} == {(200, 0.05)}
    assert 1 < server.peak_in_flight <= 64  # they overlapped, within the client's connection limit

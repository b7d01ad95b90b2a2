"""Implicit rewards against a scripted /v1/completions server with known token logprobs."""

from __future__ import annotations

import asyncio
import re
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from aiohttp import web

from evals.helpsteer.implicit import (
    EchoedTokens,
    ImplicitRewardError,
    ImplicitRewardModel,
    LogprobsUnsupported,
    implicit_reward,
    margin_role,
    response_logprob,
)
from metis_pytest.backends.base import ModelTarget
from metis_pytest.rollout.http import RetryPolicy

TOKEN = re.compile(r"</s>|\s*[^\s<]+|\s+")
TEMPLATE = "Q: {raw_prompt}\nA:"


def tokenize(text: str) -> list[str]:
    return TOKEN.findall(text)


class LogprobServer:
    """``POST /v1/completions`` with echo: every token of the prompt text echoed with the logprob
    ``models[model](token)`` (the first one ``None``), then one generated token (``usage.completion_tokens=1``).
    ``tokenizers`` overrides the split per model; ``fail_first`` answers that many requests with HTTP 503;
    ``no_logprobs`` answers like a server that ignores echo+logprobs."""

    def __init__(self, models: dict[str, Callable[[str], float]], *, fail_first: int = 0,
                 no_logprobs: bool = False, tokenizers: dict[str, Callable[[str], list[str]]] | None = None) -> None:
        self.models, self.fail_first, self.no_logprobs = models, fail_first, no_logprobs
        self.tokenizers = tokenizers or {}
        self.bodies: list[dict[str, Any]] = []
        self._loop = asyncio.new_event_loop()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        sock.close()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.bodies.append(body)
        if len(self.bodies) <= self.fail_first:
            return web.json_response({"error": {"message": "busy"}}, status=503)
        model = body["model"]
        if model not in self.models:
            return web.json_response({"error": {"message": f"no model {model}"}}, status=404)
        tokens = self.tokenizers.get(model, tokenize)(body["prompt"])
        values: list[float | None] = [None] + [self.models[model](t) for t in tokens[1:]]
        text = body["prompt"] + " X"
        logprobs = None if self.no_logprobs else {"tokens": [*tokens, " X"], "token_logprobs": [*values, -0.1],
                                                  "text_offset": list(range(len(tokens) + 1)), "top_logprobs": None}
        return web.json_response({"object": "text_completion", "model": model,
                                  "choices": [{"index": 0, "text": text, "logprobs": logprobs, "finish_reason": "length"}],
                                  "usage": {"prompt_tokens": len(tokens), "completion_tokens": 1,
                                            "total_tokens": len(tokens) + 1}})

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/v1/completions", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        self._loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", self.port).start())
        self._ready.set()
        self._loop.run_forever()

    def __enter__(self) -> LogprobServer:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def target(server: LogprobServer, name: str) -> ModelTarget:
    return ModelTarget(label=name, backend="openai", litellm_model=f"openai/{name}", api_base=server.base_url,
                       served_model=name)


# Base: every token -1. Adapter: prompt tokens -100 (must be masked), "good" words -0.5, others -2, EOS -0.25.
def base_lp(token: str) -> float:
    return -1.0


def adapter_lp(token: str) -> float:
    if token.strip() in ("Q:", "A:", "hello"):
        return -100.0
    if token == "</s>":
        return -0.25
    return -0.5 if "good" in token else -2.0


@pytest.fixture
def server() -> Iterator[LogprobServer]:
    with LogprobServer({"adapter": adapter_lp, "base": base_lp}) as s:
        yield s


def model(server: LogprobServer, beta: float, eos: str = "</s>") -> ImplicitRewardModel:
    return ImplicitRewardModel(target(server, "adapter"), target(server, "base"), beta=beta, prompt_template=TEMPLATE,
                               eos_token=eos, policy=RetryPolicy(max_retries=2, base_delay=0.01))


@pytest.mark.parametrize("beta", [0.1, -0.1])
async def test_exact_reward_both_signs_with_the_prompt_masked_and_eos_counted(server, beta) -> None:
    async with model(server, beta) as m:
        r = await m.score("hello", " good bad")
    # response tokens: " good" " bad" "</s>": adapter -0.5 -2 -0.25 = -2.75; base -3
    assert (r.logp_adapter, r.logp_base, r.n_tokens) == (-2.75, -3.0, 3)
    assert r.reward == pytest.approx(beta * 0.25)
    body = server.bodies[-1]
    assert body["echo"] is True and body["logprobs"] == 1 and body["max_tokens"] == 1
    assert body["prompt"].startswith("Q: hello\nA:")


async def test_without_eos_only_the_response_text_counts(server) -> None:
    async with model(server, 1.0, eos="") as m:
        r = await m.score("hello", " good")
    assert (r.logp_adapter, r.logp_base, r.n_tokens, r.reward) == (-0.5, -1.0, 1, 0.5)


def test_a_token_merging_prompt_end_and_response_start_counts_as_response() -> None:
    prompt = EchoedTokens(("Q:", " hi", "\nA:"), (None, -1.0, -1.0))
    full = EchoedTokens(("Q:", " hi", "\nA:good"), (None, -1.0, -0.7))
    got = response_logprob(prompt, full)
    assert (got.total, got.tokens) == (-0.7, ("\nA:good",))


def test_no_response_token_is_an_error() -> None:
    prompt = EchoedTokens(("Q:",), (None,))
    with pytest.raises(ImplicitRewardError, match="no token of its own"):
        response_logprob(prompt, prompt)


def test_margin_beta_sign_convention() -> None:
    # MODPO subtracts the margin inside R: MARGIN_BETA > 0 enters R as a cost (its effect on the policy:
    # tests/train/test_modpo_loss.py).
    assert margin_role(0.1) == "cost" and margin_role(-0.1) == "reward"
    with pytest.raises(ValueError):
        margin_role(0.0)
    preferred = implicit_reward(-1.0, -2.0, 0.1)  # the adapter likes this response more than the base does
    assert preferred > 0 and implicit_reward(-1.0, -2.0, -0.1) == -preferred


async def test_transient_errors_are_retried() -> None:
    with LogprobServer({"adapter": adapter_lp, "base": base_lp}, fail_first=2) as s:
        async with model(s, 1.0) as m:
            r = await m.score("hello", " good")
    assert r.n_tokens == 2


async def test_a_server_without_prompt_logprobs_is_refused() -> None:
    with LogprobServer({"adapter": adapter_lp, "base": base_lp}, no_logprobs=True) as s:
        async with model(s, 1.0) as m:
            with pytest.raises(LogprobsUnsupported, match="no prompt-token logprobs"):
                await m.score("hello", " good")


async def test_adapter_and_base_with_different_tokenizers_are_refused() -> None:
    def chars(text: str) -> list[str]:
        return list(text)

    with LogprobServer({"adapter": adapter_lp, "base": base_lp}, tokenizers={"base": chars}) as s:
        async with model(s, 1.0) as m:
            with pytest.raises(ImplicitRewardError, match="do not share a tokenizer"):
                await m.score("hello", " good")

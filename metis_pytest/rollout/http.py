"""One chat-completion request with retries: OpenAI's wire format over aiohttp, or LiteLLM for the rest.

Retried, with exponential backoff and jitter (honouring ``Retry-After``): HTTP 408/409/425/429/5xx,
timeouts, broken connections and malformed bodies. Not retried: other 4xx (a bad request stays bad).
When retries run out :class:`RequestFailed` carries what happened, so the caller can mark the row
errored (and retryable) instead of scoring it.
"""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from yarl import URL

from metis_pytest.backends.base import ModelTarget

RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 520, 521, 522, 523, 524, 529})


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 4
    base_delay: float = 0.5
    max_delay: float = 20.0
    timeout: float = 120.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return min(self.max_delay, max(0.0, retry_after))
        backoff = min(self.max_delay, self.base_delay * (2**attempt))
        return backoff * (0.5 + random.random() / 2)


class RequestFailed(Exception):
    """A request that did not produce a completion; ``retryable`` says whether running it again may help."""

    def __init__(self, message: str, *, retryable: bool, status: int | None = None, attempts: int = 1,
                 retry_after: float | None = None, unreachable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.unreachable = unreachable  # no connection could be made at all (refused, no such host)
        self.status = status
        self.attempts = attempts
        self.retry_after = retry_after

    def details(self) -> dict[str, Any]:
        return {"error": str(self), "retryable": self.retryable, "status": self.status, "attempts": self.attempts}


@dataclass
class Completion:
    """The parts of a chat completion a rollout keeps."""

    message: dict[str, Any]
    finish_reason: str | None
    usage: dict[str, int] | None
    logprobs: Any = None
    attempts: int = 1
    raw_model: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def parse_completion(body: Any) -> Completion:
    """Validate an OpenAI chat.completion body; a malformed one raises a retryable :class:`RequestFailed`."""
    try:
        choice = body["choices"][0]
        message = choice["message"]
    except (KeyError, IndexError, TypeError):
        snippet = json.dumps(body)[:200] if not isinstance(body, str) else body[:200]
        raise RequestFailed(f"malformed completion (no choices[0].message): {snippet}", retryable=True) from None
    return Completion(message=message, finish_reason=choice.get("finish_reason"), usage=body.get("usage"),
                      logprobs=choice.get("logprobs"), raw_model=body.get("model"))


async def post_chat(session: aiohttp.ClientSession, target: ModelTarget, payload: dict[str, Any],
                    timeout: float) -> Completion:
    """One POST to ``{api_base}/chat/completions``; raises :class:`RequestFailed` on any failure."""
    headers = {"Content-Type": "application/json"}
    url = URL(f"{(target.api_base or '').rstrip('/')}/chat/completions")
    key = target.api_key()
    if key:
        headers["Authorization"] = f"Bearer {key}"
        url = url.with_user(None)  # a key wins over credentials in the URL (aiohttp refuses both)
    try:
        async with session.post(url, json=payload, headers=headers,
                                timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            text = await resp.text()
            if resp.status != 200:
                raise RequestFailed(f"HTTP {resp.status} from {target.request_model}: {text[:300]}",
                                    retryable=resp.status in RETRYABLE_STATUS, status=resp.status,
                                    retry_after=_retry_after(resp.headers))
            try:
                body = json.loads(text)
            except ValueError:
                raise RequestFailed(f"malformed completion (not JSON): {text[:200]!r}", retryable=True,
                                    status=200) from None
    except asyncio.TimeoutError:
        raise RequestFailed(f"timed out after {timeout:g}s", retryable=True) from None
    except aiohttp.ClientConnectorError as exc:
        raise RequestFailed(f"cannot connect to {url.origin()}: {exc.os_error}", retryable=True,
                            unreachable=True) from None
    except aiohttp.ClientError as exc:
        raise RequestFailed(f"connection error: {type(exc).__name__}: {exc}", retryable=True) from None
    return parse_completion(body)


async def litellm_chat(target: ModelTarget, public: dict[str, Any], messages: list[dict[str, Any]],
                       tools: list[dict[str, Any]] | None, timeout: float) -> Completion:
    """One request through ``litellm.acompletion`` for providers that do not speak OpenAI's wire format."""
    import litellm

    params = target.litellm_params(public)
    params.update(messages=messages, timeout=timeout, num_retries=0)
    if tools:
        params["tools"] = tools
    try:
        response = await litellm.acompletion(**params)
    except (litellm.RateLimitError, litellm.Timeout, litellm.APIConnectionError, litellm.InternalServerError,
            litellm.ServiceUnavailableError) as exc:
        raise RequestFailed(f"{type(exc).__name__}: {exc}", retryable=True,
                            status=getattr(exc, "status_code", None)) from None
    except litellm.APIError as exc:
        raise RequestFailed(f"{type(exc).__name__}: {exc}", retryable=False,
                            status=getattr(exc, "status_code", None)) from None
    return parse_completion(response.model_dump())


async def complete(session: aiohttp.ClientSession | None, target: ModelTarget, public: dict[str, Any],
                   messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None,
                   policy: RetryPolicy) -> Completion:
    """A completion, retried per ``policy``. The payload is rebuilt from ``messages`` on every attempt."""
    attempt = 0
    while True:
        try:
            if target.openai_wire:
                assert session is not None
                payload = build_payload(target, public, messages, tools)
                completion = await post_chat(session, target, payload, policy.timeout)
            else:
                completion = await litellm_chat(target, public, messages, tools, policy.timeout)
            completion.attempts = attempt + 1
            return completion
        except RequestFailed as exc:
            exc.attempts = attempt + 1
            if not exc.retryable or attempt >= policy.max_retries:
                raise
            await asyncio.sleep(policy.delay(attempt, exc.retry_after))
            attempt += 1


SAMPLING_SKIP = frozenset({"model", "api_base", "api_key", "base_url"})


def build_payload(target: ModelTarget, public: dict[str, Any], messages: list[dict[str, Any]],
                  tools: list[dict[str, Any]] | None) -> dict[str, Any]:
    """The JSON body: served model name, messages, and every sampling param the user set.

    ``max_tokens`` is always sent (llama.cpp's server ignores ``max_completion_tokens``)."""
    payload: dict[str, Any] = {"model": target.request_model, "messages": messages}
    for key, value in public.items():
        if key == "extra_body" and isinstance(value, dict):
            payload.update(value)
        elif key not in SAMPLING_SKIP and value is not None:
            payload[key] = value
    if "max_tokens" not in payload and "max_completion_tokens" in payload:
        payload["max_tokens"] = payload.pop("max_completion_tokens")
    if tools:
        payload["tools"] = tools
    return payload

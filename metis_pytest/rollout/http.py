"""One chat-completion request with retries: OpenAI's wire format over aiohttp, or LiteLLM for the rest.

Retried, with exponential backoff and jitter (honouring ``Retry-After``): HTTP 408/409/425/429/5xx,
timeouts, broken connections and malformed bodies. Not retried: other 4xx (a bad request stays bad).
When retries run out :class:`RequestFailed` carries what happened, so the caller can mark the row
errored (and retryable) instead of scoring it.

Sampling params: for the ``api`` backend on an OpenAI-wire provider (``openai/o3-mini``,
``groq/...``) they go through LiteLLM's own per-provider, per-model mapping first
(:func:`map_params`: ``litellm.get_optional_params`` with ``drop_params=True``), so an o-series or
gpt-5 model gets ``max_completion_tokens`` and no non-default ``temperature``, as LiteLLM would send.
What the mapping dropped or renamed is returned with it and recorded on each completion
(``Completion.extra["param_mapping"]``). ``--backend openai`` and ``local`` (any OpenAI-compatible
server: vLLM, llama.cpp) get the user's params verbatim.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol, TypeVar, cast

import aiohttp
from yarl import URL

from metis_pytest.backends.base import ModelTarget, provider_of

T = TypeVar("T")

log = logging.getLogger(__name__)

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


def _has_text(content: Any) -> bool:
    """Whether a message ``content`` (a string, or a list of ``{"type": "text"}`` parts) holds any text."""
    if isinstance(content, str):
        return bool(content.strip())
    if isinstance(content, list):
        return any(isinstance(part, dict) and _has_text(part.get("text")) for part in content)
    return False


def is_empty_message(message: Any) -> bool:
    """A reply that answers nothing: no message, or neither text nor tool calls (nor a refusal).

    A message with only ``reasoning_content`` (the model thought, then said nothing) is empty too."""
    if not isinstance(message, dict) or not message:
        return True
    return not (_has_text(message.get("content")) or message.get("tool_calls") or message.get("function_call")
                or _has_text(message.get("refusal")))


def parse_completion(body: Any) -> Completion:
    """Validate an OpenAI chat.completion body; a malformed or empty one raises a retryable :class:`RequestFailed`."""
    try:
        choice = body["choices"][0]
        message = choice["message"]
    except (KeyError, IndexError, TypeError):
        snippet = json.dumps(body)[:200] if not isinstance(body, str) else body[:200]
        raise RequestFailed(f"malformed completion (no choices[0].message): {snippet}", retryable=True) from None
    if is_empty_message(message):
        reason = choice.get("finish_reason") if isinstance(choice, dict) else None
        only_reasoning = isinstance(message, dict) and bool(
            _has_text(message.get("reasoning_content")) or _has_text(message.get("reasoning")))
        note = " (reasoning only, no answer)" if only_reasoning else ""
        raise RequestFailed(f"empty message{note} (finish_reason={reason}): {json.dumps(message)[:200]}",
                            retryable=True, status=200)
    return Completion(message=message, finish_reason=choice.get("finish_reason"), usage=body.get("usage"),
                      logprobs=choice.get("logprobs"), raw_model=body.get("model"))


async def post_chat(session: aiohttp.ClientSession, target: ModelTarget, payload: dict[str, Any],
                    timeout: float) -> Completion:
    """One POST to ``{api_base}/chat/completions``; raises :class:`RequestFailed` on any failure."""
    return parse_completion(await post_json(session, target, "chat/completions", payload, timeout))


async def post_json(session: aiohttp.ClientSession, target: ModelTarget, path: str, payload: dict[str, Any],
                    timeout: float) -> Any:
    """One POST of ``payload`` to ``{api_base}/{path}`` with the target's credentials; the parsed JSON
    body of a 200, else :class:`RequestFailed` (retryable as the rollout transport decides)."""
    headers = {"Content-Type": "application/json", **target.auth_headers()}
    url = URL(f"{(target.api_base or '').rstrip('/')}/{path}")
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
    return body


async def litellm_chat(target: ModelTarget, public: dict[str, Any], messages: list[dict[str, Any]],
                       tools: list[dict[str, Any]] | None, timeout: float) -> Completion:
    """One request through ``litellm.acompletion`` for providers that do not speak OpenAI's wire format."""
    litellm = import_litellm()
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
    """A completion, retried per ``policy``. The payload is rebuilt from ``messages`` on every attempt.

    What the param mapping dropped or renamed (see :func:`map_params`) is put on the completion as
    ``extra["param_mapping"]``, so the row records it."""
    mapping = map_params(target, public) if target.openai_wire else None

    async def once() -> Completion:
        if mapping is not None:
            assert session is not None
            payload = build_payload(target, public, messages, tools, mapping=mapping)
            completion = await post_chat(session, target, payload, policy.timeout)
            if mapping.changed:
                completion.extra["param_mapping"] = mapping.record()
            return completion
        return await litellm_chat(target, public, messages, tools, policy.timeout)

    completion, attempts = await retried(policy, once)
    completion.attempts = attempts
    return completion


class Retryable(Protocol):
    """What :func:`retried` reads and sets on a failure (:class:`RequestFailed`, the tools' ``ToolError``)."""

    retryable: bool
    retry_after: float | None
    attempts: int


async def retried(policy: RetryPolicy, once: Callable[[], Awaitable[T]],
                  failure: type[Exception] = RequestFailed) -> tuple[T, int]:
    """``once()`` until it returns, again after ``policy``'s delay while it raises a retryable
    ``failure`` (whose ``attempts`` it sets), up to ``policy.max_retries`` retries; what it returned
    and the attempts it took."""
    attempt = 0
    while True:
        try:
            return await once(), attempt + 1
        except failure as raised:
            exc = cast(Retryable, raised)
            exc.attempts = attempt + 1
            if not exc.retryable or attempt >= policy.max_retries:
                raise
            await asyncio.sleep(policy.delay(attempt, exc.retry_after))
            attempt += 1


# Routing and credentials: never part of the request body.
SAMPLING_SKIP = frozenset({"model", "api_base", "api_key", "base_url", "api_key_env"})
# LiteLLM call controls, not model params: never handed to its param mapping nor sent.
_LITELLM_CONTROLS = frozenset({"messages", "custom_llm_provider", "drop_params", "allowed_openai_params",
                               "additional_drop_params", "max_retries", "extra_headers", "api_version",
                               "stream", "stream_options", "tools", "functions", "timeout", "num_retries",
                               "fake_stream", "json_mode"})


@dataclass(frozen=True)
class ParamMapping:
    """The sampling params to send for one (target, params) pair, and what mapping them changed.

    ``params`` is read-only and shared by every request with the same params (it comes from a cache).
    ``dropped``: params the model does not take (LiteLLM's ``drop_params``); ``renamed``: a user's
    name and the one sent (``max_tokens`` -> ``max_completion_tokens``); ``rewritten``: values changed
    in place (``reasoning_effort={"effort": "high"}`` -> ``"high"``); ``added``: put in by the mapping.
    ``mapper`` names the mapping that ran (``verbatim`` for ``--backend openai`` and ``local``)."""

    params: Mapping[str, Any]
    mapper: str
    dropped: tuple[str, ...] = ()
    renamed: tuple[tuple[str, str], ...] = ()
    rewritten: tuple[str, ...] = ()
    added: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        """Whether what is sent differs from what the user asked for."""
        return bool(self.dropped or self.renamed or self.rewritten or self.added)

    def record(self) -> dict[str, Any]:
        """JSON for a run record: what was dropped, renamed, rewritten or added, and by which mapping."""
        return {"mapper": self.mapper, "dropped": list(self.dropped), "renamed": dict(self.renamed),
                "rewritten": list(self.rewritten), "added": list(self.added)}


LITELLM_MAPPER = "litellm.get_optional_params(drop_params=True)"
_MAPPINGS: dict[tuple[Any, ...], ParamMapping | RequestFailed] = {}
_MAPPINGS_MAX = 1024


def uses_litellm_mapping(target: ModelTarget) -> bool:
    """The ``api`` backend's OpenAI-wire providers: their params go through LiteLLM's mapping.

    Not ``--backend openai`` nor ``local``: those are servers we know nothing about (vLLM,
    llama.cpp...), where a model named ``o3-mini`` is whatever the server serves."""
    return target.backend == "api" and target.openai_wire


def requested_params(public: Mapping[str, Any]) -> dict[str, Any]:
    """The params the user asked to send, ``extra_body`` merged in (it wins), routing keys and None left out."""
    wanted: dict[str, Any] = {}
    for key, value in public.items():
        if key == "extra_body" and isinstance(value, dict):
            continue
        if key not in SAMPLING_SKIP and value is not None:
            wanted[key] = value
    extra = public.get("extra_body")
    if isinstance(extra, dict):
        wanted.update({k: v for k, v in extra.items() if k not in SAMPLING_SKIP and v is not None})
    return wanted


def _cache_key(target: ModelTarget, public: Mapping[str, Any]) -> tuple[Any, ...]:
    try:
        frozen = json.dumps(public, sort_keys=True, default=repr)
    except (TypeError, ValueError):  # e.g. keys of mixed types
        frozen = repr(sorted(public.items(), key=lambda kv: str(kv[0])))
    return (target.backend, target.litellm_model, target.openai_wire, frozen)


def map_params(target: ModelTarget, public: Mapping[str, Any]) -> ParamMapping:
    """The sampling params to send to ``target``, cached per (target, params): free per row.

    For :func:`uses_litellm_mapping` targets, LiteLLM's own per-provider, per-model mapping,
    ``litellm.get_optional_params(model, custom_llm_provider=..., drop_params=True, **params)``: the
    same function ``litellm.completion`` runs before it calls the provider. An unsupported param is
    dropped, as LiteLLM's ``drop_params`` does, and named in :attr:`ParamMapping.dropped` (and logged
    once), never silently. Anything else gets the params verbatim, with ``max_completion_tokens``
    sent as ``max_tokens`` (llama.cpp's server ignores ``max_completion_tokens``).

    Raises a non-retryable :class:`RequestFailed` when LiteLLM refuses the params outright."""
    key = _cache_key(target, public)
    cached = _MAPPINGS.get(key)
    if cached is None:
        try:
            cached = _litellm_mapping(target, public) if uses_litellm_mapping(target) else _verbatim(public)
        except RequestFailed as exc:
            cached = exc
        if len(_MAPPINGS) >= _MAPPINGS_MAX:
            _MAPPINGS.clear()
        _MAPPINGS[key] = cached
        if isinstance(cached, ParamMapping) and cached.changed:
            log.warning("params for %s mapped by %s: %s", target.litellm_model, cached.mapper,
                        json.dumps(cached.record()))
    if isinstance(cached, RequestFailed):
        raise RequestFailed(str(cached), retryable=False)
    return cached


def import_litellm() -> Any:
    """LiteLLM, imported on first use. Outside pytest (a script, a verl worker) nothing may have set
    LiteLLM's own ``LITELLM_LOCAL_MODEL_COST_MAP`` yet; without it LiteLLM fetches a price list from the
    internet when imported, so it is defaulted here, just before the import, and only then."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    return litellm


def _verbatim(public: Mapping[str, Any]) -> ParamMapping:
    params = requested_params(public)
    renamed: tuple[tuple[str, str], ...] = ()
    if "max_tokens" not in params and "max_completion_tokens" in params:
        params["max_tokens"] = params.pop("max_completion_tokens")
        renamed = (("max_completion_tokens", "max_tokens"),)
    return ParamMapping(MappingProxyType(params), "verbatim", renamed=renamed)


def _litellm_mapping(target: ModelTarget, public: Mapping[str, Any]) -> ParamMapping:
    litellm = import_litellm()
    provider = provider_of(target.litellm_model)
    model = target.litellm_model.split("/", 1)[1] if "/" in target.litellm_model else target.litellm_model
    wanted = requested_params(public)
    given = {k: v for k, v in wanted.items() if k not in _LITELLM_CONTROLS}
    try:
        mapped = litellm.get_optional_params(model=model, custom_llm_provider=provider, drop_params=True, **given)
    except Exception as exc:  # UnsupportedParamsError and the like: LiteLLM would refuse the call too
        raise RequestFailed(f"LiteLLM refuses these params for {target.litellm_model}: "
                            f"{type(exc).__name__}: {exc}", retryable=False) from None
    # ``stream: False`` and the like are LiteLLM call controls it echoes back; the body never streams.
    sent = {k: v for k, v in mapped.items() if k != "extra_body" and k not in _LITELLM_CONTROLS and v is not None}
    if "tool_choice" not in given:  # LiteLLM's JSON-mode emulation (a forced tool) needs its tools too
        sent.pop("tool_choice", None)
    extra = mapped.get("extra_body")
    if isinstance(extra, dict):  # what the OpenAI SDK would merge into the JSON body
        sent.update({k: v for k, v in extra.items() if v is not None})
    missing = [k for k in given if k not in sent]
    controls = [k for k in wanted if k in _LITELLM_CONTROLS]  # not model params: not sent either
    new = [k for k in sent if k not in given]
    renamed: list[tuple[str, str]] = []
    for old in list(missing):
        twin = next((k for k in new if sent[k] == given[old]), None)
        if twin is not None:
            renamed.append((old, twin))
            missing.remove(old)
            new.remove(twin)
    rewritten = [k for k in given if k in sent and sent[k] != given[k]]
    return ParamMapping(MappingProxyType(sent), LITELLM_MAPPER, dropped=tuple(missing + controls), renamed=tuple(renamed),
                        rewritten=tuple(rewritten), added=tuple(new))


def build_payload(target: ModelTarget, public: dict[str, Any], messages: list[dict[str, Any]],
                  tools: list[dict[str, Any]] | None, *, mapping: ParamMapping | None = None) -> dict[str, Any]:
    """The JSON body: served model name, messages, and the sampling params of :func:`map_params`.

    For ``--backend openai`` and ``local`` that is every param the user set, verbatim, with
    ``max_tokens`` always sent (llama.cpp's server ignores ``max_completion_tokens``)."""
    if mapping is None:
        mapping = map_params(target, public)
    payload: dict[str, Any] = {"model": target.request_model, "messages": messages}
    payload.update(mapping.params)
    if tools:
        payload["tools"] = tools
    return payload

"""An LLM judge: a second model target that grades outputs into a validated pydantic verdict.

The judge is resolved separately from the policy model; :class:`JudgeClient` only ever sends to its
own :class:`~metis_pytest.backends.base.ModelTarget`. Requests go through the rollout transport
(:func:`metis_pytest.rollout.http.complete`), which already retries transient failures (429, 5xx,
timeouts, malformed bodies). On top of that the client retries *invalid* judge output: a reply that
is not a JSON object, or one that fails the schema, is answered with a short corrective follow-up
(the judge sees its own reply and what was wrong with it) up to ``max_invalid_retries`` times.

A judge that never answers validly gives ``Verdict(valid=False, retryable=True)`` and no data, never
a score; a request the server refuses for good (HTTP 400, 401...) gives ``retryable=False``.

Prompts use :class:`string.Template` placeholders (``$answer`` or ``${answer}``; ``$$`` is a literal
dollar), not ``str.format``, so judge prompts can show JSON examples with braces as they are.
"""

from __future__ import annotations

import asyncio
import json
import re
import string
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import aiohttp
import pydantic

from metis_pytest.backends.base import ModelTarget
from metis_pytest.judge.cache import JudgeCache, cache_key
from metis_pytest.rollout.http import RequestFailed, RetryPolicy, complete

T = TypeVar("T", bound=pydantic.BaseModel)

DEFAULT_PARAMS: dict[str, Any] = {"temperature": 0.0, "max_tokens": 1024}
# Never sampling params: the model and endpoint come from the target, the key from the environment.
_ENDPOINT_KEYS = frozenset({"model", "api_base", "base_url"})
_SECRET_KEYS = frozenset({"api_key", "api_key_env"})
_THINK = re.compile(r"<think>.*?</think>", re.DOTALL)
_FENCE = re.compile(r"```(?:json|JSON)?[ \t]*\n?(.*?)```", re.DOTALL)

SCHEMA_INSTRUCTION = (
    "Answer with only a JSON object that matches this JSON schema, with no other text:\n{schema}"
)
CORRECTION = (
    "Your previous reply could not be used: {error}\n"
    "Reply again with only the JSON object, matching the schema, and nothing else."
)


@dataclass(frozen=True)
class JudgePrompt:
    """A versioned judge prompt. ``system`` and ``user`` are :class:`string.Template` texts.

    Bump ``version`` whenever the wording changes: it is recorded with every score and is part of
    the cache key.
    """

    name: str
    version: str
    system: str
    user: str

    def render(self, variables: dict[str, str]) -> tuple[str, str]:
        """``(system, user)`` with ``$placeholders`` filled; a missing variable raises ``KeyError``."""
        values = {k: str(v) for k, v in variables.items()}
        try:
            return (string.Template(self.system).substitute(values),
                    string.Template(self.user).substitute(values))
        except KeyError as exc:
            raise KeyError(f"judge prompt {self.name!r} v{self.version} needs variable {exc.args[0]!r}") from None


@dataclass(frozen=True)
class Verdict(Generic[T]):
    """What the judge said. ``data`` is set only when ``valid``; an invalid verdict carries no score.

    ``attempts`` counts judge replies asked for (a corrective re-ask is one more; transport retries
    inside one ask are not counted); it is 0 for a verdict served from the cache.
    """

    valid: bool
    data: T | None
    raw: str | None
    error: str | None
    retryable: bool
    judge_model: str
    prompt_name: str
    prompt_version: str
    attempts: int
    cached: bool = False

    def record(self) -> dict[str, Any]:
        """A JSON-safe dict to store beside the score: always names the judge model and prompt version."""
        return {
            "judge_model": self.judge_model,
            "prompt_name": self.prompt_name,
            "prompt_version": self.prompt_version,
            "valid": self.valid,
            "data": self.data.model_dump(mode="json") if self.data is not None else None,
            "error": self.error,
            "retryable": self.retryable,
            "attempts": self.attempts,
            "cached": self.cached,
            "raw": self.raw,
        }


def extract_json(text: str) -> Any:
    """The JSON object in a judge's reply.

    Tried in order: the whole text; the first fenced block (```json ... ```); the first balanced
    JSON object anywhere in the text (so leading and trailing prose is tolerated). ``<think>``
    blocks are dropped first. Raises ``ValueError`` when no JSON object is found.
    """
    text = _THINK.sub("", text).strip()
    if not text:
        raise ValueError("the reply is empty")
    candidates = [text]
    fence = _FENCE.search(text)
    if fence:
        candidates.append(fence.group(1).strip())
    for candidate in candidates:
        try:
            value = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\{", text):
        try:
            value, _end = decoder.raw_decode(text, match.start())
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    raise ValueError("no JSON object found in the reply")


def _validation_summary(exc: pydantic.ValidationError, limit: int = 5) -> str:
    parts = []
    for err in exc.errors()[:limit]:
        where = ".".join(str(p) for p in err.get("loc", ())) or "(root)"
        parts.append(f"{where}: {err.get('msg')}")
    more = exc.error_count() - limit
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def parse_verdict(text: str | None, schema: type[T]) -> T:
    """The reply validated against ``schema``; raises ``ValueError`` with a short reason otherwise."""
    if not text or not text.strip():
        raise ValueError("the reply is empty")
    try:
        value = extract_json(text)
    except ValueError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    try:
        return schema.model_validate(value)
    except pydantic.ValidationError as exc:
        raise ValueError(f"does not match the schema: {_validation_summary(exc)}") from None


def schema_name(schema: type[pydantic.BaseModel]) -> str:
    """The schema's name as OpenAI's ``json_schema.name`` accepts it (``[A-Za-z0-9_-]``, at most 64)."""
    return (re.sub(r"[^A-Za-z0-9_-]", "_", schema.__name__) or "verdict")[:64]


@dataclass
class _LoopState:
    loop: asyncio.AbstractEventLoop
    slots: asyncio.Semaphore
    session: aiohttp.ClientSession | None = None


class JudgeClient:
    """Asks one judge target for verdicts, with bounded concurrency and an optional disk cache.

    Args:
        target: The judge's model target (never the policy's).
        policy: Transport retries for each request (see :class:`RetryPolicy`).
        concurrency: Requests in flight at once, per event loop (also capped by
            ``target.max_concurrency``).
        cache_dir: Where valid verdicts are cached; ``None`` disables the cache.
        cache_fallbacks: Read-only caches looked up after ``cache_dir`` (a recorded run's, under
            ``--replay``); a verdict found there is copied into ``cache_dir``.
        params: Public sampling params, over the defaults ``temperature=0``, ``max_tokens=1024``.
            ``model``/``api_base`` are ignored (they come from the target); ``api_key`` is refused.
        supports_response_format: Send ``response_format`` (a JSON schema) with each request. When
            ``False`` the schema is only given in the prompt.
        max_invalid_retries: Corrective re-asks after an invalid (non-JSON or off-schema) reply.

    The client may be used from several event loops one after another: each loop gets its own
    ``aiohttp`` session and semaphore. Call :meth:`aclose` (or use ``async with``) on each loop.
    """

    def __init__(self, target: ModelTarget, *, policy: RetryPolicy | None = None, concurrency: int = 4,
                 cache_dir: Path | None = None, cache_fallbacks: tuple[Path, ...] = (),
                 params: dict[str, Any] | None = None,
                 supports_response_format: bool = True, max_invalid_retries: int = 2) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if max_invalid_retries < 0:
            raise ValueError("max_invalid_retries must be >= 0")
        secrets = _SECRET_KEYS.intersection(params or {})
        if secrets:
            raise ValueError(f"judge params must not carry {sorted(secrets)}: keys are read from the environment")
        self.target = target
        self.policy = policy or RetryPolicy()
        self.concurrency = min(concurrency, target.max_concurrency or concurrency)
        self.cache = JudgeCache(cache_dir, cache_fallbacks) if cache_dir is not None else None
        self.params: dict[str, Any] = {**DEFAULT_PARAMS, **{k: v for k, v in (params or {}).items()
                                                             if k not in _ENDPOINT_KEYS}}
        self.supports_response_format = supports_response_format
        self.max_invalid_retries = max_invalid_retries
        self._loops: dict[int, _LoopState] = {}

    # ----------------------------------------------------------------- per-loop resources

    def _state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        state = self._loops.get(id(loop))
        if state is None or state.loop is not loop:  # an id can be reused once a loop is gone
            self._forget_dead_loops()
            state = _LoopState(loop=loop, slots=asyncio.Semaphore(self.concurrency))
            self._loops[id(loop)] = state
        return state

    def _forget_dead_loops(self) -> None:
        for key, state in list(self._loops.items()):
            if state.loop.is_closed():
                del self._loops[key]

    def _http(self, state: _LoopState) -> aiohttp.ClientSession | None:
        if not self.target.openai_wire:
            return None  # LiteLLM makes its own connections
        if state.session is None or state.session.closed:
            state.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300))
        return state.session

    async def aclose(self) -> None:
        """Close this loop's HTTP session; sessions of loops already closed are dropped."""
        loop = asyncio.get_running_loop()
        for key, state in list(self._loops.items()):
            if state.loop is loop:
                if state.session is not None and not state.session.closed:
                    await state.session.close()
                del self._loops[key]
            elif state.loop.is_closed():
                del self._loops[key]

    async def __aenter__(self) -> JudgeClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # ----------------------------------------------------------------- requests

    def request_params(self, schema: type[pydantic.BaseModel]) -> dict[str, Any]:
        """The public params of one request: model, sampling params and, if supported, ``response_format``."""
        public: dict[str, Any] = {"model": self.target.litellm_model, **self.params}
        if self.supports_response_format and self.target.json_format == "json_object":
            public["response_format"] = {"type": "json_object", "schema": schema.model_json_schema()}
        elif self.supports_response_format:
            public["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": schema_name(schema), "schema": schema.model_json_schema(),
                                "strict": False},
            }
        return public

    @staticmethod
    def messages(prompt: JudgePrompt, variables: dict[str, str],
                 schema: type[pydantic.BaseModel]) -> list[dict[str, Any]]:
        """The first request's messages: the system prompt ends with the schema instruction."""
        system, user = prompt.render(variables)
        instruction = SCHEMA_INSTRUCTION.format(schema=json.dumps(schema.model_json_schema(), sort_keys=True))
        system = f"{system.rstrip()}\n\n{instruction}" if system.strip() else instruction
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]

    def key(self, prompt: JudgePrompt, messages: list[dict[str, Any]], schema: type[pydantic.BaseModel]) -> str:
        params = {k: v for k, v in self.request_params(schema).items() if k != "model"}
        if self.target.served_model:
            params["served_model"] = self.target.served_model
        return cache_key(judge_model=self.target.litellm_model, prompt_name=prompt.name,
                         prompt_version=prompt.version, messages=messages, schema=schema.model_json_schema(),
                         params=params)

    def _verdict(self, prompt: JudgePrompt, **fields: Any) -> Verdict[Any]:
        return Verdict(judge_model=self.target.litellm_model, prompt_name=prompt.name,
                       prompt_version=prompt.version, **fields)

    def _cached(self, key: str, prompt: JudgePrompt, schema: type[T]) -> Verdict[T] | None:
        if self.cache is None:
            return None
        entry = self.cache.get(key)
        if entry is None:
            return None
        try:
            data = schema.model_validate(entry.get("data"))
        except pydantic.ValidationError:
            return None  # stale entry (schema changed in a way the key did not see): ask again
        return self._verdict(prompt, valid=True, data=data, raw=entry.get("raw"), error=None, retryable=False,
                             attempts=0, cached=True)

    async def judge(self, prompt: JudgePrompt, variables: dict[str, str], schema: type[T]) -> Verdict[T]:
        """Ask the judge; a valid verdict carries ``data`` (a ``schema`` instance), an invalid one none."""
        if self.target.openai_wire and not self.target.api_base:
            raise ValueError(f"judge target {self.target.label!r} has no api_base (was its backend prepared?)")
        messages = self.messages(prompt, variables, schema)
        key = self.key(prompt, messages, schema)
        hit = self._cached(key, prompt, schema)
        if hit is not None:
            return hit
        state = self._state()
        http = self._http(state)
        public = self.request_params(schema)
        conversation = list(messages)
        raw: str | None = None
        error = "no reply"
        for attempt in range(1, self.max_invalid_retries + 2):
            try:
                async with state.slots:
                    completion = await complete(http, self.target, public, conversation, None, self.policy)
            except RequestFailed as exc:
                return self._verdict(prompt, valid=False, data=None, raw=raw,
                                     error=f"judge request failed: {exc}", retryable=exc.retryable,
                                     attempts=attempt)
            content = completion.message.get("content")
            raw = content if isinstance(content, str) else (json.dumps(content) if content is not None else None)
            try:
                data = parse_verdict(raw, schema)
            except ValueError as exc:
                error = str(exc)
                if completion.finish_reason == "length":
                    error += " (the reply was cut off at max_tokens)"
                conversation = [*messages, {"role": "assistant", "content": raw or ""},
                                {"role": "user", "content": CORRECTION.format(error=error[:500])}]
                continue
            verdict = self._verdict(prompt, valid=True, data=data, raw=raw, error=None, retryable=False,
                                    attempts=attempt)
            if self.cache is not None:
                try:
                    self.cache.put(key, {"judge_model": verdict.judge_model, "prompt_name": prompt.name,
                                         "prompt_version": prompt.version, "data": data.model_dump(mode="json"),
                                         "raw": raw})
                except OSError as exc:  # a cache that cannot be written must not lose the verdict
                    warnings.warn(f"judge cache not written ({self.cache.directory}): {exc}", stacklevel=2)
            return verdict
        return self._verdict(prompt, valid=False, data=None, raw=raw,
                             error=f"no valid verdict after {self.max_invalid_retries + 1} replies: {error}",
                             retryable=True, attempts=self.max_invalid_retries + 1)

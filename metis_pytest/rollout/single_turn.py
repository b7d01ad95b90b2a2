"""Single-turn rollout: one chat completion per row, bounded, retried, and never scored here.

Honours every completion param (``api_base``, ``temperature``, ``max_tokens``, ``extra_body`` ...).
Rows whose request still fails after retries come back with ``rollout_status`` set to an error
(with the error, the HTTP status and ``retryable``) so they are reported as errored, not scored 0.
A trailing assistant turn in the input (a reference answer, as in Eval Protocol's quickstart data)
is never sent to the model.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from eval_protocol.models import EvaluationRow, Message, Status
from eval_protocol.pytest.rollout_processor import RolloutProcessor
from eval_protocol.pytest.types import RolloutProcessorConfig
from openai.types import CompletionUsage

from metis_pytest.backends.base import ModelTarget
from metis_pytest.rollout.http import Completion, RequestFailed, RetryPolicy, complete

Resolver = Callable[[dict[str, Any]], ModelTarget]
# Given the public completion params and a row, a completion stored by an earlier run, or None.
Replay = Callable[[dict[str, Any], EvaluationRow], "StoredCompletion | None"]


@dataclass(frozen=True)
class StoredCompletion:
    """A completion from an earlier run of the same row under the same conditions (``--resume``)."""

    content: str
    finish_reason: str | None = None
    usage: dict[str, int] | None = None
    source: str | None = None


def target_from_params(params: dict[str, Any]) -> ModelTarget:
    """A target straight from LiteLLM-style params (used outside a pytest session, e.g. benchmarks)."""
    from metis_pytest.backends.base import OPENAI_WIRE_PREFIXES

    model = str(params["model"])
    return ModelTarget(label=model, backend="params", litellm_model=model, api_base=params.get("api_base"),
                       api_key_env=params.get("api_key_env"),
                       openai_wire=bool(params.get("api_base")) or model.startswith(OPENAI_WIRE_PREFIXES))


def request_messages(row: EvaluationRow) -> list[dict[str, Any]]:
    """The conversation to send: trailing assistant turns dropped, tool-call turns given ``content: ""``."""
    messages = list(row.messages)
    while messages and messages[-1].role == "assistant":
        messages.pop()
    payload = []
    for message in messages:
        data = message.dump_mdoel_for_chat_completion_request()
        if data.get("role") == "assistant" and data.get("tool_calls") and data.get("content") is None:
            data["content"] = ""  # llama.cpp's server rejects a null content
        payload.append(data)
    return payload


def assistant_message(message: dict[str, Any], logprobs: Any) -> Message:
    return Message(role="assistant", content=message.get("content") or "",
                   reasoning_content=message.get("reasoning_content") or message.get("reasoning"),
                   tool_calls=message.get("tool_calls") or None, logprobs=logprobs)


class SingleTurnProcessor(RolloutProcessor):
    """Eval Protocol ``RolloutProcessor`` that sends each row's conversation once and appends the reply."""

    def __init__(self, *, resolver: Resolver | None = None, policy: RetryPolicy | None = None,
                 replay: Replay | None = None) -> None:
        self.resolver: Resolver = resolver or target_from_params
        self.policy = policy or RetryPolicy()
        self.replay = replay
        self._sessions: dict[int, aiohttp.ClientSession] = {}
        self._slots: dict[tuple[int, str], asyncio.Semaphore] = {}
        # Servers that refused every attempt of some row: later rows fail at once instead of each
        # spending its full retry budget on a server that is not there.
        self._unreachable: dict[str, str] = {}

    def _http(self) -> aiohttp.ClientSession:
        """One connection pool per event loop (pytest-asyncio may give each item its own loop)."""
        loop = asyncio.get_running_loop()
        session = self._sessions.get(id(loop))
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
            session = aiohttp.ClientSession(connector=connector)
            self._sessions[id(loop)] = session
        return session

    def _server_slots(self, target: ModelTarget) -> asyncio.Semaphore | None:
        """A limit shared by every call on this loop for a server that serves few requests at once."""
        if not target.max_concurrency:
            return None
        key = (id(asyncio.get_running_loop()), target.label)
        if key not in self._slots:
            self._slots[key] = asyncio.Semaphore(target.max_concurrency)
        return self._slots[key]

    def __call__(self, rows: list[EvaluationRow], config: RolloutProcessorConfig) -> list[asyncio.Task[EvaluationRow]]:
        public = dict(config.completion_params or {})
        target = self.resolver(public)
        http = self._http() if target.openai_wire else None
        server_slots = self._server_slots(target)

        async def one(row: EvaluationRow) -> EvaluationRow:
            async with config.semaphore:
                if server_slots is None:
                    return await self.rollout(row, target, public, http)
                async with server_slots:
                    return await self.rollout(row, target, public, http)

        return [asyncio.create_task(one(row)) for row in rows]

    async def rollout(self, row: EvaluationRow, target: ModelTarget, public: dict[str, Any],
                      http: aiohttp.ClientSession | None) -> EvaluationRow:
        start = time.perf_counter()
        if not row.messages:
            row.rollout_status = Status.rollout_error("row has no messages", {"retryable": False})
            return row
        stored = self.replay(public, row) if self.replay else None
        if stored is not None:
            completion = Completion(message={"role": "assistant", "content": stored.content},
                                    finish_reason=stored.finish_reason, usage=stored.usage, attempts=0,
                                    extra={"resumed_from": stored.source})
        elif target.label in self._unreachable:
            return self._fail(row, start, RequestFailed(
                f"not sent: {self._unreachable[target.label]} (every retry of an earlier row failed)",
                retryable=True, attempts=0, unreachable=True))
        else:
            try:
                completion = await complete(http, target, public, request_messages(row), row.tools, self.policy)
            except RequestFailed as exc:
                if exc.unreachable:
                    self._unreachable[target.label] = str(exc)
                return self._fail(row, start, exc)
        kept = [m for m in row.messages]
        while kept and kept[-1].role == "assistant":
            kept.pop()
        row.messages = kept + [assistant_message(completion.message, completion.logprobs)]
        meta = row.execution_metadata
        meta.finish_reason = completion.finish_reason
        meta.tool_call_count = len(completion.message.get("tool_calls") or [])
        if completion.usage:
            meta.usage = CompletionUsage(prompt_tokens=completion.usage.get("prompt_tokens", 0),
                                         completion_tokens=completion.usage.get("completion_tokens", 0),
                                         total_tokens=completion.usage.get("total_tokens", 0))
        meta.extra = {**(meta.extra or {}), "attempts": completion.attempts, **completion.extra}
        meta.rollout_duration_seconds = time.perf_counter() - start
        return row

    @staticmethod
    def _fail(row: EvaluationRow, start: float, exc: RequestFailed) -> EvaluationRow:
        row.rollout_status = Status.rollout_error(str(exc), exc.details())
        row.execution_metadata.rollout_duration_seconds = time.perf_counter() - start
        return row

    async def acleanup(self) -> None:
        self._unreachable.clear()
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            if not session.closed:
                await session.close()

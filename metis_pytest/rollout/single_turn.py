"""Single-turn rollout: one chat completion per row, bounded, retried, and never scored here.

Honours every completion param (``api_base``, ``temperature``, ``max_tokens``, ``extra_body`` ...).
Rows whose request still fails after retries come back with ``rollout_status`` set to an error
(with the error, the HTTP status and ``retryable``) so they are reported as errored, not scored 0.
A trailing assistant turn in the input (a reference answer, as in Eval Protocol's quickstart data)
is never sent to the model.
"""

from __future__ import annotations

import asyncio
import fcntl
import itertools
import os
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from eval_protocol.models import EvaluationRow, Message, Status
from eval_protocol.pytest.rollout_processor import RolloutProcessor
from eval_protocol.pytest.types import RolloutProcessorConfig
from openai.types import CompletionUsage

from metis_pytest.backends.base import ModelTarget
from metis_pytest.conversation import load_messages
from metis_pytest.rollout.base import Lookup, RunIndexer, StoredCompletion, register_processor
from metis_pytest.rollout.http import RequestFailed, RetryPolicy, complete

Resolver = Callable[[dict[str, Any]], ModelTarget]


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
                 lookup: Lookup | None = None) -> None:
        self.resolver: Resolver = resolver or target_from_params
        self.policy = policy or RetryPolicy()
        self.lookup = lookup
        self.runs = RunIndexer()
        self._sessions: dict[int, aiohttp.ClientSession] = {}
        self._slots: dict[tuple[int, str], asyncio.Semaphore] = {}
        # Servers that refused every attempt of some row: later rows fail at once instead of each
        # spending its full retry budget on a server that is not there.
        self._unreachable: dict[str, str] = {}
        # Rows go round-robin to the replicas of a runtime that runs several (``--shards``).
        self._replicas = itertools.count()

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
        self.runs.stamp(rows)
        public = dict(config.completion_params or {})
        target = self.resolver(public)
        http = self._http() if target.openai_wire else None
        server_slots = self._server_slots(target)

        async def one(row: EvaluationRow, replica: ModelTarget) -> EvaluationRow:
            async with config.semaphore:
                if server_slots is None:
                    return await self.rollout(row, replica, public, http)
                async with server_slots, process_slot(target.slot_lock):
                    return await self.rollout(row, replica, public, http)

        return [asyncio.create_task(one(row, target.replica(next(self._replicas)))) for row in rows]

    async def rollout(self, row: EvaluationRow, target: ModelTarget, public: dict[str, Any],
                      http: aiohttp.ClientSession | None) -> EvaluationRow:
        start = time.perf_counter()
        if not row.messages:
            row.rollout_status = Status.rollout_error("row has no messages", {"retryable": False})
            return row
        stored = self.lookup(public, row) if self.lookup else None
        if stored is not None:
            return restore(row, stored, start, "resumed_from")
        if target.label in self._unreachable:
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
        row.messages = without_reply(row) + [assistant_message(completion.message, completion.logprobs)]
        finish(row, completion.finish_reason, completion.usage, start,
               {"attempts": completion.attempts, **completion.extra})
        row.execution_metadata.tool_call_count = len(completion.message.get("tool_calls") or [])
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


def without_reply(row: EvaluationRow) -> list[Message]:
    """The row's conversation without trailing assistant turns (a reference answer is never kept)."""
    kept = list(row.messages)
    while kept and kept[-1].role == "assistant":
        kept.pop()
    return kept


def finish(row: EvaluationRow, finish_reason: str | None, usage: dict[str, int] | None, start: float,
           extra: dict[str, Any]) -> None:
    meta = row.execution_metadata
    meta.finish_reason = finish_reason
    if usage:
        meta.usage = CompletionUsage(prompt_tokens=usage.get("prompt_tokens", 0),
                                     completion_tokens=usage.get("completion_tokens", 0),
                                     total_tokens=usage.get("total_tokens", 0))
    meta.extra = {**(meta.extra or {}), **extra}
    meta.rollout_duration_seconds = time.perf_counter() - start


def restore(row: EvaluationRow, stored: StoredCompletion, start: float, provenance: str) -> EvaluationRow:
    """Put a stored completion (the whole recorded conversation when there is one) back on the row."""
    if stored.messages:
        row.messages = load_messages(stored.messages)
    else:
        row.messages = without_reply(row) + [Message(role="assistant", content=stored.content)]
    finish(row, stored.finish_reason, stored.usage, start,
           {**(stored.metadata or {}), "attempts": 0, provenance: stored.source})
    return row


class process_slot:
    """Across processes (pytest-xdist workers), one request at a time to a server that serves one at a
    time: an exclusive ``flock`` on ``path`` held for the request; nothing when ``path`` is None."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._fd: int | None = None

    async def __aenter__(self) -> None:
        if self.path is None:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    async def __aexit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the lock
            self._fd = None


@register_processor("single_turn")
def single_turn_processor(session: Any, bench: Any, lookup: Lookup | None) -> SingleTurnProcessor:
    cfg = session.cfg
    return SingleTurnProcessor(resolver=session.runtime_target,
                               policy=RetryPolicy(max_retries=cfg.max_retries, timeout=cfg.request_timeout),
                               lookup=lookup)

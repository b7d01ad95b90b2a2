"""Agent rollout: a multi-turn tool-calling loop over OpenAI's tool-call protocol, never scored here.

Works with every backend :func:`~metis_pytest.rollout.http.complete` reaches: API models, any
OpenAI-compatible server (vLLM with ``--enable-auto-tool-choice --tool-call-parser ...``, llama.cpp's
server with ``--jinja``), and LiteLLM's other providers.

Per row: a :class:`~metis_pytest.tools.base.Toolbox` is made (``toolbox_factory(row)``); then up to
``max_turns`` times the conversation (the row's messages, a trailing reference assistant turn dropped)
is sent with ``tools=toolbox.schemas()``. A reply with tool calls is appended (``content: ""`` on the
wire, never null: llama.cpp rejects null) and each call is run through ``toolbox.call``, one after the
other in the order the model gave them, each answered by a ``{"role": "tool", "tool_call_id", "name",
"content"}`` message. A reply without tool calls is the final answer. When ``max_turns`` replies all
called tools, one last call asks for a final answer: the same tools with ``tool_choice: "none"``
(``final_call="tool_choice_none"``, the default: Anthropic through LiteLLM refuses tool results without
tools) or no tools at all (``final_call="no_tools"``), after a user message saying so (``cap_prompt``; ``{max_turns}`` in it is filled in; None sends none).

Model output is taken as it comes: malformed JSON arguments are passed on as the string the model
wrote (the toolbox reports the error to the model); a tool call without an id (or with one already
used in the conversation) gets a stable one, ``call_<turn>_<index>``; arguments sent as a JSON object
are serialised, missing ones become ``"{}"``.

The whole trace stays on the row: ``row.messages`` holds every message, and
``row.execution_metadata.extra["agent"]`` holds ``turns`` (model calls, the final one included),
``tool_calls`` (per call: ``id``, ``name``, ``arguments``, ``error``, ``retryable``, ``seconds``),
``turn_cap_reached``, the counts ``tool_errors``, ``retryable_tool_errors``, ``tool_successes`` and
``all_tools_failed_retryable`` (every tool call failed with a retryable, infrastructure error, so the
model never saw a tool result: the row is kept, the scorer decides), and ``tool_records``
(``toolbox.records()``). Usage is summed over the model calls; ``finish_reason`` is the last call's;
``extra["attempts"]`` counts every request sent.

Errors follow :mod:`~metis_pytest.rollout.single_turn`: a model call that still fails after
``complete``'s retries errors the row (``rollout_status`` with the error, the HTTP status and
``retryable``), its conversation left as it was (the partial trace is in ``extra["agent"]``). A tool
failure is a tool outcome shown to the model, never an errored row (a toolbox that raises anyway is
reported as such an outcome). ``--resume`` / ``--replay``: a stored conversation is restored and
neither the model nor the tools are called. Concurrency: ``config.semaphore`` bounds rows (a whole
conversation, tools included); a server that serves few requests at once (``max_concurrency``,
``slot_lock``) is held for each model call only, not while tools run.

Where the toolbox comes from (the ``agent`` processor factory), first that exists, looked up when the
first row is rolled out (not when the test module is collected):

1. ``session.toolbox_factory(bench)`` (a method of the session), returning ``(row) -> Toolbox``;
2. ``bench.toolbox``, the benchmark's ``(session, row) -> Toolbox``;
3. ``bench.make_toolbox``, a ``(row) -> Toolbox``.

The benchmark's option ``<benchmark>_max_turns`` (ini name; ACE's is ``--max-turns``), when it
declares one, caps the turns (else 10). A toolbox with an async
``aclose()`` has it awaited when its row is done.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any, Literal

import aiohttp
from eval_protocol.models import EvaluationRow, Message, Status
from eval_protocol.pytest.types import RolloutProcessorConfig

from metis_pytest.backends.base import ModelTarget
from metis_pytest.rollout.base import Lookup, StoredCompletion, register_processor
from metis_pytest.rollout.http import Completion, RequestFailed, RetryPolicy, complete
from metis_pytest.rollout.single_turn import (
    Resolver,
    SingleTurnProcessor,
    assistant_message,
    finish,
    process_slot,
    request_messages,
    restore,
    without_reply,
)
from metis_pytest.tools.base import Toolbox, ToolOutcome

log = logging.getLogger(__name__)

ToolboxFactory = Callable[[EvaluationRow], Toolbox]
FinalCall = Literal["tool_choice_none", "no_tools"]

DEFAULT_MAX_TURNS = 10
CAP_PROMPT = ("You have reached the limit of {max_turns} tool-calling turns. Do not call any more tools: "
              "give your final answer now, from what you have.")
# Params that only mean something with tools; dropped when a call is sent without them.
_TOOL_PARAMS = ("tool_choice", "parallel_tool_calls")


class AgentProcessor(SingleTurnProcessor):
    """Eval Protocol ``RolloutProcessor`` that runs each row as a tool-calling conversation.

    It shares :class:`SingleTurnProcessor`'s connection pools, server slots, unreachable-server fast
    fail, errored-row rule and cleanup; only the conversation differs."""

    def __init__(self, *, resolver: Resolver | None = None, policy: RetryPolicy | None = None,
                 lookup: Lookup | None = None, toolbox_factory: ToolboxFactory, max_turns: int = DEFAULT_MAX_TURNS,
                 final_call: FinalCall = "tool_choice_none", cap_prompt: str | None = CAP_PROMPT) -> None:
        super().__init__(resolver=resolver, policy=policy, lookup=lookup)
        if max_turns < 1:
            raise ValueError(f"max_turns must be at least 1, got {max_turns}")
        if final_call not in ("tool_choice_none", "no_tools"):
            raise ValueError(f"final_call must be 'tool_choice_none' or 'no_tools', got {final_call!r}")
        self.toolbox_factory = toolbox_factory
        self.max_turns = max_turns
        self.final_call: FinalCall = final_call
        self.cap_prompt = cap_prompt

    def __call__(self, rows: list[EvaluationRow], config: RolloutProcessorConfig) -> list[asyncio.Task[EvaluationRow]]:
        self.runs.stamp(rows)
        public = dict(config.completion_params or {})
        target = self.resolver(public)
        http = self._http() if target.openai_wire else None

        async def one(row: EvaluationRow, replica: ModelTarget) -> EvaluationRow:
            async with config.semaphore:  # the whole conversation, tools included, on one replica
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
            return restored(row, stored, start)
        try:
            toolbox = self.toolbox_factory(row)
        except Exception as exc:
            row.rollout_status = Status.rollout_error(
                f"no toolbox for this row: {type(exc).__name__}: {exc}", {"retryable": False, "stage": "toolbox"})
            row.execution_metadata.rollout_duration_seconds = time.perf_counter() - start
            return row
        try:
            return await self._converse(row, toolbox, target, public, http, start)
        finally:
            closer = getattr(toolbox, "aclose", None)
            if callable(closer):
                try:
                    await closer()
                except Exception:
                    log.warning("closing the toolbox failed", exc_info=True)

    async def _converse(self, row: EvaluationRow, toolbox: Toolbox, target: ModelTarget, public: dict[str, Any],
                        http: aiohttp.ClientSession | None, start: float) -> EvaluationRow:
        trace = without_reply(row)
        summary = Summary()
        completion: Completion | None = None
        for turn in range(self.max_turns + 1):
            final = turn == self.max_turns
            schemas = toolbox.schemas() or None
            params, tools = public, schemas
            if final:
                summary.turn_cap_reached = True
                if self.cap_prompt:
                    trace.append(Message(role="user", content=self.cap_prompt.replace("{max_turns}", str(self.max_turns))))
                params, tools = final_call_params(public, schemas, self.final_call)
            try:
                sent = request_messages(row.model_copy(update={"messages": list(trace)}))
                completion = await self._model_call(target, params, http, sent, tools)
            except RequestFailed as exc:
                summary.add_failure(exc, turn)
                failed = self._fail(row, start, exc)
                failed.execution_metadata.extra = {**(failed.execution_metadata.extra or {}),
                                                   "agent": summary.as_dict(toolbox)}
                return failed
            summary.add_completion(completion)
            calls = normalise_tool_calls(completion.message.get("tool_calls"), turn, summary.ids)
            message = assistant_message({**completion.message, "tool_calls": calls or None}, completion.logprobs)
            trace.append(message)
            if not calls:
                break
            if final:  # the server ignored tool_choice "none": these calls are kept but not run
                summary.ignored_final_calls = len(calls)
                break
            for call in calls:
                function = call["function"]
                began = time.perf_counter()
                outcome = await call_tool(toolbox, function["name"], function["arguments"])
                summary.add_tool_call(call, outcome, time.perf_counter() - began)
                trace.append(Message(role="tool", tool_call_id=call["id"], name=function["name"],
                                     content=outcome.content))
        assert completion is not None
        row.messages = trace
        finish(row, completion.finish_reason, summary.usage(), start,
               {**summary.extra, "attempts": summary.attempts, "agent": summary.as_dict(toolbox)})
        row.execution_metadata.tool_call_count = len(summary.tool_calls)
        return row

    async def _model_call(self, target: ModelTarget, public: dict[str, Any], http: aiohttp.ClientSession | None,
                          messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> Completion:
        """One model call under the server's slots, with the unreachable-server fast fail."""
        if target.label in self._unreachable:
            raise RequestFailed(f"not sent: {self._unreachable[target.label]} (every retry of an earlier row failed)",
                                retryable=True, attempts=0, unreachable=True)
        server_slots = self._server_slots(target)
        try:
            if server_slots is None:
                return await complete(http, target, public, messages, tools, self.policy)
            async with server_slots, process_slot(target.slot_lock):
                return await complete(http, target, public, messages, tools, self.policy)
        except RequestFailed as exc:
            if exc.unreachable:
                self._unreachable[target.label] = str(exc)
            raise


class Summary:
    """What one conversation did, for ``execution_metadata.extra["agent"]``."""

    def __init__(self) -> None:
        self.turns = 0
        self.attempts = 0
        self.tool_calls: list[dict[str, Any]] = []
        self.turn_cap_reached = False
        self.ignored_final_calls = 0
        self.ids: set[str] = set()
        self.extra: dict[str, Any] = {}
        self._usage: dict[str, int] = {}
        self.failure: dict[str, Any] | None = None

    def add_completion(self, completion: Completion) -> None:
        self.turns += 1
        self.attempts += completion.attempts
        self.extra.update(completion.extra)
        for key, value in (completion.usage or {}).items():
            if key in ("prompt_tokens", "completion_tokens", "total_tokens") and isinstance(value, int):
                self._usage[key] = self._usage.get(key, 0) + value

    def add_failure(self, exc: RequestFailed, turn: int) -> None:
        self.attempts += exc.attempts
        self.failure = {"turn": turn, **exc.details()}

    def add_tool_call(self, call: dict[str, Any], outcome: ToolOutcome, seconds: float) -> None:
        self.tool_calls.append({"id": call["id"], "name": call["function"]["name"],
                                "arguments": call["function"]["arguments"], "error": bool(outcome.error),
                                "retryable": bool(outcome.retryable), "seconds": round(seconds, 6)})

    def usage(self) -> dict[str, int] | None:
        return dict(self._usage) if self._usage else None

    def as_dict(self, toolbox: Toolbox | None) -> dict[str, Any]:
        errors = sum(1 for c in self.tool_calls if c["error"])
        retryable = sum(1 for c in self.tool_calls if c["error"] and c["retryable"])
        out: dict[str, Any] = {
            "turns": self.turns,
            "tool_calls": self.tool_calls,
            "turn_cap_reached": self.turn_cap_reached,
            "tool_errors": errors,
            "retryable_tool_errors": retryable,
            "tool_successes": len(self.tool_calls) - errors,
            "all_tools_failed_retryable": bool(self.tool_calls) and retryable == len(self.tool_calls),
            "tool_records": records_of(toolbox),
        }
        if self.ignored_final_calls:
            out["ignored_final_tool_calls"] = self.ignored_final_calls
        if self.failure is not None:
            out["failed"] = self.failure
        return out


def records_of(toolbox: Toolbox | None) -> list[dict[str, Any]]:
    if toolbox is None:
        return []
    try:
        return list(toolbox.records())
    except Exception as exc:  # the trace must not cost the row
        log.warning("toolbox.records() raised", exc_info=True)
        return [{"error": f"records() raised {type(exc).__name__}: {exc}"}]


async def call_tool(toolbox: Toolbox, name: str, arguments: str) -> ToolOutcome:
    """``toolbox.call``; a toolbox that raises despite its contract gives an error outcome instead."""
    try:
        return await toolbox.call(name, arguments)
    except Exception as exc:
        log.warning("tool %r raised instead of returning an outcome", name, exc_info=True)
        message = f"{type(exc).__name__}: {exc}"
        return ToolOutcome(content=f"Error: tool {name!r} failed: {message}", error=True, retryable=False,
                           record={"tool": name, "error": message, "raised": True})


def normalise_tool_calls(raw: Any, turn: int, used: set[str]) -> list[dict[str, Any]]:
    """The reply's tool calls in OpenAI's shape, as the model gave them, with ids that are set and unique.

    A missing or repeated id becomes ``call_<turn>_<index>`` (stable: the same conversation gets the
    same ids); arguments given as an object are serialised; malformed JSON is passed on untouched."""
    calls: list[dict[str, Any]] = []
    for index, item in enumerate(raw or []):
        if not isinstance(item, dict):
            continue
        function: dict[str, Any] = item["function"] if isinstance(item.get("function"), dict) else {}
        arguments = function.get("arguments")
        if arguments is None:
            arguments = "{}"
        elif not isinstance(arguments, str):
            arguments = json.dumps(arguments)
        call_id = item.get("id")
        if not isinstance(call_id, str) or not call_id or call_id in used:
            call_id = f"call_{turn}_{index}"
            while call_id in used:
                call_id += "_"
        used.add(call_id)
        calls.append({"id": call_id, "type": "function",
                      "function": {"name": str(function.get("name") or ""), "arguments": arguments}})
    return calls


def final_call_params(public: dict[str, Any], schemas: list[dict[str, Any]] | None,
                      mode: FinalCall) -> tuple[dict[str, Any], list[dict[str, Any]] | None]:
    """Params and tools of the last call at the turn cap: tools with ``tool_choice: "none"``, or no tools
    (and no tool-only params, which a server refuses without tools)."""
    params = dict(public)
    extra = params.get("extra_body")
    if isinstance(extra, dict):
        params["extra_body"] = {k: v for k, v in extra.items() if k not in _TOOL_PARAMS}
    if mode == "no_tools" or not schemas:
        for key in _TOOL_PARAMS:
            params.pop(key, None)
        return params, None
    params["tool_choice"] = "none"
    return params, schemas


def restored(row: EvaluationRow, stored: StoredCompletion, start: float) -> EvaluationRow:
    """A stored conversation put back (single_turn's ``restore``), with the agent summary rebuilt from it.

    When the record kept the agent summary (``metadata["agent"]``, with the tool records), that is
    restored. Otherwise tool outcomes are not in the messages, so ``error``/``retryable`` are unknown
    (None) and ``tool_records`` is empty; ``restored`` says so."""
    prompt = len(without_reply(row))  # the stored conversation starts with the row's own prompt
    restore(row, stored, start, "resumed_from")
    kept = (stored.metadata or {}).get("agent")
    if kept:  # the record kept the agent summary and the tool records (the grader's sources)
        row.execution_metadata.extra = {**(row.execution_metadata.extra or {}), "agent": {**kept, "restored": True}}
        row.execution_metadata.tool_call_count = len(kept.get("tool_calls") or [])
        return row
    later = row.messages[prompt:]
    calls = [{"id": c.id, "name": c.function.name, "arguments": c.function.arguments, "error": None,
              "retryable": None, "seconds": None}
             for m in later if m.role == "assistant" for c in (m.tool_calls or [])]
    answered = {m.tool_call_id for m in later if m.role == "tool"}
    row.execution_metadata.extra = {**(row.execution_metadata.extra or {}), "agent": {
        "turns": sum(1 for m in later if m.role == "assistant"),
        "tool_calls": calls,
        "turn_cap_reached": any(m.role == "user" for m in later),
        "unanswered_tool_calls": sum(1 for c in calls if c["id"] not in answered),
        "tool_records": [],
        "restored": True,
    }}
    row.execution_metadata.tool_call_count = len(calls)
    return row


def toolbox_factory_for(session: Any, bench: Any) -> ToolboxFactory:
    """The benchmark's toolbox factory, looked up when the first row needs it (see the module docstring)."""
    resolved: list[ToolboxFactory] = []

    def make(row: EvaluationRow) -> Toolbox:
        if not resolved:
            resolved.append(resolve_toolbox_factory(session, bench))
        return resolved[0](row)

    return make


def resolve_toolbox_factory(session: Any, bench: Any) -> ToolboxFactory:
    hook = getattr(session, "toolbox_factory", None)
    if callable(hook):
        factory = hook(bench)
        if factory is not None:
            return factory
    per_session = getattr(bench, "toolbox", None)
    if callable(per_session):
        return lambda row: per_session(session, row)
    per_row = getattr(bench, "make_toolbox", None)
    if callable(per_row):
        return per_row
    raise LookupError(f"benchmark {getattr(bench, 'name', bench)!r} uses the agent processor but gives no "
                      f"toolbox (session.toolbox_factory, Benchmark.toolbox or make_toolbox)")


@register_processor("agent")
def agent_processor(session: Any, bench: Any, lookup: Lookup | None) -> AgentProcessor:
    cfg = session.cfg
    return AgentProcessor(resolver=session.runtime_target,
                          policy=RetryPolicy(max_retries=cfg.max_retries, timeout=cfg.request_timeout),
                          lookup=lookup, toolbox_factory=toolbox_factory_for(session, bench),
                          max_turns=int(cfg.extra.get(f"{bench.name}_max_turns") or DEFAULT_MAX_TURNS))

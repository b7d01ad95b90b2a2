"""A scripted, OpenAI-compatible chat-completions server for tests and benchmarks.

The server answers ``POST /v1/chat/completions`` (and ``/chat/completions``) in the real
OpenAI ``chat.completion`` shape, from a small script of :class:`Rule` objects, and can
inject latency and :class:`Fault` objects (HTTP errors, hangs, malformed bodies, dropped
connections). Every chat request it receives is recorded so tests can assert on exactly
what a client sent.

It runs an aiohttp application on its own event loop in a background thread, so it can be
used from synchronous tests and from async code running on another loop::

    with ScriptedServer(rules=[Rule(r"capital of France", "Paris")], default="OK") as server:
        client = OpenAI(base_url=server.base_url, api_key="x")
        ...
        assert server.requests[0].body["model"] == "m"

For benchmarks that should not share the GIL with the client, run it as a separate
process, either from the command line::

    python -m metis_pytest.testing.scripted_server --port 0 --latency 0.05 --reply 'OK'

which prints one line ``PORT <n>`` once listening and serves until SIGTERM/SIGINT, or with
:func:`run_in_subprocess`.

Everything binds ``127.0.0.1`` unless a host is given explicitly.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import itertools
import json
import os
import random
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

from aiohttp import web

__all__ = [
    "Fault",
    "FaultKind",
    "Latency",
    "Match",
    "RecordedRequest",
    "Reply",
    "ReplySpec",
    "Rule",
    "ScriptedServer",
    "SubprocessServer",
    "load_script",
    "main",
    "run_in_subprocess",
]

LOCALHOST = "127.0.0.1"
DEFAULT_MODEL_ID = "scripted-model"

JSON = dict[str, Any]


@dataclass
class Reply:
    """One assistant message to send back.

    Attributes:
        content: The assistant text. ``None`` (the default) means ``""`` for a plain reply and
            ``null`` when the reply only carries tool calls, as OpenAI does.
        tool_calls: Tool calls as ``{"name": ..., "arguments": {...} | "<json string>"}``. Each
            is given the id ``call_<n>`` (``n`` counts up per server) and type ``"function"``.
        finish_reason: ``"stop"``, ``"tool_calls"`` or ``"length"``. ``None`` picks
            ``"tool_calls"`` when there are tool calls and ``"stop"`` otherwise.
    """

    content: str | None = None
    tool_calls: list[JSON] | None = None
    finish_reason: str | None = None


ReplySpec = Union[str, Reply, Callable[[JSON], str | Reply | Awaitable[str | Reply]]]
"""A plain string (the assistant content), a :class:`Reply`, or a callable that takes the
request JSON and returns either (it may be ``async``; it runs on the server's loop)."""

Match = Union[str, re.Pattern[str], Callable[[JSON], bool], None]
"""A regex searched in the last user message, a predicate on the request JSON, or ``None``."""


@dataclass
class Rule:
    """Reply with ``reply`` when ``match`` matches a chat request.

    Attributes:
        match: A regex (string or compiled) searched with ``re.search`` in the text of the last
            ``user`` message, a callable ``(request_json) -> bool``, or ``None`` to always match.
        reply: What to answer; see :data:`ReplySpec`.
    """

    match: Match
    reply: ReplySpec

    def __post_init__(self) -> None:
        if isinstance(self.match, str):
            self.match = re.compile(self.match)

    def matches(self, body: JSON) -> bool:
        """Whether this rule applies to the request ``body``."""
        if self.match is None:
            return True
        if isinstance(self.match, re.Pattern):
            return self.match.search(last_user_text(body)) is not None
        assert callable(self.match)  # a str was compiled to a Pattern in __post_init__
        return bool(self.match(body))


FaultKind = Literal["status", "timeout", "malformed", "disconnect"]


@dataclass
class Fault:
    """A failure to inject into the chat requests it selects.

    Kinds:
        ``"status"``: answer ``status`` (e.g. 429, 500, 503) with an OpenAI-style error body
            ``{"error": {"message", "type", "param", "code"}}``, plus a ``Retry-After`` header
            when ``retry_after`` is set.
        ``"timeout"``: wait ``hang_s`` seconds before answering normally, so the client is
            expected to time out first. Stopping the server ends such waits at once.
        ``"malformed"``: answer 200 with a body that is not JSON (``malformed="not_json"``) or
            JSON without ``choices`` (``malformed="no_choices"``).
        ``"disconnect"``: close the connection without sending a response.

    Selection (by the server's 0-based request index): ``at`` (indices), ``first_n`` (indices
    below it), ``when`` (a predicate ``(index, request_json) -> bool``) and ``probability`` (a
    draw from a ``random.Random(seed)``, so runs are reproducible for a given request order).
    Every selector that is set must agree; a fault with none set applies to every request.
    The first fault (in list order) that applies to a request wins.
    """

    kind: FaultKind
    status: int = 500
    retry_after: float | None = None
    message: str | None = None
    hang_s: float = 30.0
    malformed: Literal["not_json", "no_choices"] = "not_json"
    at: Collection[int] | None = None
    first_n: int | None = None
    when: Callable[[int, JSON], bool] | None = None
    probability: float | None = None
    seed: int = 0
    _rng: random.Random = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in ("status", "timeout", "malformed", "disconnect"):
            raise ValueError(f"unknown fault kind {self.kind!r}")
        if self.at is not None:
            self.at = frozenset(self.at)
        self.reseed()

    def reseed(self) -> None:
        """Restart the probability draws from ``seed``."""
        self._rng = random.Random(self.seed)

    def applies(self, index: int, body: JSON) -> bool:
        """Whether this fault selects request number ``index`` with JSON ``body``."""
        if self.at is not None and index not in self.at:
            return False
        if self.first_n is not None and index >= self.first_n:
            return False
        if self.when is not None and not self.when(index, body):
            return False
        return self.probability is None or self._rng.random() < self.probability


Latency = Union[float, Callable[[int], float]]
"""Seconds to wait before answering each chat request: a constant, or a function of the
0-based request index."""


@dataclass
class RecordedRequest:
    """One chat request as the server received it.

    Attributes:
        index: 0-based arrival order (since start or the last :meth:`ScriptedServer.reset`).
        path: The request path, e.g. ``/v1/chat/completions``.
        body: The parsed JSON body, or ``None`` when it was not valid JSON.
        headers: The request headers.
        status: The HTTP status answered; ``None`` while pending or when no response was sent.
        fault: The kind of fault injected, if any.
        latency_s: The latency applied to this request (seconds waited before answering).
    """

    index: int
    path: str
    body: Any
    headers: dict[str, str]
    status: int | None = None
    fault: FaultKind | None = None
    latency_s: float = 0.0


def message_text(content: Any) -> str:
    """The text of a message ``content``: a string, or a list of ``{"type": "text"}`` parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def last_user_text(body: JSON) -> str:
    """The text of the last ``user`` message of a chat request (``""`` if there is none)."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return ""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return message_text(message.get("content"))
    return ""


def count_words(text: str | None) -> int:
    """Whitespace-split word count, the stand-in for a token count."""
    return len(text.split()) if text else 0


def prompt_tokens(body: JSON) -> int:
    """Word count over all message contents of a request."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return 0
    return sum(count_words(message_text(m.get("content"))) for m in messages if isinstance(m, dict))


def token_logprobs(content: str | None, top_k: int) -> JSON:
    """Deterministic OpenAI-style ``logprobs`` with one entry per whitespace token of ``content``.

    Token ``i`` gets logprob ``-0.1 * (i % 5) - 0.01``; its ``top_logprobs`` list starts with the
    token itself and continues with ``<token>~<j>`` alternatives, each 1.0 less likely.
    """
    entries = []
    for i, word in enumerate((content or "").split()):
        token = word if i == 0 else " " + word
        logprob = round(-0.1 * (i % 5) - 0.01, 6)
        top = [
            {"token": token if j == 0 else f"{token}~{j}", "logprob": logprob - j}
            for j in range(top_k)
        ]
        for alt in top:
            alt["bytes"] = list(str(alt["token"]).encode())
        entries.append({"token": token, "logprob": logprob, "bytes": list(token.encode()), "top_logprobs": top})
    return {"content": entries, "refusal": None}


def error_body(status: int, message: str) -> JSON:
    """An OpenAI-style error body for HTTP ``status``."""
    kinds = {
        400: ("invalid_request_error", None),
        401: ("authentication_error", "invalid_api_key"),
        404: ("not_found_error", None),
        429: ("rate_limit_error", "rate_limit_exceeded"),
    }
    kind, code = kinds.get(status, ("server_error" if status >= 500 else "invalid_request_error", None))
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON error response in OpenAI's shape."""
    return web.json_response(error_body(status, message), status=status, headers=headers)


def as_reply(value: str | Reply) -> Reply:
    """Normalise a rule's result to a :class:`Reply`."""
    if isinstance(value, Reply):
        return value
    if isinstance(value, str):
        return Reply(content=value)
    raise TypeError(f"a scripted reply must be a str or Reply, got {type(value).__name__}")


class ScriptedServer:
    """An OpenAI-compatible chat server that answers from a script, on a background thread.

    Args:
        rules: Tried in order; the first :class:`Rule` that matches a request supplies the reply.
        default: The reply when no rule matches.
        latency: Delay before each chat answer; see :data:`Latency`.
        faults: :class:`Fault` objects to inject; the first that applies to a request wins.
        host: Interface to bind (``127.0.0.1``).
        port: Port to bind; ``0`` picks a free one.
        model_id: The model listed by ``GET /v1/models``. Chat answers echo the request's model.

    Rules, default, latency and faults can be changed while the server runs (:meth:`set_rules`,
    :meth:`script`, :meth:`set_latency`, :meth:`set_faults`); a request in flight keeps the
    configuration it started with. Only chat requests are recorded, counted and faulted.
    """

    def __init__(
        self,
        rules: Sequence[Rule] = (),
        default: ReplySpec = "OK",
        latency: Latency = 0.0,
        faults: Sequence[Fault] = (),
        host: str = LOCALHOST,
        port: int = 0,
        model_id: str = DEFAULT_MODEL_ID,
    ) -> None:
        self._rules: tuple[Rule, ...] = tuple(rules)
        self._default: ReplySpec = default
        self._latency: Latency = latency
        self._faults: tuple[Fault, ...] = tuple(faults)
        self._host = host
        self._requested_port = port
        self._model_id = model_id
        self._lock = threading.Lock()
        self._records: list[RecordedRequest] = []
        self._in_flight = 0
        self._peak_in_flight = 0
        self._tool_call_ids = itertools.count()
        self._port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------- configuration

    def set_rules(self, rules: Sequence[Rule], default: ReplySpec | None = None) -> None:
        """Replace the rules (and the default reply, when given)."""
        self._rules = tuple(rules)
        if default is not None:
            self._default = default

    def script(self, *rules: Rule | tuple[Match, ReplySpec], default: ReplySpec | None = None) -> None:
        """Replace the rules from :class:`Rule` objects or ``(match, reply)`` pairs."""
        self.set_rules([r if isinstance(r, Rule) else Rule(*r) for r in rules], default)

    def set_latency(self, latency: Latency) -> None:
        """Replace the per-request latency."""
        self._latency = latency

    def set_faults(self, faults: Sequence[Fault]) -> None:
        """Replace the injected faults (``[]`` turns them off)."""
        self._faults = tuple(faults)

    # ----------------------------------------------------------------- records

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of the chat requests received, in arrival order."""
        with self._lock:
            return list(self._records)

    @property
    def request_count(self) -> int:
        """How many chat requests were received."""
        with self._lock:
            return len(self._records)

    @property
    def peak_in_flight(self) -> int:
        """The most chat requests being handled at once (since start or the last :meth:`reset`)."""
        with self._lock:
            return self._peak_in_flight

    def reset(self) -> None:
        """Forget recorded requests, restart request indices, tool-call ids and fault draws."""
        with self._lock:
            self._records = []
            self._peak_in_flight = self._in_flight
            self._tool_call_ids = itertools.count()
            for fault in self._faults:
                fault.reseed()

    def _record(self, request: web.Request, body: Any) -> RecordedRequest:
        with self._lock:
            record = RecordedRequest(len(self._records), request.path, body, dict(request.headers))
            self._records.append(record)
            self._in_flight += 1
            self._peak_in_flight = max(self._peak_in_flight, self._in_flight)
        return record

    # ----------------------------------------------------------------- lifecycle

    @property
    def port(self) -> int:
        """The bound port (after :meth:`start`)."""
        if self._port is None:
            raise RuntimeError("ScriptedServer is not started")
        return self._port

    @property
    def base_url(self) -> str:
        """The OpenAI ``base_url``, ``http://HOST:PORT/v1``."""
        return f"http://{self._host}:{self.port}/v1"

    def start(self, timeout: float = 10.0) -> ScriptedServer:
        """Bind and serve on a background thread; return once listening."""
        if self._thread is not None:
            raise RuntimeError("ScriptedServer is already started")
        ready = threading.Event()
        errors: list[BaseException] = []
        self._thread = threading.Thread(
            target=self._run_thread, args=(ready, errors), name="scripted-llm-server", daemon=True
        )
        self._thread.start()
        if not ready.wait(timeout) or errors:
            self.stop()
            raise RuntimeError("ScriptedServer failed to start") from (errors[0] if errors else None)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving, close every connection and join the thread. Safe to call twice."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        loop, closing = self._loop, self._closing
        if loop is not None and closing is not None:
            with contextlib.suppress(RuntimeError):  # the loop already finished
                loop.call_soon_threadsafe(closing.set)
        thread.join(timeout)
        self._port = None

    def __enter__(self) -> ScriptedServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run_thread(self, ready: threading.Event, errors: list[BaseException]) -> None:
        try:
            asyncio.run(self.serve(lambda _port: ready.set()))
        except BaseException as exc:  # reported to start()
            errors.append(exc)
            ready.set()

    async def serve(self, on_ready: Callable[[int], None]) -> None:
        """Serve on the running loop until :meth:`stop` (or :meth:`close_soon`) is called.

        ``on_ready(port)`` is called once the socket is listening.
        """
        self._loop = asyncio.get_running_loop()
        self._closing = asyncio.Event()
        runner = web.AppRunner(self._make_app(), access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.bind((self._host, self._requested_port))
            except OSError:
                sock.close()
                raise
            site = web.SockSite(runner, sock, backlog=1024, shutdown_timeout=0.5)
            await site.start()
            self._port = sock.getsockname()[1]
            on_ready(self._port)
            await self._closing.wait()
        finally:
            await runner.cleanup()

    def close_soon(self) -> None:
        """Ask :meth:`serve` to return; call from the server's own loop (e.g. a signal handler)."""
        if self._closing is not None:
            self._closing.set()

    # ----------------------------------------------------------------- HTTP

    def _make_app(self) -> web.Application:
        app = web.Application()
        for prefix in ("/v1", ""):
            app.router.add_post(f"{prefix}/chat/completions", self._handle_chat)
            app.router.add_get(f"{prefix}/models", self._handle_models)
        app.router.add_get("/health", self._handle_health)
        return app

    async def _handle_health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _handle_models(self, request: web.Request) -> web.Response:
        model = {"id": self._model_id, "object": "model", "created": 0, "owned_by": "metis"}
        return web.json_response({"object": "list", "data": [model]})

    async def _handle_chat(self, request: web.Request) -> web.StreamResponse:
        try:
            body: Any = json.loads(await request.read())
        except ValueError:
            body = None
        record = self._record(request, body)
        try:
            response = await self._answer(request, record)
        finally:
            with self._lock:
                self._in_flight -= 1
        record.status = None if record.fault == "disconnect" else response.status
        return response

    async def _answer(self, request: web.Request, record: RecordedRequest) -> web.StreamResponse:
        body = record.body
        if not isinstance(body, dict):
            return error_response(400, "request body must be a JSON object")
        if body.get("stream"):
            return error_response(400, "ScriptedServer does not support stream=true")
        latency = self._latency
        delay = latency(record.index) if callable(latency) else latency
        if delay > 0:
            record.latency_s = delay
            await asyncio.sleep(delay)
        fault = next((f for f in self._faults if f.applies(record.index, body)), None)
        if fault is not None:
            record.fault = fault.kind
            faulted = await self._apply_fault(fault, request)
            if faulted is not None:
                return faulted
        try:
            reply = await self._pick_reply(body)
        except Exception as exc:  # a scripted callable failed: report it like a server error
            return error_response(500, f"scripted reply raised {type(exc).__name__}: {exc}")
        return web.json_response(self._completion(body, reply))

    async def _apply_fault(self, fault: Fault, request: web.Request) -> web.StreamResponse | None:
        """The faulty response, or ``None`` to answer normally (after a ``timeout`` hang)."""
        if fault.kind == "status":
            headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else None
            return error_response(fault.status, fault.message or f"injected HTTP {fault.status}", headers)
        if fault.kind == "malformed":
            if fault.malformed == "no_choices":
                return web.json_response({"id": "chatcmpl-malformed", "object": "chat.completion"})
            return web.Response(text="this is not json {", content_type="application/json")
        if fault.kind == "disconnect":
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=499)
        assert self._closing is not None
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._closing.wait(), fault.hang_s)
        return None

    async def _pick_reply(self, body: JSON) -> Reply:
        spec = next((rule.reply for rule in self._rules if rule.matches(body)), self._default)
        if callable(spec):
            value = spec(body)
            if inspect.isawaitable(value):
                value = await value
            return as_reply(value)
        return as_reply(spec)

    def _completion(self, body: JSON, reply: Reply) -> JSON:
        tool_calls = [self._tool_call(call) for call in reply.tool_calls or ()]
        content = reply.content if reply.content is not None or tool_calls else ""
        message: JSON = {"role": "assistant", "content": content}
        if tool_calls:
            message["tool_calls"] = tool_calls
        logprobs = None
        if body.get("logprobs"):
            logprobs = token_logprobs(content, int(body.get("top_logprobs") or 0))
        completion_tokens = count_words(content) + sum(
            count_words(c["function"]["arguments"]) for c in tool_calls
        )
        prompt = prompt_tokens(body)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model") or self._model_id,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": reply.finish_reason or ("tool_calls" if tool_calls else "stop"),
                    "logprobs": logprobs,
                }
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt + completion_tokens,
            },
        }

    def _tool_call(self, call: JSON) -> JSON:
        arguments = call.get("arguments", {})
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments)
        with self._lock:
            call_id = f"call_{next(self._tool_call_ids)}"
        return {"id": call_id, "type": "function", "function": {"name": call["name"], "arguments": arguments}}


# --------------------------------------------------------------------- subprocess


@dataclass
class SubprocessServer:
    """A scripted server running in a child process (see :func:`run_in_subprocess`)."""

    process: subprocess.Popen[bytes]
    port: int
    host: str = LOCALHOST

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.process.pid

    @property
    def base_url(self) -> str:
        """The OpenAI ``base_url``, ``http://HOST:PORT/v1``."""
        return f"http://{self.host}:{self.port}/v1"


def _read_port_line(process: subprocess.Popen[bytes], timeout: float) -> int:
    """Read the child's ``PORT <n>`` line, failing after ``timeout`` seconds."""
    assert process.stdout is not None
    fd = process.stdout.fileno()
    deadline = time.monotonic() + timeout
    buffer = b""
    while b"\n" not in buffer:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"scripted server did not report its port within {timeout}s")
        readable, _, _ = select.select([fd], [], [], remaining)
        if readable:
            chunk = os.read(fd, 4096)
            if not chunk:
                raise RuntimeError(f"scripted server exited early (code {process.wait()})")
            buffer += chunk
    line = buffer.split(b"\n", 1)[0].decode().strip()
    match = re.fullmatch(r"PORT (\d+)", line)
    if match is None:
        raise RuntimeError(f"unexpected first line from scripted server: {line!r}")
    return int(match.group(1))


def _stop_process(process: subprocess.Popen[bytes]) -> None:
    """Terminate ``process`` (by its PID), wait 5 s, then kill it."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stdout is not None:
        process.stdout.close()


@contextlib.contextmanager
def run_in_subprocess(
    latency: float = 0.0,
    reply: str = "OK",
    reply_file: str | os.PathLike[str] | None = None,
    host: str = LOCALHOST,
    port: int = 0,
    startup_timeout: float = 20.0,
) -> Iterator[SubprocessServer]:
    """Run the command-line server in a child process for the duration of the block.

    Starts ``python -m metis_pytest.testing.scripted_server`` with the given options, waits for
    its ``PORT <n>`` line and yields a :class:`SubprocessServer`. On exit the child is
    terminated by its PID (SIGTERM, up to 5 s, then SIGKILL).
    """
    args = [sys.executable, "-m", "metis_pytest.testing.scripted_server", "--host", host,
            "--port", str(port), "--latency", str(latency), "--reply", reply]
    if reply_file is not None:
        args += ["--reply-file", os.fspath(reply_file)]
    package_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env)
    try:
        yield SubprocessServer(process, _read_port_line(process, startup_timeout), host)
    finally:
        _stop_process(process)


# --------------------------------------------------------------------- command line


def _reply_from_json(value: Any) -> ReplySpec:
    """A reply from the rules file: a string or ``{"content", "tool_calls", "finish_reason"}``."""
    return value if isinstance(value, str) else Reply(**value)


def load_script(path: str | os.PathLike[str]) -> tuple[list[Rule], ReplySpec | None, list[Fault]]:
    """Read a rules file.

    The file holds either a list of rules or an object
    ``{"rules": [...], "default": <reply>, "faults": [{"kind": ..., ...}]}``, where a rule is
    ``{"match": "<regex>" | null, "reply": "<text>" | {"content": ..., "tool_calls": [...]}}``
    and a fault takes :class:`Fault`'s fields (except ``when``).
    """
    data = json.loads(Path(path).read_text())
    if isinstance(data, list):
        data = {"rules": data}
    rules = [Rule(r.get("match"), _reply_from_json(r["reply"])) for r in data.get("rules", [])]
    default = _reply_from_json(data["default"]) if "default" in data else None
    faults = [Fault(**f) for f in data.get("faults", [])]
    return rules, default, faults


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m metis_pytest.testing.scripted_server",
        description="Serve scripted OpenAI-compatible chat completions until SIGTERM/SIGINT.",
    )
    parser.add_argument("--host", default=LOCALHOST)
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--reply", default="OK", help="the default assistant reply")
    parser.add_argument("--reply-file", help="JSON rules file (see load_script); its default wins")
    return parser.parse_args(argv)


async def _serve_until_signal(server: ScriptedServer) -> None:
    def announce(port: int) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, server.close_soon)
        print(f"PORT {port}", flush=True)

    await server.serve(announce)


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point: print ``PORT <n>`` once listening, serve until a signal."""
    args = _parse_args(argv)
    rules: list[Rule] = []
    default: ReplySpec = args.reply
    faults: list[Fault] = []
    if args.reply_file:
        rules, file_default, faults = load_script(args.reply_file)
        default = file_default if file_default is not None else default
    server = ScriptedServer(rules, default, args.latency, faults, host=args.host, port=args.port)
    asyncio.run(_serve_until_signal(server))


if __name__ == "__main__":
    main()

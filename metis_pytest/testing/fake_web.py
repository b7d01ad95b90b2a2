"""Loopback fakes of SearchAPI.io and Jina Reader, speaking their real response shapes, for tests.

:class:`FakeSearchAPI` answers ``GET /api/v1/search?engine=google&q=...&num=...&api_key=...`` with
``{"search_metadata", "search_parameters", "search_information", "organic_results": [{"position",
"title", "link", "source", "domain", "displayed_link", "snippet"}]}`` from a dict query -> results.
:class:`FakeJina` answers ``GET /<url>`` from a dict url -> page, in Jina's text form (``Title:``,
``URL Source:``, ``Published Time:``, ``Markdown Content:``) or, for ``Accept: application/json``,
its JSON form ``{"code": 200, "status": 20000, "data": {"title", "url", "content", ...}}``; an unknown
URL gets Jina's 422 error body.

Both run an aiohttp app on their own loop in a background thread (like
:class:`~metis_pytest.testing.scripted_server.ScriptedServer`: ``start()``/``stop()``, a context
manager), bind ``127.0.0.1`` on a free port, record every request (:attr:`requests`, with the
parsed query, the headers and the status answered), count requests in flight
(:attr:`peak_in_flight`) and inject :class:`~metis_pytest.testing.scripted_server.Fault` s
(``Fault("status", status=429, retry_after=1, first_n=2)``, ``Fault("timeout", hang_s=5)``,
``"malformed"``, ``"disconnect"``); a fault's ``when(index, info)`` gets ``{"q": ...}`` or
``{"url": ...}``. Error bodies are the services' own (``{"error": "..."}`` for SearchAPI,
``{"data": null, "code", "name", "status", "message", "readableMessage"}`` for Jina).

The pytest fixtures ``fake_searchapi`` and ``fake_jina`` start one each and stop it at teardown;
``fake_searchapi`` also sets ``SEARCHAPI_IO_KEY`` to the fake's key and ``fake_jina`` unsets
``JINA_API_KEY`` (so no real key reaches a fake). aiohttp is imported when a server starts, so
registering this module as a plugin stays cheap.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import socket
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Union

import pytest

if TYPE_CHECKING:
    from aiohttp import web

    from metis_pytest.testing.scripted_server import Fault, Latency
    from metis_pytest.tools.web import JinaReaderClient, Page, SearchAPIClient, SearchResult

__all__ = ["FakeJina", "FakeSearchAPI", "WebRequest", "fake_jina", "fake_searchapi"]

LOCALHOST = "127.0.0.1"
DEFAULT_SEARCHAPI_KEY = "fake-searchapi-key"

ResultSpec = Union[Mapping[str, Any], "SearchResult"]
"""A search result: ``{"title", "link", "snippet"}`` (``position`` is filled in) or a ``SearchResult``."""

PageSpec = Union[str, Mapping[str, Any], "Page"]
"""A page: its Markdown text, ``{"title", "content", "url", "published_time", "status"}`` or a ``Page``.
``status`` >= 400 makes Jina say ``Warning: Target URL returned error <status>: ...``."""


@dataclass
class WebRequest:
    """One request as a fake received it.

    ``params`` is the parsed query string, ``target`` the query (SearchAPI) or the page URL (Jina)."""

    index: int
    method: str
    path: str
    params: dict[str, str]
    headers: dict[str, str]
    target: str | None = None
    status: int | None = None
    fault: str | None = None
    latency_s: float = 0.0
    started: float = field(default_factory=time.monotonic)


class _FakeService:
    """The lifecycle, recording, latency and faults shared by both fakes."""

    name = "fake web service"

    def __init__(self, *, latency: Latency = 0.0, faults: Sequence[Fault] = (), host: str = LOCALHOST,
                 port: int = 0) -> None:
        self._latency: Latency = latency
        self._faults: tuple[Fault, ...] = tuple(faults)
        self._host = host
        self._requested_port = port
        self._lock = threading.Lock()
        self._records: list[WebRequest] = []
        self._in_flight = 0
        self._peak = 0
        self._port: int | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing: asyncio.Event | None = None

    # ----------------------------------------------------------------- scripting and inspection

    def set_faults(self, faults: Sequence[Fault]) -> None:
        """Replace the faults (their probability draws restart)."""
        for fault in faults:
            fault.reseed()
        self._faults = tuple(faults)

    def set_latency(self, latency: Latency) -> None:
        self._latency = latency

    @property
    def requests(self) -> list[WebRequest]:
        """Every request received, in arrival order."""
        with self._lock:
            return list(self._records)

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    @property
    def peak_in_flight(self) -> int:
        """The most requests being answered at once since start (or :meth:`reset`)."""
        with self._lock:
            return self._peak

    def reset(self) -> None:
        """Forget the recorded requests and the peak (the script and faults stay)."""
        with self._lock:
            self._records.clear()
            self._peak = self._in_flight

    # ----------------------------------------------------------------- lifecycle

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return self._port

    @property
    def origin(self) -> str:
        return f"http://{self._host}:{self.port}"

    def start(self, timeout: float = 10.0) -> Any:
        """Bind and serve on a background thread; return ``self`` once listening."""
        if self._thread is not None:
            raise RuntimeError(f"{type(self).__name__} is already started")
        ready = threading.Event()
        errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._run_thread, args=(ready, errors),
                                        name=f"fake-{type(self).__name__}", daemon=True)
        self._thread.start()
        if not ready.wait(timeout) or errors:
            self.stop()
            raise RuntimeError(f"{type(self).__name__} failed to start") from (errors[0] if errors else None)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving, close every connection and join the thread. Safe to call twice."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        loop, closing = self._loop, self._closing
        if loop is not None and closing is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(closing.set)
        thread.join(timeout)
        self._port = None

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run_thread(self, ready: threading.Event, errors: list[BaseException]) -> None:
        try:
            asyncio.run(self._serve(ready))
        except BaseException as exc:  # reported to start()
            errors.append(exc)
            ready.set()

    async def _serve(self, ready: threading.Event) -> None:
        from aiohttp import web

        self._loop = asyncio.get_running_loop()
        self._closing = asyncio.Event()
        app = web.Application()
        self._routes(app)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
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
            ready.set()
            await self._closing.wait()
        finally:
            await runner.cleanup()

    # ----------------------------------------------------------------- HTTP

    def _routes(self, app: web.Application) -> None:
        raise NotImplementedError

    def _record(self, request: web.Request, target: str | None) -> WebRequest:
        with self._lock:
            record = WebRequest(index=len(self._records), method=request.method, path=request.path,
                                params=dict(request.query), headers=dict(request.headers), target=target)
            self._records.append(record)
            self._in_flight += 1
            self._peak = max(self._peak, self._in_flight)
        return record

    async def _serve_request(self, request: web.Request, target: str | None, info: dict[str, Any],
                             answer: Callable[[], web.StreamResponse]) -> web.StreamResponse:
        record = self._record(request, target)
        try:
            latency = self._latency
            delay = latency(record.index) if callable(latency) else latency
            if delay > 0:
                record.latency_s = delay
                await asyncio.sleep(delay)
            response: web.StreamResponse | None = None
            fault = next((f for f in self._faults if f.applies(record.index, info)), None)
            if fault is not None:
                record.fault = fault.kind
                response = await self._apply_fault(fault, request)
            if response is None:
                try:
                    response = answer()
                except Exception as exc:  # a scripted callable failed: a server error
                    response = self._error(500, f"fake raised {type(exc).__name__}: {exc}")
            record.status = None if record.fault == "disconnect" else response.status
            return response
        finally:
            with self._lock:
                self._in_flight -= 1

    async def _apply_fault(self, fault: Fault, request: web.Request) -> web.StreamResponse | None:
        from aiohttp import web

        if fault.kind == "status":
            headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else None
            return self._error(fault.status, fault.message or f"injected HTTP {fault.status}", headers)
        if fault.kind == "malformed":
            return web.Response(text="this is not json {", content_type="application/json")
        if fault.kind == "disconnect":
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=499)
        assert self._closing is not None  # "timeout": hang, then answer normally
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._closing.wait(), fault.hang_s)
        return None

    def _error(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
        raise NotImplementedError


# --------------------------------------------------------------------- SearchAPI.io


def _result_json(spec: ResultSpec, position: int) -> dict[str, Any]:
    item = spec.to_json() if hasattr(spec, "to_json") else dict(spec)  # type: ignore[union-attr]
    link = str(item.get("link") or "")
    domain = urllib.parse.urlsplit(link).hostname or ""
    out = {
        "position": position,
        "title": item.get("title", ""),
        "link": link,
        "source": domain.removeprefix("www."),
        "domain": domain,
        "displayed_link": link.replace("https://", "").replace("http://", "").replace("/", " › ").rstrip(" ›"),
        "snippet": item.get("snippet", ""),
    }
    out.update({k: v for k, v in item.items() if k not in ("position", "title", "link", "snippet")})
    return out


class FakeSearchAPI(_FakeService):
    """SearchAPI.io's Google engine on loopback, answering from ``results`` (query -> results).

    ``default``: results for a query not in ``results`` (a list, or a callable ``query -> list``; the
    default is none, answered as SearchAPI does: no ``organic_results`` key). ``api_key``: the key
    required as ``api_key`` (or ``Authorization: Bearer``); ``None`` accepts any. A wrong key is 401
    ``{"error": ...}``, like SearchAPI."""

    name = "SearchAPI"
    path = "/api/v1/search"

    def __init__(self, results: Mapping[str, Sequence[ResultSpec]] | None = None, *,
                 default: Sequence[ResultSpec] | Callable[[str], Sequence[ResultSpec] | None] | None = None,
                 api_key: str | None = DEFAULT_SEARCHAPI_KEY, latency: Latency = 0.0,
                 faults: Sequence[Fault] = (), host: str = LOCALHOST, port: int = 0) -> None:
        super().__init__(latency=latency, faults=faults, host=host, port=port)
        self._results: dict[str, list[ResultSpec]] = {q: list(r) for q, r in (results or {}).items()}
        self._default = default
        self.api_key = api_key

    @property
    def base_url(self) -> str:
        """``SearchAPIClient(base_url=...)``: ``http://127.0.0.1:PORT/api/v1/search``."""
        return f"{self.origin}{self.path}"

    def script(self, results: Mapping[str, Sequence[ResultSpec]]) -> None:
        """Add (or replace) the results of some queries."""
        with self._lock:
            self._results.update({q: list(r) for q, r in results.items()})

    def client(self, **kwargs: Any) -> SearchAPIClient:
        """A :class:`~metis_pytest.tools.web.SearchAPIClient` pointed at this fake."""
        from metis_pytest.tools.web import SearchAPIClient

        return SearchAPIClient(base_url=self.base_url, **kwargs)

    def _routes(self, app: web.Application) -> None:
        app.router.add_get(self.path, self._handle)
        app.router.add_get("/search", self._handle)

    def _error(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
        from aiohttp import web

        return web.json_response({"error": message}, status=status, headers=headers)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        query = request.query.get("q")
        return await self._serve_request(request, query, {"q": query, "params": dict(request.query)},
                                         lambda: self._answer(request))

    def _answer(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web

        params = request.query
        if self.api_key is not None:
            auth = request.headers.get("Authorization", "")
            given = params.get("api_key") or (auth[7:] if auth.startswith("Bearer ") else None)
            if given != self.api_key:
                return self._error(401, "Invalid API key. Your API key should be here: "
                                        "https://www.searchapi.io/api_key")
        engine = params.get("engine", "google")
        if engine != "google":
            return self._error(400, f"Unsupported engine: {engine} (this fake speaks google only)")
        query = params.get("q")
        if not query:
            return self._error(400, "Missing query `q` parameter.")
        try:
            num = int(params.get("num", "10"))
        except ValueError:
            return self._error(400, "Invalid `num` parameter.")
        with self._lock:
            specs: Sequence[ResultSpec] | None = self._results.get(query)
        if specs is None:
            default = self._default
            specs = default(query) if callable(default) else default
        items = [_result_json(spec, n) for n, spec in enumerate(list(specs or [])[:num], start=1)]
        search_id = f"search_{uuid.uuid4().hex[:24]}"
        google = "https://www.google.com/search?" + urllib.parse.urlencode({"q": query, "num": num})
        body: dict[str, Any] = {
            "search_metadata": {
                "id": search_id, "status": "Success", "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "request_time_taken": 0.01, "parsing_time_taken": 0.0, "total_time_taken": 0.01,
                "request_url": google, "html_url": f"{self.origin}/api/v1/searches/{search_id}.html",
                "json_url": f"{self.origin}/api/v1/searches/{search_id}",
            },
            "search_parameters": {"engine": "google", "q": query, "num": num, "device": "desktop",
                                  "google_domain": "google.com", "hl": "en", "gl": "us"},
            "search_information": {"query_displayed": query, "total_results": len(items) * 1000,
                                   "time_taken_displayed": 0.31,
                                   "organic_results_state": "Results for exact spelling" if items else "Fully empty"},
        }
        if items:
            body["organic_results"] = items
        return web.json_response(body)


# --------------------------------------------------------------------- Jina Reader


def _page_json(spec: PageSpec, url: str) -> dict[str, Any]:
    if isinstance(spec, str):
        return {"title": "", "url": url, "content": spec, "published_time": None, "status": 200}
    item = spec.to_json() if hasattr(spec, "to_json") else dict(spec)  # type: ignore[union-attr]
    return {"title": str(item.get("title") or ""), "url": str(item.get("url") or url),
            "content": str(item.get("content") or ""), "published_time": item.get("published_time"),
            "status": int(item.get("status") or 200)}


def _warning(status: int) -> str | None:
    if status < 400:
        return None
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    return f"Target URL returned error {status}: {phrase}"


def jina_text(page: Mapping[str, Any]) -> str:
    """A page in Jina Reader's text form (as its ``FormattedPageDto.textRepresentation`` writes it)."""
    mixins = []
    if page.get("published_time"):
        mixins.append(f"Published Time: {page['published_time']}")
    warning = _warning(int(page.get("status") or 200))
    if warning:
        mixins.append(f"Warning: {warning}")
    middle = f"\n{chr(10).join(mixins)}\n" if mixins else ""
    return f"Title: {page['title']}\n\nURL Source: {page['url']}\n{middle}\nMarkdown Content:\n{page['content']}\n"


class FakeJina(_FakeService):
    """Jina Reader on loopback, answering ``GET /<url>`` from ``pages`` (url -> page).

    ``default``: the page for a URL not in ``pages`` (a callable ``url -> page | None``); without one
    an unknown URL gets Jina's 422 (``missing_status``) error. ``api_key``: when set, requests need
    ``Authorization: Bearer <key>`` (401 otherwise); ``None`` (the default) accepts any request."""

    name = "Jina Reader"

    def __init__(self, pages: Mapping[str, PageSpec] | None = None, *,
                 default: Callable[[str], PageSpec | None] | None = None, api_key: str | None = None,
                 missing_status: int = 422, latency: Latency = 0.0, faults: Sequence[Fault] = (),
                 host: str = LOCALHOST, port: int = 0) -> None:
        super().__init__(latency=latency, faults=faults, host=host, port=port)
        self._pages: dict[str, PageSpec] = dict(pages or {})
        self._default = default
        self.api_key = api_key
        self.missing_status = missing_status

    @property
    def base_url(self) -> str:
        """``JinaReaderClient(base_url=...)``: ``http://127.0.0.1:PORT/``."""
        return f"{self.origin}/"

    def script(self, pages: Mapping[str, PageSpec]) -> None:
        """Add (or replace) some pages."""
        with self._lock:
            self._pages.update(pages)

    def client(self, **kwargs: Any) -> JinaReaderClient:
        """A :class:`~metis_pytest.tools.web.JinaReaderClient` pointed at this fake."""
        from metis_pytest.tools.web import JinaReaderClient

        return JinaReaderClient(base_url=self.base_url, **kwargs)

    def _routes(self, app: web.Application) -> None:
        app.router.add_get("/{target:.*}", self._handle)

    def _error(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
        from aiohttp import web

        names = {400: "ParamValidationError", 401: "AuthenticationRequiredError", 402: "InsufficientBalanceError",
                 422: "AssertionFailureError", 429: "RateLimitTriggeredError", 451: "SecurityCompromiseError"}
        name = names.get(status, "InternalServerError" if status >= 500 else "ApplicationError")
        body = {"data": None, "code": status, "name": name, "status": status * 100 + 1, "message": message,
                "readableMessage": f"{name}: {message}"}
        return web.json_response(body, status=status, headers=headers)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        target = request.raw_path[1:]
        return await self._serve_request(request, target, {"url": target}, lambda: self._answer(request, target))

    def _lookup(self, target: str) -> PageSpec | None:
        with self._lock:
            for key in (target, urllib.parse.unquote(target)):
                if key in self._pages:
                    return self._pages[key]
        return self._default(target) if self._default is not None else None

    def _answer(self, request: web.Request, target: str) -> web.StreamResponse:
        from aiohttp import web

        if self.api_key is not None and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return self._error(401, "Invalid API key, please get a new one from https://jina.ai")
        if not target:
            return self._error(400, "No URL provided")
        spec = self._lookup(target)
        if spec is None:
            return self._error(self.missing_status, f"Failed to goto {target}: Error: net::ERR_NAME_NOT_RESOLVED")
        page = _page_json(spec, target)
        if "application/json" in request.headers.get("Accept", ""):
            data: dict[str, Any] = {"title": page["title"], "description": "", "url": page["url"],
                                    "content": page["content"], "usage": {"tokens": len(page["content"].split())}}
            if page["published_time"]:
                data["publishedTime"] = page["published_time"]
            warning = _warning(page["status"])
            if warning:
                data["warning"] = warning
            return web.json_response({"code": 200, "status": 20000, "data": data})
        return web.Response(text=jina_text(page), content_type="text/plain")


# --------------------------------------------------------------------- fixtures


@pytest.fixture
def fake_searchapi(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSearchAPI]:
    """A started :class:`FakeSearchAPI` (no results scripted: use ``.script({...})``), with
    ``SEARCHAPI_IO_KEY`` set to its key for the test; stopped at teardown."""
    server = FakeSearchAPI()
    monkeypatch.setenv("SEARCHAPI_IO_KEY", DEFAULT_SEARCHAPI_KEY)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def fake_jina(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeJina]:
    """A started :class:`FakeJina` (no pages scripted: use ``.script({...})``), with ``JINA_API_KEY``
    unset for the test; stopped at teardown."""
    server = FakeJina()
    monkeypatch.delenv("JINA_API_KEY", raising=False)
    server.start()
    try:
        yield server
    finally:
        server.stop()

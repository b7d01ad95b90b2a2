"""Live web clients for tool-using rollouts: SearchAPI.io (Google results) and Jina Reader (pages as Markdown).

Both speak the services' real wire formats over aiohttp and share one retry loop with the model
client (:class:`~metis_pytest.rollout.http.RetryPolicy`: exponential backoff with jitter, honouring
``Retry-After``). Retried: HTTP 408/409/425/429/5xx, timeouts, broken connections and malformed
bodies. Not retried: other 4xx. When retries run out, or a failure is not worth retrying, a
:class:`ToolError` says what happened and whether running the row again may help (``retryable``).

Keys are read from the environment at call time and never logged, recorded nor put in an error
message (every message is scrubbed of the key before it leaves the client).

The policy's ``timeout`` is not used: each client has its own ``timeout`` (seconds per request).
Each client bounds its own concurrency (``concurrency``: SearchAPI 4, Jina 2, which is what Jina's
free tier allows at once). The bound is per event loop; a client used from several loops (threads)
gets one bound per loop. Each call opens its own ``aiohttp.ClientSession`` unless one is passed in,
so a client can be shared by rows on any loop and needs no closing.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import os
import re
import time
import urllib.parse
import weakref
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Protocol, TypeVar

import aiohttp
from yarl import URL

from metis_pytest.rollout.http import RETRYABLE_STATUS, RetryPolicy, retried

__all__ = [
    "DEFAULT_POLICY",
    "JinaReaderClient",
    "LiveWeb",
    "Page",
    "SearchAPIClient",
    "SearchResult",
    "ToolError",
    "WebBackend",
    "parse_jina_json",
    "parse_jina_text",
    "parse_searchapi",
]

T = TypeVar("T")

DEFAULT_POLICY = RetryPolicy(max_retries=4, base_delay=0.5, max_delay=20.0)
"""Retries for the web clients: 5 attempts, 0.5 s doubling (with jitter) up to 20 s, or ``Retry-After``."""


class ToolError(Exception):
    """A tool call that produced nothing usable; ``retryable`` says whether running it again may help.

    ``status`` is the HTTP status when there was one, ``attempts`` how many requests were made."""

    def __init__(self, message: str, retryable: bool = False, *, status: int | None = None,
                 attempts: int = 1, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status
        self.attempts = attempts
        self.retry_after = retry_after

    def __reduce__(self) -> Any:  # keep retryable & co. across processes (pickle)
        return (_rebuild_tool_error, (type(self), str(self), self.retryable, self.status, self.attempts,
                                      self.retry_after, dict(self.__dict__)))

    @property
    def message(self) -> str:
        return str(self)

    def details(self) -> dict[str, Any]:
        return {"error": str(self), "retryable": self.retryable, "status": self.status, "attempts": self.attempts}


def _rebuild_tool_error(cls: type[ToolError], message: str, retryable: bool, status: int | None, attempts: int,
                        retry_after: float | None, state: dict[str, Any]) -> ToolError:
    error = Exception.__new__(cls)
    ToolError.__init__(error, message, retryable, status=status, attempts=attempts, retry_after=retry_after)
    error.__dict__.update(state)
    return error


@dataclass(frozen=True)
class SearchResult:
    """One organic search result."""

    title: str
    link: str
    snippet: str
    position: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SearchResult:
        return cls(title=str(data.get("title") or ""), link=str(data.get("link") or ""),
                   snippet=str(data.get("snippet") or ""), position=int(data.get("position") or 0))


@dataclass(frozen=True)
class Page:
    """A page as read: the URL the reader reports, its title, its full text (Markdown) and the HTTP status
    of the target page (200 unless the reader said the target answered an error)."""

    url: str
    title: str
    content: str
    status: int = 200
    published_time: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Page:
        published = data.get("published_time")
        return cls(url=str(data.get("url") or ""), title=str(data.get("title") or ""),
                   content=str(data.get("content") or ""), status=int(data.get("status") or 200),
                   published_time=str(published) if published else None)


class WebBackend(Protocol):
    """What a toolbox or a grader needs from "the web": the live clients, or a snapshot of them."""

    async def search(self, query: str, num: int = 10) -> list[SearchResult]: ...

    async def fetch(self, url: str) -> Page: ...


# --------------------------------------------------------------------- shared request machinery


def retry_after_seconds(headers: Mapping[str, str] | None) -> float | None:
    """``Retry-After`` as seconds: a number, or an HTTP date (seconds from now); ``None`` when absent/bad."""
    value = headers.get("Retry-After") if headers is not None else None
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _redact(text: str, secret: str | None) -> str:
    """``text`` with ``secret`` (as given, or as it appears percent-encoded in a URL) replaced by ``***``."""
    if not secret:
        return text
    for form in {secret, urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret)}:
        text = text.replace(form, "***")
    return text


def _snippet(text: str, limit: int = 200) -> str:
    one_line = " ".join(text.split())
    return one_line if len(one_line) <= limit else one_line[:limit] + "..."


class _HTTPClient:
    """The retry loop, the concurrency bound and one GET attempt, shared by both clients."""

    service = "web"

    def __init__(self, *, concurrency: int, policy: RetryPolicy, timeout: float,
                 session: aiohttp.ClientSession | None = None, trust_env: bool = False) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        self.concurrency = concurrency
        self.policy = policy
        self.timeout = float(timeout)
        self._session = session
        self._trust_env = trust_env
        self._slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary())

    def _slot(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        slot = self._slots.get(loop)
        if slot is None:
            slot = self._slots[loop] = asyncio.Semaphore(self.concurrency)
        return slot

    async def _retrying(self, attempt: Callable[[], Awaitable[T]]) -> T:
        async def slotted() -> T:
            async with self._slot():
                return await attempt()

        result, _ = await retried(self.policy, slotted, ToolError)
        return result

    async def _get(self, url: URL, *, params: Mapping[str, str] | None, headers: Mapping[str, str],
                   secret: str | None) -> tuple[int, str, str, Mapping[str, str]]:
        """One GET: ``(status, content type, body text, headers)``; a transport failure raises a retryable
        :class:`ToolError`; the caller judges the status."""
        origin = str(url.origin())
        try:
            if self._session is not None:
                return await self._send(self._session, url, params, headers)
            async with aiohttp.ClientSession(trust_env=self._trust_env) as session:
                return await self._send(session, url, params, headers)
        except asyncio.TimeoutError:
            raise ToolError(f"{self.service} timed out after {self.timeout:g}s", retryable=True) from None
        except aiohttp.ClientConnectorError as exc:
            raise ToolError(_redact(f"cannot connect to {self.service} at {origin}: {exc.os_error}", secret),
                            retryable=True) from None
        except aiohttp.ClientError as exc:
            raise ToolError(_redact(f"{self.service} connection error: {type(exc).__name__}: {exc}", secret),
                            retryable=True) from None

    async def _send(self, session: aiohttp.ClientSession, url: URL, params: Mapping[str, str] | None,
                    headers: Mapping[str, str]) -> tuple[int, str, str, Mapping[str, str]]:
        async with session.get(url, params=params, headers=headers, allow_redirects=True,
                               timeout=aiohttp.ClientTimeout(total=self.timeout)) as resp:
            text = await resp.text(errors="replace")
            return resp.status, resp.content_type, text, resp.headers

    def _status_error(self, status: int, text: str, headers: Mapping[str, str], secret: str | None,
                      detail: str | None = None) -> ToolError:
        said = detail or _snippet(text)
        return ToolError(_redact(f"{self.service} answered HTTP {status}" + (f": {said}" if said else ""), secret),
                         retryable=status in RETRYABLE_STATUS, status=status,
                         retry_after=retry_after_seconds(headers))


# --------------------------------------------------------------------- SearchAPI.io


def parse_searchapi(body: Any, num: int | None = None) -> list[SearchResult]:
    """``organic_results[]`` of a SearchAPI.io ``engine=google`` response (none when the key is absent).

    Items without a link are skipped; a missing ``position`` is the item's rank. Raises a retryable
    :class:`ToolError` for a body that is not a JSON object, and a non-retryable one for an ``error``."""
    if not isinstance(body, dict):
        raise ToolError(f"SearchAPI: malformed response (not a JSON object): {_snippet(str(body))}", retryable=True)
    if body.get("error"):
        raise ToolError(f"SearchAPI: {_snippet(str(body['error']))}", retryable=False)
    items = body.get("organic_results") or []
    if not isinstance(items, list):
        raise ToolError("SearchAPI: malformed response (organic_results is not a list)", retryable=True)
    results: list[SearchResult] = []
    for rank, item in enumerate(items, start=1):
        if not isinstance(item, dict) or not item.get("link"):
            continue
        position = item.get("position")
        results.append(SearchResult(
            title=str(item.get("title") or ""), link=str(item["link"]), snippet=str(item.get("snippet") or ""),
            position=position if isinstance(position, int) and not isinstance(position, bool) else rank))
    return results[:num] if num is not None else results


class SearchAPIClient(_HTTPClient):
    """Google results through SearchAPI.io: ``GET {base_url}?engine=google&q=...&num=...&api_key=...``.

    The key is read from ``api_key_env`` at each call (not at construction), sent as the ``api_key``
    query parameter (SearchAPI.io's documented form) and scrubbed from every error message."""

    service = "SearchAPI"

    def __init__(self, api_key_env: str = "SEARCHAPI_IO_KEY", base_url: str = "https://www.searchapi.io/api/v1/search",
                 concurrency: int = 4, policy: RetryPolicy = DEFAULT_POLICY, timeout: float = 30,
                 *, engine: str = "google", session: aiohttp.ClientSession | None = None,
                 trust_env: bool = False) -> None:
        super().__init__(concurrency=concurrency, policy=policy, timeout=timeout, session=session,
                         trust_env=trust_env)
        self.api_key_env = api_key_env
        self.base_url = base_url
        self.engine = engine

    @property
    def has_key(self) -> bool:
        """Whether the key's variable is set now."""
        return bool(os.environ.get(self.api_key_env))

    async def search(self, query: str, num: int = 10) -> list[SearchResult]:
        """Up to ``num`` organic results for ``query``; raises :class:`ToolError`."""
        key = os.environ.get(self.api_key_env)
        if not key:
            raise ToolError(f"web search is not configured: {self.api_key_env} is not set", retryable=False)
        params = {"engine": self.engine, "q": query, "num": str(int(num)), "api_key": key}
        url = URL(self.base_url)

        async def attempt() -> list[SearchResult]:
            status, _ctype, text, headers = await self._get(url, params=params, headers={"Accept": "application/json"},
                                                            secret=key)
            detail = None
            if status != 200:
                try:
                    error = json.loads(text).get("error")
                    detail = _snippet(str(error)) if error else None
                except (ValueError, AttributeError):
                    pass
                raise self._status_error(status, text, headers, key, detail)
            try:
                body = json.loads(text)
            except ValueError:
                raise ToolError(f"SearchAPI: malformed response (not JSON): {_redact(_snippet(text), key)}",
                                retryable=True, status=200) from None
            try:
                return parse_searchapi(body, num)
            except ToolError as exc:
                raise ToolError(_redact(str(exc), key), exc.retryable, status=200) from None

        return await self._retrying(attempt)


# --------------------------------------------------------------------- Jina Reader

_TARGET_ERROR = re.compile(r"Target URL returned error (\d{3})")
_TEXT_FIELDS = {"title": "Title:", "url": "URL Source:", "published_time": "Published Time:"}


def _target_status(warning: str | None) -> int:
    match = _TARGET_ERROR.search(warning or "")
    return int(match.group(1)) if match else 200


def parse_jina_text(text: str, requested_url: str) -> Page:
    """Jina Reader's default text form::

        Title: <title>

        URL Source: <url>

        Published Time: <time>        (optional, as are Warning: lines)

        Markdown Content:
        <the page>

    A body without the ``Markdown Content:`` marker is all content (Jina's ``text``/``html`` formats)."""
    head, marker, body = text.partition("Markdown Content:\n")
    if not marker:
        if text.rstrip().endswith("Markdown Content:"):  # an empty page
            head, body = text.rstrip()[: -len("Markdown Content:")], ""
        elif not text.startswith("Title:"):
            return Page(url=requested_url, title="", content=text.strip(), status=200)
        else:
            head, body = text, ""
    fields: dict[str, str] = {}
    warnings: list[str] = []
    for line in head.splitlines():
        for name, label in _TEXT_FIELDS.items():
            if line.startswith(label) and name not in fields:
                fields[name] = line[len(label):].strip()
        if line.startswith("Warning:"):
            warnings.append(line[len("Warning:"):].strip())
    return Page(url=fields.get("url") or requested_url, title=fields.get("title", ""), content=body.strip("\n"),
                status=_target_status(" ".join(warnings)), published_time=fields.get("published_time") or None)


def parse_jina_json(body: Any, requested_url: str) -> Page:
    """Jina Reader's JSON form (``Accept: application/json``)::

        {"code": 200, "status": 20000, "data": {"title", "url", "content", "publishedTime"?, "warning"?}}

    Leading and trailing newlines of the content are dropped, as the text form's layout does.
    Raises a retryable :class:`ToolError` for a body without ``data``."""
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, dict):
        raise ToolError(f"Jina Reader: malformed response (no data object): {_snippet(json.dumps(body))}",
                        retryable=True, status=200)
    published = data.get("publishedTime")
    return Page(url=str(data.get("url") or requested_url), title=str(data.get("title") or ""),
                content=str(data.get("content") or "").strip("\n"),
                status=_target_status(str(data.get("warning") or "")),
                published_time=str(published) if published else None)


def _jina_error_detail(text: str) -> str | None:
    """``readableMessage`` (or ``message``) of a Jina error body, if it is one."""
    try:
        body = json.loads(text)
    except ValueError:
        return None
    if isinstance(body, dict):
        said = body.get("readableMessage") or body.get("message")
        return _snippet(str(said)) if said else None
    return None


class JinaReaderClient(_HTTPClient):
    """Pages as Markdown through Jina Reader: ``GET {base_url}{url}``.

    Asks for the JSON form (``as_json=True``, ``Accept: application/json``) or the text form, and parses
    whichever comes back. ``Authorization: Bearer <key>`` is sent only when ``api_key_env`` is set (the
    key is optional: without one Jina's free tier applies). ``headers`` are extra request headers
    (Jina's ``X-Retain-Images: none``, ``X-Timeout``, ...)."""

    service = "Jina Reader"

    def __init__(self, api_key_env: str = "JINA_API_KEY", base_url: str = "https://r.jina.ai/",
                 concurrency: int = 2, policy: RetryPolicy = DEFAULT_POLICY, timeout: float = 60,
                 *, as_json: bool = True, headers: Mapping[str, str] | None = None,
                 session: aiohttp.ClientSession | None = None, trust_env: bool = False) -> None:
        super().__init__(concurrency=concurrency, policy=policy, timeout=timeout, session=session,
                         trust_env=trust_env)
        self.api_key_env = api_key_env
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.as_json = as_json
        self.headers = dict(headers or {})

    async def fetch(self, url: str) -> Page:
        """The page at ``url`` as Jina Reader renders it; raises :class:`ToolError`."""
        key = os.environ.get(self.api_key_env) or None
        headers = {**self.headers, "Accept": "application/json" if self.as_json else "text/plain"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        target = URL(self.base_url + url)

        async def attempt() -> Page:
            status, ctype, text, resp_headers = await self._get(target, params=None, headers=headers, secret=key)
            if status != 200:
                raise self._status_error(status, text, resp_headers, key, _jina_error_detail(text))
            if ctype == "application/json" or (self.as_json and text.lstrip().startswith("{")):
                try:
                    body = json.loads(text)
                except ValueError:
                    raise ToolError(f"Jina Reader: malformed response (not JSON): {_redact(_snippet(text), key)}",
                                    retryable=True, status=200) from None
                return parse_jina_json(body, url)
            return parse_jina_text(text, url)

        return await self._retrying(attempt)


class LiveWeb:
    """A search client and a page reader behind one :class:`WebBackend` interface."""

    replay = False

    def __init__(self, searcher: SearchAPIClient | None = None, reader: JinaReaderClient | None = None) -> None:
        self.searcher = searcher if searcher is not None else SearchAPIClient()
        self.reader = reader if reader is not None else JinaReaderClient()

    async def search(self, query: str, num: int = 10) -> list[SearchResult]:
        return await self.searcher.search(query, num)

    async def fetch(self, url: str) -> Page:
        return await self.reader.fetch(url)

"""The web toolbox of a tool-using rollout: ``web_search`` and ``browse_page``, with caps and a record.

One :class:`WebToolbox` per row (its caps and record are per conversation), over any
:class:`~metis_pytest.tools.web.WebBackend`: the live clients (:class:`~metis_pytest.tools.web.LiveWeb`)
or a snapshot (:class:`~metis_pytest.tools.snapshot.SnapshotWeb`), recording or replaying.

:meth:`WebToolbox.call` never raises and never scores: malformed arguments, a cap reached, an unsafe
URL, a service that failed after its retries, even a bug, all come back as a
``ToolOutcome(error=True)`` with a one-line message for the model and a record for the row. The model
sees compact search results and pages cut to ``page_chars`` (with a marker); the record keeps the
full text and URL of every page (the grader's sources, also :meth:`WebToolbox.pages`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from metis_pytest.tools.base import ToolOutcome
from metis_pytest.tools.safety import acheck_url
from metis_pytest.tools.web import Page, SearchResult, ToolError, WebBackend

__all__ = ["BROWSE_PAGE", "WEB_SEARCH", "WebToolbox", "format_page", "format_results"]

WEB_SEARCH = "web_search"
BROWSE_PAGE = "browse_page"

URLCheck = Callable[[str], Awaitable[Any]]

_SCHEMAS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": WEB_SEARCH,
            "description": ("Search the web (Google). Returns the top results, each with its title, URL and a "
                            "short snippet. Use browse_page to read a result in full."),
            "parameters": {
                "type": "object",
                "properties": {"query": {"type": "string", "description": "What to search for."}},
                "required": ["query"],
                "additionalProperties": False,
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": BROWSE_PAGE,
            "description": "Read a web page (http or https URL) and return its text as Markdown.",
            "parameters": {
                "type": "object",
                "properties": {"url": {"type": "string", "description": "The full URL of the page."}},
                "required": ["url"],
                "additionalProperties": False,
            },
        },
    },
]


def format_results(query: str, results: list[SearchResult]) -> str:
    """Search results as the model sees them: numbered, title, URL, snippet."""
    if not results:
        return f"No results for {query!r}."
    lines = [f"Results for {query!r}:"]
    for n, result in enumerate(results, start=1):
        lines.append(f"{n}. {result.title or '(untitled)'}\n   {result.link}")
        if result.snippet:
            lines.append(f"   {' '.join(result.snippet.split())}")
    return "\n".join(lines)


def format_page(page: Page, page_chars: int) -> tuple[str, bool]:
    """A page as the model sees it (its text cut to ``page_chars``, with a marker), and whether it was cut."""
    head = [f"URL: {page.url}"]
    if page.title:
        head.append(f"Title: {page.title}")
    if page.published_time:
        head.append(f"Published: {page.published_time}")
    if page.status >= 400:
        head.append(f"HTTP status: {page.status} (the site answered with an error page)")
    content = page.content
    truncated = len(content) > page_chars
    if truncated:
        content = (content[:page_chars].rstrip()
                   + f"\n\n[... page truncated: showing the first {page_chars:,} of {len(page.content):,} characters]")
    return "\n".join(head) + "\n\n" + (content if content.strip() else "(the page has no text)"), truncated


async def _check_without_dns(url: str) -> str:
    """The URL's form and literal addresses only: a replayed snapshot serves recorded URLs alone."""
    return await acheck_url(url, resolve=False)


class _BadCall(Exception):
    """A call refused before it ran (bad arguments, unknown tool, a cap); the message is for the model."""


class WebToolbox:
    """:class:`~metis_pytest.tools.base.Toolbox` with ``web_search(query)`` and ``browse_page(url)``.

    ``max_searches`` / ``max_reads``: calls of each tool accepted per conversation (a call with valid
    arguments counts, whether or not it then succeeds); past the cap the call is an error outcome.
    ``page_chars``: the characters of a page the model sees. ``url_check``: an async URL check run
    before each page is read (default :func:`~metis_pytest.tools.safety.acheck_url`; ``None`` for
    none); over a replaying snapshot (``web.replay``) the default checks the URL's form and literal
    addresses only, without DNS. ``num_results``: results asked of each search."""

    def __init__(self, web: WebBackend, *, max_searches: int = 5, max_reads: int = 5, page_chars: int = 8000,
                 url_check: URLCheck | None = acheck_url, num_results: int = 10) -> None:
        if max_searches < 0 or max_reads < 0:
            raise ValueError("max_searches and max_reads must not be negative")
        if page_chars < 1 or num_results < 1:
            raise ValueError("page_chars and num_results must be positive")
        self.web = web
        self.max_searches = max_searches
        self.max_reads = max_reads
        self.page_chars = page_chars
        self.num_results = num_results
        if url_check is acheck_url and getattr(web, "replay", False):
            url_check = _check_without_dns
        self.url_check = url_check
        self.searches_used = 0
        self.reads_used = 0
        self._records: list[dict[str, Any]] = []
        self._pages: list[Page] = []

    # ----------------------------------------------------------------- Toolbox

    def schemas(self) -> list[dict[str, Any]]:
        return json.loads(json.dumps(_SCHEMAS))  # a copy the caller may change

    def records(self) -> list[dict[str, Any]]:
        return [dict(record) for record in self._records]

    def pages(self) -> list[Page]:
        """The pages read successfully, in order, one per URL (the grader's sources)."""
        seen: set[str] = set()
        unique = []
        for page in self._pages:
            if page.url not in seen:
                seen.add(page.url)
                unique.append(page)
        return unique

    async def call(self, name: str, arguments: str | Mapping[str, Any] | None) -> ToolOutcome:
        started = time.perf_counter()
        record: dict[str, Any] = {"index": len(self._records), "name": name, "arguments": arguments}
        self._records.append(record)
        try:
            args = self._arguments(name, arguments)
            record["arguments"] = args
            if name == WEB_SEARCH:
                content = await self._search(args, record)
            else:
                content = await self._browse(args, record)
        except _BadCall as exc:
            return self._failed(record, started, str(exc), retryable=False)
        except ToolError as exc:
            return self._failed(record, started, str(exc), retryable=exc.retryable, status=exc.status)
        except Exception as exc:  # a bug or an unexpected failure: still an outcome, never raised
            return self._failed(record, started, f"internal error: {type(exc).__name__}: {exc}", retryable=False)
        record.update(ok=True, error=None, retryable=False, seconds=round(time.perf_counter() - started, 6))
        return ToolOutcome(content=content, record=record)

    # ----------------------------------------------------------------- tools

    def _arguments(self, name: str, arguments: str | Mapping[str, Any] | None) -> dict[str, Any]:
        if name not in (WEB_SEARCH, BROWSE_PAGE):
            raise _BadCall(f"unknown tool {name!r}; the tools are {WEB_SEARCH} and {BROWSE_PAGE}")
        field = "query" if name == WEB_SEARCH else "url"
        if isinstance(arguments, Mapping):
            args: Any = dict(arguments)
        elif arguments is None or (isinstance(arguments, str) and not arguments.strip()):
            args = {}
        elif isinstance(arguments, str):
            try:
                args = json.loads(arguments)
            except ValueError as exc:
                raise _BadCall(f"{name} arguments are not valid JSON ({exc}); "
                               f"send an object like {{\"{field}\": \"...\"}}") from None
        else:
            raise _BadCall(f"{name} arguments must be a JSON object, got {type(arguments).__name__}")
        if not isinstance(args, dict):
            raise _BadCall(f"{name} arguments must be a JSON object like {{\"{field}\": \"...\"}}, "
                           f"got {type(args).__name__}")
        value = args.get(field)
        if field not in args:
            raise _BadCall(f"{name} needs the argument {field!r}")
        if not isinstance(value, str):
            raise _BadCall(f"{name} argument {field!r} must be a string, got {type(value).__name__}")
        if not value.strip():
            raise _BadCall(f"{name} argument {field!r} is empty")
        return args

    async def _search(self, args: dict[str, Any], record: dict[str, Any]) -> str:
        query = args["query"].strip()
        record["query"] = query
        if self.searches_used >= self.max_searches:
            raise _BadCall(f"search limit of {self.max_searches} reached")
        self.searches_used += 1
        results = await self.web.search(query, self.num_results)
        record["results"] = [r.to_json() for r in results]
        return format_results(query, results)

    async def _browse(self, args: dict[str, Any], record: dict[str, Any]) -> str:
        url = args["url"].strip()
        record["url"] = url
        if self.reads_used >= self.max_reads:
            raise _BadCall(f"page read limit of {self.max_reads} reached")
        self.reads_used += 1
        if self.url_check is not None:
            await self.url_check(url)
        page = await self.web.fetch(url)
        content, truncated = format_page(page, self.page_chars)
        record.update(page_url=page.url, title=page.title, status=page.status, content=page.content,
                      chars=len(page.content), truncated=truncated, published_time=page.published_time)
        self._pages.append(page)
        return content

    def _failed(self, record: dict[str, Any], started: float, message: str, *, retryable: bool,
                status: int | None = None) -> ToolOutcome:
        record.update(ok=False, error=message, retryable=retryable, seconds=round(time.perf_counter() - started, 6))
        if status is not None:
            record["http_status"] = status
        return ToolOutcome(content=f"Error: {message}", error=True, retryable=retryable, record=record)


if TYPE_CHECKING:  # mypy checks that WebToolbox is a Toolbox
    from metis_pytest.tools.base import Toolbox

    def _is_a_toolbox(box: WebToolbox) -> Toolbox:
        return box

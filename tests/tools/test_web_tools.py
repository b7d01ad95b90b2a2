"""The web tools against loopback fakes: live clients, retries, Jina's two forms, snapshots, the toolbox."""

from __future__ import annotations

import asyncio
import json
import pickle
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from metis_pytest.rollout.http import RetryPolicy
from metis_pytest.testing.fake_web import DEFAULT_SEARCHAPI_KEY, FakeJina, FakeSearchAPI, jina_text
from metis_pytest.testing.scripted_server import Fault
from metis_pytest.tools import (
    JinaReaderClient,
    LiveWeb,
    Page,
    SearchAPIClient,
    SearchResult,
    Snapshot,
    ToolError,
    ToolOutcome,
    UnsafeURL,
    WebToolbox,
    acheck_url,
)
from metis_pytest.tools.web import parse_jina_json, parse_jina_text, parse_searchapi, retry_after_seconds

FAST = RetryPolicy(max_retries=3, base_delay=0.01, max_delay=0.05)
JINA_KEY = "jina_test_key_9f8e7d"

RESULTS = {
    "best budget phone 2025": [
        {"title": "The best budget phones", "link": "https://example.com/phones", "snippet": "Our picks  under $300."},
        {"title": "Budget phone buying guide", "link": "https://example.org/guide", "snippet": "What to look for."},
        {"title": "Forum thread", "link": "https://forum.example.net/t/1", "snippet": ""},
    ],
}
PAGES: dict[str, Any] = {
    "https://example.com/phones": {"title": "The best budget phones", "content": "# Picks\n\n1. Phone A\n2. Phone B",
                                   "published_time": "2025-03-01T00:00:00Z"},
    "https://example.org/guide": {"title": "Buying guide", "content": "Look at battery life."},
    "https://example.com/gone": {"title": "Not Found", "content": "This page does not exist.", "status": 404},
    "https://example.com/search?q=a%20b&page=2": "Query-string page.",
}
ADDRESSES = {"example.com": ["93.184.215.14"], "example.org": ["93.184.215.15"], "forum.example.net": ["1.2.3.4"],
             "intranet.example.com": ["10.0.0.7"], "nowhere.example": ["93.184.215.20"]}


def resolve(host: str) -> list[str]:
    if host not in ADDRESSES:
        raise ToolError(f"cannot resolve host {host!r}", retryable=False)
    return ADDRESSES[host]


async def url_check(url: str) -> str:
    return await acheck_url(url, resolver=resolve)


@pytest.fixture
def searchapi(fake_searchapi: FakeSearchAPI) -> FakeSearchAPI:
    fake_searchapi.script(RESULTS)
    return fake_searchapi


@pytest.fixture
def jina(fake_jina: FakeJina) -> FakeJina:
    fake_jina.script(PAGES)
    return fake_jina


def live(searchapi: FakeSearchAPI, jina: FakeJina) -> LiveWeb:
    return LiveWeb(searchapi.client(policy=FAST, timeout=5), jina.client(policy=FAST, timeout=5))


# --------------------------------------------------------------------- SearchAPI client


async def test_search_parses_organic_results_and_sends_the_key_as_api_key(searchapi: FakeSearchAPI) -> None:
    results = await searchapi.client(policy=FAST).search("best budget phone 2025", num=2)
    assert results == [
        SearchResult("The best budget phones", "https://example.com/phones", "Our picks  under $300.", 1),
        SearchResult("Budget phone buying guide", "https://example.org/guide", "What to look for.", 2),
    ]
    [request] = searchapi.requests
    assert request.path == "/api/v1/search"
    assert request.params == {"engine": "google", "q": "best budget phone 2025", "num": "2",
                              "api_key": DEFAULT_SEARCHAPI_KEY}


async def test_search_without_results_is_an_empty_list(searchapi: FakeSearchAPI) -> None:
    assert await searchapi.client(policy=FAST).search("nothing matches this") == []


async def test_search_key_is_read_at_call_time(searchapi: FakeSearchAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SEARCHAPI_IO_KEY")
    client = searchapi.client(policy=FAST)  # built without a key
    with pytest.raises(ToolError, match="SEARCHAPI_IO_KEY is not set") as caught:
        await client.search("best budget phone 2025")
    assert caught.value.retryable is False and searchapi.requests == []
    monkeypatch.setenv("SEARCHAPI_IO_KEY", DEFAULT_SEARCHAPI_KEY)
    assert len(await client.search("best budget phone 2025")) == 3


async def test_search_429_then_ok_is_retried_honouring_retry_after(searchapi: FakeSearchAPI) -> None:
    searchapi.set_faults([Fault("status", status=429, retry_after=0.3, first_n=1)])
    client = searchapi.client(policy=RetryPolicy(max_retries=3, base_delay=0.001, max_delay=5))
    started = time.monotonic()
    results = await client.search("best budget phone 2025")
    assert len(results) == 3
    assert time.monotonic() - started >= 0.29  # waited Retry-After, not the 1 ms backoff
    assert [r.status for r in searchapi.requests] == [429, 200]


async def test_search_500_forever_is_a_retryable_tool_error(searchapi: FakeSearchAPI) -> None:
    searchapi.set_faults([Fault("status", status=500)])
    with pytest.raises(ToolError) as caught:
        await searchapi.client(policy=FAST).search("best budget phone 2025")
    assert caught.value.retryable is True
    assert caught.value.status == 500 and caught.value.attempts == FAST.max_retries + 1
    assert len(searchapi.requests) == FAST.max_retries + 1
    assert "HTTP 500" in str(caught.value) and DEFAULT_SEARCHAPI_KEY not in str(caught.value)


@pytest.mark.parametrize("status", [400, 403, 404])
async def test_search_other_4xx_are_not_retried(searchapi: FakeSearchAPI, status: int) -> None:
    searchapi.set_faults([Fault("status", status=status, message="nope")])
    with pytest.raises(ToolError, match=f"HTTP {status}: nope") as caught:
        await searchapi.client(policy=FAST).search("best budget phone 2025")
    assert caught.value.retryable is False and len(searchapi.requests) == 1


async def test_search_wrong_key_is_refused_and_the_key_is_not_repeated(
        searchapi: FakeSearchAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEARCHAPI_IO_KEY", "wrong-key-123")
    with pytest.raises(ToolError, match="HTTP 401: Invalid API key") as caught:
        await searchapi.client(policy=FAST).search("x")
    assert caught.value.retryable is False and "wrong-key-123" not in str(caught.value)


async def test_search_timeout_and_malformed_body_are_retried(searchapi: FakeSearchAPI) -> None:
    searchapi.set_faults([Fault("timeout", hang_s=5, at={0}), Fault("malformed", at={1})])
    results = await searchapi.client(policy=FAST, timeout=0.3).search("best budget phone 2025")
    assert len(results) == 3
    assert [r.fault for r in searchapi.requests] == ["timeout", "malformed", None]


async def test_search_timeout_forever_says_so(searchapi: FakeSearchAPI) -> None:
    searchapi.set_faults([Fault("timeout", hang_s=5)])
    client = searchapi.client(policy=RetryPolicy(max_retries=1, base_delay=0.01, max_delay=0.01), timeout=0.2)
    with pytest.raises(ToolError, match=r"timed out after 0\.2s") as caught:
        await client.search("q")
    assert caught.value.retryable is True


async def test_unreachable_service_is_retryable_and_names_no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    server = FakeSearchAPI().start()
    base_url = server.base_url
    server.stop()  # nothing listens there now
    monkeypatch.setenv("SEARCHAPI_IO_KEY", "secret-unreachable-key")
    client = SearchAPIClient(base_url=base_url, policy=RetryPolicy(max_retries=1, base_delay=0.01), timeout=2)
    with pytest.raises(ToolError, match="cannot connect to SearchAPI") as caught:
        await client.search("q")
    assert caught.value.retryable is True and caught.value.attempts == 2
    assert "secret-unreachable-key" not in str(caught.value)


def test_tool_errors_keep_their_fields_through_pickle() -> None:
    error = pickle.loads(pickle.dumps(ToolError("HTTP 503", True, status=503, attempts=5)))
    assert (str(error), error.retryable, error.status, error.attempts) == ("HTTP 503", True, 503, 5)
    unsafe = pickle.loads(pickle.dumps(UnsafeURL("http://127.1/", "127.0.0.1 is a loopback address")))
    assert isinstance(unsafe, UnsafeURL) and unsafe.retryable is False and unsafe.url == "http://127.1/"
    assert str(unsafe) == "refused http://127.1/: 127.0.0.1 is a loopback address"


def test_parse_searchapi_shapes() -> None:
    body = {"organic_results": [{"title": "t", "link": "https://a.example/"}, {"title": "no link"},
                                {"position": 7, "title": "u", "link": "https://b.example/", "snippet": "s"}]}
    assert parse_searchapi(body) == [SearchResult("t", "https://a.example/", "", 1),
                                     SearchResult("u", "https://b.example/", "s", 7)]
    assert parse_searchapi({"search_metadata": {}}) == []
    with pytest.raises(ToolError) as caught:
        parse_searchapi({"error": "Your account has run out of searches."})
    assert caught.value.retryable is False
    with pytest.raises(ToolError) as caught:
        parse_searchapi(["not", "an", "object"])
    assert caught.value.retryable is True


def test_retry_after_seconds_and_http_dates() -> None:
    assert retry_after_seconds({"Retry-After": "3"}) == 3.0
    assert retry_after_seconds({"Retry-After": "0.5"}) == 0.5
    assert retry_after_seconds({}) is None
    assert retry_after_seconds({"Retry-After": "soon"}) is None
    future = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 25 <= (retry_after_seconds({"Retry-After": future}) or 0) <= 31


# --------------------------------------------------------------------- Jina Reader client


@pytest.mark.parametrize("as_json", [True, False], ids=["json", "text"])
async def test_jina_both_forms_give_the_same_page(jina: FakeJina, as_json: bool) -> None:
    page = await jina.client(policy=FAST, as_json=as_json).fetch("https://example.com/phones")
    assert page == Page(url="https://example.com/phones", title="The best budget phones",
                        content="# Picks\n\n1. Phone A\n2. Phone B", status=200,
                        published_time="2025-03-01T00:00:00Z")
    [request] = jina.requests
    assert request.target == "https://example.com/phones"
    assert request.headers["Accept"] == ("application/json" if as_json else "text/plain")
    assert "Authorization" not in request.headers  # no key set: no header


@pytest.mark.parametrize("as_json", [True, False], ids=["json", "text"])
async def test_jina_target_error_status_and_query_strings(jina: FakeJina, as_json: bool) -> None:
    client = jina.client(policy=FAST, as_json=as_json)
    gone = await client.fetch("https://example.com/gone")
    assert gone.status == 404 and gone.content == "This page does not exist."
    page = await client.fetch("https://example.com/search?q=a%20b&page=2")
    assert page.content == "Query-string page." and page.status == 200


async def test_jina_sends_bearer_only_when_the_key_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeJina(PAGES, api_key=JINA_KEY) as fake:
        monkeypatch.delenv("JINA_API_KEY", raising=False)
        with pytest.raises(ToolError, match="HTTP 401") as caught:
            await fake.client(policy=FAST).fetch("https://example.com/phones")
        assert caught.value.retryable is False and len(fake.requests) == 1
        monkeypatch.setenv("JINA_API_KEY", JINA_KEY)
        page = await fake.client(policy=FAST).fetch("https://example.com/phones")
        assert page.title == "The best budget phones"
        assert fake.requests[-1].headers["Authorization"] == f"Bearer {JINA_KEY}"


async def test_jina_unknown_page_422_is_not_retried(jina: FakeJina) -> None:
    with pytest.raises(ToolError, match="HTTP 422: AssertionFailureError: Failed to goto") as caught:
        await jina.client(policy=FAST).fetch("https://nowhere.example/")
    assert caught.value.retryable is False and caught.value.status == 422 and len(jina.requests) == 1


async def test_jina_429_with_retry_after_then_ok(jina: FakeJina) -> None:
    jina.set_faults([Fault("status", status=429, retry_after=0.2, first_n=2)])
    started = time.monotonic()
    page = await jina.client(policy=RetryPolicy(max_retries=3, base_delay=0.001, max_delay=5)).fetch(
        "https://example.org/guide")
    assert page.content == "Look at battery life."
    assert time.monotonic() - started >= 0.39
    assert [r.status for r in jina.requests] == [429, 429, 200]


async def test_jina_disconnect_is_retried(jina: FakeJina) -> None:
    jina.set_faults([Fault("disconnect", first_n=1)])
    page = await jina.client(policy=FAST).fetch("https://example.org/guide")
    assert page.title == "Buying guide" and len(jina.requests) == 2


async def test_jina_concurrency_is_bounded_at_two(jina: FakeJina) -> None:
    urls = [f"https://example.com/p{i}" for i in range(6)]
    jina.script({url: f"page {i}" for i, url in enumerate(urls)})
    jina.set_latency(0.25)
    client = jina.client(policy=FAST)
    assert client.concurrency == 2
    pages = await asyncio.gather(*(client.fetch(url) for url in urls))
    assert [p.content for p in pages] == [f"page {i}" for i in range(6)]
    assert jina.peak_in_flight == 2


async def test_searchapi_concurrency_default_is_four(searchapi: FakeSearchAPI) -> None:
    searchapi.set_latency(0.25)
    client = searchapi.client(policy=FAST)
    await asyncio.gather(*(client.search(f"q{i}") for i in range(10)))
    assert searchapi.peak_in_flight == 4


def test_parse_jina_text_variants() -> None:
    text = ("Title: T\n\nURL Source: https://x.example/\n\nPublished Time: 2024-01-02\n"
            "Warning: Target URL returned error 403: Forbidden\n\nMarkdown Content:\nline 1\n\nline 2\n")
    assert parse_jina_text(text, "https://asked.example/") == Page(
        "https://x.example/", "T", "line 1\n\nline 2", 403, "2024-01-02")
    assert parse_jina_text("just text", "https://asked.example/") == Page("https://asked.example/", "", "just text")
    empty = parse_jina_text("Title: E\n\nURL Source: https://e.example/\n\nMarkdown Content:\n", "u")
    assert empty.title == "E" and empty.content == ""
    page = {"title": "A", "url": "https://a.example/", "content": "Body: with a colon\nTitle: not a header",
            "published_time": None, "status": 200}
    assert parse_jina_text(jina_text(page), "u").content == "Body: with a colon\nTitle: not a header"


def test_parse_jina_json_needs_data() -> None:
    with pytest.raises(ToolError) as caught:
        parse_jina_json({"code": 200}, "u")
    assert caught.value.retryable is True
    page = parse_jina_json({"code": 200, "data": {"title": "t", "url": "https://u.example/", "content": "c",
                                                  "warning": "Target URL returned error 500: oops"}}, "u")
    assert page == Page("https://u.example/", "t", "c", 500)


# --------------------------------------------------------------------- toolbox


def toolbox(web: Any, **kwargs: Any) -> WebToolbox:
    kwargs.setdefault("url_check", url_check)
    return WebToolbox(web, **kwargs)


async def test_toolbox_schemas_are_openai_function_tools(searchapi: FakeSearchAPI, jina: FakeJina) -> None:
    schemas = toolbox(live(searchapi, jina)).schemas()
    assert [s["function"]["name"] for s in schemas] == ["web_search", "browse_page"]
    for schema in schemas:
        assert schema["type"] == "function"
        params = schema["function"]["parameters"]
        assert params["type"] == "object" and len(params["required"]) == 1
        assert params["required"][0] in params["properties"]
        assert schema["function"]["description"]


async def test_toolbox_search_and_browse(searchapi: FakeSearchAPI, jina: FakeJina) -> None:
    box = toolbox(live(searchapi, jina))
    found = await box.call("web_search", json.dumps({"query": "best budget phone 2025"}))
    assert isinstance(found, ToolOutcome) and not found.error
    assert "1. The best budget phones\n   https://example.com/phones\n   Our picks under $300." in found.content
    assert "3. Forum thread\n   https://forum.example.net/t/1" in found.content
    read = await box.call("browse_page", '{"url": "https://example.com/phones"}')
    assert not read.error and "Title: The best budget phones" in read.content and "1. Phone A" in read.content
    gone = await box.call("browse_page", '{"url": "https://example.com/gone"}')
    assert not gone.error and "HTTP status: 404" in gone.content
    records = box.records()
    assert [(r["name"], r["ok"]) for r in records] == [("web_search", True), ("browse_page", True),
                                                      ("browse_page", True)]
    assert records[0]["arguments"] == {"query": "best budget phone 2025"} and len(records[0]["results"]) == 3
    assert records[1]["url"] == "https://example.com/phones" and records[1]["content"].startswith("# Picks")
    assert all(isinstance(r["seconds"], float) and r["retryable"] is False for r in records)
    assert [p.url for p in box.pages()] == ["https://example.com/phones", "https://example.com/gone"]


async def test_toolbox_caps(searchapi: FakeSearchAPI, jina: FakeJina) -> None:
    box = toolbox(live(searchapi, jina), max_searches=2, max_reads=1)
    for _ in range(2):
        assert not (await box.call("web_search", '{"query": "best budget phone 2025"}')).error
    over = await box.call("web_search", '{"query": "best budget phone 2025"}')
    assert over.error and not over.retryable and over.content == "Error: search limit of 2 reached"
    assert len(searchapi.requests) == 2
    assert not (await box.call("browse_page", '{"url": "https://example.com/phones"}')).error
    over = await box.call("browse_page", '{"url": "https://example.org/guide"}')
    assert over.error and not over.retryable and "read limit of 1 reached" in over.content
    assert len(jina.requests) == 1
    assert box.records()[-1] | {"seconds": 0} == {
        "index": 4, "name": "browse_page", "arguments": {"url": "https://example.org/guide"},
        "url": "https://example.org/guide", "ok": False, "error": "page read limit of 1 reached",
        "retryable": False, "seconds": 0}


async def test_toolbox_caps_hold_for_concurrent_calls(searchapi: FakeSearchAPI, jina: FakeJina) -> None:
    searchapi.set_latency(0.05)
    box = toolbox(live(searchapi, jina), max_searches=3)
    outcomes = await asyncio.gather(*(box.call("web_search", json.dumps({"query": f"q{i}"})) for i in range(6)))
    assert sum(not o.error for o in outcomes) == 3 and len(searchapi.requests) == 3


def test_toolbox_default_caps_message() -> None:
    class NoWeb:
        async def search(self, query: str, num: int = 10) -> list[SearchResult]:
            return []

        async def fetch(self, url: str) -> Page:
            raise AssertionError("not called")

    async def run() -> list[ToolOutcome]:
        box = WebToolbox(NoWeb(), url_check=None)
        return [await box.call("web_search", '{"query": "x"}') for _ in range(6)]

    outcomes = asyncio.run(run())
    assert [o.error for o in outcomes] == [False] * 5 + [True]
    assert outcomes[0].content == "No results for 'x'."
    assert outcomes[-1].content == "Error: search limit of 5 reached"


@pytest.mark.parametrize(("name", "arguments", "problem"), [
    ("web_search", '{"query": "x"', "not valid JSON"),
    ("web_search", "[]", "must be a JSON object"),
    ("web_search", '"best phone"', "must be a JSON object"),
    ("web_search", "{}", "needs the argument 'query'"),
    ("web_search", "", "needs the argument 'query'"),
    ("web_search", '{"q": "x"}', "needs the argument 'query'"),
    ("web_search", '{"query": 5}', "'query' must be a string, got int"),
    ("web_search", '{"query": "   "}', "'query' is empty"),
    ("browse_page", '{"link": "https://example.com/"}', "needs the argument 'url'"),
    ("browse_page", '{"url": null}', "'url' must be a string, got NoneType"),
    ("open_page", '{"url": "https://example.com/"}', "unknown tool 'open_page'"),
])
async def test_toolbox_malformed_arguments_are_error_outcomes(
        searchapi: FakeSearchAPI, jina: FakeJina, name: str, arguments: str, problem: str) -> None:
    box = toolbox(live(searchapi, jina), max_searches=1, max_reads=1)
    outcome = await box.call(name, arguments)
    assert outcome.error and not outcome.retryable and problem in outcome.content
    assert outcome.record["ok"] is False and problem in outcome.record["error"]
    assert searchapi.requests == [] and jina.requests == []
    assert box.searches_used == 0 and box.reads_used == 0  # a refused call does not use the cap
    assert not (await box.call("web_search", '{"query": "best budget phone 2025"}')).error


async def test_toolbox_truncates_for_the_model_and_keeps_the_full_text(jina: FakeJina,
                                                                        searchapi: FakeSearchAPI) -> None:
    body = "".join(f"paragraph {i} " + "x" * 90 + "\n" for i in range(200))
    jina.script({"https://example.com/long": {"title": "Long", "content": body}})
    box = toolbox(live(searchapi, jina), page_chars=500)
    outcome = await box.call("browse_page", '{"url": "https://example.com/long"}')
    assert not outcome.error
    assert f"[... page truncated: showing the first 500 of {len(body.strip()):,} characters]" in outcome.content
    assert len(outcome.content) < 500 + 200 and "paragraph 199" not in outcome.content
    assert outcome.record["content"] == body.strip() and outcome.record["truncated"] is True
    assert outcome.record["chars"] == len(body.strip())
    assert box.pages()[0].content == body.strip()


async def test_toolbox_refuses_unsafe_urls_before_fetching(searchapi: FakeSearchAPI, jina: FakeJina) -> None:
    box = toolbox(live(searchapi, jina), max_reads=10)
    for url, reason in [("http://127.0.0.1:8080/admin", "loopback"), ("http://0x7f000001/", "loopback"),
                        ("http://[::1]/", "loopback"), ("https://intranet.example.com/", "10.0.0.7, a private"),
                        ("ftp://example.com/x", "only http and https"), (jina.base_url, "loopback")]:
        outcome = await box.call("browse_page", json.dumps({"url": url}))
        assert outcome.error and not outcome.retryable and reason in outcome.content, outcome.content
    assert jina.requests == []
    assert box.reads_used == 6  # a refused URL still uses a read: no free retries at internal hosts


async def test_toolbox_service_failures_are_outcomes_not_exceptions(searchapi: FakeSearchAPI,
                                                                     jina: FakeJina) -> None:
    searchapi.set_faults([Fault("status", status=503)])
    jina.set_faults([Fault("status", status=500)])
    box = toolbox(live(searchapi, jina))
    search = await box.call("web_search", '{"query": "best budget phone 2025"}')
    read = await box.call("browse_page", '{"url": "https://example.com/phones"}')
    unknown = await box.call("browse_page", '{"url": "https://nowhere.example.com/"}')  # DNS failure
    assert search.error and search.retryable and "HTTP 503" in search.content
    assert read.error and read.retryable and "HTTP 500" in read.content
    assert unknown.error and not unknown.retryable and "cannot resolve" in unknown.content
    assert search.record["http_status"] == 503 and box.pages() == []


async def test_toolbox_turns_a_bug_into_an_error_outcome() -> None:
    class Broken:
        async def search(self, query: str, num: int = 10) -> list[SearchResult]:
            raise KeyError("oops")

        async def fetch(self, url: str) -> Page:
            raise AssertionError

    outcome = await WebToolbox(Broken(), url_check=None).call("web_search", '{"query": "x"}')
    assert outcome.error and "internal error: KeyError" in outcome.content


async def test_keys_never_reach_records_or_snapshots(tmp_path: Path, searchapi: FakeSearchAPI,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JINA_API_KEY", JINA_KEY)
    with FakeJina(PAGES, api_key=JINA_KEY) as jina_keyed:
        snapshot = Snapshot(tmp_path / "web.json")
        box = toolbox(snapshot.web(live(searchapi, jina_keyed), url_check=url_check))
        await box.call("web_search", '{"query": "best budget phone 2025"}')
        await box.call("browse_page", '{"url": "https://example.com/phones"}')
        searchapi.set_faults([Fault("status", status=500, message=f"echo {DEFAULT_SEARCHAPI_KEY}")])
        jina_keyed.set_faults([Fault("status", status=400, message=f"echo {JINA_KEY}")])
        failed_search = await box.call("web_search", '{"query": "another query"}')
        failed_read = await box.call("browse_page", '{"url": "https://example.org/guide"}')
        assert failed_search.error and failed_read.error and "***" in failed_search.content + failed_read.content
        journal = snapshot.journal_path.read_text()
        snapshot.close()
        assert jina_keyed.requests[0].headers["Authorization"] == f"Bearer {JINA_KEY}"  # it was sent...
    assert searchapi.requests[0].params["api_key"] == DEFAULT_SEARCHAPI_KEY
    kept = json.dumps(box.records()) + journal + (tmp_path / "web.json").read_text()
    for key in (DEFAULT_SEARCHAPI_KEY, JINA_KEY):  # ...and is nowhere in what we keep
        assert key not in kept


# --------------------------------------------------------------------- snapshot


async def test_snapshot_record_then_replay_with_the_fakes_stopped(tmp_path: Path, searchapi: FakeSearchAPI,
                                                                   jina: FakeJina) -> None:
    path = tmp_path / "snapshots" / "ace-web.json"
    calls = [("web_search", '{"query": "best budget phone 2025"}'),
             ("browse_page", '{"url": "https://example.com/phones"}'),
             ("browse_page", '{"url": "https://example.com/gone"}'),
             ("browse_page", '{"url": "https://nowhere.example.com/x"}'),  # refused by DNS: not recorded
             ("web_search", '{"query": "nothing matches this"}')]
    with Snapshot(path) as snapshot:
        web = snapshot.web(live(searchapi, jina), url_check=url_check)
        box = toolbox(web)
        recorded = [await box.call(name, args) for name, args in calls]
        grader = snapshot.web(live(searchapi, jina), url_check=url_check)
        grader_page = await grader.fetch("https://example.org/guide")  # the grader reads a cited page
        assert path.with_name("ace-web.json.journal").exists()
    assert not path.with_name("ace-web.json.journal").exists()  # folded into the JSON file on close
    requests_made = (len(searchapi.requests), len(jina.requests))
    searchapi.stop()
    jina.stop()

    data = json.loads(path.read_text())
    assert set(data["searches"]) == {"best budget phone 2025", "nothing matches this"}
    assert set(data["pages"]) == {"https://example.com/phones", "https://example.com/gone",
                                  "https://example.org/guide"}
    assert data["pages"]["https://example.com/phones"]["content"] == "# Picks\n\n1. Phone A\n2. Phone B"

    replay = Snapshot(path, "replay")
    replay_web = replay.web()
    assert replay_web.replay
    box2 = WebToolbox(replay_web, url_check=None)
    replayed = [await box2.call(name, args) for name, args in calls[:3] + calls[4:]]
    assert [o.content for o in replayed] == [o.content for o in recorded[:3] + recorded[4:]]
    assert [p.to_json() for p in box2.pages()] == [p.to_json() for p in box.pages()]
    assert await replay_web.fetch("https://example.org/guide") == grader_page
    assert await replay_web.search("best budget phone 2025") == await asyncio.to_thread(
        replay.lookup_search, "best budget phone 2025")
    assert requests_made == (len(searchapi.requests), len(jina.requests))  # no request reached anything


async def test_replay_miss_is_a_non_retryable_error(tmp_path: Path) -> None:
    with Snapshot(tmp_path / "s.json") as snapshot:
        snapshot.add_page("https://example.com/a", Page("https://example.com/a", "A", "a"))
    web = Snapshot(tmp_path / "s.json", "replay").web()
    with pytest.raises(ToolError, match="not in snapshot") as caught:
        await web.fetch("https://example.com/other")
    assert caught.value.retryable is False
    with pytest.raises(ToolError, match="not in snapshot") as caught:
        await web.search("never searched")
    assert caught.value.retryable is False
    box = WebToolbox(web)  # the default URL check does no DNS over a replay
    outcome = await box.call("browse_page", '{"url": "https://unresolvable-name.example/"}')
    assert outcome.error and "not in snapshot" in outcome.content and not outcome.retryable
    refused = await box.call("browse_page", '{"url": "http://127.0.0.1/"}')
    assert refused.error and "loopback" in refused.content


def test_replay_without_a_snapshot_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no web snapshot"):
        Snapshot(tmp_path / "missing.json", "replay")
    with pytest.raises(ValueError, match="needs the live web"):
        Snapshot(tmp_path / "rec.json").web()


async def test_record_mode_serves_what_it_recorded(tmp_path: Path, searchapi: FakeSearchAPI,
                                                   jina: FakeJina) -> None:
    snapshot = Snapshot(tmp_path / "s.json")
    agent = snapshot.web(live(searchapi, jina), url_check=url_check)
    grader = snapshot.web(live(searchapi, jina), url_check=url_check)
    first = await agent.fetch("https://example.com/phones")
    jina.script({"https://example.com/phones": "changed since"})
    assert await grader.fetch("https://example.com/phones") == first  # the grader reads what the model read
    assert await agent.search("best budget phone 2025", 2) == (await grader.search("best budget phone 2025"))[:2]
    assert len(jina.requests) == 1 and len(searchapi.requests) == 1
    snapshot.close()


async def test_the_graders_live_fetches_are_checked_too(tmp_path: Path, searchapi: FakeSearchAPI,
                                                        jina: FakeJina) -> None:
    with Snapshot(tmp_path / "s.json") as snapshot:
        grader = snapshot.web(live(searchapi, jina))  # the default check: literal addresses need no DNS
        for url in ("http://169.254.169.254/latest/meta-data/", jina.base_url, "file:///etc/passwd"):
            with pytest.raises(UnsafeURL):
                await grader.fetch(url)
        assert jina.requests == [] and snapshot.failures() == {}


async def test_non_retryable_failures_are_recorded_and_replayed(tmp_path: Path, searchapi: FakeSearchAPI,
                                                                jina: FakeJina) -> None:
    with Snapshot(tmp_path / "s.json") as snapshot:
        web = snapshot.web(live(searchapi, jina), url_check=url_check)
        with pytest.raises(ToolError) as live_error:
            await web.fetch("https://nowhere.example/")
        jina.set_faults([Fault("status", status=503)])
        with pytest.raises(ToolError) as transient:
            await web.fetch("https://example.org/guide")
        assert transient.value.retryable
        jina.set_faults([Fault("status", status=402, message="Insufficient balance")])
        with pytest.raises(ToolError, match="HTTP 402") as account:
            await web.fetch("https://example.org/guide")
        assert not account.value.retryable
        searchapi.set_faults([Fault("status", status=401)])
        with pytest.raises(ToolError, match="HTTP 401"):
            await web.search("best budget phone 2025")
        jina.set_faults([])
        assert (await web.fetch("https://example.org/guide")).title == "Buying guide"  # the account was fixed
    # only the failure about the page itself, not the transient one nor the account's
    assert list(snapshot.failures()) == [("fetch", "https://nowhere.example/")]
    with pytest.raises(ToolError) as replayed:
        await Snapshot(tmp_path / "s.json", "replay").web().fetch("https://nowhere.example/")
    assert str(replayed.value) == str(live_error.value) and replayed.value.retryable is False
    assert replayed.value.status == 422


async def test_a_crash_keeps_every_entry_added(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    snapshot = Snapshot(path)  # never closed: as if the process died
    snapshot.add_search("q1", [SearchResult("t", "https://a.example/", "s", 1)])
    snapshot.add_page("https://a.example/", Page("https://a.example/", "A", "full text " * 100))
    assert not path.exists()
    with open(snapshot.journal_path, "ab") as f:
        f.write(b'{"kind": "page", "key": "https://torn.example/", "pa')  # torn by the crash
    replay = Snapshot(path, "replay")
    assert replay.lookup_page("https://a.example/") == Page("https://a.example/", "A", "full text " * 100)
    assert replay.lookup_search("q1") == [SearchResult("t", "https://a.example/", "s", 1)]
    assert replay.lookup_page("https://torn.example/") is None
    resumed = Snapshot(path)  # a resumed run adds after the torn line
    resumed.add_page("https://b.example/", Page("https://b.example/", "B", "b"))
    resumed.close()
    assert set(Snapshot(path, "replay").pages()) == {"https://a.example/", "https://b.example/"}


def test_a_torn_journal_header_is_set_aside(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    Snapshot(path).close()  # an empty snapshot file
    path.with_name("s.json.journal").write_bytes(b'{"journ')  # the crash hit the very first write
    assert Snapshot(path, "replay").pages() == {}
    snapshot = Snapshot(path)
    snapshot.add_page("https://a.example/", Page("https://a.example/", "A", "a"))
    snapshot.close()
    assert list(Snapshot(path, "replay").pages()) == ["https://a.example/"]
    assert len(list(tmp_path.glob("s.json.journal.unreadable-*"))) == 1


def test_threads_and_processes_share_one_snapshot(tmp_path: Path) -> None:
    path = tmp_path / "shared.json"
    first, second = Snapshot(path), Snapshot(path)  # two processes' views of one file
    errors: list[BaseException] = []

    def add(view: Snapshot, worker: int) -> None:
        try:
            for i in range(40):
                url = f"https://example.com/{i}"
                stored = view.add_page(url, Page(url, f"by {worker}", f"text {i} from {worker}"))
                assert stored.url == url
                view.add_page(f"https://example.com/w{worker}/{i}", Page(url, "", "mine"))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(view, n)) for n, view in enumerate([first, second, first, second])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    # the first entry for a key wins, and every view agrees on which it was
    assert first.pages()["https://example.com/7"] == second.lookup_page("https://example.com/7")
    first.close()
    second.close()
    pages = Snapshot(path, "replay").pages()
    assert len(pages) == 40 + 4 * 40
    assert {pages[f"https://example.com/{i}"].title for i in range(40)} <= {"by 0", "by 1", "by 2", "by 3"}


async def test_snapshot_is_safe_for_concurrent_async_callers(tmp_path: Path, searchapi: FakeSearchAPI,
                                                             jina: FakeJina) -> None:
    urls = [f"https://example.com/c{i}" for i in range(8)]
    jina.script({url: f"c{i}" for i, url in enumerate(urls)})
    with Snapshot(tmp_path / "s.json") as snapshot:
        web = snapshot.web(live(searchapi, jina), url_check=url_check)
        pages = await asyncio.gather(*(web.fetch(url) for url in urls + urls))
        assert [p.content for p in pages] == [f"c{i}" for i in range(8)] * 2
    assert len(Snapshot(tmp_path / "s.json", "replay").pages()) == 8


def test_a_foreign_file_is_not_a_snapshot(tmp_path: Path) -> None:
    path = tmp_path / "other.json"
    path.write_text('{"hello": "world"}')
    with pytest.raises(ValueError, match="not a web snapshot"):
        Snapshot(path, "replay")


def test_client_arguments_are_checked() -> None:
    with pytest.raises(ValueError):
        JinaReaderClient(concurrency=0)
    with pytest.raises(ValueError):
        SearchAPIClient(timeout=0)
    assert JinaReaderClient(base_url="http://127.0.0.1:9").base_url == "http://127.0.0.1:9/"

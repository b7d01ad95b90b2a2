"""A snapshot of the web as one run saw it: every search (query -> results) and page (URL -> full text).

A live run records into a :class:`Snapshot`; a replay serves only from it, with no network and no
DNS. The agent's toolbox and the grader share one ``Snapshot`` (through :meth:`Snapshot.web`), so
what the grader reads is what the model read.

Record mode is a read-through cache: a query or URL already in the snapshot is served from it and
not fetched again, so a whole run sees one consistent web and its replay gives the same answers.
Failures about the page or query itself (HTTP 400/404/410/422/451: a page the reader could not
load, a domain it blocks) are recorded too and replayed as the same
:class:`~metis_pytest.tools.web.ToolError`; transient failures (429, 5xx, timeouts) and failures of
a key or an account (401/402/403, a key not set) are not (running the row again may get the page).

On disk: ``<path>`` is a JSON file (``{"format", "version", "searches", "pages", "failures"}``),
written atomically (temporary file, fsync, rename) by :meth:`Snapshot.close` / :meth:`Snapshot.flush`.
Entries added in between go, one JSON line each, to ``<path>.journal`` as they are added (flushed on
every entry, fsynced with ``durable=True``), so a crash keeps them; loading reads the JSON file, then
the journal (a torn last line is skipped). Threads, event loops and processes (xdist workers) may
share one snapshot: entries are added under a lock (a thread lock and ``<path>.lock``), each
process catches up with the others' entries before adding, and the first entry for a key wins.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import uuid
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from filelock import FileLock

from metis_pytest.tools.safety import acheck_url
from metis_pytest.tools.web import Page, SearchResult, ToolError, WebBackend

__all__ = ["FORMAT", "RECORDED_FAILURES", "Snapshot", "SnapshotMode", "SnapshotWeb"]

FORMAT = "metis-web-snapshot"
VERSION = 1
SnapshotMode = Literal["record", "replay"]
URLCheck = Callable[[str], Awaitable[object]]

RECORDED_FAILURES = frozenset({400, 404, 410, 422, 451})
"""The HTTP statuses of failures about the query or page itself, recorded and replayed. Not recorded:
401/402/403 (a key or an account), 429 and 5xx (transient), failures with no status (our configuration)."""


def _key(text: str) -> str:
    return str(text).strip()


class Snapshot:
    """Searches and pages of one run, recorded (``mode="record"``) or served (``mode="replay"``).

    ``Snapshot(path)`` records; an existing snapshot at ``path`` is loaded and added to (a resumed
    run). ``Snapshot(path, "replay")`` loads it read-only and raises ``FileNotFoundError`` when there
    is none."""

    def __init__(self, path: str | os.PathLike[str], mode: SnapshotMode = "record", *, durable: bool = False) -> None:
        if mode not in ("record", "replay"):
            raise ValueError(f"snapshot mode must be 'record' or 'replay', not {mode!r}")
        self.path = Path(path)
        self.mode: SnapshotMode = mode
        self.durable = durable
        self.journal_path = self.path.with_name(self.path.name + ".journal")
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self._lock = threading.RLock()
        self._searches: dict[str, tuple[int, list[SearchResult]]] = {}
        self._pages: dict[str, Page] = {}
        self._failures: dict[tuple[str, str], dict[str, Any]] = {}
        self._json_stamp: tuple[int, int] | None = None
        self._journal_id: str | None = None
        self._offset = 0
        self._torn = False
        self._closed = False
        if mode == "replay":
            if not self.path.exists() and not self.journal_path.exists():
                raise FileNotFoundError(f"no web snapshot at {self.path} to replay")
            self._file_lock: FileLock | None = None
            self._catch_up()
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file_lock = FileLock(str(self.lock_path))
            with self._locked():
                self._catch_up()

    # ----------------------------------------------------------------- reading

    @property
    def replay(self) -> bool:
        return self.mode == "replay"

    def __len__(self) -> int:
        with self._lock:
            return len(self._searches) + len(self._pages)

    def searches(self) -> dict[str, list[SearchResult]]:
        """Every recorded search: query -> results."""
        with self._lock:
            return {query: list(results) for query, (_num, results) in self._searches.items()}

    def pages(self) -> dict[str, Page]:
        """Every recorded page: requested URL -> page (full text)."""
        with self._lock:
            return dict(self._pages)

    def failures(self) -> dict[tuple[str, str], dict[str, Any]]:
        """Every recorded non-retryable failure: (``"search"`` | ``"fetch"``, key) -> ``{"message", "status"}``."""
        with self._lock:
            return {k: dict(v) for k, v in self._failures.items()}

    def lookup_search(self, query: str, num: int = 10) -> list[SearchResult] | None:
        """The recorded results (the first ``num``), ``None`` if not recorded; a recorded failure raises."""
        return self._lookup("search", _key(query), num, catch_up=True)

    def lookup_page(self, url: str) -> Page | None:
        """The recorded page, ``None`` if not recorded; a recorded failure raises its :class:`ToolError`."""
        return self._lookup("fetch", _key(url), 0, catch_up=True)

    def _lookup(self, op: str, key: str, num: int, *, catch_up: bool) -> Any:
        with self._lock:
            found = self._find(op, key, num)
            if found is None and catch_up and not self.replay and not self._closed:
                with self._locked():  # another process may have recorded it
                    self._catch_up()
                found = self._find(op, key, num)
            return found

    def _find(self, op: str, key: str, num: int) -> Any:
        if op == "search" and key in self._searches:
            return list(self._searches[key][1][:num])
        if op == "fetch" and key in self._pages:
            return self._pages[key]
        failure = self._failures.get((op, key))
        if failure is not None:
            raise ToolError(str(failure.get("message") or "failed when recorded"), retryable=False,
                            status=failure.get("status"))
        return None

    # ----------------------------------------------------------------- recording

    def add_search(self, query: str, results: list[SearchResult], num: int = 10) -> list[SearchResult]:
        """Record a search; returns what the snapshot holds for it (an earlier entry wins), first ``num``."""
        entry = {"kind": "search", "key": _key(query), "num": int(num), "results": [r.to_json() for r in results]}
        self._add(entry)
        found = self._find("search", _key(query), num)
        return found if found is not None else list(results[:num])

    def add_page(self, url: str, page: Page) -> Page:
        """Record a page read from ``url``; returns what the snapshot holds for it (an earlier entry wins)."""
        self._add({"kind": "page", "key": _key(url), "page": page.to_json()})
        found = self._find("fetch", _key(url), 0)
        return found if found is not None else page

    def add_failure(self, op: Literal["search", "fetch"], key: str, error: ToolError) -> None:
        """Record a non-retryable failure, replayed as the same error (retryable ones are not recorded)."""
        if error.retryable:
            return
        self._add({"kind": "failure", "op": op, "key": _key(key), "message": str(error), "status": error.status})

    def _add(self, entry: dict[str, Any]) -> None:
        if self.replay:
            raise RuntimeError("a replayed snapshot is read-only")
        line = (json.dumps(entry, ensure_ascii=False) + "\n").encode()
        with self._lock:
            if self._closed:
                raise RuntimeError(f"snapshot {self.path} is closed")
            with self._locked():
                self._catch_up()
                if self._has(entry):
                    return
                self._append(line)
            self._apply(entry)

    def _has(self, entry: Mapping[str, Any]) -> bool:
        key = entry["key"]
        if entry["kind"] == "search":
            return key in self._searches or ("search", key) in self._failures
        if entry["kind"] == "page":
            return key in self._pages or ("fetch", key) in self._failures
        op = entry["op"]
        return (op, key) in self._failures or key in (self._searches if op == "search" else self._pages)

    def _append(self, line: bytes) -> None:
        """One entry at the end of the journal (created, with its header, if absent)."""
        if self._journal_id is None:
            journal_id = uuid.uuid4().hex
            header = (json.dumps({"journal": journal_id, "format": FORMAT, "version": VERSION}) + "\n").encode()
            with open(self.journal_path, "xb") as f:
                f.write(header)
                self._sync(f)
            self._journal_id, self._offset, self._torn = journal_id, len(header), False
        data = (b"\n" + line) if self._torn else line
        with open(self.journal_path, "ab") as f:
            f.write(data)
            self._sync(f)
        self._offset += len(data)
        self._torn = False

    def _sync(self, f: Any) -> None:
        f.flush()
        if self.durable:
            os.fsync(f.fileno())

    # ----------------------------------------------------------------- loading

    def _locked(self) -> Any:
        assert self._file_lock is not None
        return self._file_lock

    def _apply(self, entry: Mapping[str, Any]) -> None:
        """Merge one entry; the first for a key wins."""
        try:
            kind, key = entry["kind"], str(entry["key"])
            if kind == "search":
                results = [SearchResult.from_json(r) for r in entry.get("results") or []]
                self._searches.setdefault(key, (int(entry.get("num") or len(results)), results))
            elif kind == "page":
                self._pages.setdefault(key, Page.from_json(entry["page"]))
            elif kind == "failure" and entry.get("op") in ("search", "fetch"):
                self._failures.setdefault((str(entry["op"]), key),
                                          {"message": entry.get("message"), "status": entry.get("status")})
        except (KeyError, TypeError, ValueError, AttributeError):
            pass  # an entry this version cannot read

    def _merge_json(self) -> None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except ValueError as exc:
            raise ValueError(f"web snapshot {self.path} is not valid JSON: {exc}") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"{self.path} is not a web snapshot (format {FORMAT!r})")
        for query, item in (data.get("searches") or {}).items():
            self._apply({"kind": "search", "key": query, **item})
        for url, page in (data.get("pages") or {}).items():
            self._apply({"kind": "page", "key": url, "page": page})
        for op, items in (data.get("failures") or {}).items():
            for key, item in (items or {}).items():
                self._apply({"kind": "failure", "op": op, "key": key, **item})

    def _stamp(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return st.st_mtime_ns, st.st_size

    def _catch_up(self) -> None:
        """Merge what others wrote since we last looked: a rewritten JSON file, new journal lines."""
        stamp = self._stamp()
        if stamp != self._json_stamp:
            self._merge_json()
            self._json_stamp = stamp
        try:
            f = open(self.journal_path, "rb")
        except FileNotFoundError:
            self._journal_id, self._offset, self._torn = None, 0, False
            return
        with f:
            header_line = f.readline()
            try:
                journal_id: str | None = str(json.loads(header_line)["journal"])
            except (ValueError, KeyError, TypeError):
                journal_id = None
            if journal_id is not None:
                if journal_id != self._journal_id:  # a journal begun since we last looked
                    self._journal_id, self._offset = journal_id, len(header_line)
                f.seek(self._offset)
                data = f.read()
        if journal_id is None:  # a header torn by a crash, or not our file: set it aside, start afresh
            if not self.replay:
                self.journal_path.replace(self.journal_path.with_name(
                    f"{self.journal_path.name}.unreadable-{uuid.uuid4().hex[:8]}"))
            self._journal_id, self._offset, self._torn = None, 0, False
            return
        end = data.rfind(b"\n") + 1
        for raw in data[:end].splitlines():
            try:
                entry = json.loads(raw)
            except ValueError:
                continue  # a line torn by a crash
            if isinstance(entry, dict):
                self._apply(entry)
        self._offset += end
        self._torn = end < len(data)  # a torn tail: the next entry starts on a new line

    # ----------------------------------------------------------------- compaction

    def to_json(self) -> dict[str, Any]:
        with self._lock:
            failures: dict[str, dict[str, Any]] = {}
            for (op, key), item in self._failures.items():
                failures.setdefault(op, {})[key] = dict(item)
            return {
                "format": FORMAT,
                "version": VERSION,
                "searches": {q: {"num": num, "results": [r.to_json() for r in results]}
                             for q, (num, results) in self._searches.items()},
                "pages": {url: page.to_json() for url, page in self._pages.items()},
                "failures": failures,
            }

    def flush(self) -> None:
        """Fold the journal into the JSON file (atomically) and remove it. No-op when replaying."""
        if self.replay:
            return
        with self._lock, self._locked():
            self._catch_up()
            tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex}.tmp")
            try:
                with open(tmp, "w", encoding="utf-8") as f:
                    json.dump(self.to_json(), f, ensure_ascii=False)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.path)
            finally:
                tmp.unlink(missing_ok=True)
            self.journal_path.unlink(missing_ok=True)
            self._json_stamp = self._stamp()
            self._journal_id, self._offset, self._torn = None, 0, False

    def close(self) -> None:
        """:meth:`flush`, then refuse further entries. Safe to call twice."""
        with self._lock:
            if self._closed:
                return
            if not self.replay:
                self.flush()
            self._closed = True

    def __enter__(self) -> Snapshot:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def web(self, live: WebBackend | None = None, *, url_check: URLCheck | None = acheck_url) -> SnapshotWeb:
        """A :class:`SnapshotWeb` over this snapshot (``live`` is required to record)."""
        return SnapshotWeb(self, live, url_check=url_check)

    def __repr__(self) -> str:
        return f"Snapshot({str(self.path)!r}, mode={self.mode!r}, entries={len(self)})"


class SnapshotWeb:
    """The :class:`~metis_pytest.tools.web.WebBackend` interface over a :class:`Snapshot`.

    Recording: served from the snapshot when it holds the query or URL, otherwise from ``live`` and
    recorded. Replaying: served from the snapshot only; a miss is ``ToolError("not in snapshot ...",
    retryable=False)``, and no request is made. ``replay`` tells a toolbox that no URL needs a DNS
    check (only recorded URLs can be served).

    ``url_check`` (default :func:`~metis_pytest.tools.safety.acheck_url`) runs before a page is fetched
    live, so a grader reading the URLs a model cited gets the same safety as the toolbox; pages already
    in the snapshot, and replays, are served without it. ``None`` checks nothing."""

    def __init__(self, snapshot: Snapshot, live: WebBackend | None = None, *,
                 url_check: URLCheck | None = acheck_url) -> None:
        if not snapshot.replay and live is None:
            raise ValueError("recording a snapshot needs the live web (live=LiveWeb(...))")
        self.snapshot = snapshot
        self.live = None if snapshot.replay else live
        self.url_check = url_check

    @property
    def replay(self) -> bool:
        return self.snapshot.replay

    async def search(self, query: str, num: int = 10) -> list[SearchResult]:
        hit = await asyncio.to_thread(self.snapshot.lookup_search, query, num)
        if hit is not None:
            return hit
        if self.live is None:
            raise ToolError(f"not in snapshot: no recorded search for {_key(query)!r}", retryable=False)
        try:
            results = await self.live.search(query, num)
        except ToolError as exc:
            if not exc.retryable and exc.status in RECORDED_FAILURES:  # about the query, not the account
                await asyncio.to_thread(self.snapshot.add_failure, "search", query, exc)
            raise
        return await asyncio.to_thread(self.snapshot.add_search, query, results, num)

    async def fetch(self, url: str) -> Page:
        hit = await asyncio.to_thread(self.snapshot.lookup_page, url)
        if hit is not None:
            return hit
        if self.live is None:
            raise ToolError(f"not in snapshot: no recorded page for {_key(url)}", retryable=False)
        if self.url_check is not None:
            await self.url_check(url)
        try:
            page = await self.live.fetch(url)
        except ToolError as exc:
            if not exc.retryable and exc.status in RECORDED_FAILURES:
                await asyncio.to_thread(self.snapshot.add_failure, "fetch", url, exc)
            raise
        return await asyncio.to_thread(self.snapshot.add_page, url, page)

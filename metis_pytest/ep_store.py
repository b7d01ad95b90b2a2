"""Rows into Eval Protocol's store (what ``ep logs`` shows) in batches, not one transaction per row.

Eval Protocol's SQLite logger writes one row per call: an ``IMMEDIATE`` transaction with a select and
an insert or update into its row table, then an event-bus publish, a second transaction inserting the
row again into the event table that a running ``ep logs`` polls. About 1.5 ms per row here, the most
expensive thing a Metis item did per row. :func:`write_rows` writes the same two things for many rows
at once: every row upserted into the row table in one transaction, then every event inserted in one
transaction (one after the other, on each table's own connection, as Eval Protocol does: a transaction
held on one while writing the other would lock the database out of itself). Each row is serialized
once, to the JSON of what Eval Protocol stores (``model_dump(mode="json", exclude_none=True)``), and in-process
event listeners are called as Eval Protocol's bus calls them.

With ``behind=True`` (what :class:`metis_pytest.ep.CoalescingLogger` asks for) the rows are serialized
at once, in the caller's thread, and the two transactions run on one background thread per process,
in order (SQLite releases the GIL while it writes): an item does not wait for the store, the next
item or the end of the session overlaps with it. :func:`drain` waits for every queued write; the
plugin drains at the end of every session (and at interpreter exit), and reading the store through the
logger drains first. A write that fails in the background is logged and reported by :func:`drain`.

It reaches into the logger's store and the bus's database (Eval Protocol 0.3.33's attributes, the
pinned version); with any other logger, or if those attributes are not there, it logs row by row
through the logger's own ``log``.
"""

from __future__ import annotations

import atexit
import json
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from eval_protocol.dataset_logger.dataset_logger import LOG_EVENT_TYPE, DatasetLogger
from eval_protocol.models import EvaluationRow

__all__ = ["drain", "write_rows"]


def write_rows(logger: DatasetLogger, rows: Sequence[EvaluationRow], *, behind: bool = False) -> None:
    """Log ``rows`` through ``logger``: in two transactions if it is Eval Protocol's SQLite logger
    (on the background writer with ``behind``, after the writes queued before them)."""
    target = _sqlite_parts(logger)
    if target is None or len(rows) < 2:
        if behind:
            drain()  # in order after what is queued
        for row in rows:
            logger.log(row)
        return
    store, bus = target
    texts = [row.model_dump_json(exclude_none=True) for row in rows]  # the JSON of model_dump(mode="json")
    ids = [row.execution_metadata.rollout_id for row in rows]
    if bus._listeners:  # in-process subscribers get each row as Eval Protocol's emit gives it, now
        from eval_protocol.event_bus.event_bus import EventBus

        for text in texts:
            EventBus.emit(bus, LOG_EVENT_TYPE, EvaluationRow(**json.loads(text)))
    if behind:
        _WRITER.submit(lambda: _store(store, bus, ids, texts))
    else:
        _store(store, bus, ids, texts)


def drain() -> list[str]:
    """Wait until every write queued with ``behind=True`` is done; the failures since the last drain."""
    return _WRITER.drain()


def _store(store: Any, bus: Any, ids: list[str | None], texts: list[str]) -> None:
    _upsert(store, ids, texts)
    try:
        _publish(bus, texts)
    except Exception as exc:  # as Eval Protocol's logger: a failed publish never loses the stored rows
        from eval_protocol.event_bus.logger import logger as bus_logger

        bus_logger.error(f"[EVENT_BUS_EMIT] failed to publish {len(texts)} row events: {exc}")


class _Writer:
    """One background thread that runs the queued writes in order."""

    def __init__(self) -> None:
        self._jobs: queue.Queue[Callable[[], None]] = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._failures: list[str] = []

    def submit(self, job: Callable[[], None]) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                if self._thread is None:
                    atexit.register(self.drain)
                self._thread = threading.Thread(target=self._run, name="metis-ep-store", daemon=True)
                self._thread.start()
        self._jobs.put(job)

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                job()
            except Exception as exc:
                from eval_protocol.event_bus.logger import logger as bus_logger

                message = f"Eval Protocol's store: a batch of rows was not written: {type(exc).__name__}: {exc}"
                bus_logger.error(message)
                with self._lock:
                    self._failures.append(message)
            finally:
                self._jobs.task_done()

    def drain(self) -> list[str]:
        self._jobs.join()
        with self._lock:
            failures, self._failures = self._failures, []
        return failures


_WRITER = _Writer()


def _sqlite_parts(logger: DatasetLogger) -> tuple[Any, Any] | None:
    """(row store, event bus) behind Eval Protocol's default or SQLite logger, or None for any other."""
    from eval_protocol.dataset_logger.sqlite_dataset_logger_adapter import SqliteDatasetLoggerAdapter

    inner = logger._get_logger() if hasattr(logger, "_get_logger") else logger  # its lazy default logger
    if type(inner) is not SqliteDatasetLoggerAdapter:
        return None
    store = getattr(inner, "_store", None)
    if store is None or not all(hasattr(store, a) for a in ("_db", "_EvaluationRow")):
        return None
    from eval_protocol.event_bus import event_bus

    bus = event_bus._get_event_bus() if hasattr(event_bus, "_get_event_bus") else event_bus
    db = getattr(bus, "_db", None)
    if db is None or not all(hasattr(db, a) for a in ("_db", "_Event")) or not hasattr(bus, "_process_id"):
        return None
    return store, bus


def _insert_many(db: Any, model: Any, records: list[tuple[Any, ...]], columns: Sequence[str], upsert: str = "") -> None:
    """``records`` into ``model``'s table in one ``IMMEDIATE`` transaction (retried while it is locked).

    A JSON column gets ``json(?)``, as peewee's ``JSONField`` writes it (SQLite's minified text)."""
    from eval_protocol.event_bus.sqlite_event_bus_database import execute_with_sqlite_retry
    from playhouse.sqlite_ext import JSONField

    meta = model._meta
    names = ", ".join(f'"{meta.fields[c].column_name}"' for c in columns)
    marks = ", ".join("json(?)" if isinstance(meta.fields[c], JSONField) else "?" for c in columns)
    sql = f'INSERT INTO "{meta.table_name}" ({names}) VALUES ({marks}){upsert}'

    def write() -> None:
        with db.atomic("IMMEDIATE"):
            db.cursor().executemany(sql, records)

    execute_with_sqlite_retry(write)


def _upsert(store: Any, ids: list[str | None], texts: list[str]) -> None:
    model = store._EvaluationRow
    column = model._meta.fields["data"].column_name
    records = [(rollout_id, text) for rollout_id, text in zip(ids, texts)]
    _insert_many(store._db, model, records, ("rollout_id", "data"),
                 f' ON CONFLICT("{model._meta.fields["rollout_id"].column_name}") DO UPDATE SET "{column}" = excluded."{column}"')


def _publish(bus: Any, texts: list[str]) -> None:
    now, process = time.time(), str(bus._process_id or os.getpid())
    records = [(str(uuid.uuid4()), LOG_EVENT_TYPE, text, now, process, False) for text in texts]
    _insert_many(bus._db._db, bus._db._Event, records,
                 ("event_id", "event_type", "data", "timestamp", "process_id", "processed"))

"""Batched writes to Eval Protocol's store: the same rows and the same events as its own logger writes."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from eval_protocol.dataset_logger.sqlite_dataset_logger_adapter import SqliteDatasetLoggerAdapter
from eval_protocol.event_bus.sqlite_event_bus import SqliteEventBus
from eval_protocol.models import EvaluateResult, EvaluationRow, Message

from metis_pytest import ep_store
from metis_pytest.ep import CoalescingLogger
from tests.plugin.test_ep_adapter import Recorder

REPO = Path(__file__).resolve().parents[2]


def rows(n: int, answer: str = "42") -> list[EvaluationRow]:
    out = []
    for i in range(n):
        r = EvaluationRow(messages=[Message(role="user", content=f"q{i} — ünïcode"),
                                    Message(role="assistant", content=f"<answer>{answer}</answer>")],
                          ground_truth=str(i))
        r.execution_metadata.rollout_id = f"rollout-{i}"
        r.evaluation_result = EvaluateResult(score=float(i % 2), reason="r")
        out.append(r)
    return out


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[SqliteDatasetLoggerAdapter, SqliteEventBus]:
    """Eval Protocol's own SQLite logger and event bus on one fresh database, as ``ep logs`` has them."""
    db = str(tmp_path / "logs.db")
    bus = SqliteEventBus(db_path=db)
    import eval_protocol.event_bus as event_bus_module

    monkeypatch.setattr(event_bus_module.event_bus, "_event_bus", bus)
    return SqliteDatasetLoggerAdapter(db_path=db), bus


def test_batched_rows_read_back_as_eval_protocols_own_logger_writes_them(store, tmp_path: Path) -> None:
    logger, _ = store
    reference = SqliteDatasetLoggerAdapter(db_path=str(tmp_path / "reference.db"))
    written = rows(5)
    for r in written:
        reference.log(r)
    ep_store.write_rows(logger, written)
    dump = [r.model_dump(mode="json", exclude_none=True) for r in logger.read()]
    assert dump == [r.model_dump(mode="json", exclude_none=True) for r in reference.read()]
    assert dump[0]["messages"][0]["content"] == "q0 — ünïcode"


def test_a_row_written_again_is_updated_not_duplicated(store) -> None:
    logger, _ = store
    ep_store.write_rows(logger, rows(3, answer="1"))
    ep_store.write_rows(logger, rows(3, answer="2"))
    stored = logger.read()
    assert len(stored) == 3
    assert {m.content for r in stored for m in r.messages if m.role == "assistant"} == {"<answer>2</answer>"}


def test_every_row_is_published_to_other_processes_and_to_local_listeners(store) -> None:
    logger, bus = store
    heard: list[tuple[str, Any]] = []
    bus.subscribe(lambda kind, data: heard.append((kind, data)))
    ep_store.write_rows(logger, rows(4))
    events = bus._db.get_unprocessed_events("another process")  # what a running `ep logs` polls
    assert [e["data"]["execution_metadata"]["rollout_id"] for e in events] == [f"rollout-{i}" for i in range(4)]
    assert {e["event_type"] for e in events} == {"log"}
    assert [data.execution_metadata.rollout_id for _, data in heard] == [f"rollout-{i}" for i in range(4)]
    assert bus._db.get_unprocessed_events(bus._process_id) == []  # its own events are not its to read


def test_another_logger_is_written_row_by_row() -> None:
    inner = Recorder()
    ep_store.write_rows(inner, rows(3))
    assert [w[0] for w in inner.writes] == ["rollout-0", "rollout-1", "rollout-2"]


def test_behind_the_caller_rows_land_in_order_and_drain_waits_for_them(store, monkeypatch: pytest.MonkeyPatch) -> None:
    logger, _ = store
    gate = threading.Event()
    real = ep_store._store

    def held(*args: Any) -> None:
        assert gate.wait(30)
        real(*args)

    monkeypatch.setattr(ep_store, "_store", held)
    ep_store.write_rows(logger, rows(3, answer="1"), behind=True)  # returns while the writer is held
    ep_store.write_rows(logger, rows(3, answer="2"), behind=True)
    assert logger.read() == []
    threading.Timer(0.2, gate.set).start()
    assert ep_store.drain() == []
    assert {m.content for r in logger.read() for m in r.messages if m.role == "assistant"} == {"<answer>2</answer>"}


def test_a_write_that_fails_behind_the_caller_is_reported_by_drain(store, monkeypatch: pytest.MonkeyPatch) -> None:
    logger, _ = store

    def broken(*args: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(ep_store, "_store", broken)
    ep_store.write_rows(logger, rows(2), behind=True)
    assert ep_store.drain() == ["Eval Protocol's store: a batch of rows was not written: OSError: disk full"]
    assert ep_store.drain() == []


def test_reading_through_the_coalescing_logger_waits_for_the_writes_behind_it(store) -> None:
    logger, _ = store
    coalescing = CoalescingLogger(logger, interval=60.0)
    for r in rows(4):
        coalescing.log(r)
    assert len(coalescing.read()) == 4


def test_rows_the_store_did_not_take_are_named_at_the_end_of_the_session(pytester: pytest.Pytester,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(ep_store, "_store", broken)
    monkeypatch.setenv("HOME", str(pytester.path / "home"))
    pytester.makepyfile(test_eval="from evals.gsm8k.test_gsm8k import test_gsm8k  # noqa: F401\n")
    recorded = REPO / "baselines" / "gsm8k" / "recorded" / "scripted-mix"
    result = pytester.runpytest("-p", "no:cacheprovider", "--replay", str(recorded), "--model", "scripted-mix",
                                "--dataset", str(REPO / "datasets" / "gsm8k_smoke.jsonl"), "--output-dir", "out")
    result.assert_outcomes(passed=1)  # the item and the run store do not depend on Eval Protocol's store
    result.stdout.fnmatch_lines(["WARNING: Eval Protocol's store: a batch of rows was not written: OSError: disk full "
                                 "(the run store has them; `ep logs` will not show them)"])

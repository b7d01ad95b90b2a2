"""The Eval Protocol adapter: coalesced writes to Eval Protocol's store."""

from __future__ import annotations

import pytest
from eval_protocol.dataset_logger.dataset_logger import DatasetLogger
from eval_protocol.models import EvaluateResult, EvaluationRow, Message

from metis_pytest import ep as ep_module
from metis_pytest.ep import CoalescingLogger, last_assistant_text


class Recorder(DatasetLogger):
    def __init__(self) -> None:
        self.writes: list[tuple[str | None, str]] = []

    def log(self, row: EvaluationRow) -> None:
        self.writes.append((row.execution_metadata.rollout_id, last_assistant_text(row)))

    def read(self, rollout_id=None):  # type: ignore[no-untyped-def]
        return []


def row(rollout_id: str) -> EvaluationRow:
    r = EvaluationRow(messages=[Message(role="user", content="q")])
    r.execution_metadata.rollout_id = rollout_id
    return r


def test_each_row_is_written_once_per_interval_in_its_latest_state() -> None:
    inner = Recorder()
    logger = CoalescingLogger(inner, interval=60.0)
    rows = [row(f"r{i}") for i in range(3)]
    for r in rows:
        logger.log(r)  # queued
    for r in rows:
        r.messages.append(Message(role="assistant", content=f"answer {r.execution_metadata.rollout_id}"))
        logger.log(r)  # rolled out
        logger.log(r)  # scored
    assert inner.writes == []  # nothing before the interval or the end of the item
    logger.flush()
    assert inner.writes == [("r0", "answer r0"), ("r1", "answer r1"), ("r2", "answer r2")]
    logger.flush()
    assert len(inner.writes) == 3  # nothing pending, nothing written again


def done(r: EvaluationRow) -> EvaluationRow:
    r.evaluation_result = EvaluateResult(score=1.0)
    return r


def test_once_the_interval_has_passed_the_finished_rows_are_written(monkeypatch: pytest.MonkeyPatch) -> None:
    # The readings: the first log; each later log, then its write's start and end (a write taking no time).
    clock = iter([0, 10, 10, 10, 20, 20, 20] + [30] * 10)
    monkeypatch.setattr(ep_module.time, "monotonic", lambda: next(clock))
    inner = Recorder()
    logger = CoalescingLogger(inner, interval=5.0)
    logger.log(row("queued"))  # the first log starts the clock
    logger.log(done(row("a")))
    logger.log(done(row("b")))
    assert [w[0] for w in inner.writes] == ["a", "b"]  # a queued row waits: it will change
    logger.flush()  # the end of the item: everything, in its final state
    assert [w[0] for w in inner.writes] == ["a", "b", "queued"]


def test_read_flushes_first() -> None:
    inner = Recorder()
    logger = CoalescingLogger(inner, interval=60.0)
    logger.log(row("a"))
    logger.read()
    assert [w[0] for w in inner.writes] == ["a"]

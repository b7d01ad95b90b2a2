"""The one adapter around Eval Protocol: everything Metis uses of it goes through this module.

A benchmark's evaluation is written as::

    @evaluation_test(BENCHMARK)
    def test_gsm8k(row: EvaluationRow) -> EvaluationRow:
        row.evaluation_result = score(row.last_assistant_text, row.ground_truth).to_evaluate_result()
        return row

which is Eval Protocol's ``@evaluation_test`` with the session's models as ``completion_params``
(one test item per ``--model``, the item id being the model as typed), rows loaded lazily at run
time from ``--dataset`` (first ``--max-rows``), Metis's rollout processor, ``--runs`` and
``--concurrency``. Around the row function it adds two things: an errored rollout is recorded as
errored (``is_score_valid=False``, the error kept) and never handed to the scorer; and every row is
written to the run store the moment it is scored.
"""

from __future__ import annotations

import functools
import inspect
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from eval_protocol.data_loader.dynamic_data_loader import DynamicDataLoader
from eval_protocol.dataset_logger import default_logger
from eval_protocol.dataset_logger.dataset_logger import DatasetLogger
from eval_protocol.models import EvaluateResult, EvaluationRow
from eval_protocol.pytest.evaluation_test import evaluation_test as _ep_evaluation_test

from metis_pytest import session as metis_session
from metis_pytest.rollout.http import RetryPolicy
from metis_pytest.rollout.single_turn import SingleTurnProcessor, StoredCompletion
from metis_pytest.store.runs import RowRecord, SummaryContext

RowFunction = Callable[[EvaluationRow], Any]


class CoalescingLogger(DatasetLogger):
    """Eval Protocol's row store (what ``ep logs`` shows), written at most once per row per interval.

    Eval Protocol logs every row at each step (queued, rolled out, scored, aggregated): four SQLite
    upserts plus four event-bus writes per row, about 1 ms each, which cost more than the rollouts
    themselves on a fast server. This keeps the latest state of each row and writes the waiting rows
    when the interval has passed (at least ``interval`` seconds, and at least twice as long as the
    last write took, so writing never takes more than a third of the time), and at the end of every
    evaluation item (:func:`flush_ep_logs`). The dashboard lags by one interval; the run store
    (``rows.jsonl``) is written per row regardless."""

    def __init__(self, inner: DatasetLogger, interval: float = 1.0) -> None:
        self.inner = inner
        self.interval = interval
        self._pending: dict[Any, EvaluationRow] = {}
        self._due: float | None = None

    def log(self, row: EvaluationRow) -> None:
        self._pending[row.execution_metadata.rollout_id or id(row)] = row
        now = time.monotonic()
        if self._due is None:
            self._due = now + self.interval
        elif now >= self._due:
            self.flush()

    def flush(self) -> None:
        start = time.monotonic()
        pending, self._pending = self._pending, {}
        for row in pending.values():
            self.inner.log(row)
        took = time.monotonic() - start
        self._due = start + took + max(self.interval, 2 * took)

    def read(self, rollout_id: str | None = None) -> list[EvaluationRow]:
        self.flush()
        return self.inner.read(rollout_id)


_EP_LOGGERS: list[CoalescingLogger] = []


def flush_ep_logs() -> None:
    """Write every row still waiting for Eval Protocol's store (called at the end of each item)."""
    for logger in _EP_LOGGERS:
        logger.flush()


@dataclass(frozen=True)
class Benchmark:
    """What the harness needs to know about a benchmark besides its scorer."""

    name: str
    version: str
    primary_metric: str
    default_source: str
    load: Callable[[str], list[EvaluationRow]]
    dataset_id: Callable[[str], str]
    dataset_revision: Callable[[str], str]
    prompt_hash: str = ""


def last_assistant_text(row: EvaluationRow) -> str:
    """The final assistant message's text ('' when the model said nothing)."""
    for message in reversed(row.messages):
        if message.role == "assistant":
            content = message.content
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return "".join(getattr(part, "text", "") or "" for part in content)
            return ""
    return ""


def _errored_result(row: EvaluationRow) -> EvaluateResult:
    return EvaluateResult(score=0.0, is_score_valid=False,
                          reason=f"rollout errored, not scored: {row.rollout_status.message}")


def _context(bench: Benchmark, session: metis_session.MetisSession, params: dict[str, Any]) -> SummaryContext:
    """The conditions a row of ``bench`` runs under: what makes two runs' rows comparable.

    Worked out once per (benchmark, params) and session: the dataset revision hashes a local file."""
    source = _source(bench, session)
    key = (bench.name, source, json.dumps(params, sort_keys=True, default=str))
    if key not in session.contexts:
        session.contexts[key] = SummaryContext(
            benchmark=bench.name, benchmark_version=bench.version, model=session.label_for(params),
            completion_params=dict(params), dataset_id=bench.dataset_id(source),
            dataset_revision=bench.dataset_revision(source), prompt_hash=bench.prompt_hash,
            primary_metric=bench.primary_metric)
    return session.contexts[key]


def _replay(bench: Benchmark) -> Callable[[dict[str, Any], EvaluationRow], StoredCompletion | None]:
    """``--resume``: hand the processor a completion stored under the same conditions, if any."""

    def replay(params: dict[str, Any], row: EvaluationRow) -> StoredCompletion | None:
        session = metis_session.current()
        if not session.cfg.resume:
            return None
        record = session.resume.take(_context(bench, session, params), str(row.input_metadata.row_id))
        if record is None or record.completion is None:
            return None
        return StoredCompletion(content=record.completion, finish_reason=record.finish_reason, usage=record.usage,
                                source=record.run_id)

    return replay


def _record(bench: Benchmark, row: EvaluationRow, session: metis_session.MetisSession, errored: bool,
            scoring_error: Exception | None = None) -> None:
    """Append one row to the run store: scored, errored in rollout, or errored in scoring."""
    params = row.input_metadata.completion_params or {}
    label = session.label_for(params)
    session.store.write_context_once(_context(bench, session, params))
    result = row.evaluation_result
    resumed = (row.execution_metadata.extra or {}).get("resumed_from")
    usage = row.execution_metadata.usage
    record = RowRecord(
        benchmark=bench.name, model=label, row_id=str(row.input_metadata.row_id),
        run_id=row.execution_metadata.run_id, status="errored" if errored else "scored",
        score=None if errored or result is None else float(result.score),
        metrics={} if errored or result is None or not result.metrics
        else {k: float(m.score) for k, m in result.metrics.items()},
        reason=result.reason if result and not errored else None,
        error=_scoring_error(scoring_error) if scoring_error else _error_details(row) if errored else None,
        completion=last_assistant_text(row) if not errored or scoring_error else None,
        ground_truth=str(row.ground_truth) if row.ground_truth is not None else None,
        finish_reason=row.execution_metadata.finish_reason,
        usage=usage.model_dump() if usage is not None else None,
        rollout_seconds=row.execution_metadata.rollout_duration_seconds,
        metadata={"resumed_from": resumed} if resumed else {},
    )
    session.store.append(record)


def _scoring_error(exc: Exception) -> dict[str, Any]:
    return {"message": f"scorer raised {type(exc).__name__}: {exc}", "stage": "scoring", "retryable": False}


def _error_details(row: EvaluationRow) -> dict[str, Any]:
    details: dict[str, Any] = {"message": row.rollout_status.message}
    for item in row.rollout_status.details or []:
        if isinstance(item, dict):
            details.update(item.get("metadata", item) if isinstance(item.get("metadata"), dict) else item)
    details.setdefault("retryable", True)
    return details


def _source(bench: Benchmark, session: metis_session.MetisSession) -> str:
    return session.cfg.dataset or bench.default_source


def _rows_loader(bench: Benchmark) -> Callable[[], list[EvaluationRow]]:
    def load_rows() -> list[EvaluationRow]:
        session = metis_session.current()
        rows = bench.load(_source(bench, session))
        return rows[: session.cfg.max_rows] if session.cfg.max_rows else rows

    load_rows.__name__ = f"{bench.name}_rows"
    return load_rows


def _ids_by_model(wrapped: Any, labels: list[str]) -> None:
    """Name each parametrized item by its model label instead of Eval Protocol's joined param values."""
    marks = list(getattr(wrapped, "pytestmark", []))
    for i, mark in enumerate(marks):
        argnames = mark.kwargs.get("argnames") if mark.name == "parametrize" else None
        if argnames and "completion_params" in argnames:
            marks[i] = pytest.mark.parametrize(*mark.args, **{**mark.kwargs, "ids": labels}).mark
    wrapped.pytestmark = marks


def evaluation_test(bench: Benchmark, **ep_kwargs: Any) -> Callable[[RowFunction], Any]:
    """Eval Protocol's ``@evaluation_test`` wired to the Metis session (see the module docstring)."""
    session = metis_session.current()
    cfg = session.cfg

    def decorate(fn: RowFunction) -> Any:
        processor = SingleTurnProcessor(
            resolver=session.runtime_target,
            policy=RetryPolicy(max_retries=cfg.max_retries, timeout=cfg.request_timeout),
            replay=_replay(bench))

        @functools.wraps(fn)
        async def row_function(row: EvaluationRow) -> EvaluationRow:
            errored = row.rollout_status.is_error()
            if errored:
                row.evaluation_result = _errored_result(row)
            else:
                try:
                    out = fn(row)
                    row = await out if inspect.isawaitable(out) else out
                except Exception as exc:  # a scorer bug: keep the row (and its completion), then fail loudly
                    _record(bench, row, metis_session.current(), True, scoring_error=exc)
                    raise
            _record(bench, row, metis_session.current(), errored)
            return row

        ep_logger = CoalescingLogger(default_logger)
        _EP_LOGGERS.append(ep_logger)
        options: dict[str, Any] = dict(
            logger=ep_logger,
            completion_params=session.completion_params(),
            data_loaders=DynamicDataLoader(generators=[_rows_loader(bench)]),
            rollout_processor=processor,
            num_runs=cfg.runs,
            max_concurrent_rollouts=cfg.concurrency,
            disable_browser_open=True,
        )
        options.update(ep_kwargs)
        wrapped = _ep_evaluation_test(**options)(row_function)
        _ids_by_model(wrapped, list(cfg.models))
        wrapped.__metis_benchmark__ = bench
        return wrapped

    return decorate

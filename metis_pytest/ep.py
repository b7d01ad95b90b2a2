"""The one adapter around Eval Protocol: everything Metis uses of it goes through this module.

A benchmark's evaluation is written as::

    @evaluation_test(BENCHMARK)
    def test_gsm8k(row: EvaluationRow) -> EvaluationRow:
        row.evaluation_result = score_row(BENCHMARK, row).to_evaluate_result()
        return row

which is Eval Protocol's ``@evaluation_test`` with, from the Metis session and the benchmark's
registry entry: one test item per ``--model`` and per combination of the benchmark's item axes (the
item id starts with the model as typed: ``test_ace[openai/gpt-4o-shopping-147]``), rows loaded once
per process from ``--dataset`` (first ``--max-rows``), the benchmark's rollout processor (or the
replay processor under ``--replay``), ``--runs`` and ``--concurrency``. Around the row function it
records every row the moment it is done, with its whole conversation:

- a rollout that errored is recorded as errored and never handed to the scorer;
- a score the scorer marks invalid (``is_score_valid=False``: a judge it could not parse) is recorded
  as errored at stage ``scoring``, retryable as the scorer says, never as a 0;
- a scorer that raises a transient error (a judge's 429, a timeout) is errored and retryable and
  counts toward ``--max-error-rate``; any other exception is a scorer bug: the row is kept (with its
  completion) and the item fails.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from eval_protocol.data_loader.dynamic_data_loader import DynamicDataLoader
from eval_protocol.dataset_logger import default_logger
from eval_protocol.dataset_logger.dataset_logger import DatasetLogger
from eval_protocol.models import EvaluateResult, EvaluationRow
from eval_protocol.pytest.evaluation_test import evaluation_test as _ep_evaluation_test

from metis_pytest import session as metis_session
from metis_pytest.conversation import dump_messages, last_assistant_text
from metis_pytest.ep_store import drain, write_rows
from metis_pytest.item import ItemRunner
from metis_pytest.registry import Benchmark, register_benchmark, score_row
from metis_pytest.rollout.base import StoredCompletion, processor_factory, run_index
from metis_pytest.store.runs import RowRecord, RunConditions

__all__ = ["Benchmark", "evaluation_test", "last_assistant_text", "score_row", "flush_ep_logs",
           "CoalescingLogger", "judge_target", "item_shard"]

RowFunction = Callable[[EvaluationRow], Any]
# The ``@evaluation_test`` options the Metis item runner implements; others run Eval Protocol's wrapper.
RUNNER_OPTIONS = frozenset({"passed_threshold"})
# What a processor leaves in ``execution_metadata.extra`` that the record keeps (and restores on resume).
KEPT_METADATA = ("resumed_from", "replayed_from", "attempts", "param_mapping", "agent")


class CoalescingLogger(DatasetLogger):
    """Eval Protocol's row store (what ``ep logs`` shows), written about once per row.

    Eval Protocol logs every row at each step (queued, rolled out, scored, aggregated): four SQLite
    upserts plus four event-bus writes per row, 1-3 ms each, which cost more than the rollouts
    themselves on a fast server. This keeps the latest state of each row and writes them in batches
    (:func:`metis_pytest.ep_store.write_rows`, on its background writer: an item does not wait for them). While an item runs it
    writes the rows that are *done* (scored or errored) once ``interval`` has passed since the last
    write, and at least twice as long as that write took, so writing never takes more than a third
    of the time; at the end of every evaluation item (:func:`flush_ep_logs`) it writes every row in
    its final state. So a short item writes each row once, and a long one shows its finished rows
    in the dashboard as it goes (lagging by up to one interval); the run store (``records/``) is
    written per row regardless."""

    def __init__(self, inner: DatasetLogger, interval: float = 5.0) -> None:
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
            self.flush(done_only=True)

    def flush(self, *, done_only: bool = False) -> None:
        start = time.monotonic()
        if done_only:
            ready = {k: r for k, r in self._pending.items() if r.evaluation_result is not None}
            for key in ready:
                del self._pending[key]
        else:
            ready, self._pending = self._pending, {}
        write_rows(self.inner, list(ready.values()), behind=True)
        took = time.monotonic() - start
        self._due = start + took + max(self.interval, 2 * took)

    def read(self, rollout_id: str | None = None) -> list[EvaluationRow]:
        self.flush()
        drain()
        return self.inner.read(rollout_id)


_EP_LOGGERS: list[CoalescingLogger] = []


def flush_ep_logs() -> None:
    """Write every row still waiting for Eval Protocol's store (called at the end of each item)."""
    for logger in _EP_LOGGERS:
        logger.flush()


def judge_target(bench: Benchmark) -> Any:
    """The benchmark's judge in this session (``--judge-model``, else the benchmark's default, via
    ``--judge-backend``/``--judge-api-base``), ready to hand to :class:`metis_pytest.judge.JudgeClient`;
    never the policy's endpoint."""
    return metis_session.current().judge_target(bench)


# ----------------------------------------------------------------------------- recording


def _transient(exc: BaseException) -> bool:
    """An infrastructure fault worth retrying (a judge's 429 or timeout), not a scorer bug."""
    if getattr(exc, "retryable", False) is True:
        return True
    import aiohttp

    return isinstance(exc, (asyncio.TimeoutError, TimeoutError, ConnectionError, aiohttp.ClientError))


def _rollout_error(row: EvaluationRow) -> dict[str, Any]:
    details: dict[str, Any] = {"message": row.rollout_status.message, "stage": "rollout"}
    for item in row.rollout_status.details or []:
        if isinstance(item, dict):
            details.update(item.get("metadata", item) if isinstance(item.get("metadata"), dict) else item)
    details.setdefault("retryable", True)
    return details


def _record(bench: Benchmark, row: EvaluationRow, error: dict[str, Any] | None) -> None:
    """Append one row to the run store: scored (``error`` None) or errored, with its conversation."""
    session = metis_session.current()
    params = row.input_metadata.completion_params or {}
    cond = session.conditions(bench, params)
    session.store.write_conditions(cond)
    result = row.evaluation_result
    rolled_out = error is None or error.get("stage") == "scoring"
    meta = row.execution_metadata
    extra = meta.extra or {}
    usage = meta.usage
    info = (result.trajectory_info or {}).get("metis", {}) if result is not None else {}
    session.store.append(RowRecord(
        benchmark=bench.name, model=cond.model, row_id=str(row.input_metadata.row_id),
        run_index=run_index(row), run_id=meta.run_id,
        status="errored" if error else "scored",
        score=None if error or result is None else float(result.score),
        metrics={} if error or result is None else {k: float(m.score) for k, m in (result.metrics or {}).items()},
        reason=result.reason if result is not None and not error else None,
        error=error,
        completion=last_assistant_text(row) if rolled_out else None,
        messages=dump_messages(row) if rolled_out else None,
        ground_truth=None if row.ground_truth is None else str(row.ground_truth),
        finish_reason=meta.finish_reason,
        usage=usage.model_dump() if usage is not None else None,
        rollout_seconds=meta.rollout_duration_seconds,
        details=dict(info.get("details") or {}),
        groups={g: (row.input_metadata.dataset_info or {}).get(g) for g in bench.breakdown},
        metadata={k: extra[k] for k in KEPT_METADATA if extra.get(k) is not None},
        score_key=cond.score_key, completion_key=cond.completion_key,
    ))


def _lookup(bench: Benchmark) -> Callable[[dict[str, Any], EvaluationRow], StoredCompletion | None]:
    """Completions recorded earlier for a row and run index: ``--replay`` (a recorded run) or
    ``--resume`` (this run folder, same completion conditions)."""

    def lookup(params: dict[str, Any], row: EvaluationRow) -> StoredCompletion | None:
        session = metis_session.current()
        row_id, index = str(row.input_metadata.row_id), run_index(row)
        cond = session.conditions(bench, params)
        if session.replay_source is not None:
            record = session.replay_source.take(cond, row_id, index)
        elif session.cfg.resume:
            record = session.resume.take(cond, row_id, index)
        else:
            return None
        if record is None:
            return None
        kept = {k: v for k, v in record.metadata.items() if k in ("agent", "param_mapping")}
        return StoredCompletion(content=record.completion or "", messages=record.messages,
                                finish_reason=record.finish_reason, usage=record.usage,
                                source=f"{record.session}/{record.worker}", metadata=kept)

    return lookup


# ----------------------------------------------------------------------------- items


def _shards(bench: Benchmark, session: metis_session.MetisSession) -> list[tuple[str, dict[str, Any]]]:
    """The item axes' values beyond the model: ``[(id, {axis: value})]``; one unnamed shard without axes."""
    if not bench.axes:
        return [("", {})]
    fields = [a for a in bench.axes if a != "run"]
    combos: list[tuple[Any, ...]] = []
    if fields:
        rows = session.rows_or_defer(bench)
        seen: dict[tuple[Any, ...], None] = {}
        for row in rows:
            info = row.input_metadata.dataset_info or {}
            seen.setdefault(tuple(info.get(a) for a in fields), None)
        combos = list(seen)
    else:
        combos = [()]
    shards = []
    for combo in combos:
        values = dict(zip(fields, combo))
        runs = range(session.cfg.runs) if "run" in bench.axes else [None]
        for k in runs:
            shard = {**values, **({"run": k} if k is not None else {})}
            ident = "-".join(str(v if a != "run" else f"run{v}") for a, v in shard.items())
            shards.append((ident, shard))
    return shards


def _rows_loader(bench: Benchmark, shard_id: str, shard: dict[str, Any]) -> Callable[[], list[EvaluationRow]]:
    """The item's data loader: copies of the shard's rows for Eval Protocol's wrapper; ``.select()``, the
    session's own rows (which :class:`~metis_pytest.item.ItemRunner` copies once per run itself)."""

    def select() -> list[EvaluationRow]:
        session = metis_session.current()
        rows = session.rows(bench)
        if session.cfg.max_rows:
            rows = rows[: session.cfg.max_rows]
        return [row for row in rows
                if all((row.input_metadata.dataset_info or {}).get(a) == v for a, v in shard.items() if a != "run")]

    def load_rows() -> list[EvaluationRow]:
        out = []
        for row in select():
            # Eval Protocol deep-copies every row per run; before that it only sets fields of the
            # metadata objects, so copying those two keeps the session's rows pristine.
            meta = row.execution_metadata.model_copy()
            if "run" in shard:
                meta.extra = {**(meta.extra or {}), "run_index": shard["run"]}
            out.append(row.model_copy(update={"input_metadata": row.input_metadata.model_copy(),
                                              "execution_metadata": meta}))
        return out

    load_rows.__name__ = f"{bench.name}_{shard_id or 'rows'}"
    load_rows.select = select  # type: ignore[attr-defined]
    load_rows.first_run = shard.get("run", 0)  # type: ignore[attr-defined]
    return load_rows


def _set_item_ids(wrapped: Any, ids: list[str]) -> None:
    """Name each parametrized item ``<model>[-<axis values>]`` instead of Eval Protocol's joined params."""
    marks = list(getattr(wrapped, "pytestmark", []))
    for i, mark in enumerate(marks):
        argnames = mark.kwargs.get("argnames") if mark.name == "parametrize" else None
        if argnames and "completion_params" in argnames:
            marks[i] = pytest.mark.parametrize(*mark.args, **{**mark.kwargs, "ids": ids}).mark
    wrapped.pytestmark = marks


def evaluation_test(bench: Benchmark, *, processor: str | None = None, **ep_kwargs: Any) -> Callable[[RowFunction], Any]:
    """Eval Protocol's ``@evaluation_test`` wired to the Metis session (see the module docstring)."""
    register_benchmark(bench)
    session = metis_session.current()
    cfg = session.cfg

    def decorate(fn: RowFunction) -> Any:
        name = "replay" if cfg.replay is not None else (processor or bench.processor)
        rollout = processor_factory(name)(session, bench, _lookup(bench))

        @functools.wraps(fn)
        async def row_function(row: EvaluationRow) -> EvaluationRow:
            if row.rollout_status.is_error():
                row.evaluation_result = EvaluateResult(
                    score=0.0, is_score_valid=False, reason=f"rollout errored, not scored: {row.rollout_status.message}")
                _record(bench, row, _rollout_error(row))
                return row
            try:
                out = fn(row)
                row = await out if inspect.isawaitable(out) else out
            except Exception as exc:
                retryable = _transient(exc)
                message = f"scorer raised {type(exc).__name__}: {exc}"
                row.evaluation_result = EvaluateResult(score=0.0, is_score_valid=False, reason=message, error=message)
                _record(bench, row, {"message": message, "stage": "scoring", "retryable": retryable})
                if retryable:
                    return row
                raise
            result = row.evaluation_result
            if result is not None and not result.is_score_valid:
                info = (result.trajectory_info or {}).get("metis", {})
                _record(bench, row, {"message": result.error or result.reason or "the scorer marked the score invalid",
                                     "stage": "scoring", "retryable": bool(info.get("retryable", True))})
            else:
                _record(bench, row, None)
            return row

        shards = _shards(bench, session)
        params = session.completion_params()
        ep_logger = CoalescingLogger(default_logger)
        _EP_LOGGERS.append(ep_logger)
        options: dict[str, Any] = dict(
            logger=ep_logger,
            completion_params=params,
            data_loaders=[DynamicDataLoader(generators=[_rows_loader(bench, sid, shard)]) for sid, shard in shards],
            rollout_processor=rollout,
            num_runs=1 if "run" in bench.axes else cfg.runs,
            max_concurrent_rollouts=cfg.concurrency,
            disable_browser_open=True,
        )
        options.update(ep_kwargs)
        wrapped = _ep_evaluation_test(**options)(row_function)
        ep_params = wrapped.__ep_params__  # what Eval Protocol made of the options (its EP_* overrides applied)
        if set(ep_kwargs) <= RUNNER_OPTIONS:
            wrapped = _metis_item(wrapped, ItemRunner(
                name=fn.__name__, description=fn.__doc__, rollout=rollout, row_function=row_function,
                logger=ep_logger, num_runs=ep_params.num_runs, concurrency=ep_params.max_concurrent_rollouts,
                threshold=ep_params.passed_threshold), bench)
        # Eval Protocol's combinations: completion params outer, data loaders inner.
        ids = [f"{label}-{sid}" if sid else label for label in cfg.models for sid, _ in shards]
        _set_item_ids(wrapped, ids)
        wrapped.__metis_benchmark__ = bench
        # Eval Protocol locates an evaluation by its ``_origin_func``'s file (``upload``, ``create rft``:
        # the entry point and the dataset builder): the benchmark's test file, not this module.
        wrapped._origin_func = fn
        wrapped.__metis_shards__ = dict(zip(ids, [shard for _ in cfg.models for _, shard in shards]))
        return wrapped

    return decorate


def _metis_item(ep_wrapped: Any, runner: ItemRunner, bench: Benchmark) -> Any:
    """The function pytest runs for the item: Eval Protocol's object (its marks, signature, ``__ep_params__``
    and direct call on a row), whose pytest call runs :class:`~metis_pytest.item.ItemRunner`."""

    async def item(*args: Any, **kwargs: Any) -> Any:
        if args or "data_loaders" not in kwargs:  # called on a row (or rows): Eval Protocol's direct call
            return await ep_wrapped(*args, **kwargs)
        params = kwargs.get("completion_params") or {}
        label = metis_session.current().conditions(bench, params).model
        await runner(params, kwargs["data_loaders"], f"{bench.name} [{label}]")

    functools.update_wrapper(item, ep_wrapped)
    item.__metis_runner__ = runner  # type: ignore[attr-defined]
    return item


def item_shard(item: pytest.Item) -> dict[str, Any]:
    """The item axes' values of an evaluation item (``{}`` for a benchmark without axes)."""
    callspec = getattr(item, "callspec", None)
    shards = getattr(getattr(item, "obj", None), "__metis_shards__", {})
    return dict(shards.get(callspec.id, {})) if callspec is not None else {}


def conditions_for(bench: Benchmark, session: metis_session.MetisSession, params: dict[str, Any],
                   label: str) -> RunConditions:
    """The conditions of (benchmark, model): what makes completions interchangeable and scores comparable."""
    spec = session.data_spec(bench)
    sampling = {k: v for k, v in params.items() if k not in ("api_base", "base_url")}
    replayed = session.recorded_conditions(bench, label)
    if replayed is not None:  # the completions come from the recording: its sampling is what made them
        sampling, params = replayed.sampling, replayed.completion_params
    judge = None
    if bench.judge_prompt_version is not None:
        judge = {**session.judge_identity(bench), "prompt_version": bench.judge_prompt_version}
    return RunConditions(
        benchmark=bench.name, model=label, benchmark_version=bench.version,
        sampling=json.loads(json.dumps(sampling, default=str)),
        dataset_id=bench.dataset_id(spec), dataset_revision=bench.dataset_revision(spec),
        dataset_split=spec.split, prompt_hash=bench.prompt_hash_value(), primary_metric=bench.primary_metric,
        judge=judge, completion_params=dict(params), metric_notes=dict(bench.metric_notes),
        rollout_options=_jsonable(session.bench_options(bench, "rollout")),
        scoring_options=_jsonable(session.bench_options(bench, "scoring")),
        notes=list(bench.notes(session.cfg)) if bench.notes else [])


def _jsonable(pairs: tuple[tuple[str, Any], ...]) -> dict[str, Any]:
    return json.loads(json.dumps(dict(pairs), default=str))

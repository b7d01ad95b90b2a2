"""What runs when pytest runs a Metis evaluation item (``test_gsm8k[<model>]``).

Eval Protocol's ``@evaluation_test`` still builds the object pytest collects: its parametrization,
``__ep_params__``, ``_origin_func`` and the direct call on one row that ``eval-protocol create rft``
and its remote evaluator use are Eval Protocol's. When pytest *runs* the item, :class:`ItemRunner`
runs its rows instead of Eval Protocol's wrapper, which costs several milliseconds of CPU per row on
work a Metis item does not need: a deep copy of every row per run, a LiteLLM price lookup per row,
four store writes and event-bus publishes per row, progress bars per run (``benchmarks/README.md``,
``bench_item.py``, has the figures). What it keeps of Eval Protocol's item, so ``ep logs``, ``--resume``
and the errored-row rules see the same rows:

* every row in Eval Protocol's store (what ``ep logs`` shows), through the benchmark's logger, with
  an invocation id per test function, an experiment id per item, a run id per run and a rollout id
  per (row, run); the eval metadata (test name, docstring, status, ``passed``), the completion params,
  ``session_data["mode"] = "pointwise"`` and the process id;
* the rollout statuses: a rollout still "running" when its processor returns is finished, a
  processor's exception errors the row (retryable) instead of failing the item;
* the aggregate: the mean of each run's mean over rows with a valid score, put on every row's result
  and checked against ``passed_threshold`` (the item fails below it, with Eval Protocol's message);
* LiteLLM's dollar cost per row (``cost_metrics``) where a rollout went through LiteLLM; a process that
  never loaded LiteLLM (the OpenAI wire, ``--replay``) leaves it unset rather than load it for a price
  that none of its models has;
* Eval Protocol's persist flow (``EP_OUTPUT_DIR``, or an upload when ``EP_NO_UPLOAD`` is not 1) and the
  ``ep logs`` link printed at the end of the session.

Progress goes to stderr for an item that runs longer than :data:`PROGRESS_INTERVAL_S`: a line every
interval with the rows done, errored and the rate, and one when it is done (a shorter item prints nothing).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from eval_protocol.dataset_logger.dataset_logger import DatasetLogger
from eval_protocol.human_id import generate_id
from eval_protocol.models import EvalMetadata, EvaluationRow, EvaluationThreshold, Status
from eval_protocol.pytest.types import RolloutProcessorConfig

from metis_pytest import lazy_imports

__all__ = ["PROGRESS_INTERVAL_S", "ItemRunner", "aggregate_score"]

PROGRESS_INTERVAL_S = 10.0
MODE = "pointwise"


def aggregate_score(runs: Sequence[Sequence[EvaluationRow]]) -> float:
    """Eval Protocol's ``mean`` aggregate: the mean over runs of each run's mean valid score (0 if none)."""
    means = []
    for rows in runs:
        valid = [r.evaluation_result.score for r in rows
                 if r.evaluation_result is not None and r.evaluation_result.is_score_valid]
        if valid:
            means.append(sum(valid) / len(valid))
    return sum(means) / len(means) if means else 0.0


def _fresh_copy(row: EvaluationRow, **execution: Any) -> EvaluationRow:
    """A row for one run: its own metadata and status objects, sharing the (never mutated) messages.

    Processors replace ``row.messages`` rather than edit it, so the list and its messages are shared
    with the session's row; Eval Protocol deep-copies them for every run."""
    meta = row.execution_metadata.model_copy(update=execution)
    return row.model_copy(update={"execution_metadata": meta, "input_metadata": row.input_metadata.model_copy(),
                                  "rollout_status": _RUNNING.model_copy()})


_RUNNING = Status.rollout_running()  # copied per row: building a Status validates it, copying does not


@dataclass
class _Progress:
    label: str
    total: int
    stream: Any = field(default_factory=lambda: sys.__stderr__)
    done: int = 0
    errored: int = 0
    start: float = field(default_factory=time.monotonic)
    last: float = field(default_factory=time.monotonic)
    shown: bool = False

    def row(self, errored: bool) -> None:
        self.done += 1
        self.errored += errored
        now = time.monotonic()
        if now - self.last >= PROGRESS_INTERVAL_S and self.done < self.total:
            self.last = now
            self.write("running")

    def end(self) -> None:
        if self.shown:
            self.write("done")

    def write(self, state: str) -> None:
        if self.stream is None:
            return
        self.shown = True
        took = time.monotonic() - self.start
        rate = f", {self.done / took:.0f} rows/s" if took > 0 and self.done else ""
        errored = f", {self.errored} errored" if self.errored else ""
        print(f"metis: {self.label}: {state}: {self.done}/{self.total} rows{errored} in {took:.1f}s{rate}",
              file=self.stream, flush=True)


@dataclass
class ItemRunner:
    """The rows of one item: loaded, rolled out ``num_runs`` times, scored by ``row_function``, logged."""

    name: str
    description: str | None
    rollout: Any  # an Eval Protocol RolloutProcessor
    row_function: Callable[[EvaluationRow], Awaitable[EvaluationRow]]
    logger: DatasetLogger
    num_runs: int
    concurrency: int
    threshold: EvaluationThreshold | None = None
    invocation_id: str = field(default_factory=lambda: os.environ.get("EP_INVOCATION_ID") or generate_id())

    async def __call__(self, completion_params: dict[str, Any] | None, data_loaders: Any, label: str) -> None:
        from eval_protocol.utils.show_results_url import store_local_ui_results_url

        store_local_ui_results_url(self.invocation_id)
        params = dict(completion_params or {})
        data, first_run = _rows(data_loaders)
        started = time.perf_counter()
        experiment_id = generate_id()
        metadata = EvalMetadata(name=self.name, description=self.description, status=Status.eval_running(),
                                num_runs=self.num_runs, aggregation_method="mean",
                                passed_threshold=self.threshold, passed=None)
        pid = os.getpid()
        runs: list[list[EvaluationRow]] = []
        for index in range(self.num_runs):
            run_id = generate_id()
            rows = []
            for source in data:
                extra = dict(source.execution_metadata.extra or {})
                extra.setdefault("run_index", first_run + index)
                row = _fresh_copy(source, run_id=run_id, rollout_id=generate_id(), experiment_id=experiment_id,
                                  invocation_id=self.invocation_id, extra=extra)
                row.input_metadata.completion_params = params
                row.input_metadata.session_data = {**(row.input_metadata.session_data or {}), "mode": MODE}
                row.eval_metadata = metadata
                row.pid = pid
                rows.append(row)
            runs.append(rows)
        everything = [row for rows in runs for row in rows]
        progress = _Progress(label, len(everything))
        config = RolloutProcessorConfig(completion_params=params, mcp_config_path="",
                                        semaphore=asyncio.Semaphore(self.concurrency), logger=self.logger)
        self.rollout.setup()
        failures: list[BaseException] = []
        try:
            tasks = self.rollout(everything, config)
            finished = await asyncio.gather(*(self._row(task, row, progress, failures)
                                              for task, row in zip(tasks, everything)))
        finally:
            await self.rollout.acleanup()
            self.rollout.cleanup()
        by_run: dict[str, list[EvaluationRow]] = {}
        for row in finished:
            by_run.setdefault(row.execution_metadata.run_id or "", []).append(row)
        self._finish(list(by_run.values()), time.perf_counter() - started)
        progress.end()
        if failures:
            first = failures[0]
            if len(failures) > 1:
                first.add_note(f"the scorer raised on {len(failures)} rows of this item; this is the first")
            raise first

    async def _row(self, task: Awaitable[EvaluationRow], row: EvaluationRow, progress: _Progress,
                   failures: list[BaseException]) -> EvaluationRow:
        try:
            row = await task
        except Exception as exc:  # a processor that raised: the row errored, retryable; the item goes on
            row.rollout_status = Status.rollout_error(f"{type(exc).__name__}: {exc}", {"retryable": True})
        if row.rollout_status.is_running():
            row.rollout_status = Status.rollout_finished()
        start = time.perf_counter()
        try:
            row = await self.row_function(row)
        except Exception as exc:  # a scorer bug: the row function recorded the row; the item fails at the end
            failures.append(exc)
        row.execution_metadata.eval_duration_seconds = time.perf_counter() - start
        if row.rollout_status.is_error():
            row.eval_metadata = row.eval_metadata.model_copy(update={  # type: ignore[union-attr]
                "status": Status.error(row.rollout_status.message, row.rollout_status.details)})
        self.logger.log(row)
        progress.row(row.rollout_status.is_error())
        return row

    def _finish(self, runs: list[list[EvaluationRow]], duration: float) -> None:
        score = aggregate_score(runs)
        standard_error = None
        threshold = self.threshold
        if threshold is not None and threshold.standard_error is not None:
            from eval_protocol.stats.confidence_intervals import compute_fixed_set_mu_ci

            valid = [r for rows in runs for r in rows if r.evaluation_result and r.evaluation_result.is_score_valid]
            standard_error = compute_fixed_set_mu_ci(valid)[3]
        passed = None
        if threshold is not None:
            passed = score >= threshold.success and (
                threshold.standard_error is None or standard_error is None or standard_error <= threshold.standard_error)
        price = _pricer()
        shared: dict[int, EvalMetadata] = {}
        for rows in runs:
            for row in rows:
                meta = row.eval_metadata
                assert meta is not None
                if id(meta) not in shared:  # the item's one object, or an errored row's own
                    shared[id(meta)] = meta
                    meta.passed = passed
                    if meta.status is not None and meta.status.is_running():
                        meta.status = Status.eval_finished()
                result = row.evaluation_result
                if result is not None:
                    if result.agg_score is None:
                        result.agg_score = score
                    if result.standard_error is None:
                        result.standard_error = standard_error
                    if not result.is_score_valid and not (meta.status and meta.status.is_error()):
                        row.eval_metadata = meta.model_copy(update={"status": Status.score_invalid()})
                row.execution_metadata.experiment_duration_seconds = duration
                if price is not None:
                    price(row)
                self.logger.log(row)
        from eval_protocol.pytest.handle_persist_flow import handle_persist_flow

        handle_persist_flow(runs, self.name)
        if threshold is not None and not passed:
            assert score >= threshold.success, f"Aggregated score {score:.3f} below threshold {threshold.success}"
            assert standard_error is not None and standard_error <= (threshold.standard_error or 0.0), (
                f"Standard error {standard_error:.3f} above threshold {threshold.standard_error}")


def _rows(data_loaders: Any) -> tuple[list[EvaluationRow], int]:
    """The item's rows and its first run index: a Metis loader's own rows (``select``; copied per run
    here), else whatever an Eval Protocol data loader loads."""
    loaders = data_loaders if isinstance(data_loaders, (list, tuple)) else [data_loaders]
    generators = [g for loader in loaders for g in getattr(loader, "generators", [None])]
    if generators and all(hasattr(g, "select") for g in generators):
        return [row for g in generators for row in g.select()], min(g.first_run for g in generators)
    return [row for loader in loaders for result in loader.load() for row in result.rows], 0


def _pricer() -> Callable[[EvaluationRow], None] | None:
    """Eval Protocol's ``add_cost_metrics`` when LiteLLM is loaded already (its price list is LiteLLM's)."""
    if not lazy_imports.is_loaded("litellm"):
        return None
    from eval_protocol.pytest.evaluation_test_utils import add_cost_metrics

    return add_cost_metrics

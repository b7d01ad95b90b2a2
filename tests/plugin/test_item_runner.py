"""The Metis item runner: what Eval Protocol's item did per row that ``ep logs`` and the gates read."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import pytest
from eval_protocol.data_loader.dynamic_data_loader import DynamicDataLoader
from eval_protocol.models import EvaluateResult, EvaluationRow, EvaluationThreshold, Message, Status

from metis_pytest import item as item_module
from metis_pytest.ep import _rollout_error
from metis_pytest.item import ItemRunner, aggregate_score
from tests.plugin.test_ep_adapter import Recorder


class Logged(Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.rows: list[EvaluationRow] = []

    def log(self, row: EvaluationRow) -> None:
        super().log(row)
        self.rows.append(row)


class Echo:
    """A processor that answers every row with its ground truth, or raises for the rows it is told to."""

    def __init__(self, raise_for: tuple[str, ...] = ()) -> None:
        self.raise_for = raise_for
        self.seen: list[EvaluationRow] = []
        self.cleaned = 0

    def setup(self) -> None:
        pass

    def __call__(self, rows: list[EvaluationRow], config: Any) -> list[asyncio.Task[EvaluationRow]]:
        async def one(row: EvaluationRow) -> EvaluationRow:
            async with config.semaphore:
                self.seen.append(row)
                if row.ground_truth in self.raise_for:
                    raise ConnectionError("the server went away")
                row.messages = [*row.messages, Message(role="assistant", content=str(row.ground_truth))]
                return row

        return [asyncio.create_task(one(r)) for r in rows]

    async def acleanup(self) -> None:
        self.cleaned += 1

    def cleanup(self) -> None:
        pass


@pytest.fixture(autouse=True)
def _no_ep_logs_links(monkeypatch: pytest.MonkeyPatch) -> None:
    """The runner hands Eval Protocol each invocation's `ep logs` links to print at the session's end:
    not this test session's."""
    import eval_protocol.utils.show_results_url as links

    monkeypatch.setattr(links, "store_local_ui_results_url", lambda invocation_id: None)


def source_rows(n: int) -> list[EvaluationRow]:
    return [EvaluationRow(messages=[Message(role="user", content=f"q{i}")], ground_truth=str(i)) for i in range(n)]


def loader(rows: list[EvaluationRow]) -> DynamicDataLoader:
    def load() -> list[EvaluationRow]:
        return rows

    return DynamicDataLoader(generators=[load])


async def score_even(row: EvaluationRow) -> EvaluationRow:
    row.evaluation_result = EvaluateResult(score=float(int(str(row.ground_truth)) % 2 == 0))
    return row


def runner(logger: Logged, processor: Echo, **kwargs: Any) -> ItemRunner:
    options: dict[str, Any] = dict(name="test_toy", description="Toy.", rollout=processor, row_function=score_even,
                                   logger=logger, num_runs=1, concurrency=2, invocation_id="inv")
    return ItemRunner(**{**options, **kwargs})


def test_rows_carry_the_ids_and_metadata_eval_protocols_item_gives_them() -> None:
    logger, processor = Logged(), Echo()
    rows = source_rows(3)
    asyncio.run(runner(logger, processor, num_runs=2)({"model": "m", "temperature": 0.0}, loader(rows), "toy [m]"))
    done = {r.execution_metadata.rollout_id: r for r in logger.rows}
    assert len(done) == 6  # a rollout per (row, run)
    assert {r.execution_metadata.invocation_id for r in done.values()} == {"inv"}
    assert len({r.execution_metadata.experiment_id for r in done.values()}) == 1
    runs = {r.execution_metadata.run_id for r in done.values()}
    assert len(runs) == 2
    assert sorted((r.execution_metadata.extra or {})["run_index"] for r in done.values()) == [0, 0, 0, 1, 1, 1]
    for r in done.values():
        assert r.input_metadata.completion_params == {"model": "m", "temperature": 0.0}
        assert r.input_metadata.session_data == {"mode": "pointwise"}
        assert r.eval_metadata is not None and r.eval_metadata.name == "test_toy"
        assert r.eval_metadata.description == "Toy." and r.eval_metadata.num_runs == 2
        assert r.eval_metadata.status.is_finished() and r.eval_metadata.passed is None
        assert r.rollout_status.is_finished() and r.pid is not None
        assert r.evaluation_result.agg_score == pytest.approx(2 / 3)
        assert r.execution_metadata.experiment_duration_seconds is not None
        assert r.execution_metadata.cost_metrics is None  # LiteLLM never loaded here: no price asked
    assert [r.messages[-1].role for r in rows] == ["user"] * 3  # the source rows are untouched
    assert processor.cleaned == 1


def test_a_processor_that_raises_errors_its_row_and_the_item_goes_on() -> None:
    logger = Logged()
    seen: list[EvaluationRow] = []

    async def record(row: EvaluationRow) -> EvaluationRow:
        seen.append(row)
        return await score_even(row)

    asyncio.run(runner(logger, Echo(raise_for=("1",)), row_function=record)({}, loader(source_rows(3)), "toy"))
    failed = [r for r in seen if r.rollout_status.is_error()]
    assert [r.ground_truth for r in failed] == ["1"]
    assert "ConnectionError: the server went away" in failed[0].rollout_status.message
    assert _rollout_error(failed[0])["retryable"] is True  # what the run store records: retryable on --resume
    assert failed[0].eval_metadata.status.is_error()
    finished = [r for r in seen if not r.rollout_status.is_error()]
    assert all(r.eval_metadata.status.is_finished() for r in finished)


def test_a_scorer_bug_fails_the_item_after_every_row_is_done() -> None:
    logger = Logged()
    scored: list[str] = []

    async def buggy(row: EvaluationRow) -> EvaluationRow:
        scored.append(str(row.ground_truth))
        if row.ground_truth != "0":
            raise KeyError("no such field")
        return await score_even(row)

    with pytest.raises(KeyError, match="no such field") as err:
        asyncio.run(runner(logger, Echo(), row_function=buggy)({}, loader(source_rows(4)), "toy"))
    assert sorted(scored) == ["0", "1", "2", "3"]
    assert "the scorer raised on 3 rows of this item" in "".join(err.value.__notes__)


def test_below_the_threshold_the_item_fails_with_eval_protocols_message_and_rows_say_passed_false() -> None:
    logger = Logged()
    with pytest.raises(AssertionError, match=r"Aggregated score 0\.500 below threshold 0\.9"):
        asyncio.run(runner(logger, Echo(), threshold=EvaluationThreshold(success=0.9))({}, loader(source_rows(4)), "t"))
    assert {r.eval_metadata.passed for r in logger.rows} == {False}
    logger = Logged()
    asyncio.run(runner(logger, Echo(), threshold=EvaluationThreshold(success=0.5))({}, loader(source_rows(4)), "t"))
    assert {r.eval_metadata.passed for r in logger.rows} == {True}


def test_an_invalid_score_is_marked_so_in_the_eval_status() -> None:
    logger = Logged()

    async def undecided(row: EvaluationRow) -> EvaluationRow:
        row.evaluation_result = EvaluateResult(score=0.0, is_score_valid=False, reason="judge said prose")
        return row

    asyncio.run(runner(logger, Echo(), row_function=undecided)({}, loader(source_rows(2)), "toy"))
    assert {r.eval_metadata.status.code for r in logger.rows} == {Status.score_invalid().code}


def test_the_aggregate_is_the_mean_of_each_runs_mean_over_valid_scores() -> None:
    def scored(*scores: float | None) -> list[EvaluationRow]:
        out = []
        for s in scores:
            r = EvaluationRow(messages=[])
            r.evaluation_result = (EvaluateResult(score=0.0, is_score_valid=False) if s is None
                                   else EvaluateResult(score=s))
            out.append(r)
        return out

    assert aggregate_score([scored(1.0, 0.0, None), scored(1.0, 1.0)]) == pytest.approx(0.75)
    assert aggregate_score([scored(None)]) == 0.0
    assert aggregate_score([]) == 0.0


def test_a_long_item_shows_progress_and_a_short_one_prints_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    progress = item_module._Progress("gsm8k [m]", total=3, stream=stream)
    for _ in range(3):
        progress.row(errored=False)
    progress.end()
    assert stream.getvalue() == ""
    monkeypatch.setattr(item_module, "PROGRESS_INTERVAL_S", 0.0)
    progress = item_module._Progress("gsm8k [m]", total=3, stream=stream)
    progress.row(errored=True)
    progress.row(errored=False)
    progress.row(errored=False)
    progress.end()
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("metis: gsm8k [m]: running: 1/3 rows, 1 errored in ")
    assert lines[-1].startswith("metis: gsm8k [m]: done: 3/3 rows, 1 errored in ") and "rows/s" in lines[-1]


def test_rows_are_priced_only_once_litellm_is_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    assert item_module._pricer() is None or item_module.lazy_imports.is_loaded("litellm")
    monkeypatch.setattr(item_module.lazy_imports, "is_loaded", lambda name: name == "litellm")
    from eval_protocol.pytest.evaluation_test_utils import add_cost_metrics

    assert item_module._pricer() is add_cost_metrics  # Eval Protocol's own, with LiteLLM's price list
    priced: list[str | None] = []
    monkeypatch.setattr(item_module, "_pricer", lambda: lambda row: priced.append(row.ground_truth))
    asyncio.run(runner(Logged(), Echo())({}, loader(source_rows(3)), "toy"))
    assert sorted(priced) == ["0", "1", "2"]


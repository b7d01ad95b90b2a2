"""One scorer, three faces: on every row of GSM8K's train split, with several generated completions per row,
the pytest evaluation's row score, verl's reward and the Eval Protocol evaluator agree exactly.

(a) pytest: ``score_row(BENCHMARK, row)`` on the Eval Protocol row with the completion appended as the
    assistant turn (what the row function of ``evals/gsm8k/test_gsm8k.py`` computes);
(b) verl: ``compute_score(data_source, completion, ground_truth, extra_info)`` with the row's ground
    truth and its ``dataset_info`` as ``extra_info`` (the data source alternates between ``gsm8k`` and
    ``openai/gsm8k``);
(c) Eval Protocol: the ``@evaluation_test``-decorated ``test_gsm8k`` called directly on the row, which
    Eval Protocol's dual-mode wrapper (``eval_protocol/pytest/dual_mode_wrapper.py``) routes, for a single
    ``EvaluationRow`` argument in pointwise mode, to the row function (Metis's recording wrapper around
    the user's function) and returns the row with its ``evaluation_result``.

Over all ~45,000 cases the harness's recorder (one JSON line per row, flushed, about 0.3 ms each) is
replaced by one that checks every case would be recorded as scored; a slice runs with the real recorder
into a temporary run store, and the recorded scores agree too.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from eval_protocol.models import EvaluationRow, Message

from evals.gsm8k.benchmark import BENCHMARK
from evals.gsm8k.dataset import load_jsonl
from metis_pytest import ep
from metis_pytest import session as metis_session
from metis_pytest.options import MetisConfig
from metis_pytest.registry import score_row
from metis_pytest.rewards.verl import compute_score
from metis_pytest.store.runs import read_records
from tests.conftest import shared_file

SOURCES = ("gsm8k", "openai/gsm8k")


def _shift(gold: str, by: int) -> str:
    return str(Decimal(gold) + by)


def _grouped(gold: str) -> str:
    """The gold number with thousands commas (``1,080``), or with a dollar sign and cents when it is small."""
    value = Decimal(gold)
    if value == value.to_integral_value() and abs(value) >= 1000:
        return f"{int(value):,}"
    return f"${gold}.00" if "." not in gold else f"${gold}"


def _negated(gold: str, index: int) -> str:
    """Minus the gold number, written with an ASCII hyphen or (every other row) U+2212 MINUS SIGN."""
    text = str(-Decimal(gold))
    return text if index % 2 else text.replace("-", "\u2212")


# Each: (kind, completion for (gold, row index, reference solution)). Deterministic, several per row.
COMPLETIONS: tuple[tuple[str, Callable[[str, int, str], str]], ...] = (
    # Even rows: the reasoning then the tag; odd rows: the tag, then other numbers (flexible-extract misses).
    ("right_tag", lambda g, i, ref: f"<answer>{g}</answer>\nCheck: {_shift(g, 2)} - 2 = {g}, so {_shift(g, 3)} "
                                    "is wrong." if i % 2 else f"Step by step, the total is {g}.\n<answer>{g}</answer>"),
    ("wrong_tag", lambda g, i, ref: f"<answer>{_shift(g, 1 + i % 7)}</answer>"),
    ("commas", lambda g, i, ref: f"That makes {_grouped(g)} in all.\n<answer>{_grouped(g)}</answer>"),
    ("missing_tag", lambda g, i, ref: f"So the answer is {g}."),
    ("reference_hashes", lambda g, i, ref: ref),  # the reference solution, ending in "#### N"
    ("negative", lambda g, i, ref: f"It went down: <answer>{_negated(g, i)}</answer>"),
)


@pytest.fixture(scope="module")
def rows() -> list[EvaluationRow]:
    return load_jsonl(shared_file("gsm8k", "train.jsonl"))


def _cases(rows: list[EvaluationRow]) -> list[tuple[str, EvaluationRow]]:
    out = []
    for i, row in enumerate(rows):
        gold, ref = str(row.ground_truth), row.input_metadata.dataset_info["reference"]
        for kind, make in COMPLETIONS:
            messages = [*row.messages, Message(role="assistant", content=make(gold, i, ref))]
            out.append((kind, row.model_copy(update={"messages": messages})))
    return out


def _ep_face() -> Any:
    """The decorated Eval Protocol test function (imported here: decorating needs the Metis session)."""
    from evals.gsm8k.test_gsm8k import test_gsm8k

    assert getattr(test_gsm8k, "_metainfo", {}).get("mode") == "pointwise"  # Eval Protocol's dual mode
    return test_gsm8k


def _compare(index: int, kind: str, row: EvaluationRow, evaluated: EvaluationRow) -> tuple[float, dict[str, float]]:
    """The three faces' scores for one case, asserted equal; returns them."""
    pytest_face = score_row(BENCHMARK, row)
    info = row.input_metadata.dataset_info
    verl_face = compute_score(SOURCES[index % 2], row.messages[-1].content, row.ground_truth, info)
    result = evaluated.evaluation_result
    assert result is not None
    ep_metrics = {name: m.score for name, m in (result.metrics or {}).items()}
    where = f"row {row.input_metadata.row_id} ({kind}): {row.messages[-1].content!r}"
    assert pytest_face.valid and result.is_score_valid and verl_face["valid"] == 1.0, where
    assert pytest_face.score == result.score == verl_face["score"], where
    assert dict(pytest_face.metrics) == ep_metrics == {k: verl_face[k] for k in ep_metrics}, where
    assert set(verl_face) == {"score", "valid", *ep_metrics}, where
    assert pytest_face.reason == result.reason, where
    return pytest_face.score, dict(pytest_face.metrics)


def test_three_faces_agree_on_every_gsm8k_train_row(rows, monkeypatch) -> None:
    start = time.perf_counter()
    assert len(rows) == 7473
    cases = _cases(rows)
    face = _ep_face()
    recorded: list[tuple[str, Any]] = []
    monkeypatch.setattr(ep, "_record", lambda bench, row, error: recorded.append((bench.name, error)))

    async def evaluate_all() -> list[EvaluationRow]:
        return [await face(row) for _, row in cases]

    evaluated = asyncio.run(evaluate_all())
    totals: dict[str, Counter[str]] = {kind: Counter() for kind, _ in COMPLETIONS}
    for index, ((kind, row), out) in enumerate(zip(cases, evaluated)):
        assert out is row  # the evaluator scores the row it is given
        score, metrics = _compare(index, kind, row, out)
        totals[kind].update({"score": score, **metrics})
    assert recorded == [("gsm8k", None)] * len(cases)  # every case would be recorded as scored

    # Not vacuous: the completions exercise what they are meant to.
    n = len(rows)
    assert totals["right_tag"]["answer_tag"] == n and totals["commas"]["answer_tag"] == n
    assert totals["wrong_tag"]["answer_tag"] == 0 and totals["missing_tag"]["answer_tag"] == 0
    assert totals["missing_tag"]["flexible_extract"] == n
    assert totals["reference_hashes"]["strict_match"] == n and totals["reference_hashes"]["answer_tag"] == 0
    assert totals["negative"]["answer_tag"] == sum(1 for r in rows if Decimal(str(r.ground_truth)) == 0)
    assert totals["right_tag"]["flexible_extract"] == (n + 1) // 2  # the even rows
    assert len(cases) == n * len(COMPLETIONS) > 40_000
    assert time.perf_counter() - start < 60  # about 15 s on a quiet machine; a bound, not a benchmark


def test_the_recorded_scores_agree_too(rows, tmp_path: Path) -> None:
    """With the real recorder, into a run store of its own: the records hold the same scores."""
    cases = _cases(rows[:60])
    face = _ep_face()
    session = metis_session.MetisSession(MetisConfig(output_dir=tmp_path,
                                                     dataset=str(shared_file("gsm8k", "train.jsonl"))))
    metis_session.register(session)
    try:
        async def evaluate_all() -> list[EvaluationRow]:
            return [await face(row) for _, row in cases]

        evaluated = asyncio.run(evaluate_all())
    finally:
        metis_session.unregister(session)
        session.store.close()
    [path] = list(tmp_path.rglob("records/*.jsonl"))
    records = read_records(path)
    assert len(records) == len(cases)
    for index, ((kind, row), out, record) in enumerate(zip(cases, evaluated, records)):
        score, metrics = _compare(index, kind, row, out)
        assert record.status == "scored" and record.row_id == row.input_metadata.row_id
        assert record.completion == row.messages[-1].content
        assert record.score == score and record.metrics == metrics
        verl_face = compute_score("openai/gsm8k", record.completion, record.ground_truth, {})
        assert verl_face == {"score": score, **metrics, "valid": 1.0}

"""The run store: per-row parts, merge into rows.jsonl + summary.json + history, statistics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from metis_pytest.store.runs import RowRecord, RunStore, SummaryContext, slug, summarize


def rec(row: str, score: float | None, *, run: str = "r1", status: str = "scored", **metrics: float) -> RowRecord:
    return RowRecord(benchmark="gsm8k", model="m", row_id=row, run_id=run, status=status, score=score,
                     metrics=metrics, error={"retryable": True} if status == "errored" else None)


def test_summary_of_one_run() -> None:
    s = summarize([rec("a", 1.0, x=1.0), rec("b", 0.0, x=1.0), rec("c", 1.0, x=0.0), rec("d", 1.0, x=0.0)])
    assert s["score"] == 0.75 and s["n"] == 4
    assert s["stderr"] == pytest.approx(math.sqrt(0.25 / 4))  # sample std 0.5 / sqrt(4)
    assert s["metrics"]["x"] == {"mean": 0.5, "stderr": pytest.approx(0.5774 / 2, abs=1e-4), "n": 4}


def test_errored_rows_are_counted_not_scored() -> None:
    s = summarize([rec("a", 1.0), rec("b", None, status="errored")])
    assert (s["score"], s["n"], s["n_errored"], s["n_retryable"]) == (1.0, 1, 1, 1)


def test_several_runs_use_rows_as_the_sampling_unit() -> None:
    records = [rec("a", 1.0, run="r1"), rec("b", 0.0, run="r1"), rec("a", 1.0, run="r2"), rec("b", 1.0, run="r2")]
    s = summarize(records)
    assert s["score"] == 0.75 and s["n"] == 2  # per-row means 1.0 and 0.5
    assert s["runs"]["means"] == [0.5, 1.0] and s["runs"]["std"] == pytest.approx(math.sqrt(0.125))


def test_no_scored_rows() -> None:
    s = summarize([])
    assert s["score"] is None and s["stderr"] is None and s["n"] == 0


def test_parts_from_workers_merge_into_one_summary_and_history(tmp_path: Path) -> None:
    ctx = SummaryContext(benchmark="gsm8k", benchmark_version="1.0.0", model="openai/gpt-4o",
                         completion_params={"model": "openai/gpt-4o", "temperature": 0.0}, dataset_id="openai/gsm8k",
                         dataset_revision="main", prompt_hash="abc", primary_metric="answer_tag")
    for worker, rows in (("gw0", ["a", "b"]), ("gw1", ["c"])):
        store = RunStore(tmp_path, "sess", worker)
        store.write_context_once(ctx)
        for row in rows:
            store.append(RowRecord(benchmark="gsm8k", model="openai/gpt-4o", row_id=row, run_id="r", status="scored",
                                   score=1.0 if row != "b" else 0.0))
        store.close()
    controller = RunStore(tmp_path, "sess", "main")
    [summary] = controller.merge()
    folder = tmp_path / "gsm8k" / "openai--gpt-4o"
    assert summary["path"] == str(folder / "summary.json")
    on_disk = json.loads((folder / "summary.json").read_text())
    assert on_disk["n"] == 3 and on_disk["workers"] == ["gw0", "gw1"] and on_disk["benchmark_version"] == "1.0.0"
    assert on_disk["dataset"] == {"id": "openai/gsm8k", "revision": "main"} and on_disk["prompt_hash"] == "abc"
    assert len((folder / "rows.jsonl").read_text().splitlines()) == 3
    assert not list(folder.glob(".parts/sess/*.jsonl"))
    controller2 = RunStore(tmp_path, "sess2", "main")
    controller2.append(RowRecord(benchmark="gsm8k", model="openai/gpt-4o", row_id="a", run_id="r", status="scored",
                                 score=0.0))
    controller2.merge()
    assert [p.name[:4] for p in sorted((folder / "history").iterdir())] == ["0001", "0002"]


def test_rows_are_on_disk_as_soon_as_they_are_appended(tmp_path: Path) -> None:
    store = RunStore(tmp_path, "s", "gw3")
    store.append(rec("a", 1.0))
    part = tmp_path / "gsm8k" / "m" / ".parts" / "s" / "gw3.jsonl"
    assert json.loads(part.read_text())["row_id"] == "a"  # flushed, not waiting for close()
    store.close()


@pytest.mark.parametrize("name, expected", [("openai/gpt-4o", "openai--gpt-4o"), ("local", "local"),
                                            ("a b:c", "a-b-c"), ("", "model")])
def test_slug(name: str, expected: str) -> None:
    assert slug(name) == expected

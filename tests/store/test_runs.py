"""The run store: append-only keyed records, summaries built from every record under the same conditions."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest

from metis_pytest.store.resume import ResumeIndex
from metis_pytest.store.runs import (
    RowRecord,
    RunConditions,
    RunStore,
    read_records,
    select_latest,
    slug,
    summarize,
)

COND = RunConditions(benchmark="gsm8k", model="m", benchmark_version="1.1.0",
                     sampling={"model": "openai/m", "temperature": 0.0, "max_tokens": 8},
                     dataset_id="file:x.jsonl", dataset_revision="abc", prompt_hash="p", primary_metric="answer_tag")


def rec(row: str, score: float | None, *, run: int = 0, status: str = "scored", cond: RunConditions = COND,
        t: float = 0.0, **metrics: float) -> RowRecord:
    return RowRecord(benchmark="gsm8k", model="m", row_id=row, run_index=run, status=status, score=score,
                     metrics=metrics, error={"retryable": True, "stage": "rollout"} if status == "errored" else None,
                     completion=None if status == "errored" else f"<answer>{row}</answer>",
                     score_key=cond.score_key, completion_key=cond.completion_key, t=t)


def write(tmp_path: Path, session: str, records: list[RowRecord], worker: str = "main",
          cond: RunConditions = COND) -> RunStore:
    store = RunStore(tmp_path, session, worker)
    store.write_conditions(cond)
    for r in records:
        store.append(r)
    store.close()
    return store


def test_summary_of_one_run() -> None:
    s = summarize([rec("a", 1.0, x=1.0), rec("b", 0.0, x=1.0), rec("c", 1.0, x=0.0), rec("d", 1.0, x=0.0)])
    assert s["score"] == 0.75 and s["n"] == 4
    assert s["stderr"] == pytest.approx(math.sqrt(0.25 / 4))  # sample std 0.5 / sqrt(4)
    assert s["metrics"]["x"] == {"mean": 0.5, "stderr": pytest.approx(0.5774 / 2, abs=1e-4), "n": 4}


def test_errored_rows_are_counted_not_scored() -> None:
    s = summarize([rec("a", 1.0), rec("b", None, status="errored")])
    assert (s["score"], s["n"], s["n_errored"], s["n_retryable"]) == (1.0, 1, 1, 1)


def test_runs_are_grouped_by_run_index_and_rows_are_the_sampling_unit() -> None:
    records = [rec("a", 1.0, run=0), rec("b", 0.0, run=0), rec("a", 1.0, run=1), rec("b", 1.0, run=1)]
    s = summarize(records)
    assert s["score"] == 0.75 and s["n"] == 2  # per-row means 1.0 and 0.5
    assert s["runs"]["indexes"] == [0, 1] and s["runs"]["means"] == [0.5, 1.0]
    assert s["runs"]["std"] == pytest.approx(math.sqrt(0.125))
    # Two items (two Eval Protocol run ids) of one run index are one run, not two.
    one_run = [replace(rec("a", 1.0), run_id="x1"), replace(rec("b", 0.0), run_id="x2")]
    assert summarize(one_run)["runs"]["n"] == 1


def test_no_scored_rows() -> None:
    s = summarize([])
    assert s["score"] is None and s["stderr"] is None and s["n"] == 0


def test_workers_records_merge_into_one_summary_and_are_kept(tmp_path: Path) -> None:
    write(tmp_path, "sess", [rec("a", 1.0), rec("b", 0.0)], worker="gw0")
    write(tmp_path, "sess", [rec("c", 1.0)], worker="gw1")
    [summary] = RunStore(tmp_path, "sess", "main").merge()
    folder = tmp_path / "gsm8k" / "m"
    assert summary["path"] == str(folder / "summary.json")
    on_disk = json.loads((folder / "summary.json").read_text())
    assert on_disk["n"] == 3 and on_disk["workers"] == ["gw0", "gw1"] and on_disk["benchmark_version"] == "1.1.0"
    assert on_disk["dataset"] == {"id": "file:x.jsonl", "revision": "abc", "split": None}
    assert on_disk["score_key"] == COND.score_key and on_disk["prompt_hash"] == "p"
    assert len((folder / "rows.jsonl").read_text().splitlines()) == 3
    assert sorted(p.name for p in (folder / "records").iterdir()) == ["sess-gw0.jsonl", "sess-gw1.jsonl"]
    write(tmp_path, "sess2", [rec("a", 0.0, t=1e12)])
    RunStore(tmp_path, "sess2", "main").merge()
    assert [p.name[:4] for p in sorted((folder / "history").iterdir())] == ["0001", "0002"]


def test_a_smaller_rerun_adds_to_the_record_instead_of_replacing_it(tmp_path: Path) -> None:
    write(tmp_path, "full", [rec(r, 1.0, t=1.0) for r in "abcdefghijkl"])
    RunStore(tmp_path, "full").merge()
    write(tmp_path, "three", [rec(r, 0.0, t=2.0) for r in "abc"])
    [s] = RunStore(tmp_path, "three").merge(selection={"max_rows": 3, "keyword": None})
    assert s["n"] == 12 and s["score"] == pytest.approx(9 / 12)  # the three rerun rows are the latest
    assert s["selection"] == {"max_rows": 3, "keyword": None, "rows_this_session": 3, "rows_in_summary": 12}
    assert s["sessions"] == ["full", "three"]


def test_rows_under_other_conditions_are_not_mixed_in(tmp_path: Path) -> None:
    newer = replace(COND, benchmark_version="2.0.0")
    write(tmp_path, "old", [rec(r, 1.0) for r in "abcd"])
    write(tmp_path, "new", [rec("a", 0.0, cond=newer)], cond=newer)
    [s] = RunStore(tmp_path, "new").merge()
    assert (s["n"], s["score"], s["benchmark_version"]) == (1, 0.0, "2.0.0")


def test_the_endpoint_is_not_part_of_the_conditions() -> None:
    moved = replace(COND, completion_params={"api_base": "http://localhost:9999/v1"})
    assert moved.completion_key == COND.completion_key and moved.score_key == COND.score_key
    hotter = replace(COND, sampling={**COND.sampling, "temperature": 0.7})
    assert hotter.completion_key != COND.completion_key
    judged = replace(COND, judge={"model": "openai/gpt-4o", "prompt_version": "1"})
    assert judged.completion_key == COND.completion_key and judged.score_key != COND.score_key


def test_a_scored_record_wins_over_a_later_error_of_the_same_row() -> None:
    chosen = select_latest([rec("a", 1.0, t=1.0), rec("a", None, status="errored", t=2.0),
                            rec("b", None, status="errored", t=1.0), rec("b", 0.0, t=2.0)])
    assert chosen[("a", 0)].status == "scored" and chosen[("b", 0)].score == 0.0


def test_rows_are_on_disk_as_soon_as_they_are_appended_and_a_cut_line_is_skipped(tmp_path: Path) -> None:
    store = RunStore(tmp_path, "s", "gw3")
    store.append(rec("a", 1.0))
    path = tmp_path / "gsm8k" / "m" / "records" / "s-gw3.jsonl"
    assert json.loads(path.read_text())["row_id"] == "a"  # flushed, not waiting for close()
    store.close()
    with path.open("a") as fh:
        fh.write('{"benchmark": "gsm8k", "model"')  # kill -9 in the middle of a write
    assert [r.row_id for r in read_records(path)] == ["a"]


def test_resume_hands_out_one_completion_per_row_and_run_index(tmp_path: Path) -> None:
    write(tmp_path, "old", [rec("a", 1.0, run=0), rec("a", 1.0, run=1), rec("b", None, status="errored")])
    write(tmp_path, "me", [rec("c", 1.0)])  # this session's own rows are never resumed from
    index = ResumeIndex(RunStore(tmp_path, "me"))
    assert index.take(COND, "a", 0) is not None and index.take(COND, "a", 0) is None  # once
    assert index.take(COND, "a", 1).run_index == 1  # type: ignore[union-attr]
    assert index.take(COND, "a", 2) is None  # a new run index gets a new completion
    assert index.take(COND, "b", 0) is None  # a rollout error is sent again
    assert index.take(COND, "c", 0) is None
    assert index.take(replace(COND, sampling={"model": "openai/m", "temperature": 1.0}), "a", 0) is None


def test_a_scoring_error_keeps_its_completion_for_resume(tmp_path: Path) -> None:
    crashed = replace(rec("a", None), status="errored", error={"stage": "scoring", "retryable": False})
    write(tmp_path, "old", [crashed])
    stored = ResumeIndex(RunStore(tmp_path, "me")).take(COND, "a", 0)
    assert stored is not None and stored.completion == "<answer>a</answer>"


def test_resume_says_why_nothing_was_reused(tmp_path: Path) -> None:
    hot = replace(COND, sampling={**COND.sampling, "temperature": 0.7})
    write(tmp_path, "old", [rec("a", 1.0, cond=hot)], cond=hot)
    write(tmp_path, "new", [rec("a", 1.0)])
    [s] = RunStore(tmp_path, "new").merge(resume=True)
    assert s["resume"]["reused"] == 0 and s["resume"]["sent"] == 1
    assert "sampling.temperature: 0.7 -> 0.0" in s["resume"]["note"]


@pytest.mark.parametrize("name, expected", [("openai/gpt-4o", "openai--gpt-4o"), ("local", "local"),
                                            ("a b:c", "a-b-c"), ("", "model")])
def test_slug(name: str, expected: str) -> None:
    assert slug(name) == expected


def test_git_info_records_the_commit_and_whether_tracked_files_changed(tmp_path: Path) -> None:
    import subprocess

    from metis_pytest.store.runs import git_info

    assert git_info(tmp_path) == {"commit": None, "dirty": None}  # not a checkout
    def git(*args: str) -> None:
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)
    git("init", "-q")
    (tmp_path / "a.txt").write_text("1")
    git("add", "a.txt")
    git("commit", "-q", "-m", "one")
    info = git_info(tmp_path)
    assert info["dirty"] is False and len(info["commit"]) == 12
    (tmp_path / "untracked.txt").write_text("x")
    assert git_info(tmp_path)["dirty"] is False  # an untracked file does not change what ran
    (tmp_path / "a.txt").write_text("2")
    assert git_info(tmp_path)["dirty"] is True


def test_scores_by_a_breakdown_field_and_per_task_aggregation_over_runs() -> None:
    records = [replace(rec("s1", 1.0, run=0), groups={"domain": "shopping"}),
               replace(rec("s1", 0.0, run=1), groups={"domain": "shopping"}),
               replace(rec("f1", 1.0, run=0), groups={"domain": "food"}),
               replace(rec("f1", 1.0, run=1), groups={"domain": "food"}),
               replace(rec("f2", None, status="errored"), groups={"domain": "food"})]
    s = summarize(records)
    assert s["by"]["domain"]["shopping"]["score"] == 0.5 and s["by"]["domain"]["shopping"]["n"] == 1
    assert s["by"]["domain"]["food"]["score"] == 1.0 and s["by"]["domain"]["food"]["n_errored"] == 1
    assert s["task_aggregation"]["s1"] == {"mean": 0.5, "std": pytest.approx(math.sqrt(0.5)), "n_runs": 2}
    assert "task_aggregation" not in summarize([rec("a", 1.0)]) and "by" not in summarize([rec("a", 1.0)])

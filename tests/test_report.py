"""`metis report`: the Markdown table, its JSON twin, the PNGs, the run-over-run trend from history/."""

from __future__ import annotations

import dataclasses
import json
import shutil
import struct
from pathlib import Path

import pytest

from metis_pytest.cli import main
from metis_pytest.report import run_labels
from metis_pytest.store.plot import plot_benchmark
from metis_pytest.store.runs import RowRecord, RunConditions, RunStore

TOY = RunConditions(benchmark="toy", model="m1", benchmark_version="2.0", sampling={"model": "openai/m1"},
                    dataset_id="file:toy.jsonl", dataset_revision="r", prompt_hash="p", primary_metric="score")

# row id -> (score or None for an errored row, domain)
FOUR = {"a": (1.0, "food"), "b": (0.0, "food"), "c": (1.0, "shop"), "d": (1.0, "shop"), "e": (None, "shop")}


def record(root: Path, session: str, rows: dict[str, tuple[float | None, str | None]], *, cond: RunConditions = TOY,
           t: float = 1.0) -> None:
    """Rows written and merged the way a pytest session does (records, summary.json, one history entry)."""
    store = RunStore(root, session)
    store.write_conditions(cond)
    for row, (score, domain) in rows.items():
        store.append(RowRecord(
            benchmark=cond.benchmark, model=cond.model, row_id=row, run_index=0,
            status="errored" if score is None else "scored", score=score, metrics={} if score is None else {"x": score},
            error={"stage": "rollout", "retryable": True} if score is None else None,
            completion=None if score is None else "x", groups={} if domain is None else {"domain": domain},
            score_key=cond.score_key, completion_key=cond.completion_key, t=t))
    store.close()
    store.merge()


def table(md: str) -> list[list[str]]:
    """The cells of report.md's table (header and separator left out)."""
    lines = [line for line in md.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines[1:]]


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_the_table_has_a_row_per_model_run_and_group(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_a, run_b = tmp_path / "runs-a", tmp_path / "runs-b"
    record(run_a, "s1", FOUR)
    record(run_b, "s2", {"a": (1.0, "food")})
    plain = dataclasses.replace(TOY, benchmark="plain", model="m2", benchmark_version="1.0")
    record(run_b, "s2", {"x": (1.0, None), "y": (0.0, None)}, cond=plain)
    out = tmp_path / "report"
    assert main(["report", str(run_a), str(run_b), "--out", str(out)]) == 0
    printed = capsys.readouterr().out.split()
    assert printed[:2] == [str(out / "report.md"), str(out / "report.json")]

    md = (out / "report.md").read_text()
    assert table(md) == [
        ["runs-b", "plain", "1.0", "m2", "score", "all", "0.500", "[-0.480, 1.480]", "2", "0"],
        ["runs-a", "toy", "2.0", "m1", "score", "all", "0.750", "[0.260, 1.240]", "4", "1"],
        ["runs-a", "toy", "2.0", "m1", "score", "domain=food", "0.500", "[-0.480, 1.480]", "2", "0"],
        ["runs-a", "toy", "2.0", "m1", "score", "domain=shop", "1.000", "[1.000, 1.000]", "2", "1"],
        ["runs-b", "toy", "2.0", "m1", "score", "all", "1.000", "–", "1", "0"],
        ["runs-b", "toy", "2.0", "m1", "score", "domain=food", "1.000", "–", "1", "0"],
    ]
    data = json.loads((out / "report.json").read_text())
    assert [(r["run"], r["benchmark"], r["group"], r["mean"], r["n"]) for r in data["rows"]] == [
        (row[0], row[1], row[5], float(row[6]), int(row[8])) for row in table(md)]
    all_a = data["rows"][1]
    assert all_a["stderr"] == pytest.approx(0.25) and all_a["ci_low"] == pytest.approx(0.75 - 1.96 * 0.25)
    assert data["rows"][4]["stderr"] is None and data["rows"][4]["ci_low"] is None
    assert [r["label"] for r in data["runs"]] == ["runs-a", "runs-b"]

    for name in ("toy_scores.png", "toy_trend.png", "plain_scores.png", "plain_trend.png"):
        width, height = png_size(out / name)
        assert width > 0 and height > 0 and (out / name).stat().st_size > 0
        assert f"({name})" in md
    assert data["pictures"]["toy"] == {"scores": "toy_scores.png", "trend": "toy_trend.png"}


def test_the_trend_follows_history_entries_in_their_order(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    record(runs, "s1", {"a": (0.0, "food"), "b": (0.0, "food")}, t=1.0)
    record(runs, "s2", {"a": (1.0, "food")}, t=2.0)
    record(runs, "s3", {"b": (1.0, "food")}, t=3.0)
    history = runs / "toy" / "m1" / "history"
    entries = sorted(history.iterdir())
    assert [p.name[:5] for p in entries] == ["0001_", "0002_", "0003_"]
    # By number, not by name: 10000 comes after 9999 (as text it sorts first).
    for number, score in (("9999", 0.25), ("10000", 0.75)):
        entry = json.loads(entries[0].read_text())
        (history / f"{number}_abc_20990101T000000.json").write_text(json.dumps({**entry, "score": score}))
    out = tmp_path / "report"
    assert main(["report", str(runs), "--out", str(out)]) == 0
    (line,) = json.loads((out / "report.json").read_text())["trend"]["toy"]
    assert [p["entry"] for p in line["points"]] == [1, 2, 3, 9999, 10000]
    assert [p["score"] for p in line["points"]] == [0.0, 0.5, 1.0, 0.25, 0.75]
    assert {(p["benchmark_version"], p["score_key"]) for p in line["points"]} == {("2.0", TOY.score_key)}
    assert png_size(out / "toy_trend.png")[0] > 0


def test_missing_or_unreadable_history_is_handled(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    record(runs, "s1", FOUR)
    shutil.rmtree(runs / "toy" / "m1" / "history")
    out = tmp_path / "report"
    assert main(["report", str(runs), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert "No trend: no history/ entries for toy." in md
    assert not (out / "toy_trend.png").exists() and png_size(out / "toy_scores.png")[0] > 0
    data = json.loads((out / "report.json").read_text())
    assert data["trend"]["toy"] == [{"run": "runs", "model": "m1", "points": []}]
    assert data["pictures"]["toy"]["trend"] is None

    record(runs, "s2", {"a": (1.0, "food")}, t=2.0)  # one good entry, one cut short
    (runs / "toy" / "m1" / "history" / "0002_abc_x.json").write_text('{"score": 0.')
    assert main(["report", str(runs), "--out", str(out)]) == 0
    data = json.loads((out / "report.json").read_text())
    assert [p["entry"] for p in data["trend"]["toy"][0]["points"]] == [1]
    assert len(data["problems"]) == 1 and "0002_abc_x.json: not readable JSON" in data["problems"][0]
    assert "Left out:" in (out / "report.md").read_text()


def test_a_folder_without_summaries_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "r")]) == 1
    assert "no <benchmark>/<model>/summary.json" in capsys.readouterr().err


def test_runs_with_the_same_folder_name_are_told_apart(tmp_path: Path) -> None:
    assert run_labels([tmp_path / "a" / "runs", tmp_path / "b" / "runs"]) == ["a/runs", "b/runs"]
    assert run_labels([tmp_path / "runs", tmp_path / "other"]) == ["runs", "other"]


def test_the_session_pictures_still_draw_with_the_shared_bar_chart(tmp_path: Path) -> None:
    record(tmp_path, "s1", FOUR)
    assert plot_benchmark(tmp_path / "toy") == tmp_path / "toy" / "summary.png"
    assert png_size(tmp_path / "toy" / "summary_by_domain.png")[0] > 0

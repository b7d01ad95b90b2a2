"""``metis report RUN [RUN...]``: one Markdown table, its JSON twin and PNGs from recorded runs.

    metis report runs/                          # -> report/report.md, report.json, <bench>_scores.png, <bench>_trend.png
    metis report runs-main/ runs-pr/ --out report-pr

Decisions:

- A RUN is an output folder (what ``--output-dir`` names): every ``<benchmark>/<model>/summary.json``
  under it is read, with the ``history/`` beside it. Each RUN is labelled by its folder name; when
  two share a name, parent folders are added until the labels differ. Several RUNs go into one
  table, so comparing runs is one file.
- ``report.md`` has one table with a row per benchmark × model × run × group, in that order. The
  groups are ``all`` (the summary's own numbers), then ``field=value`` for each value of each
  breakdown field in the summary's ``by`` (ACE's ``domain=food``). The cells: the primary metric's
  mean, its 95% interval ``[low, high]`` (mean ± 1.96 × stderr, the interval summary.png draws, not
  clipped to the score's range; ``–`` without a stderr, i.e. under 2 rows), ``n`` (rows scored) and
  errored rows, numbers to 3 places.
- ``report.json`` holds the same rows unrounded (``mean``, ``stderr``, ``ci_low``, ``ci_high``,
  ``n``, ``n_errored``), the trend points and the picture names.
- ``<bench>_scores.png``: per benchmark, the primary score per group, a bar per model (per model and
  run when there are several RUNs), 95% error bars.
- ``<bench>_trend.png``: per benchmark, a line per model (and run) over its ``history/`` entries in
  the order of their numbers (``0001_...``, ``0002_...``: not file names, not times), each point
  that entry's score with its 95% interval. History keeps every summary ever written in the folder,
  whatever its conditions, so each point in report.json carries its benchmark version and score
  key. A folder with no history entries has no line; a benchmark with no line gets no trend PNG and
  report.md says so. An entry that cannot be read is left out and named in report.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metis_pytest.store.plot import Z95, Series, bar_chart, trend_chart
from metis_pytest.store.runs import slug

COLUMNS = ("run", "benchmark", "version", "model", "metric", "group", "mean", "95% CI", "n", "errored")


class ReportError(Exception):
    """A RUN that cannot be reported (no summaries, unreadable, given twice)."""


@dataclass(frozen=True)
class Result:
    """One ``<benchmark>/<model>/summary.json`` of one RUN."""

    run: str
    folder: Path
    summary: dict[str, Any]

    @property
    def benchmark(self) -> str:
        return str(self.summary.get("benchmark"))

    @property
    def model(self) -> str:
        return str(self.summary.get("model"))


def run_labels(runs: Sequence[Path]) -> list[str]:
    """Each RUN's folder name, with as many parent folders as it takes to tell them apart."""
    parts = [p.resolve().parts for p in runs]
    if len(set(parts)) != len(parts):
        raise ReportError("a RUN folder is given twice")
    depth = 1
    while True:
        labels = ["/".join(p[-depth:]) for p in parts]
        if len(set(labels)) == len(labels):
            return labels
        depth += 1


def load_results(runs: Sequence[Path]) -> list[Result]:
    """Every summary of every RUN, ordered by benchmark, model, then RUN as given."""
    results: list[tuple[tuple[str, str, int], Result]] = []
    for i, (label, run) in enumerate(zip(run_labels(runs), runs)):
        found = sorted(Path(run).glob("*/*/summary.json"))
        if not found:
            raise ReportError(f"{run}: no <benchmark>/<model>/summary.json in it")
        for path in found:
            try:
                summary = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise ReportError(f"{path}: not readable JSON ({exc})") from None
            result = Result(label, path.parent, summary)
            results.append(((result.benchmark, result.model, i), result))
    return [r for _, r in sorted(results, key=lambda pair: pair[0])]


def _groups(summary: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """``("all", summary)``, then ``("field=value", part)`` for every part of the ``by`` breakdown."""
    out = [("all", summary)]
    for field, parts in sorted((summary.get("by") or {}).items()):
        out += [(f"{field}={value}", part) for value, part in sorted(parts.items())]
    return out


def table_rows(results: Sequence[Result]) -> list[dict[str, Any]]:
    """The report's rows (what report.md shows rounded and report.json holds as they are)."""
    rows = []
    for r in results:
        for group, part in _groups(r.summary):
            mean, stderr = part.get("score"), part.get("stderr")
            low, high = (None, None) if mean is None or stderr is None else (mean - Z95 * stderr, mean + Z95 * stderr)
            rows.append({"run": r.run, "benchmark": r.benchmark, "benchmark_version": r.summary.get("benchmark_version"),
                         "model": r.model, "metric": r.summary.get("primary_metric") or "score", "group": group,
                         "mean": mean, "stderr": stderr, "ci_low": low, "ci_high": high, "n": part.get("n"),
                         "n_errored": part.get("n_errored"), "summary": str(r.folder / "summary.json")})
    return rows


def history(folder: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The points of one ``<benchmark>/<model>`` folder's ``history/``, by entry number, and the
    entries that could not be read."""
    entries, problems = [], []
    for path in (folder / "history").glob("[0-9]*_*.json"):
        number = path.name.split("_", 1)[0]
        if not number.isdigit():
            continue
        try:
            summary = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            problems.append(f"{path}: not readable JSON ({exc})")
            continue
        entries.append((int(number), path.name, summary))
    points = [{"entry": n, "file": name, "score": s.get("score"), "stderr": s.get("stderr"), "n": s.get("n"),
               "created": s.get("created"), "git_commit": s.get("git_commit"),
               "benchmark_version": s.get("benchmark_version"), "score_key": s.get("score_key")}
              for n, name, s in sorted(entries, key=lambda e: e[0])]
    return points, problems


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|")


def markdown_row(row: dict[str, Any]) -> str:
    ci = "–" if row["ci_low"] is None else f"[{row['ci_low']:.3f}, {row['ci_high']:.3f}]"
    cells = [row["run"], row["benchmark"], row["benchmark_version"] or "", row["model"], row["metric"], row["group"],
             _fmt(row["mean"]), ci, row["n"], row["n_errored"]]
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def _series_label(r: Result, several_runs: bool) -> str:
    return f"{r.model} ({r.run})" if several_runs else r.model


def _pictures(out: Path, bench: str, results: list[Result], several_runs: bool,
              trends: dict[tuple[str, Path], list[dict[str, Any]]]) -> dict[str, str | None]:
    """``<bench>_scores.png`` and, when some model has history, ``<bench>_trend.png``."""
    first = results[0].summary
    metric = first.get("primary_metric") or "score"
    version = f" v{first['benchmark_version']}" if first.get("benchmark_version") else ""
    categories = list(dict.fromkeys(g for r in results for g, _ in _groups(r.summary)))
    series = []
    for r in results:
        parts = dict(_groups(r.summary))
        series.append(Series(_series_label(r, several_runs), [(parts.get(c) or {}).get("score") for c in categories],
                             [(parts.get(c) or {}).get("stderr") for c in categories]))
    scores = bar_chart(out / f"{slug(bench)}_scores.png", categories, series, ylabel=f"{metric} (95% CI)",
                       title=f"{bench}{version}: {metric} by group")
    lines = [Series(_series_label(r, several_runs), [p["score"] for p in points], [p["stderr"] for p in points],
                    xs=[p["entry"] for p in points])
             for r in results if (points := trends[(r.run, r.folder)])]
    trend = None
    if lines:
        trend = trend_chart(out / f"{slug(bench)}_trend.png", lines, ylabel=f"{metric} (95% CI)",
                            title=f"{bench}: {metric}, run over run (history/)").name
    return {"scores": scores.name, "trend": trend}


def write_report(runs: Sequence[Path], out: Path) -> list[Path]:
    """Write report.md, report.json and the PNGs into ``out``; returns the paths written."""
    results = load_results(runs)
    labels = run_labels(runs)
    several_runs = len(runs) > 1
    trends: dict[tuple[str, Path], list[dict[str, Any]]] = {}
    problems: list[str] = []
    for r in results:
        points, bad = history(r.folder)
        trends[(r.run, r.folder)] = points
        problems += bad
    out.mkdir(parents=True, exist_ok=True)
    rows = table_rows(results)
    benchmarks = list(dict.fromkeys(r.benchmark for r in results))
    pictures = {b: _pictures(out, b, [r for r in results if r.benchmark == b], several_runs, trends)
                for b in benchmarks}

    lines = ["# Metis report", "",
             "Runs: " + ", ".join(f"`{label}` ({run})" for label, run in zip(labels, runs)), "",
             "The primary metric per benchmark × model × run × group; 95% CI: mean ± 1.96 × stderr "
             "(rows as the unit); n: rows scored.", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += [markdown_row(row) for row in rows]
    for bench in benchmarks:
        lines += ["", f"## {bench}", "", f"![{bench} by group]({pictures[bench]['scores']})", ""]
        trend = pictures[bench]["trend"]
        lines.append(f"![{bench} run over run]({trend})" if trend else f"No trend: no history/ entries for {bench}.")
    if problems:
        lines += ["", "Left out:", ""] + [f"- {p}" for p in problems]
    (out / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")

    data = {
        "runs": [{"label": label, "path": str(run)} for label, run in zip(labels, runs)],
        "rows": rows,
        "trend": {b: [{"run": r.run, "model": r.model, "points": trends[(r.run, r.folder)]}
                      for r in results if r.benchmark == b] for b in benchmarks},
        "pictures": pictures,
        "problems": problems,
    }
    (out / "report.json").write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    written = [out / "report.md", out / "report.json"]
    for bench in benchmarks:
        written += [out / name for name in pictures[bench].values() if name]
    return written


def run_cli(args: argparse.Namespace) -> int:
    """``metis report``: 0 when written, 1 when a RUN has nothing to report."""
    try:
        written = write_report([Path(r) for r in args.runs], Path(args.out))
    except ReportError as exc:
        print(f"metis report: error: {exc}", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    return 0

"""The run store: ``<output-dir>/<benchmark>/<model>/``.

Layout::

    runs/gsm8k/local/
      rows.jsonl                      # every row of the latest session (merged), one JSON object a line
      summary.json                    # score, standard error, n, n_errored, per-metric means, provenance
      history/0001_<commit>_<date>.json   # every summary ever written, append-only (pytest-benchmark style)
      .parts/<session>/<worker>.jsonl     # rows as they finish, flushed one by one (crash-safe)

Each pytest process (an xdist worker, or the only process) appends finished rows to its own part
file immediately, so nothing finished is lost if the run dies. At session end the controller merges
the parts of its session into ``rows.jsonl`` and ``summary.json``.
"""

from __future__ import annotations

import json
import math
import os
import re
import statistics
import subprocess
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


def slug(text: str) -> str:
    """A file-system-safe name for a model or benchmark (``openai/gpt-4o`` -> ``openai--gpt-4o``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text.replace("/", "--")).strip("-") or "model"


@dataclass
class RowRecord:
    """One scored (or errored) row, as written to ``rows.jsonl``."""

    benchmark: str
    model: str
    row_id: str
    run_id: str | None
    status: str  # "scored" | "errored"
    score: float | None
    metrics: dict[str, float] = field(default_factory=dict)
    reason: str | None = None
    error: dict[str, Any] | None = None
    completion: str | None = None
    ground_truth: str | None = None
    finish_reason: str | None = None
    usage: dict[str, int] | None = None
    rollout_seconds: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, default=str)


@dataclass(frozen=True)
class SummaryContext:
    """Provenance written beside the numbers: what was run, with what, from which commit."""

    benchmark: str
    benchmark_version: str
    model: str
    completion_params: dict[str, Any]
    dataset_id: str
    dataset_revision: str
    prompt_hash: str
    primary_metric: str
    extra: dict[str, Any] = field(default_factory=dict)


def _mean_se(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    mean = statistics.fmean(values)
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else None
    return mean, se


def summarize(records: list[RowRecord]) -> dict[str, Any]:
    """Score, standard error and per-metric means over scored rows; errored rows only counted.

    With several runs the standard error is taken over per-row means (rows are the sampling unit),
    and ``runs`` gives each run's mean and the std across runs."""
    scored = [r for r in records if r.status == "scored" and r.score is not None]
    by_row: dict[str, list[float]] = {}
    for r in scored:
        by_row.setdefault(r.row_id, []).append(float(r.score or 0.0))
    row_means = [statistics.fmean(v) for v in by_row.values()]
    score, se = _mean_se(row_means)
    metric_names = sorted({m for r in scored for m in r.metrics})
    metrics = {}
    for name in metric_names:
        per_row: dict[str, list[float]] = {}
        for r in scored:
            if name in r.metrics:
                per_row.setdefault(r.row_id, []).append(float(r.metrics[name]))
        mean, mse = _mean_se([statistics.fmean(v) for v in per_row.values()])
        metrics[name] = {"mean": mean, "stderr": mse, "n": len(per_row)}
    by_run: dict[str, list[float]] = {}
    for r in scored:
        by_run.setdefault(r.run_id or "run", []).append(float(r.score or 0.0))
    run_means = [statistics.fmean(v) for v in by_run.values()]
    errored = [r for r in records if r.status == "errored"]
    resumed = [r for r in scored if (r.metadata or {}).get("resumed_from")]
    return {
        "score": score,
        "stderr": se,
        "n": len(row_means),
        "n_scored": len(scored),
        "n_errored": len(errored),
        "n_retryable": sum(1 for r in errored if (r.error or {}).get("retryable", True)),
        "n_resumed": len(resumed),
        "metrics": metrics,
        "runs": {"n": len(run_means), "means": run_means,
                 "std": statistics.stdev(run_means) if len(run_means) > 1 else None},
    }


def git_commit(cwd: Path | None = None) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=cwd, capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


class RunStore:
    """Reads and writes run records under one output directory for one pytest session."""

    def __init__(self, root: Path, session_id: str, worker: str = "main", repo_dir: Path | None = None) -> None:
        self.root = Path(root)
        self.repo_dir = repo_dir
        self.session_id = session_id
        self.worker = worker
        self._lock = threading.Lock()
        self._files: dict[Path, Any] = {}
        self.counts: dict[tuple[str, str], dict[str, int]] = {}
        self._contexts: set[tuple[str, str]] = set()

    def model_dir(self, benchmark: str, model: str) -> Path:
        return self.root / slug(benchmark) / slug(model)

    def _part(self, benchmark: str, model: str) -> Path:
        return self.model_dir(benchmark, model) / ".parts" / self.session_id / f"{self.worker}.jsonl"

    def write_context_once(self, ctx: SummaryContext) -> None:
        """Write the context of a (benchmark, model) the first time this process sees it."""
        key = (ctx.benchmark, ctx.model)
        if key not in self._contexts:
            self._contexts.add(key)
            self.write_context(ctx)

    def write_context(self, ctx: SummaryContext) -> None:
        """Record what this (benchmark, model) ran with; the merge reads it back."""
        path = self.model_dir(ctx.benchmark, ctx.model) / ".parts" / self.session_id / "context.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{self.worker}.tmp")
        tmp.write_text(json.dumps(asdict(ctx), indent=2, default=str))
        os.replace(tmp, path)

    def append(self, record: RowRecord) -> None:
        """Append one row and flush it to disk before returning."""
        path = self._part(record.benchmark, record.model)
        line = record.to_json() + "\n"
        with self._lock:
            handle = self._files.get(path)
            if handle is None:
                path.parent.mkdir(parents=True, exist_ok=True)
                handle = self._files[path] = path.open("a", encoding="utf-8")
            handle.write(line)
            handle.flush()
            counts = self.counts.setdefault((record.benchmark, record.model), {"scored": 0, "errored": 0})
            counts[record.status] = counts.get(record.status, 0) + 1

    def close(self) -> None:
        with self._lock:
            for handle in self._files.values():
                handle.close()
            self._files.clear()

    def session_parts(self) -> dict[Path, list[Path]]:
        """Every (benchmark, model) folder that has rows from this session, with its part files."""
        found: dict[Path, list[Path]] = {}
        for part_dir in self.root.glob(f"*/*/.parts/{self.session_id}"):
            files = sorted(part_dir.glob("*.jsonl"))
            if files:
                found[part_dir.parent.parent] = files
        return found

    def merge(self, *, absorb_stale: bool = False) -> list[dict[str, Any]]:
        """Merge this session's parts into ``rows.jsonl`` + ``summary.json`` (+ history); return summaries.

        With ``absorb_stale`` (a ``--resume`` session), part files that earlier sessions left behind
        when they died are removed too: this session has taken over what was usable in them."""
        summaries = []
        for model_dir, parts in sorted(self.session_parts().items()):
            records = [record for part in parts for record in read_records(part)]
            ctx_path = parts[0].parent / "context.json"
            context = json.loads(ctx_path.read_text()) if ctx_path.exists() else {}
            summary = {
                "benchmark": context.get("benchmark") or (records[0].benchmark if records else None),
                "model": context.get("model") or (records[0].model if records else None),
                **summarize(records),
                "primary_metric": context.get("primary_metric"),
                "benchmark_version": context.get("benchmark_version"),
                "completion_params": context.get("completion_params"),
                "dataset": {"id": context.get("dataset_id"), "revision": context.get("dataset_revision")},
                "prompt_hash": context.get("prompt_hash"),
                "git_commit": git_commit(self.repo_dir),
                "session": self.session_id,
                "workers": sorted(p.stem for p in parts),
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                **({"extra": context["extra"]} if context.get("extra") else {}),
            }
            _write_atomic(model_dir / "rows.jsonl", "".join(r.to_json() + "\n" for r in records))
            _write_atomic(model_dir / "summary.json", json.dumps(summary, indent=2, default=str) + "\n")
            _append_history(model_dir / "history", summary)
            for part in parts:
                part.unlink()
            if absorb_stale:
                for stale in model_dir.glob(".parts/*/*"):
                    if stale.parent.name != self.session_id:
                        stale.unlink()
            summary["path"] = str(model_dir / "summary.json")
            summaries.append(summary)
        return summaries


def read_records(path: Path) -> list[RowRecord]:
    """The rows of one JSONL file (``rows.jsonl`` or a part file)."""
    return [RowRecord(**json.loads(line)) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _append_history(folder: Path, summary: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    numbers = [int(p.name.split("_", 1)[0]) for p in folder.glob("[0-9]*_*.json") if p.name.split("_", 1)[0].isdigit()]
    n = max(numbers, default=0) + 1
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    name = f"{n:04d}_{summary.get('git_commit') or 'nocommit'}_{stamp}.json"
    _write_atomic(folder / name, json.dumps(summary, indent=2, default=str) + "\n")

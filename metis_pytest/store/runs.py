"""The run store: ``<output-dir>/<benchmark>/<model>/``, append-only and keyed.

Layout::

    runs/gsm8k/local/
      records/<session>-<worker>.jsonl   # every row any session ever made here, flushed one by one; never rewritten
      conditions/<key>.json              # the conditions a key stands for (model, sampling, data, prompt, version, judge)
      rows.jsonl                         # the rows of the latest summary: one per (row, run index)
      summary.json                       # built from every record made under the same conditions
      history/0001_<commit>_<date>.json  # every summary ever written, append-only (pytest-benchmark style)

A record is keyed by (benchmark, model, row id, run index, conditions). Two keys matter:

- the *completion key* says which completions are interchangeable: the model and its sampling
  parameters, the prompt (hash) and the data (id and revision). Not the endpoint's address: a
  restarted server on a new port serves the same model. ``--resume`` reuses completions by it.
- the *score key* adds what makes scores comparable: the benchmark version and the judge. A summary
  is built from every record under its score key, whichever session made it, taking per (row, run
  index) the latest scored record (else the latest errored one), so a ``--max-rows 3`` rerun or one
  ``-k`` item adds to a model's record instead of replacing it; what this session selected is in
  the summary's ``selection``.

Each process appends to its own records file and flushes every row, so a crash loses only rows in
flight. The controller merges at session end under a lock, so two sessions writing one folder never
lose each other's rows; nothing is ever deleted.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import statistics
import subprocess
import threading
import time
from dataclasses import asdict, dataclass, field, fields, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import pydantic_core
from filelock import FileLock

RECORDS = "records"
CONDITIONS = "conditions"


def slug(text: str) -> str:
    """A file-system-safe name for a model or benchmark (``openai/gpt-4o`` -> ``openai--gpt-4o``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text.replace("/", "--")).strip("-") or "model"


def _digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class RunConditions:
    """What a (benchmark, model) runs under: the provenance of every record, and its keys."""

    benchmark: str
    model: str
    benchmark_version: str
    sampling: dict[str, Any]  # completion params without the endpoint (model, temperature, max_tokens, ...)
    dataset_id: str
    dataset_revision: str
    prompt_hash: str
    primary_metric: str
    dataset_split: str | None = None
    judge: dict[str, Any] | None = None
    completion_params: dict[str, Any] = field(default_factory=dict)  # as sent to Eval Protocol (public)
    metric_notes: dict[str, str] = field(default_factory=dict)
    rollout_options: dict[str, Any] = field(default_factory=dict)  # the benchmark's (tool caps, ...)
    scoring_options: dict[str, Any] = field(default_factory=dict)  # the benchmark's (semantics, ...)
    notes: list[str] = field(default_factory=list)  # shown with the summary (an offline demo says so)

    def completion_fields(self) -> dict[str, Any]:
        fields = {"benchmark": self.benchmark, "sampling": self.sampling, "dataset_id": self.dataset_id,
                  "dataset_revision": self.dataset_revision, "dataset_split": self.dataset_split,
                  "prompt_hash": self.prompt_hash}
        if self.rollout_options:
            fields["options"] = self.rollout_options
        return fields

    def score_fields(self) -> dict[str, Any]:
        fields = {**self.completion_fields(), "benchmark_version": self.benchmark_version, "judge": self.judge}
        if self.scoring_options:
            fields["scoring_options"] = self.scoring_options
        return fields

    @cached_property  # frozen: computed once (every recorded row reads both)
    def completion_key(self) -> str:
        return _digest(self.completion_fields())

    @cached_property
    def score_key(self) -> str:
        return _digest(self.score_fields())

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "completion_key": self.completion_key, "score_key": self.score_key}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunConditions:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class RowRecord:
    """One scored (or errored) row, as written to the records files and ``rows.jsonl``."""

    benchmark: str
    model: str
    row_id: str
    run_index: int
    status: str  # "scored" | "errored"
    score: float | None
    metrics: dict[str, float] = field(default_factory=dict)
    reason: str | None = None
    error: dict[str, Any] | None = None
    completion: str | None = None  # the final assistant text
    messages: list[dict[str, Any]] | None = None  # the whole conversation: tool calls, tool results, ...
    ground_truth: str | None = None
    finish_reason: str | None = None
    usage: dict[str, int] | None = None
    rollout_seconds: float | None = None
    details: dict[str, Any] = field(default_factory=dict)  # the scorer's (extracted answers, judge verdicts)
    groups: dict[str, Any] = field(default_factory=dict)  # the benchmark's breakdown fields (domain, ...)
    metadata: dict[str, Any] = field(default_factory=dict)  # resumed_from, replayed_from, attempts
    score_key: str = ""
    completion_key: str = ""
    session: str = ""
    worker: str = ""
    run_id: str | None = None  # Eval Protocol's random id of the run inside one item
    t: float = 0.0  # when it was recorded (seconds since the epoch)

    def to_json(self) -> str:
        # vars(), not asdict(): the fields are JSON data already, and asdict deep-copies every message.
        # pydantic-core's encoder: the same JSON as json.dumps(..., ensure_ascii=False), compact, 3x faster.
        return pydantic_core.to_json(vars(self), fallback=str).decode()

    @property
    def key(self) -> tuple[str, int]:
        return (self.row_id, self.run_index)

    @property
    def has_completion(self) -> bool:
        """A completion exists to re-score: scored, or errored in scoring (never a rollout error)."""
        if self.completion is None and not self.messages:
            return False
        return self.status == "scored" or (self.error or {}).get("stage") == "scoring"


_RECORD_FIELDS = {f.name for f in fields(RowRecord)}


def read_records(path: Path) -> list[RowRecord]:
    """The rows of one JSONL file. A line cut short by a crash (the last one) is skipped."""
    return [record for record, _ in read_lines(path)]


def read_lines(path: Path) -> list[tuple[RowRecord, str]]:
    """Each record of a JSONL file with the line it was read from (a merge copies lines as they are)."""
    out = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except ValueError:
            if i == len(lines) - 1:
                continue  # a write interrupted by kill -9
            raise ValueError(f"{path} line {i + 1}: not a JSON record") from None
        out.append((RowRecord(**{k: v for k, v in data.items() if k in _RECORD_FIELDS}), line))
    return out


def select_latest(records: list[RowRecord]) -> dict[tuple[str, int], RowRecord]:
    """Per (row id, run index): the latest scored record, else the latest errored one."""
    chosen: dict[tuple[str, int], RowRecord] = {}
    for r in sorted(records, key=lambda r: r.t):
        best = chosen.get(r.key)
        if best is None or r.status == "scored" or best.status != "scored":
            chosen[r.key] = r
    return chosen


def _mean_se(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    mean = statistics.fmean(values)
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else None
    return mean, se


def summarize(records: list[RowRecord]) -> dict[str, Any]:
    """Score, standard error and per-metric means over scored rows; errored rows only counted.

    Rows are the sampling unit: with several runs the standard error is over per-row means, and
    ``runs`` gives each run index's mean and the std across runs."""
    scored = [r for r in records if r.status == "scored" and r.score is not None]
    by_row: dict[str, list[float]] = {}
    for r in scored:
        by_row.setdefault(r.row_id, []).append(float(r.score or 0.0))
    score, se = _mean_se([statistics.fmean(v) for v in by_row.values()])
    metrics = {}
    for name in sorted({m for r in scored for m in r.metrics}):
        per_row: dict[str, list[float]] = {}
        for r in scored:
            if name in r.metrics:
                per_row.setdefault(r.row_id, []).append(float(r.metrics[name]))
        mean, mse = _mean_se([statistics.fmean(v) for v in per_row.values()])
        metrics[name] = {"mean": mean, "stderr": mse, "n": len(per_row)}
    by_run: dict[int, list[float]] = {}
    for r in scored:
        by_run.setdefault(r.run_index, []).append(float(r.score or 0.0))
    indexes = sorted(by_run)
    run_means = [statistics.fmean(by_run[i]) for i in indexes]
    errored = [r for r in records if r.status == "errored"]
    out = {
        "score": score,
        "stderr": se,
        "n": len(by_row),
        "n_scored": len(scored),
        "n_errored": len(errored),
        "n_retryable": sum(1 for r in errored if (r.error or {}).get("retryable", True)),
        "n_resumed": sum(1 for r in scored if r.metadata.get("resumed_from")),
        "metrics": metrics,
        "runs": {"n": len(indexes), "indexes": indexes, "means": run_means,
                 "std": statistics.stdev(run_means) if len(run_means) > 1 else None},
    }
    groups = sorted({g for r in records for g in r.groups})
    if groups:
        out["by"] = {g: _by(records, g) for g in groups}
    if len(indexes) > 1:
        out["task_aggregation"] = {
            row: {"mean": statistics.fmean(v), "std": statistics.stdev(v) if len(v) > 1 else None, "n_runs": len(v)}
            for row, v in sorted(by_row.items())}
    return out


def _by(records: list[RowRecord], group: str) -> dict[str, Any]:
    """Score, stderr and counts per value of one breakdown field (rows as the unit)."""
    values = sorted({str(r.groups.get(group)) for r in records})
    out = {}
    for value in values:
        part = summarize([replace(r, groups={}) for r in records if str(r.groups.get(group)) == value])
        out[value] = {k: part[k] for k in ("score", "stderr", "n", "n_errored", "metrics")}
    return out


def git_info(cwd: Path | None = None) -> dict[str, Any]:
    """The commit and whether tracked files differ from it (``dirty``); Nones outside a git checkout."""
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout if out.returncode == 0 else None

    commit = (git("rev-parse", "--short=12", "HEAD") or "").strip() or None
    if commit is None:
        return {"commit": None, "dirty": None}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if status is None else bool(status.strip())}


class RunStore:
    """Reads and writes run records under one output directory for one pytest process."""

    def __init__(self, root: Path, session_id: str, worker: str = "main", repo_dir: Path | None = None) -> None:
        self.root = Path(root)
        self.repo_dir = repo_dir
        self.session_id = session_id
        self.worker = worker
        self._lock = threading.Lock()
        self._files: dict[Path, Any] = {}
        self.counts: dict[tuple[str, str], dict[str, int]] = {}
        self._conditions: set[tuple[str, str, str]] = set()
        self._records_paths: dict[tuple[str, str], Path] = {}

    def model_dir(self, benchmark: str, model: str) -> Path:
        return self.root / slug(benchmark) / slug(model)

    def records_path(self, benchmark: str, model: str) -> Path:
        path = self._records_paths.get((benchmark, model))
        if path is None:
            path = self._records_paths[benchmark, model] = (
                self.model_dir(benchmark, model) / RECORDS / f"{self.session_id}-{self.worker}.jsonl")
        return path

    def write_conditions(self, cond: RunConditions) -> None:
        """Record what a key stands for (once per process and key)."""
        key = (cond.benchmark, cond.model, cond.score_key)
        if key in self._conditions:
            return
        self._conditions.add(key)
        path = self.model_dir(cond.benchmark, cond.model) / CONDITIONS / f"{cond.score_key}.json"
        if not path.exists():
            _write_atomic(path, json.dumps(cond.to_json(), indent=2, sort_keys=True, default=str) + "\n")

    def append(self, record: RowRecord) -> None:
        """Append one row and flush it to disk before returning."""
        record.session, record.worker = self.session_id, self.worker
        record.t = record.t or time.time()
        path = self.records_path(record.benchmark, record.model)
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

    def session_dirs(self) -> list[Path]:
        """Every (benchmark, model) folder this session wrote records to (any of its workers)."""
        return sorted({p.parent.parent for p in self.root.glob(f"*/*/{RECORDS}/{self.session_id}-*.jsonl")})

    def merge(self, *, selection: dict[str, Any] | None = None, resume: bool = False) -> list[dict[str, Any]]:
        """Rebuild ``rows.jsonl`` + ``summary.json`` (+ history) of every folder this session wrote to."""
        return [self.merge_dir(d, selection=selection or {}, resume=resume) for d in self.session_dirs()]

    def merge_dir(self, model_dir: Path, *, selection: dict[str, Any], resume: bool) -> dict[str, Any]:
        with FileLock(str(model_dir / ".merge.lock"), timeout=120):
            pairs = [pair for p in sorted((model_dir / RECORDS).glob("*.jsonl")) for pair in read_lines(p)]
            records = [r for r, _ in pairs]
            lines = {id(r): line for r, line in pairs}
            mine = [r for r in records if r.session == self.session_id]
            key = max(mine, key=lambda r: r.t).score_key if mine else ""
            cond = load_conditions(model_dir, key)
            chosen = sorted(select_latest([r for r in records if r.score_key == key]).values(),
                            key=lambda r: (r.row_id, r.run_index))
            summary = {
                "benchmark": cond.benchmark if cond else mine[0].benchmark,
                "model": cond.model if cond else mine[0].model,
                **summarize(chosen),
                "primary_metric": cond.primary_metric if cond else None,
                "metric_notes": cond.metric_notes if cond else {},
                "notes": cond.notes if cond else [],
                "benchmark_version": cond.benchmark_version if cond else None,
                "completion_params": cond.completion_params if cond else None,
                "sampling": cond.sampling if cond else None,
                "dataset": {"id": cond.dataset_id, "revision": cond.dataset_revision,
                            "split": cond.dataset_split} if cond else None,
                "prompt_hash": cond.prompt_hash if cond else None,
                "judge": cond.judge if cond else None,
                "score_key": key,
                "completion_key": cond.completion_key if cond else None,
                **_git_fields(git_info(self.repo_dir)),
                "session": self.session_id,
                "sessions": sorted({r.session for r in chosen}),
                "workers": sorted({r.worker for r in mine}),
                "selection": {**selection, "rows_this_session": len({r.key for r in mine}),
                              "rows_in_summary": len(chosen)},
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            if resume:
                summary["resume"] = resume_report(model_dir, mine, records, cond)
            _write_atomic(model_dir / "rows.jsonl", "".join(lines[id(r)] + "\n" for r in chosen))
            _write_atomic(model_dir / "summary.json", json.dumps(summary, indent=2, default=str) + "\n")
            _append_history(model_dir / "history", summary)
        summary["path"] = str(model_dir / "summary.json")
        return summary


def _git_fields(info: dict[str, Any]) -> dict[str, Any]:
    return {"git_commit": info["commit"], "git_dirty": info["dirty"]}


def load_conditions(model_dir: Path, key: str) -> RunConditions | None:
    path = model_dir / CONDITIONS / f"{key}.json"
    try:
        return RunConditions.from_json(json.loads(path.read_text()))
    except (OSError, ValueError):
        return None


def all_conditions(model_dir: Path) -> list[RunConditions]:
    out = []
    for path in sorted((model_dir / CONDITIONS).glob("*.json")):
        try:
            out.append(RunConditions.from_json(json.loads(path.read_text())))
        except (OSError, ValueError, TypeError):
            continue
    return out


def _flatten(prefix: str, value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(f"{prefix}.{k}" if prefix else str(k), v))
        return out
    return {prefix: value}


def condition_diff(old: RunConditions, new: RunConditions) -> list[str]:
    """What differs between two runs' completion conditions, as ``field: old -> new``."""
    a, b = _flatten("", old.completion_fields()), _flatten("", new.completion_fields())
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def resume_report(model_dir: Path, mine: list[RowRecord], records: list[RowRecord],
                  cond: RunConditions | None) -> dict[str, Any]:
    """What ``--resume`` reused, what it sent again, and, when it reused nothing, why."""
    reused = sum(1 for r in mine if r.metadata.get("resumed_from"))
    report: dict[str, Any] = {"reused": reused, "sent": len(mine) - reused}
    if reused or cond is None:
        return report
    others = [r for r in records if r.session != mine[0].session] if mine else []
    same = [r for r in others if r.completion_key == cond.completion_key]
    if not others:
        report["note"] = "nothing reused: no earlier rows are stored for this benchmark and model"
    elif same:
        report["note"] = (f"nothing reused: the {len(same)} stored rows under these conditions have no completion "
                          "(rollout errors), so they were sent again")
    else:
        diffs = sorted({d for c in all_conditions(model_dir) if c.completion_key != cond.completion_key
                        for d in condition_diff(c, cond)})
        report["note"] = (f"nothing reused: the {len(others)} stored rows were made under other conditions ("
                          + "; ".join(diffs) + ")")
    return report


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _append_history(folder: Path, summary: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    numbers = [int(p.name.split("_", 1)[0]) for p in folder.glob("[0-9]*_*.json") if p.name.split("_", 1)[0].isdigit()]
    n = max(numbers, default=0) + 1
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    name = f"{n:04d}_{summary.get('git_commit') or 'nocommit'}_{stamp}.json"
    _write_atomic(folder / name, json.dumps(summary, indent=2, default=str) + "\n")

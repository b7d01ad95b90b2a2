"""Baselines: a run's summary and per-row scores, promoted to ``baselines/<bench>/<model>.json``.

A baseline is a reviewed, committed file, so it is small and diffs well:

- provenance first (benchmark, model, benchmark version, dataset id/revision/split, prompt hash,
  primary metric, judge, sampling, the run store's score and completion keys, the commit that made
  the run), then ``summary`` (what :func:`metis_pytest.store.runs.summarize` makes of the rows), then
  ``rows``: one line per (row id, run index), sorted, holding its status, score, metrics and the
  benchmark's breakdown fields (``groups``: ACE's domain).
- nothing that changes between two saves of the same run: no creation time, no session or worker
  names, no output paths, no ``selection`` (it names the ``--replay`` folder); nested keys sorted.
- no secrets and no endpoint: ``completion_params`` (which hold ``api_base``, host and port) is left
  out; ``sampling`` keeps only what is neither a URL nor a credential.

Everything is taken from the run folder the run store wrote (``summary.json`` and ``rows.jsonl``),
so a baseline is exactly the summary of the rows it holds.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metis_pytest.store.runs import RowRecord, RunConditions, read_records, slug, summarize

FORMAT = "metis-baseline/1"
# Parameter names that hold an endpoint or a credential (max_tokens is neither).
_PRIVATE = re.compile(r"api_base|base_url|url|.*_url|key|.*_key|.*secret.*|.*password.*|.*headers?|"
                      r".*authorization.*|token|.*_token", re.IGNORECASE)


@dataclass(frozen=True)
class BaselineRow:
    """One (row id, run index) of a baseline: what a paired comparison reads."""

    row_id: str
    run_index: int
    status: str  # "scored" | "errored"
    score: float | None
    metrics: dict[str, float] = field(default_factory=dict)
    groups: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, int]:
        return (self.row_id, self.run_index)

    def value(self, metric: str) -> float | None:
        """The row's value of ``metric`` (``score``: the primary score); None when errored or absent."""
        if self.status != "scored":
            return None
        return self.score if metric == "score" else self.metrics.get(metric)

    @classmethod
    def of(cls, record: RowRecord) -> BaselineRow:
        return cls(record.row_id, record.run_index, record.status, record.score, dict(record.metrics),
                   dict(record.groups))


@dataclass(frozen=True)
class Baseline:
    """A baseline file's content (see the module docstring)."""

    benchmark: str
    model: str
    benchmark_version: str | None
    dataset: dict[str, Any]
    prompt_hash: str | None
    primary_metric: str | None
    judge: dict[str, Any] | None
    sampling: dict[str, Any]
    score_key: str | None
    completion_key: str | None
    git_commit: str | None
    summary: dict[str, Any]
    rows: tuple[BaselineRow, ...]

    def to_text(self) -> str:
        """The file's bytes: provenance and summary indented, one row per line, nested keys sorted."""
        head = {
            "format": FORMAT, "benchmark": self.benchmark, "model": self.model,
            "benchmark_version": self.benchmark_version, "dataset": self.dataset, "prompt_hash": self.prompt_hash,
            "primary_metric": self.primary_metric, "judge": self.judge, "sampling": self.sampling,
            "score_key": self.score_key, "completion_key": self.completion_key, "git_commit": self.git_commit,
            "summary": self.summary,
        }
        text = json.dumps(_sorted(head), indent=2, ensure_ascii=False)
        rows = ",\n".join("    " + json.dumps(_sorted(_row_json(r)), ensure_ascii=False) for r in self.rows)
        return text[:-2] + ',\n  "rows": [\n' + rows + ("\n" if rows else "") + "  ]\n}\n"

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Baseline:
        if data.get("format") != FORMAT:
            raise ValueError(f"not a Metis baseline (format {data.get('format')!r}, expected {FORMAT!r})")
        rows = tuple(BaselineRow(str(r["row_id"]), int(r["run_index"]), r["status"], r.get("score"),
                                 dict(r.get("metrics") or {}), dict(r.get("groups") or {})) for r in data["rows"])
        return cls(data["benchmark"], data["model"], data.get("benchmark_version"), dict(data.get("dataset") or {}),
                   data.get("prompt_hash"), data.get("primary_metric"), data.get("judge"),
                   dict(data.get("sampling") or {}), data.get("score_key"), data.get("completion_key"),
                   data.get("git_commit"), dict(data.get("summary") or {}), rows)

    def identity(self) -> dict[str, Any]:
        """The fields a comparison refuses to cross (see :func:`identity_of`)."""
        return {"benchmark": self.benchmark, "benchmark_version": self.benchmark_version,
                "dataset.id": self.dataset.get("id"), "dataset.revision": self.dataset.get("revision"),
                "dataset.split": self.dataset.get("split"), "prompt_hash": self.prompt_hash}

    def context(self) -> dict[str, Any]:
        """Fields that may differ on purpose (another model, temperature or judge): shown, never refused."""
        return {"model": self.model, "judge": self.judge, **{f"sampling.{k}": v for k, v in self.sampling.items()}}


def identity_of(cond: RunConditions) -> dict[str, Any]:
    """A run's benchmark version, dataset (id, revision, split) and prompt hash, as a baseline holds them."""
    return {"benchmark": cond.benchmark, "benchmark_version": cond.benchmark_version,
            "dataset.id": cond.dataset_id, "dataset.revision": cond.dataset_revision,
            "dataset.split": cond.dataset_split, "prompt_hash": cond.prompt_hash}


def context_of(cond: RunConditions) -> dict[str, Any]:
    return {"model": cond.model, "judge": cond.judge,
            **{f"sampling.{k}": v for k, v in public_sampling(cond.sampling).items()}}


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``field: baseline -> this run`` for every field that differs."""
    return [f"{k}: {old.get(k)!r} (baseline) -> {new.get(k)!r} (this run)"
            for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


def public_sampling(sampling: dict[str, Any] | None) -> dict[str, Any]:
    """Sampling parameters without URLs or credentials (belt and braces: the store strips them already)."""
    return {k: v for k, v in (sampling or {}).items() if not _PRIVATE.fullmatch(k)}


def baseline_path(root: Path, benchmark: str, model: str) -> Path:
    """``<root>/<benchmark>/<model>.json``, with the run store's file-system-safe names."""
    return root / slug(benchmark) / f"{slug(model)}.json"


def from_run(model_dir: Path) -> Baseline:
    """The baseline of one ``<output-dir>/<benchmark>/<model>`` folder (its ``summary.json`` and ``rows.jsonl``)."""
    summary = json.loads((model_dir / "summary.json").read_text(encoding="utf-8"))
    records = sorted(read_records(model_dir / "rows.jsonl"), key=lambda r: (r.row_id, r.run_index))
    return Baseline(
        benchmark=summary["benchmark"], model=summary["model"], benchmark_version=summary.get("benchmark_version"),
        dataset=dict(summary.get("dataset") or {}), prompt_hash=summary.get("prompt_hash"),
        primary_metric=summary.get("primary_metric"), judge=summary.get("judge"),
        sampling=public_sampling(summary.get("sampling")), score_key=summary.get("score_key"),
        completion_key=summary.get("completion_key"), git_commit=summary.get("git_commit"),
        summary=summarize(records), rows=tuple(BaselineRow.of(r) for r in records))


def save(baseline: Baseline, root: Path) -> Path:
    """Write ``baseline`` to its place under ``root``; returns the path."""
    path = baseline_path(root, baseline.benchmark, baseline.model)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(baseline.to_text(), encoding="utf-8")
    tmp.replace(path)
    return path


def load(path: Path) -> Baseline:
    """Read a baseline file; ValueError (naming the file) when it is not one."""
    try:
        return Baseline.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: {exc}") from None


def _row_json(row: BaselineRow) -> dict[str, Any]:
    return {"row_id": row.row_id, "run_index": row.run_index, "status": row.status, "score": row.score,
            "metrics": row.metrics, "groups": row.groups}


def _sorted(value: Any) -> Any:
    """Dicts nested in ``value`` with sorted keys (the top level keeps its order)."""
    if isinstance(value, dict):
        return {k: _sort_all(v) for k, v in value.items()}
    return value


def _sort_all(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sort_all(value[k]) for k in sorted(value, key=str)}
    if isinstance(value, list):
        return [_sort_all(v) for v in value]
    return value

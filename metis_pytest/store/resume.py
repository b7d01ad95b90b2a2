"""``--resume``: rows that already have a completion under the same conditions are not sent again.

Sources, in one (benchmark, model) folder: the last merged ``rows.jsonl`` (its conditions are in
``summary.json``) and part files left by sessions that died before merging (their conditions are in
their ``context.json``). A stored row is reused only when benchmark version, completion params,
dataset revision and prompt hash all match the current run; only rows that were *scored* are reused,
so errored rows are retried. The reused completion is scored again by the current scorer, so a scorer
fix never needs new model calls.
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict, deque
from pathlib import Path
from typing import Any

from metis_pytest.store.runs import RowRecord, RunStore, SummaryContext, read_records

CONDITIONS = ("benchmark_version", "completion_params", "dataset_revision", "prompt_hash")


def _conditions(ctx: dict[str, Any]) -> dict[str, Any]:
    return {key: ctx.get(key) for key in CONDITIONS}


def _summary_conditions(summary: dict[str, Any]) -> dict[str, Any]:
    return _conditions({**summary, "dataset_revision": (summary.get("dataset") or {}).get("revision")})


class ResumeIndex:
    """Stored completions per (benchmark, model), handed out once each, per row id, oldest first."""

    def __init__(self, store: RunStore) -> None:
        self.store = store
        self._queues: dict[tuple[str, str], dict[str, deque[RowRecord]]] = {}
        self._lock = threading.Lock()

    def take(self, ctx: SummaryContext, row_id: str) -> RowRecord | None:
        """A stored scored row for ``row_id`` made under ``ctx``'s conditions, or None."""
        key = (ctx.benchmark, ctx.model)
        with self._lock:
            if key not in self._queues:
                self._queues[key] = self._load(ctx)
            queue = self._queues[key].get(row_id)
            return queue.popleft() if queue else None

    def _load(self, ctx: SummaryContext) -> dict[str, deque[RowRecord]]:
        want = _conditions(ctx.__dict__)
        folder = self.store.model_dir(ctx.benchmark, ctx.model)
        found: dict[str, deque[RowRecord]] = defaultdict(deque)
        sources: list[tuple[dict[str, Any], Path]] = []
        summary, rows = folder / "summary.json", folder / "rows.jsonl"
        if summary.exists() and rows.exists():
            sources.append((_summary_conditions(json.loads(summary.read_text())), rows))
        for context in sorted(folder.glob(".parts/*/context.json")):
            if context.parent.name == self.store.session_id:
                continue
            for part in sorted(context.parent.glob("*.jsonl")):
                sources.append((_conditions(json.loads(context.read_text())), part))
        for conditions, path in sources:
            if conditions != want:
                continue
            for record in read_records(path):
                if record.status == "scored" and record.completion is not None:
                    found[record.row_id].append(record)
        return found

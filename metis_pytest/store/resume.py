"""``--resume``: a row that already has a completion under the same conditions is not sent again.

Sources: every records file in the (benchmark, model) folder except this session's own, including
those of runs that were killed and of sessions still running. A stored completion is reused for the
same (row id, run index) only, and only when its *completion key* matches (model, sampling
parameters, prompt, data; not the endpoint's address), so the independent runs of ``--runs N``
never share a completion, however often a run is killed and resumed. Rows that errored in rollout
are sent again; rows whose scorer failed keep their completion and are scored again, so a scorer
fix never needs new model calls.
"""

from __future__ import annotations

import threading
from pathlib import Path

from metis_pytest.store.runs import RECORDS, RowRecord, RunConditions, RunStore, read_records


class ResumeIndex:
    """Stored completions per (benchmark, model, completion key), one per (row id, run index)."""

    def __init__(self, store: RunStore) -> None:
        self.store = store
        self._index: dict[tuple[str, str, str], dict[tuple[str, int], RowRecord]] = {}
        self._lock = threading.Lock()

    def take(self, cond: RunConditions, row_id: str, run_index: int) -> RowRecord | None:
        """The stored record with a completion for this row and run index, handed out once."""
        key = (cond.benchmark, cond.model, cond.completion_key)
        with self._lock:
            if key not in self._index:
                self._index[key] = self._load(self.store.model_dir(cond.benchmark, cond.model), cond.completion_key)
            return self._index[key].pop((row_id, run_index), None)

    def _load(self, folder: Path, completion_key: str) -> dict[tuple[str, int], RowRecord]:
        found: dict[tuple[str, int], RowRecord] = {}
        own = f"{self.store.session_id}-"
        for path in sorted((folder / RECORDS).glob("*.jsonl")):
            if path.name.startswith(own):
                continue
            for record in read_records(path):
                if record.completion_key != completion_key or not record.has_completion:
                    continue
                best = found.get(record.key)
                if best is None or record.t >= best.t:
                    found[record.key] = record
        return found

"""Replay: run an evaluation item with no model at all, from the completions of a recorded run.

``--replay RUN_DIR`` swaps every benchmark's processor for this one: each row gets the conversation
recorded for the same (row id, run index) and is scored by the current scorer. No request is sent,
no key is needed and no local server is started. A row the recording lacks is errored (not
retryable: replaying again will not find it) rather than scored.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from eval_protocol.models import EvaluationRow, Status
from eval_protocol.pytest.rollout_processor import RolloutProcessor
from eval_protocol.pytest.types import RolloutProcessorConfig

from metis_pytest.rollout.base import Lookup, RunIndexer, register_processor
from metis_pytest.rollout.single_turn import restore


class ReplayProcessor(RolloutProcessor):
    """Eval Protocol ``RolloutProcessor`` that answers every row from a recorded run."""

    def __init__(self, lookup: Lookup, source: str) -> None:
        self.lookup = lookup
        self.source = source
        self.runs = RunIndexer()

    def __call__(self, rows: list[EvaluationRow], config: RolloutProcessorConfig) -> list[asyncio.Task[EvaluationRow]]:
        self.runs.stamp(rows)
        public = dict(config.completion_params or {})

        async def one(row: EvaluationRow) -> EvaluationRow:
            start = time.perf_counter()
            stored = self.lookup(public, row)
            if stored is None:
                row.rollout_status = Status.rollout_error(
                    f"not in the recorded run {self.source}: no completion for this row and run index",
                    {"retryable": False, "stage": "replay"})
                return row
            return restore(row, stored, start, "replayed_from")

        return [asyncio.create_task(one(row)) for row in rows]


@register_processor("replay")
def replay_processor(session: Any, bench: Any, lookup: Lookup | None) -> ReplayProcessor:
    assert lookup is not None, "replay needs a lookup of recorded completions"
    return ReplayProcessor(lookup, str(session.cfg.replay))

"""Run records: per-row JSONL written by whichever process made the row, merged into one summary."""

from metis_pytest.store.runs import RowRecord, RunStore, summarize

__all__ = ["RowRecord", "RunStore", "summarize"]

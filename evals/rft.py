"""A benchmark's Fireworks RFT dataset: its own loader's rows, in the shape ``eval-protocol create rft`` uploads.

Each benchmark folder has an ``rft_dataset.py`` whose ``build_training_dataset()`` calls
:func:`training_rows`; ``eval-protocol create rft``, run in that folder, finds the function (its dataset
builder hook: a Metis evaluation takes its rows from ``--dataset``, not from ``input_dataset``), writes
the rows as JSONL and uploads them. A row is Eval Protocol's ``EvaluationRow`` as the benchmark's loader
made it: ``messages`` (the prompt), ``ground_truth``, ``input_metadata`` (row id, dataset info, empty
completion params) and nothing a run adds (no completion, no rollout ids, no model, no key). A source
inside the repository is recorded relative to it, so no local path is uploaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from metis_pytest.registry import Benchmark, DataSpec

REPO = Path(__file__).resolve().parents[1]
FIELDS = {"messages", "ground_truth", "input_metadata"}


def training_rows(bench: Benchmark, source: Path) -> list[dict[str, Any]]:
    """The rows of ``source`` loaded by ``bench``'s loader, as JSON-ready Eval Protocol rows."""
    rows = bench.load(DataSpec(source=str(source)))
    out = []
    for row in rows:
        data = row.model_dump(mode="json", include=FIELDS, exclude_none=True)
        info = data["input_metadata"].get("dataset_info") or {}
        if isinstance(info.get("source"), str) and Path(info["source"]).is_relative_to(REPO):
            info["source"] = Path(info["source"]).relative_to(REPO).as_posix()
        out.append(data)
    return out

"""GSM8K's Fireworks RFT dataset: the 12 problems of ``datasets/gsm8k_smoke.jsonl`` through GSM8K's loader.

``eval-protocol create rft``, run in this folder, calls ``build_training_dataset`` and uploads what it
returns (see ``evals/rft.py`` and the README's "Fireworks RFT").
"""

from __future__ import annotations

from typing import Any

from evals.gsm8k.benchmark import BENCHMARK
from evals.rft import REPO, training_rows

SOURCE = REPO / "datasets" / "gsm8k_smoke.jsonl"


def build_training_dataset() -> list[dict[str, Any]]:
    """The rows ``eval-protocol create rft`` uploads with this evaluator."""
    return training_rows(BENCHMARK, SOURCE)

"""ACE's Fireworks RFT dataset: the project's demo tasks (``datasets/ace_demo/``) through ACE's loader.

``eval-protocol create rft``, run in this folder, calls ``build_training_dataset`` and uploads what it
returns (see ``evals/rft.py`` and the README's "Fireworks RFT"); each row's ground truth is the task's
criteria.
"""

from __future__ import annotations

from typing import Any

from evals.ace.benchmark import BENCHMARK, DEMO_DIR
from evals.rft import training_rows


def build_training_dataset() -> list[dict[str, Any]]:
    """The rows ``eval-protocol create rft`` uploads with this evaluator."""
    return training_rows(BENCHMARK, DEMO_DIR)

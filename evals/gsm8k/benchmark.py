"""GSM8K's registry entry: the spec every face of the scorer reads (pytest, verl, Eval Protocol RFT).

Listed under the ``metis.benchmarks`` entry points in pyproject.toml as ``gsm8k``. Importing this
module is cheap: the loader (which needs Eval Protocol and, for the Hub, ``datasets``) is imported
only when rows are loaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from evals.gsm8k import prompts, scoring
from metis_pytest.registry import Benchmark, DataSpec, ScoreResult, register_benchmark


def _load(spec: DataSpec) -> list[Any]:
    from evals.gsm8k import dataset

    return dataset.load(spec.source, split=spec.split or "test", revision=spec.revision)


def _dataset_id(spec: DataSpec) -> str:
    from evals.gsm8k import dataset

    return dataset.dataset_id(spec.source)


def _dataset_revision(spec: DataSpec) -> str:
    from evals.gsm8k import dataset

    return dataset.dataset_revision(spec.source, spec.revision)


def score(completion: str, ground_truth: Any, metadata: Mapping[str, Any]) -> ScoreResult:
    """The pure GSM8K scorer as the harness calls it: ``<answer>`` tag primary, lm-eval filters beside."""
    result = scoring.score(completion, str(ground_truth))
    return ScoreResult(score=result.score, metrics=result.metrics, reason=result.reason,
                       details={"extracted": result.extracted, "gold": result.gold})


BENCHMARK = register_benchmark(Benchmark(
    name=scoring.BENCHMARK,
    version=scoring.VERSION,
    primary_metric=scoring.PRIMARY_METRIC,
    default_source="hf",
    load=_load,
    dataset_id=_dataset_id,
    dataset_revision=_dataset_revision,
    score=score,
    prompt_hash=prompts.prompt_hash(),
    metric_notes=scoring.METRIC_NOTES,
))

"""The benchmark registry: name -> loader, scorer, version, prompt hash. Read by every face of a scorer.

The pytest evaluation (``metis_pytest.ep.evaluation_test``), verl's ``compute_score`` and the Eval
Protocol evaluator all find a benchmark here, so they run the same scorer. A benchmark registers
itself with :func:`register_benchmark` (which returns the spec unchanged) and is listed for lookup by
name under the ``metis.benchmarks`` entry-point group of its distribution::

    [project.entry-points."metis.benchmarks"]
    gsm8k = "evals.gsm8k.benchmark:BENCHMARK"

so a new benchmark needs its own folder and that one line, no change to the harness. This module
imports nothing heavy: a spec's loader and scorer import what they need when called.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from eval_protocol.models import EvaluateResult, EvaluationRow

ENTRY_POINT_GROUP = "metis.benchmarks"


@dataclass(frozen=True)
class ScoreResult:
    """What a scorer returns: the score, per-metric values, and whether the score is real.

    ``valid=False`` means the scorer could not decide (a judge that never answered in its JSON
    contract): the row is recorded as errored at stage ``scoring`` (``retryable`` as the scorer says),
    never counted as a 0. ``details`` is JSON-safe extra data (extracted answers, judge verdicts)."""

    score: float
    metrics: Mapping[str, float] = field(default_factory=dict)
    reason: str = ""
    valid: bool = True
    retryable: bool = False
    details: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.valid and not math.isfinite(self.score):
            raise ValueError(f"a valid score must be a finite number, got {self.score!r}")

    def to_evaluate_result(self) -> EvaluateResult:
        """This result as Eval Protocol's ``EvaluateResult`` (imports eval_protocol lazily)."""
        from eval_protocol.models import EvaluateResult, MetricResult

        return EvaluateResult(
            score=float(self.score) if self.valid else 0.0,
            is_score_valid=self.valid,
            reason=self.reason,
            error=None if self.valid else self.reason,
            metrics={name: MetricResult(score=float(value), is_score_valid=self.valid, reason="")
                     for name, value in self.metrics.items()},
            trajectory_info={"metis": {"retryable": self.retryable, "details": dict(self.details)}},
        )


Scorer = Callable[..., Any]


@dataclass(frozen=True)
class Option:
    """One command-line option with its ini twin: flag, ini name, help, how to parse it, default.

    A benchmark declares its own in ``Benchmark.options``; ``affects`` says what its value changes,
    so it lands in the right place: ``data`` (which rows: in the :class:`DataSpec` the loader gets),
    ``rollout`` (what the model is asked to do: part of the completion key) or ``scoring`` (how rows
    are scored: part of the score key)."""

    flag: str
    ini: str
    help: str
    default: Any = None
    kind: str = "string"  # "string" | "int" | "float" | "list" | "bool"
    choices: tuple[str, ...] | None = None
    affects: str = "data"

    @property
    def name(self) -> str:
        return self.ini


@dataclass(frozen=True)
class DataSpec:
    """Where a benchmark's rows come from: ``--dataset``, ``--dataset-split``, ``--dataset-revision``,
    and the benchmark's own data options (``--domains``...) as sorted ``(ini name, value)`` pairs."""

    source: str
    split: str | None = None
    revision: str | None = None
    options: tuple[tuple[str, Any], ...] = ()

    def option(self, name: str, default: Any = None) -> Any:
        return dict(self.options).get(name, default)


@dataclass(frozen=True)
class Benchmark:
    """A benchmark as every face of Metis sees it.

    - ``load(spec)`` returns Eval Protocol rows; ``dataset_id(spec)`` / ``dataset_revision(spec)``
      name the data for provenance (a file's content hash, a Hub commit sha).
    - ``score(completion, ground_truth, metadata)`` is the pure scorer, the one function the pytest
      evaluation, verl's ``compute_score`` and the RFT evaluator call (a judged benchmark's scorer
      is a coroutine that also takes the judge and what it needs, as keywords).
    - ``processor`` names the rollout processor (``single_turn``; later ``agent``); ``axes`` names row
      metadata fields (``input_metadata.dataset_info``) that split a model's rows into separate test
      items, plus ``"run"`` for one item per ``--runs`` index, so ``pytest -n 8`` has work to spread and
      ``-k`` selects. With no axes there is one item per model.
    - a judged benchmark names its judge prompt's version (``judge_prompt_version``); the judge model
      and that version are part of the conditions of every score it records.
    - ``options``: the benchmark's own command-line options (:class:`Option`); ``breakdown``: row
      metadata fields the summary reports scores by (``domain``); ``toolbox``: for tool-calling
      processors, ``(session, row) -> Toolbox``; ``default_judge``: the judge when ``--judge-model``
      is not given; ``notes``: lines the summary and the terminal must show (an offline demo says so).
    """

    name: str
    version: str
    primary_metric: str
    default_source: str | Callable[[Any], str]  # or config -> source (an offline demo's own data)
    load: Callable[[DataSpec], list[EvaluationRow]]
    dataset_id: Callable[[DataSpec], str]
    dataset_revision: Callable[[DataSpec], str]
    score: Scorer
    prompt_hash: str | Callable[[], str] = ""  # or a function computing it when first needed
    processor: str = "single_turn"
    axes: tuple[str, ...] = ()
    judge_prompt_version: str | None = None
    metric_notes: Mapping[str, str] = field(default_factory=dict)
    options: tuple[Option, ...] = ()
    breakdown: tuple[str, ...] = ()
    toolbox: Callable[..., Any] | None = None
    default_judge: str | Callable[[Any], str] | None = None  # when --judge-model is not given
    notes: Callable[[Any], list[str]] | None = None  # config -> lines for the summary and the terminal
    requires_env: Callable[[Any], tuple[str, ...]] | None = None  # config -> variables its items need

    def prompt_hash_value(self) -> str:
        return self.prompt_hash() if callable(self.prompt_hash) else self.prompt_hash

    def source_for(self, config: Any) -> str:
        return self.default_source(config) if callable(self.default_source) else self.default_source

    def judge_for(self, config: Any) -> str | None:
        if getattr(config, "judge_model", None):
            return str(config.judge_model)
        return self.default_judge(config) if callable(self.default_judge) else self.default_judge


_REGISTRY: dict[str, Benchmark] = {}
_loaded_entry_points = False


def _origin(bench: Benchmark) -> tuple[Any, ...]:
    """Where a spec comes from: the same module imported again (pytester restores sys.modules after an
    in-process run) gives new function objects but the same origin."""
    def where(fn: Any) -> tuple[Any, Any]:
        return getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)

    return bench.version, where(bench.load), where(bench.score)


def register_benchmark(bench: Benchmark) -> Benchmark:
    """Make ``bench`` findable by name; returns it unchanged. Registering another spec under a name
    that is taken is an error (two benchmarks must not silently share a name); the same module's spec
    imported again replaces the old one."""
    known = _REGISTRY.get(bench.name)
    if known is not None and known is not bench and _origin(known) != _origin(bench):
        raise ValueError(f"benchmark {bench.name!r} is registered twice with different specs")
    _REGISTRY[bench.name] = bench
    return bench


def _load_entry_points() -> None:
    global _loaded_entry_points
    if _loaded_entry_points:
        return
    _loaded_entry_points = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in _REGISTRY:
            register_benchmark(_load(ep))


def _load(ep: Any) -> Benchmark:
    """One registry entry, with a clear error when another distribution's top-level package shadows ours."""
    import importlib

    top = ep.value.split(".", 1)[0].split(":", 1)[0]
    try:
        package = importlib.import_module(top)
    except ImportError as exc:
        raise ImportError(f"benchmark {ep.name!r} ({ep.value}): cannot import {top!r}: {exc}") from None
    if top == "evals" and not getattr(package, "__metis__", False):
        raise ImportError(f"benchmark {ep.name!r} ({ep.value}): the package 'evals' imported from "
                          f"{getattr(package, '__file__', '?')} is not Metis's: another distribution named "
                          "'evals' (OpenAI's) is installed in this environment; use a separate environment")
    bench = ep.load()
    if not isinstance(bench, Benchmark):
        raise TypeError(f"benchmark entry point {ep.name!r} ({ep.value}) is not a metis_pytest.registry.Benchmark")
    return bench


def get_benchmark(name: str) -> Benchmark:
    """The benchmark registered as ``name`` (entry points are read on first use)."""
    if name not in _REGISTRY:
        _load_entry_points()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown benchmark {name!r}; known: {', '.join(benchmark_names()) or 'none'}") from None


def benchmark_names() -> list[str]:
    _load_entry_points()
    return sorted(_REGISTRY)


def score_row(bench: Benchmark, row: EvaluationRow) -> ScoreResult:
    """Score an Eval Protocol row with its benchmark's scorer (the pytest face of the scorer)."""
    from metis_pytest.conversation import last_assistant_text

    info = row.input_metadata.dataset_info if row.input_metadata else None
    return bench.score(last_assistant_text(row), row.ground_truth, info or {})

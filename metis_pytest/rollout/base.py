"""What every Metis rollout processor shares: processors by name, run indexes, stored completions.

A benchmark names its processor (``Benchmark.processor``); :func:`register_processor` adds one, and
``--replay`` swaps any benchmark's processor for :class:`~metis_pytest.rollout.replay.ReplayProcessor`.
A factory takes the pytest session object and the benchmark and returns an Eval Protocol
``RolloutProcessor``. Rollout code never scores.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from eval_protocol.models import EvaluationRow

F = TypeVar("F", bound=Callable[..., Any])
_PROCESSORS: dict[str, Callable[..., Any]] = {}


def register_processor(name: str) -> Callable[[F], F]:
    """Decorator: make a processor factory ``(session, benchmark) -> RolloutProcessor`` selectable by name."""

    def deco(factory: F) -> F:
        _PROCESSORS[name] = factory
        return factory

    return deco


def processor_factory(name: str) -> Callable[..., Any]:
    from metis_pytest.rollout import agent, replay, single_turn  # noqa: F401  (their decorators register them)

    try:
        return _PROCESSORS[name]
    except KeyError:
        raise KeyError(f"unknown rollout processor {name!r}; known: {', '.join(sorted(_PROCESSORS))}") from None


@dataclass(frozen=True)
class StoredCompletion:
    """A completion recorded earlier for the same row and run index (``--resume``, ``--replay``).

    ``messages`` is the whole recorded conversation (tool calls and results included) when the record
    has it; otherwise ``content`` is appended as the assistant's reply."""

    content: str
    messages: list[dict[str, Any]] | None = None
    finish_reason: str | None = None
    usage: dict[str, int] | None = None
    source: str | None = None
    metadata: dict[str, Any] | None = None  # what the processor kept beside the messages (tool records)


# Given the public completion params and a row (its run index set), a stored completion or None.
Lookup = Callable[[dict[str, Any], "EvaluationRow"], "StoredCompletion | None"]


def run_index(row: EvaluationRow) -> int:
    return int((row.execution_metadata.extra or {}).get("run_index", 0))


class RunIndexer:
    """Numbers Eval Protocol's runs 0, 1, ... inside each item.

    Eval Protocol gives each run a random ``run_id`` and calls the processor once per run, in run
    order, before any of them awaits; the n-th distinct ``run_id`` of an experiment is run index n.
    A row whose index was set already (an item per run index) keeps it."""

    def __init__(self) -> None:
        self._runs: dict[str | None, dict[str | None, int]] = {}

    def stamp(self, rows: list[EvaluationRow]) -> None:
        for row in rows:
            meta = row.execution_metadata
            extra = dict(meta.extra or {})
            if "run_index" not in extra:
                runs = self._runs.setdefault(meta.experiment_id, {})
                extra["run_index"] = runs.setdefault(meta.run_id, len(runs))
                meta.extra = extra

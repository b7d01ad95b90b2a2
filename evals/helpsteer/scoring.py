"""Pure HelpSteer scorers: judge ratings and length statistics into one result, and calibration statistics.

No I/O and no model calls here: the judge's verdict (:mod:`evals.helpsteer.judge`) and ArmoRM's ratings
(:mod:`evals.helpsteer.armorm`) are computed by their callers and handed in.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from metis_pytest.registry import ScoreResult

from .dataset import ATTRIBUTES

__all__ = ["PRIMARY_METRIC", "VERSION", "attribute_result", "calibration", "length_stats", "pearson",
           "spearman"]

VERSION = "1.0.0"
PRIMARY_METRIC = "helpfulness"
_WORD = re.compile(r"\S+")


def length_stats(text: str) -> dict[str, float]:
    """``chars``, ``words`` (runs of non-space) and ``lines`` (non-empty) of a response."""
    return {"chars": float(len(text)), "words": float(len(_WORD.findall(text))),
            "lines": float(sum(1 for line in text.splitlines() if line.strip()))}


def attribute_result(response: str, ratings: Mapping[str, int] | None, *, judge_record: Mapping[str, Any],
                     armorm: Mapping[str, float] | None = None) -> ScoreResult:
    """One generated response's result: the judge's five ratings as metrics (``helpfulness`` is the
    score), ArmoRM's as ``armorm_<attribute>`` when given, and :func:`length_stats`. ``ratings=None``
    (the judge never answered in its contract) is an invalid, retryable result, never a 0."""
    lengths = length_stats(response)
    if ratings is None:
        return ScoreResult(score=0.0, valid=False, retryable=bool(judge_record.get("retryable", True)),
                           reason=f"judge gave no valid ratings: {judge_record.get('error')}",
                           details={"judge": dict(judge_record)})
    metrics = {name: float(ratings[name]) for name in ATTRIBUTES}
    metrics.update({f"armorm_{name}": float(value) for name, value in (armorm or {}).items()})
    metrics.update(lengths)
    reason = ", ".join(f"{name}={ratings[name]}" for name in ATTRIBUTES)
    return ScoreResult(score=metrics[PRIMARY_METRIC], metrics=metrics, reason=reason,
                       details={"judge": dict(judge_record), "ratings": dict(ratings)})


def _ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, ties given their average rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Pearson's r; ``None`` when either side is constant or there are fewer than two points."""
    if len(x) != len(y):
        raise ValueError("x and y differ in length")
    n = len(x)
    if n < 2:
        return None
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx, syy = sum((a - mx) ** 2 for a in x), sum((b - my) ** 2 for b in y)
    if sxx == 0 or syy == 0:
        return None
    return sxy / math.sqrt(sxx * syy)


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rho: Pearson's r of the tie-averaged ranks."""
    return pearson(_ranks(x), _ranks(y))


def calibration(judged: Sequence[Mapping[str, float]], human: Sequence[Mapping[str, float]]
                ) -> dict[str, dict[str, float | None]]:
    """Per attribute: ``spearman``, ``pearson``, ``mae`` (mean absolute error) of the judge's ratings
    against the human ones, and ``n``. ``judged[i]`` and ``human[i]`` rate the same response."""
    if len(judged) != len(human):
        raise ValueError("as many judged as human ratings are needed")
    out: dict[str, dict[str, float | None]] = {}
    for name in ATTRIBUTES:
        j = [float(r[name]) for r in judged]
        h = [float(r[name]) for r in human]
        out[name] = {"spearman": spearman(j, h), "pearson": pearson(j, h),
                     "mae": sum(abs(a - b) for a, b in zip(j, h)) / len(j) if j else None, "n": float(len(j))}
    return out

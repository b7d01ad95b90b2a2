"""Paired tests for a regression gate: pure functions over two lists of per-row values, no I/O.

Both lists hold one value per row both runs share, in the same order (row ``i`` of the baseline is
paired with row ``i`` of the new run), so the unit of noise is the row, as in the run store's
standard errors. Which test runs is decided by the values:

- **0/1 values on both sides** (GSM8K's ``answer_tag``, ACE's ``hurdle_pass``): the exact two-sided
  McNemar test, i.e. a binomial test with p = 1/2 on the discordant pairs (``b`` rows right in the
  baseline and wrong now, ``c`` the other way): ``p = min(1, 2 * P(X <= min(b, c)))`` for
  ``X ~ Binomial(b + c, 1/2)``, and 1 when no pair is discordant. The delta is ``(c - b) / n``; its
  95% interval is Wald's for a paired difference of proportions,
  ``delta ± 1.96 * sqrt(b + c - (c - b)^2 / n) / n`` (closed form, so it can be checked by hand; it is
  narrow at small n, which is why the gate's p rule reads the exact p, never the interval).
- **anything else** (ACE's task scores in [-1, 1]): a paired bootstrap over the per-row differences,
  seeded (``random.Random(seed)``, whose stream Python keeps stable), ``resamples`` times: the mean
  difference, the 2.5th and 97.5th percentiles of the resampled means (linear interpolation) as the
  95% interval, and the two-sided p ``min(1, 2 * (1 + min(#{m <= 0}, #{m >= 0})) / (resamples + 1))``,
  which is below 0.05 exactly when 0 lies far enough in a tail of the resampled means. With fewer than
  two rows there is no spread to resample: the delta is reported, the interval and p are not.

With no rows at all (n = 0) nothing is estimated: the test is ``"none"`` and delta, interval and p
are all ``None``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

Z95 = 1.959963984540054  # the 97.5th percentile of the standard normal
DEFAULT_RESAMPLES = 10_000
DEFAULT_SEED = 0


@dataclass(frozen=True)
class PairedResult:
    """One paired comparison: ``delta`` is new minus baseline, in the metric's own units."""

    test: str  # "mcnemar" | "bootstrap" | "none" (n = 0)
    n: int
    baseline_mean: float | None
    new_mean: float | None
    delta: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    worse: int = 0  # rows whose value went down (McNemar's b; the bootstrap's negative differences)
    better: int = 0  # rows whose value went up (McNemar's c)


def binomial_two_sided(k: int, m: int) -> float:
    """Exact two-sided p of ``k`` successes (or fewer, or as extreme) in ``m`` fair coin flips."""
    if m == 0:
        return 1.0
    low = min(k, m - k)
    tail = sum(math.comb(m, i) for i in range(low + 1)) / 2**m
    return min(1.0, 2 * tail)


def mcnemar(baseline: Sequence[float], new: Sequence[float]) -> PairedResult:
    """Exact McNemar over paired 0/1 values (see the module docstring)."""
    _check_pairs(baseline, new)
    n = len(baseline)
    if n == 0:
        return _empty()
    b = sum(1 for x, y in zip(baseline, new) if x == 1 and y == 0)
    c = sum(1 for x, y in zip(baseline, new) if x == 0 and y == 1)
    delta = (c - b) / n
    half = Z95 * math.sqrt(max(0.0, b + c - (c - b) ** 2 / n)) / n
    return PairedResult("mcnemar", n, sum(baseline) / n, sum(new) / n, delta, delta - half, delta + half,
                        binomial_two_sided(b, b + c), worse=b, better=c)


def paired_bootstrap(baseline: Sequence[float], new: Sequence[float], *, seed: int = DEFAULT_SEED,
                     resamples: int = DEFAULT_RESAMPLES) -> PairedResult:
    """Seeded paired bootstrap of the mean difference (see the module docstring)."""
    _check_pairs(baseline, new)
    n = len(baseline)
    if n == 0:
        return _empty()
    diffs = [y - x for x, y in zip(baseline, new)]
    delta = math.fsum(diffs) / n
    worse, better = sum(1 for d in diffs if d < 0), sum(1 for d in diffs if d > 0)
    base_mean, new_mean = math.fsum(baseline) / n, math.fsum(new) / n
    if n < 2:
        return PairedResult("bootstrap", n, base_mean, new_mean, delta, None, None, None, worse, better)
    rng = random.Random(seed)
    means = sorted(math.fsum(rng.choices(diffs, k=n)) / n for _ in range(resamples))
    at_or_below = sum(1 for m in means if m <= 0)
    at_or_above = sum(1 for m in means if m >= 0)
    p = min(1.0, 2 * (1 + min(at_or_below, at_or_above)) / (resamples + 1))
    return PairedResult("bootstrap", n, base_mean, new_mean, delta, percentile(means, 0.025),
                        percentile(means, 0.975), p, worse, better)


def paired_test(baseline: Sequence[float], new: Sequence[float], *, seed: int = DEFAULT_SEED,
                resamples: int = DEFAULT_RESAMPLES) -> PairedResult:
    """McNemar when every value on both sides is 0 or 1, else the paired bootstrap."""
    if all(v in (0, 1) for v in (*baseline, *new)):
        return mcnemar(baseline, new)
    return paired_bootstrap(baseline, new, seed=seed, resamples=resamples)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q`` quantile of sorted values, interpolating linearly between neighbours."""
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def _check_pairs(baseline: Sequence[float], new: Sequence[float]) -> None:
    if len(baseline) != len(new):
        raise ValueError(f"paired values: {len(baseline)} baseline values but {len(new)} new ones")


def _empty() -> PairedResult:
    return PairedResult("none", 0, None, None, None, None, None, None)

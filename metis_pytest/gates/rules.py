"""``--metis-compare-fail`` rules: ``[BENCH/]METRIC:RULE``, parsed once, applied to paired results.

- ``METRIC`` is ``score`` (the benchmark's primary score) or the name of one of its metrics
  (``flexible_extract``); ``gsm8k/flexible_extract`` scopes the rule to one benchmark, so one session
  can gate several benchmarks whose metrics differ. An unscoped rule whose metric a compared
  benchmark does not have fails that benchmark's items (a typo must not pass silently).
- ``-2pp`` (any signed number, then ``pp``): fail when the paired delta, in percentage points of
  the metric (hundredths of its unit: 0.01 for a 0/1 metric, also for ACE's [-1, 1] scores), is
  strictly below the number. ``0pp`` fails on any decrease; ``-2pp`` tolerates a drop of exactly 2.
- ``p<0.05`` (a level in (0, 1]): fail when the paired test's two-sided p-value is strictly below the
  level **and** the delta is negative (a significant improvement never fails). A comparison with no
  p-value (fewer than two rows for the bootstrap) is reported as such and this rule does not fire.

Every rule fails when the two runs share no scored row (n = 0): there is nothing to judge.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from metis_pytest.gates.stats import PairedResult

_PP = re.compile(r"([+-]?\d+(?:\.\d+)?)pp")
_P = re.compile(r"p<(\d*\.?\d+)")
_METRIC = re.compile(r"(?:([A-Za-z0-9._-]+)/)?([A-Za-z0-9._-]+)")


@dataclass(frozen=True)
class Rule:
    """One gate rule (see the module docstring)."""

    text: str
    metric: str
    kind: str  # "pp" | "p"
    threshold: float  # percentage points for "pp"; the significance level for "p"
    benchmark: str | None = None  # a rule scoped to one benchmark

    def applies_to(self, benchmark: str) -> bool:
        return self.benchmark is None or self.benchmark == benchmark

    def violation(self, result: PairedResult) -> str | None:
        """Why ``result`` fails this rule, or None when it passes."""
        if result.n == 0 or result.delta is None:
            return f"{self.text}: no scored row in common with the baseline, nothing to judge"
        delta_pp = round(result.delta * 100, 9)
        if self.kind == "pp":
            if delta_pp < self.threshold:
                return f"{self.text}: delta {delta_pp:+.2f}pp is below {self.threshold:+g}pp"
            return None
        if result.p_value is not None and result.p_value < self.threshold and result.delta < 0:
            return f"{self.text}: p={result.p_value:.4g} < {self.threshold:g} with delta {delta_pp:+.2f}pp"
        return None


def parse_rule(text: str) -> Rule:
    """A rule from ``[BENCH/]METRIC:RULE``; ValueError saying what is wrong."""
    metric_part, sep, rule_part = text.strip().partition(":")
    metric = _METRIC.fullmatch(metric_part.strip())
    if not sep or metric is None:
        raise ValueError(f"{text!r}: expected METRIC:RULE, e.g. score:-2pp or score:p<0.05")
    bench, name = metric.group(1), metric.group(2)
    rule_part = rule_part.strip().replace(" ", "")
    if (pp := _PP.fullmatch(rule_part)) is not None:
        return Rule(text.strip(), name, "pp", float(pp.group(1)), bench)
    if (p := _P.fullmatch(rule_part)) is not None:
        level = float(p.group(1))
        if not 0 < level <= 1:
            raise ValueError(f"{text!r}: the p-value level must be in (0, 1], got {level:g}")
        return Rule(text.strip(), name, "p", level, bench)
    raise ValueError(f"{text!r}: unknown rule {rule_part!r}; use a threshold in percentage points (-2pp) "
                     "or a significance level (p<0.05)")

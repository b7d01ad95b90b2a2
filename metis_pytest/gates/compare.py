"""A run's rows against a baseline's: pairing, the paired test per metric, the rules, the report.

Rows are paired by (row id, run index). Nothing is dropped without being counted: rows only in the
baseline (not run now: ``--max-rows``, ``-k``, fewer ``--runs``), rows only in this run, and, among
rows on both sides, those without a value of the metric on one side (errored, or not scored for it)
are shown with every comparison. The paired test (``metis_pytest.gates.stats``) runs over the rest.

A comparison is **refused** when the baseline was made under another benchmark, benchmark version,
dataset (id, revision or split) or prompt hash: the scores would not measure the same thing. The
report names every field that differs; ``--metis-compare-force`` compares anyway and keeps those
lines in the report. Another model, sampling or judge is shown, never refused (comparing a new
checkpoint against the old one's baseline is the point).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from metis_pytest.gates.baseline import Baseline, BaselineRow, differences
from metis_pytest.gates.rules import Rule
from metis_pytest.gates.stats import DEFAULT_SEED, PairedResult, paired_test


@dataclass(frozen=True)
class MetricComparison:
    """The paired result of one metric, with what could not be paired."""

    metric: str
    result: PairedResult
    only_baseline: int
    only_new: int
    unscored_baseline: int
    unscored_new: int


@dataclass
class Comparison:
    """One (benchmark, model) against one baseline file (``where`` names the file as shown)."""

    benchmark: str
    model: str
    where: str
    metrics: list[MetricComparison] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # identity fields that differ
    forced: bool = False
    context: list[str] = field(default_factory=list)  # model / sampling / judge fields that differ
    failures: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # no baseline, unknown metric

    @property
    def failed(self) -> bool:
        return bool(self.failures)

    def report(self) -> str:
        """The text shown on the item and in the terminal summary."""
        lines = [f"{self.benchmark} [{self.model}] vs {self.where}:"]
        if self.refused and not self.forced:
            lines.append("  refused: the baseline was made under other conditions; pass --metis-compare-force "
                         "to compare anyway:")
        elif self.refused:
            lines.append("  compared under --metis-compare-force although these differ:")
        lines += [f"    {d}" for d in self.refused]
        lines += [f"  note: {d}" for d in self.context]
        lines += [f"  {p}" for p in self.problems]
        for m in self.metrics:
            lines.append(f"  {describe(m.metric, m.result)}")
            lines.append(f"    rows: {m.result.n} paired; {m.only_baseline} only in the baseline, {m.only_new} only "
                         f"in this run; without a {m.metric} value: {m.unscored_baseline} in the baseline, "
                         f"{m.unscored_new} in this run")
        lines += [f"  FAILED {f}" for f in self.failures]
        if not self.failures and not (self.refused and not self.forced):
            lines.append("  passed" if self.metrics else "  nothing compared")
        return "\n".join(lines)

    def properties(self) -> list[tuple[str, Any]]:
        """JUnit properties (``record_property``): the gate's outcome and each metric's paired numbers."""
        props: list[tuple[str, Any]] = [("compare.baseline", self.where),
                                        ("gate", "failed" if self.failed else "passed")]
        if self.failures:
            props.append(("gate.reason", "; ".join(self.failures)))
        for m in self.metrics:
            r, prefix = m.result, f"compare.{m.metric}"
            props += [(f"{prefix}.test", r.test), (f"{prefix}.n", r.n), (f"{prefix}.delta", number_text(r.delta)),
                      (f"{prefix}.ci95", "" if r.ci_low is None else f"{number_text(r.ci_low)} {number_text(r.ci_high)}"),
                      (f"{prefix}.p", number_text(r.p_value)),
                      (f"{prefix}.missing", f"only_baseline={m.only_baseline} only_new={m.only_new} "
                                            f"unscored_baseline={m.unscored_baseline} unscored_new={m.unscored_new}")]
        return props


def compare(baseline: Baseline, rows: Iterable[BaselineRow], *, where: str, identity: dict[str, Any],
            context: dict[str, Any], rules: Sequence[Rule], force: bool = False,
            expected: Iterable[BaselineRow] | None = None, seed: int = DEFAULT_SEED) -> Comparison:
    """Compare this run's ``rows`` with the baseline's (``expected``: the baseline rows this run should
    have, by default all of them; an item of one shard expects only that shard's)."""
    bench, model = identity["benchmark"], context["model"]
    out = Comparison(bench, model, where, refused=differences(baseline.identity(), identity), forced=force,
                     context=differences(baseline.context(), context))
    if out.refused and not force:
        out.failures.append("refused: the baseline was made under other conditions (above)")
        return out
    old = {r.key: r for r in (baseline.rows if expected is None else expected)}
    new = {r.key: r for r in rows}
    rules = [r for r in rules if r.applies_to(bench)]
    names = ["score", *dict.fromkeys(r.metric for r in rules if r.metric != "score")]
    known = {"score"} | {m for r in (*baseline.rows, *new.values()) for m in r.metrics}
    for name in names:
        if name not in known:
            out.problems.append(f"metric {name!r}: neither the baseline nor this run has it "
                                f"(known: {', '.join(sorted(known))})")
            out.failures.extend(f"{r.text}: unknown metric {name!r}" for r in rules if r.metric == name)
            continue
        m = compare_metric(name, old, new, seed=seed)
        out.metrics.append(m)
        out.failures.extend(v for r in rules if r.metric == name and (v := r.violation(m.result)) is not None)
    return out


def compare_metric(metric: str, old: dict[tuple[str, int], BaselineRow], new: dict[tuple[str, int], BaselineRow],
                   *, seed: int = DEFAULT_SEED) -> MetricComparison:
    both = sorted(old.keys() & new.keys())
    base_values, new_values = [], []
    unscored_old = unscored_new = 0
    for key in both:
        a, b = old[key].value(metric), new[key].value(metric)
        unscored_old += a is None
        unscored_new += b is None
        if a is not None and b is not None:
            base_values.append(float(a))
            new_values.append(float(b))
    return MetricComparison(metric, paired_test(base_values, new_values, seed=seed),
                            only_baseline=len(old.keys() - new.keys()), only_new=len(new.keys() - old.keys()),
                            unscored_baseline=unscored_old, unscored_new=unscored_new)


def missing_baseline(benchmark: str, model: str, where: str, rules: Sequence[Rule]) -> Comparison:
    """No baseline file: a problem that fails the gate when there are rules to apply."""
    out = Comparison(benchmark, model, where)
    out.problems.append(f"no baseline at {where} (save one with --metis-save-baseline)")
    if any(r.applies_to(benchmark) for r in rules):
        out.failures.append(f"no baseline to compare with at {where}")
    return out


def describe(metric: str, r: PairedResult) -> str:
    """``score: 0.750 -> 0.583, delta -16.67pp, 95% CI [-35.51, +2.17]pp, McNemar exact p=0.375, n=12 (3 worse, 1 better)``."""
    if r.n == 0 or r.delta is None:
        return f"{metric}: no scored row in common (n=0)"
    test = {"mcnemar": "McNemar exact", "bootstrap": "paired bootstrap"}[r.test]
    ci = "n/a" if r.ci_low is None or r.ci_high is None else f"[{r.ci_low * 100:+.2f}, {r.ci_high * 100:+.2f}]pp"
    p = "n/a (fewer than 2 rows)" if r.p_value is None else f"{r.p_value:.4g}"
    return (f"{metric}: {r.baseline_mean:.3f} -> {r.new_mean:.3f}, delta {r.delta * 100:+.2f}pp, 95% CI {ci}, "
            f"{test} p={p}, n={r.n} ({r.worse} worse, {r.better} better)")


def number_text(value: float | None) -> str:
    """A number as a JUnit property shows it (6 significant digits; empty for None)."""
    return "" if value is None else f"{value:.6g}"

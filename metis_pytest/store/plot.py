"""A picture of a benchmark's results: every model's metrics side by side, with 95% intervals.

Written by the controller at the end of a session as ``<output-dir>/<benchmark>/summary.png`` (from
every ``<model>/summary.json`` in that folder, so models run in different sessions appear together),
and on demand by ``metis plot runs/``. :func:`bar_chart` and :func:`trend_chart` are the two chart
shapes, shared with ``metis report`` (scores by group, run-over-run trends); every interval drawn is
mean ± 1.96 × stderr.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

Z95 = 1.96  # a normal 95% interval: mean ± Z95 × stderr


class Series(NamedTuple):
    """One model's bars (a value per category) or one line of a trend (a value per x); None: no value."""

    label: str
    means: Sequence[float | None]
    stderrs: Sequence[float | None]
    xs: Sequence[int] = ()  # a trend's x positions (history entry numbers); unused by bar charts


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _summaries(bench_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(bench_dir.glob("*/summary.json"))]


def plot_benchmark(bench_dir: Path) -> Path | None:
    """Write ``bench_dir/summary.png`` (and ``summary_by_<field>.png`` for a benchmark with a
    breakdown); returns the first path, or None when there is nothing to draw."""
    summaries = [s for s in _summaries(bench_dir) if s.get("metrics")]
    if not summaries:
        return None
    plt = _pyplot()
    for group in sorted({g for s in summaries for g in (s.get("by") or {})}):
        _plot_by(bench_dir, summaries, group)

    primary = summaries[0].get("primary_metric")
    metrics = sorted({m for s in summaries for m in s["metrics"]}, key=lambda m: (m != primary, m))
    width = 0.8 / len(summaries)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(metrics) * max(1, len(summaries)) ** 0.5), 4.2))
    low = 0.0
    for i, s in enumerate(summaries):
        means = [(s["metrics"].get(m) or {}).get("mean") or 0.0 for m in metrics]
        errs = [Z95 * ((s["metrics"].get(m) or {}).get("stderr") or 0.0) for m in metrics]
        low = min([low] + [m - e for m, e in zip(means, errs)])
        xs = [j + (i - (len(summaries) - 1) / 2) * width for j in range(len(metrics))]
        label = f"{s['model']} (n={s['n']}, errored={s['n_errored']})"
        bars = ax.bar(xs, means, width, yerr=errs, capsize=3, label=label)
        ax.bar_label(bars, labels=[f"{v:.3f}" for v in means], fontsize=8, padding=2)
    ax.set_xticks(range(len(metrics)), [f"{m}\n(primary)" if m == primary else m for m in metrics])
    ax.set_ylim(low - 0.05 if low < 0 else 0, 1.05)  # ACE's scores go down to -1
    if low < 0:
        ax.axhline(0, color="black", linewidth=0.6)
    ax.set_ylabel("mean score (95% CI)")
    version = summaries[0].get("benchmark_version")
    ax.set_title(f"{summaries[0].get('benchmark')} v{version}" if version else str(summaries[0].get("benchmark")))
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    out = bench_dir / "summary.png"
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def _plot_by(bench_dir: Path, summaries: list[dict[str, Any]], group: str) -> Path:
    """The primary score by one breakdown field (``domain``), a bar per model, 95% intervals."""
    values = sorted({v for s in summaries for v in (s.get("by") or {}).get(group, {})})
    series = []
    for s in summaries:
        parts = (s.get("by") or {}).get(group, {})
        series.append(Series(f"{s['model']} (n={s['n']})", [(parts.get(v) or {}).get("score") for v in values],
                             [(parts.get(v) or {}).get("stderr") for v in values]))
    return bar_chart(bench_dir / f"summary_by_{group}.png", values, series,
                     ylabel=f"{summaries[0].get('primary_metric') or 'score'} (95% CI)",
                     title=f"{summaries[0].get('benchmark')} by {group}")


def bar_chart(out: Path, categories: Sequence[str], series: Sequence[Series], *, ylabel: str, title: str) -> Path:
    """A bar per series in each category, labelled with its value, 95% error bars; a missing value
    is drawn as 0 with no label. The y axis spans [0, 1] and more where a bar or interval goes beyond
    (below 0 for ACE's [-1, 1] scores)."""
    plt = _pyplot()
    width = 0.8 / max(1, len(series))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.4 * len(categories) * max(1, len(series)) ** 0.5), 4.2))
    lows, highs = [0.0], [1.0]
    for i, one in enumerate(series):
        means = [m or 0.0 for m in one.means]
        errs = [Z95 * (e or 0.0) for e in one.stderrs]
        lows += [m - e for m, e in zip(means, errs)]
        highs += [m + e for m, e in zip(means, errs)]
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(categories))]
        bars = ax.bar(xs, means, width, yerr=errs, capsize=3, label=one.label)
        ax.bar_label(bars, labels=["" if m is None else f"{m:.2f}" for m in one.means], fontsize=8, padding=2)
    ax.set_xticks(range(len(categories)), list(categories))
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_ylim(min(-0.05, min(lows) - 0.05), max(highs) + (0.05 if max(highs) <= 1.0 else 0.12))
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def trend_chart(out: Path, lines: Sequence[Series], *, ylabel: str, title: str) -> Path:
    """A line per series over its ``xs`` (points without a value are left out), 95% error bars."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6.0, 0.5 * max((len(s.xs) for s in lines), default=0)), 4.2))
    low, high = 0.0, 1.0
    for one in lines:
        points = [(x, m, Z95 * (e or 0.0)) for x, m, e in zip(one.xs, one.means, one.stderrs) if m is not None]
        if not points:
            continue
        xs, means, errs = zip(*points)
        low = min([low] + [m - e for m, e in zip(means, errs)])
        high = max([high] + [m + e for m, e in zip(means, errs)])
        ax.errorbar(xs, means, yerr=errs, marker="o", capsize=3, label=one.label)
    ticks = sorted({x for one in lines for x in one.xs})
    ax.set_xticks(ticks, [str(x) for x in ticks])
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_ylim(min(-0.05, low - 0.05), high + 0.05)
    ax.set_xlabel("history entry")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out

"""A picture of a benchmark's results: every model's metrics side by side, with 95% intervals.

Written by the controller at the end of a session as ``<output-dir>/<benchmark>/summary.png`` (from
every ``<model>/summary.json`` in that folder, so models run in different sessions appear together),
and on demand by ``metis plot runs/``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _summaries(bench_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(bench_dir.glob("*/summary.json"))]


def plot_benchmark(bench_dir: Path) -> Path | None:
    """Write ``bench_dir/summary.png`` (and ``summary_by_<field>.png`` for a benchmark with a
    breakdown); returns the first path, or None when there is nothing to draw."""
    summaries = [s for s in _summaries(bench_dir) if s.get("metrics")]
    if not summaries:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for group in sorted({g for s in summaries for g in (s.get("by") or {})}):
        _plot_by(plt, bench_dir, summaries, group)

    primary = summaries[0].get("primary_metric")
    metrics = sorted({m for s in summaries for m in s["metrics"]}, key=lambda m: (m != primary, m))
    width = 0.8 / len(summaries)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(metrics) * max(1, len(summaries)) ** 0.5), 4.2))
    low = 0.0
    for i, s in enumerate(summaries):
        means = [(s["metrics"].get(m) or {}).get("mean") or 0.0 for m in metrics]
        errs = [1.96 * ((s["metrics"].get(m) or {}).get("stderr") or 0.0) for m in metrics]
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


def _plot_by(plt: Any, bench_dir: Path, summaries: list[dict[str, Any]], group: str) -> Path:
    """The primary score by one breakdown field (``domain``), a bar per model, 95% intervals."""
    values = sorted({v for s in summaries for v in (s.get("by") or {}).get(group, {})})
    width = 0.8 / len(summaries)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.4 * len(values) * max(1, len(summaries)) ** 0.5), 4.2))
    lows = [0.0]
    for i, s in enumerate(summaries):
        parts = (s.get("by") or {}).get(group, {})
        means = [(parts.get(v) or {}).get("score") or 0.0 for v in values]
        errs = [1.96 * ((parts.get(v) or {}).get("stderr") or 0.0) for v in values]
        lows += [m - e for m, e in zip(means, errs)]
        xs = [j + (i - (len(summaries) - 1) / 2) * width for j in range(len(values))]
        bars = ax.bar(xs, means, width, yerr=errs, capsize=3, label=f"{s['model']} (n={s['n']})")
        ax.bar_label(bars, labels=[f"{v:.2f}" for v in means], fontsize=8, padding=2)
    ax.set_xticks(range(len(values)), values)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_ylim(min(-0.05, min(lows) - 0.05), 1.05)
    ax.set_ylabel(f"{summaries[0].get('primary_metric') or 'score'} (95% CI)")
    ax.set_title(f"{summaries[0].get('benchmark')} by {group}")
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    out = bench_dir / f"summary_by_{group}.png"
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out

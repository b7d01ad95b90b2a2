"""Policies in objective space: a comparison table and a Pareto-front PNG across the w-grid.

Input: each policy's per-prompt metrics (``policy -> prompt_id -> metric -> value``), read from a run
folder's ``helpsteer/<model>/rows.jsonl`` (:func:`read_run`) or built by hand, and the policy's ``w``.
Every policy must have answered the same prompts (:func:`evals.helpsteer.policies.check_same_prompts`
raises otherwise). Each objective's mean gets a percentile bootstrap interval (resampling prompts, the
same resample for every policy, seeded). A policy is *non-dominated* when no other is at least as good
on every objective and strictly better on one (all objectives maximised; pass a negated metric to
minimise). Run it on a finished evaluation::

    python -m evals.helpsteer.pareto runs --w sft=0 --w w0.5=0.5 --w w1=1 --x helpfulness --y verbosity
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .policies import check_same_prompts

__all__ = ["PolicyPoint", "compare", "non_dominated", "plot_front", "read_run", "table_markdown"]

Scores = Mapping[str, Mapping[str, Mapping[str, float]]]  # policy -> prompt id -> metric -> value


@dataclass(frozen=True)
class PolicyPoint:
    """One policy: its w, mean and bootstrap interval per objective, and whether it is on the front."""

    policy: str
    w: float | None
    means: dict[str, float]
    intervals: dict[str, tuple[float, float]]
    n: int
    non_dominated: bool = False


def non_dominated(points: Sequence[Mapping[str, float]], objectives: Sequence[str]) -> list[bool]:
    """For each point, whether no other point dominates it (maximising every objective)."""
    out = []
    for p in points:
        dominated = any(all(q[o] >= p[o] for o in objectives) and any(q[o] > p[o] for o in objectives)
                        for q in points if q is not p)
        out.append(not dominated)
    return out


def compare(scores: Scores, objectives: Sequence[str], w: Mapping[str, float] | None = None, *,
            n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> list[PolicyPoint]:
    """The points of every policy (sorted by w, then name), front marked, intervals by bootstrap."""
    ids = check_same_prompts(scores)
    rng = random.Random(seed)
    resamples = [[rng.randrange(len(ids)) for _ in ids] for _ in range(n_boot)]
    lo_q, hi_q = (1 - level) / 2, 1 - (1 - level) / 2
    points = []
    for policy, rows in scores.items():
        means, intervals = {}, {}
        for o in objectives:
            values = [float(rows[i][o]) for i in ids]
            means[o] = sum(values) / len(values)
            boots = sorted(sum(values[k] for k in sample) / len(sample) for sample in resamples)
            intervals[o] = (boots[int(lo_q * (n_boot - 1))], boots[int(round(hi_q * (n_boot - 1)))])
        points.append(PolicyPoint(policy, (w or {}).get(policy), means, intervals, len(ids)))
    flags = non_dominated([p.means for p in points], objectives)
    points = [PolicyPoint(p.policy, p.w, p.means, p.intervals, p.n, flag) for p, flag in zip(points, flags)]
    return sorted(points, key=lambda p: (p.w is None, p.w if p.w is not None else 0.0, p.policy))


def table_markdown(points: Sequence[PolicyPoint], objectives: Sequence[str]) -> str:
    """A Markdown table: policy, w, each objective as ``mean [lo, hi]``, and ``*`` on the front."""
    head = "| policy | w | " + " | ".join(objectives) + " | front |"
    rule = "|---|---|" + "---|" * len(objectives) + "---|"
    lines = [head, rule]
    for p in points:
        cells = [f"{p.means[o]:.3f} [{p.intervals[o][0]:.3f}, {p.intervals[o][1]:.3f}]" for o in objectives]
        w = "" if p.w is None else f"{p.w:g}"
        lines.append(f"| {p.policy} | {w} | " + " | ".join(cells) + f" | {'*' if p.non_dominated else ''} |")
    return "\n".join(lines) + "\n"


def plot_front(points: Sequence[PolicyPoint], x: str, y: str, path: Path) -> Path:
    """A PNG of the policies on objectives ``x`` and ``y``: bootstrap intervals as error bars, the
    non-dominated ones (on these two objectives) filled and joined, each labelled with its w."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    front = non_dominated([p.means for p in points], [x, y])
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for p, on_front in zip(points, front):
        xe = [[p.means[x] - p.intervals[x][0]], [p.intervals[x][1] - p.means[x]]]
        ye = [[p.means[y] - p.intervals[y][0]], [p.intervals[y][1] - p.means[y]]]
        ax.errorbar(p.means[x], p.means[y], xerr=xe, yerr=ye, fmt="o", color="C0" if on_front else "0.6",
                    mfc="C0" if on_front else "white", capsize=3)
        ax.annotate(p.policy if p.w is None else f"w={p.w:g}", (p.means[x], p.means[y]),
                    textcoords="offset points", xytext=(5, 5), fontsize=8)
    chain = sorted((p for p, f in zip(points, front) if f), key=lambda p: p.means[x])
    ax.plot([p.means[x] for p in chain], [p.means[y] for p in chain], "-", color="C0", alpha=0.6,
            label="non-dominated")
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.legend(loc="best", fontsize=8)
    ax.set_title("HelpSteer objectives across w (bootstrap intervals)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def read_run(run_dir: Path, benchmark: str = "helpsteer") -> dict[str, dict[str, dict[str, float]]]:
    """``model -> row id -> metrics`` of the scored rows in ``run_dir/<benchmark>/*/rows.jsonl`` (the
    last record of a row wins: a resumed run appends)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for rows in sorted((run_dir / benchmark).glob("*/rows.jsonl")):
        for line in rows.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            record = json.loads(line)
            if record.get("status") == "scored":
                out.setdefault(str(record["model"]), {})[str(record["row_id"])] = dict(record.get("metrics") or {})
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evals.helpsteer.pareto", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--w", action="append", default=[], help="POLICY=W (repeat)")
    parser.add_argument("--x", default="helpfulness")
    parser.add_argument("--y", default="verbosity")
    parser.add_argument("--objectives", default="helpfulness,correctness,coherence,complexity,verbosity")
    parser.add_argument("--out", type=Path, help="Folder for pareto.md, pareto.json and pareto.png "
                                                 "(default: RUN_DIR/helpsteer)")
    args = parser.parse_args(argv)
    w = {k: float(v) for k, _, v in (item.partition("=") for item in args.w)}
    objectives = [o for o in args.objectives.split(",") if o]
    points = compare(read_run(args.run_dir), objectives, w)
    out = args.out or args.run_dir / "helpsteer"
    out.mkdir(parents=True, exist_ok=True)
    (out / "pareto.md").write_text(table_markdown(points, objectives), encoding="utf-8")
    (out / "pareto.json").write_text(json.dumps([vars(p) for p in points], indent=1), encoding="utf-8")
    plot_front(points, args.x, args.y, out / "pareto.png")
    print(table_markdown(points, objectives), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

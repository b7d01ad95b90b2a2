"""What one GSM8K row costs in the Metis item, piece by piece: the budget behind "replay >= 5,000 rows/s".

Each piece of a replayed row's own work, timed alone in one process over N rows (the committed
``baselines/gsm8k/recorded/scripted-mix`` run's rows, cycled to N; their conversations are real GSM8K
prompts and completions), best of ``--repeats``:

* ``conversation``: the recorded conversation back as Eval Protocol ``Message``s on an ``EvaluationRow``
  (what the replay processor's ``restore`` builds);
* ``scorer``: ``evals.gsm8k.scoring.score`` on the completion and gold answer;
* ``evaluate_result``: the ``ScoreResult`` as Eval Protocol's ``EvaluateResult``;
* ``record``: the run store's record of the row, JSON-encoded, written and flushed to a file;
* ``ep_json``: the row's JSON for Eval Protocol's store (``model_dump_json(exclude_none=True)``);
* ``run_copy``: the row's copy for its run (``ItemRunner``'s ``_fresh_copy``);
* ``task``: an asyncio task per row and its await (an empty coroutine).

It prints a table (µs per row and the rows/s the sum allows) and writes ``<out>/row_costs.json`` and
``<out>/row_costs.png``. No network, no subprocess.

    python benchmarks/bench_row_costs.py --rows 1319 --repeats 5 --out benchmarks/results
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("EP_NO_UPLOAD", "1")

import argparse  # noqa: E402
import asyncio  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from _machine import machine_info  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

REPO = Path(__file__).resolve().parents[1]
RECORDED = REPO / "baselines" / "gsm8k" / "recorded" / "scripted-mix" / "rows.jsonl"
TARGET_ROWS_PER_S = 5000.0
PIECES = ("conversation", "scorer", "evaluate_result", "record", "ep_json", "run_copy", "task")


def measure(rows: int, repeats: int) -> dict[str, float]:
    """Microseconds per row of each piece, best of ``repeats``."""
    sys.path.insert(0, str(REPO))
    from eval_protocol.models import EvaluationRow

    from evals.gsm8k import scoring
    from metis_pytest.conversation import load_messages
    from metis_pytest.item import _fresh_copy
    from metis_pytest.store.runs import read_records

    records = list(itertools.islice(itertools.cycle(read_records(RECORDED)), rows))
    built = [EvaluationRow(messages=load_messages(r.messages), ground_truth=r.ground_truth) for r in records]
    results = [scoring.score(r.completion or "", r.ground_truth or "") for r in records]

    def best(piece: Callable[[int], Any], setup: Callable[[], Any] | None = None) -> float:
        times = []
        for _ in range(repeats):
            if setup is not None:
                setup()
            start = time.perf_counter()
            for i in range(rows):
                piece(i)
            times.append(time.perf_counter() - start)
        return min(times) / rows * 1e6

    with tempfile.TemporaryDirectory() as tmp:
        handle = open(Path(tmp) / "records.jsonl", "a", encoding="utf-8")  # noqa: SIM115

        def record(i: int) -> None:
            handle.write(records[i].to_json() + "\n")
            handle.flush()

        async def nothing() -> None:
            return None

        async def tasks() -> None:
            for task in [asyncio.create_task(nothing()) for _ in range(rows)]:
                await task

        def task_cost() -> float:
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                asyncio.run(tasks())
                times.append(time.perf_counter() - start)
            return min(times) / rows * 1e6

        costs = {
            "conversation": best(lambda i: EvaluationRow(messages=load_messages(records[i].messages))),
            "scorer": best(lambda i: scoring.score(records[i].completion or "", records[i].ground_truth or "")),
            "evaluate_result": best(lambda i: results[i].to_evaluate_result()),
            "record": best(record),
            "ep_json": best(lambda i: built[i].model_dump_json(exclude_none=True)),
            "run_copy": best(lambda i: _fresh_copy(built[i], run_id="r", rollout_id=str(i))),
            "task": task_cost(),
        }
        handle.close()
    return costs


def plot(costs: dict[str, float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    total = sum(costs.values())
    bars = {**costs, "sum": total}
    names = list(bars)
    ax.barh(names, [bars[n] for n in names], color=["#4878a8"] * len(costs) + ["#55a868"])
    for y, name in enumerate(names):
        ax.text(bars[name], y, f" {bars[name]:.1f}", va="center", fontsize=8)
    ax.axvline(1e6 / TARGET_ROWS_PER_S, color="#c44e52", linestyle="--", label="5,000 rows/s: 200 µs for all")
    ax.set_xlabel("µs per row (best of the repeats)")
    ax.set_title(f"a GSM8K row's own work in the item: {total:.0f} µs ({1e6 / total:,.0f} rows/s at most)", fontsize=9)
    ax.invert_yaxis()
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1319, help="rows per piece (N)")
    parser.add_argument("--repeats", type=int, default=5, help="timed passes per piece; the best counts")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results", help="output folder")
    args = parser.parse_args(argv)
    costs = measure(args.rows, args.repeats)
    total = sum(costs.values())
    print(f"rows={args.rows} repeats={args.repeats} (best pass per piece), from {RECORDED.relative_to(REPO)}")
    print(f"{'piece':16s} {'us/row':>8s}")
    for name in PIECES:
        print(f"{name:16s} {costs[name]:8.1f}")
    print(f"{'sum':16s} {total:8.1f}  -> at most {1e6 / total:,.0f} rows/s for these pieces alone "
          f"(target {TARGET_ROWS_PER_S:,.0f}: {1e6 / TARGET_ROWS_PER_S:.0f} us/row for everything)")
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"benchmark": "row_costs", "parameters": {"rows": args.rows, "repeats": args.repeats,
                                                       "data": str(RECORDED.relative_to(REPO))},
              "machine": machine_info(("eval-protocol", "pydantic", "metis-pytest")), "us_per_row": costs,
              "sum_us_per_row": total,
              "max_rows_per_s": 1e6 / total, "target_rows_per_s": TARGET_ROWS_PER_S}
    (args.out / "row_costs.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(costs, args.out / "row_costs.png")
    print(f"wrote {args.out / 'row_costs.json'} and {args.out / 'row_costs.png'}")


if __name__ == "__main__":
    main()

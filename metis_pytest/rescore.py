"""``metis rescore RUN_DIR``: score a recorded run's completions again with the current scorers, as a new run.

    metis rescore runs/ --out runs-rescored -- --dataset datasets/gsm8k_smoke.jsonl
    metis rescore runs/ --bench gsm8k --model scripted -- -p no:cacheprovider

It is ``pytest <the benchmark's evaluation> --replay RUN_DIR --output-dir NEW_DIR``, worked out from
the folder. Decisions:

- RUN_DIR is only read. The new run goes to ``--out`` (default ``RUN_DIR-rescored-<UTC time>``),
  which must be new or empty, so no earlier record under the same conditions mixes into its
  summaries (a run folder merges every record of a score key), and must not lie inside RUN_DIR.
- What is replayed comes from the folder: every ``<benchmark>/<model>/summary.json`` (replay reads
  its score key's ``conditions/`` file and ``rows.jsonl``); RUN_DIR may also be one such folder.
  ``--bench`` and ``--model`` keep some of them.
- Where a benchmark's evaluation lives comes from the registry: the folder of the module that
  defines its loader (``evals/gsm8k/`` for ``gsm8k``), so a registered benchmark needs no edit here.
- Per benchmark, one pytest process per set of models that replay with the same arguments:
  ``--model`` with each recorded label (no backend options: replay sends nothing, starts nothing and
  needs no key), ``--runs`` up to the highest recorded run index, the recorded dataset split, and,
  when one session made the summary, that session's ``--max-rows``, ``-k`` and ``-m``, so the same
  rows are replayed. The data source is not recorded (only its id and revision): pass
  ``--dataset`` after ``--`` when the run did not use the benchmark's default. Everything after
  ``--`` goes to pytest last, so it wins.
- Replay marks where completions came from: each row's ``replayed_from``, the summary's
  ``selection.replay``. After pytest, each new summary is printed, with the recorded score and what
  differs from the recording in version, data or prompt. The exit code is the first non-zero
  pytest exit code, else 0.
"""

from __future__ import annotations

import argparse
import importlib
import json
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metis_pytest.registry import Benchmark, get_benchmark
from metis_pytest.store.runs import slug

COMPARED = (("benchmark_version",), ("dataset", "id"), ("dataset", "revision"), ("dataset", "split"), ("prompt_hash",))


class RescoreError(Exception):
    """A RUN_DIR or ``--out`` that cannot be rescored."""


@dataclass(frozen=True)
class Recorded:
    """One recorded ``<benchmark>/<model>`` folder and its summary."""

    folder: Path
    summary: dict[str, Any]

    @property
    def benchmark(self) -> str:
        return str(self.summary["benchmark"])

    @property
    def model(self) -> str:
        return str(self.summary["model"])


def recorded(run_dir: Path, benchmarks: Sequence[str] = (), models: Sequence[str] = ()) -> list[Recorded]:
    """The replayable ``<benchmark>/<model>`` folders of a run (a summary and its rows), filtered."""
    paths = [run_dir / "summary.json"] if (run_dir / "rows.jsonl").is_file() else sorted(run_dir.glob("*/*/summary.json"))
    found = []
    for path in paths:
        if not (path.parent / "rows.jsonl").is_file():
            continue
        try:
            found.append(Recorded(path.parent, json.loads(path.read_text(encoding="utf-8"))))
        except (OSError, ValueError) as exc:
            raise RescoreError(f"{path}: not readable JSON ({exc})") from None
    if not found:
        raise RescoreError(f"{run_dir}: no recorded run in it (no <benchmark>/<model>/summary.json with rows.jsonl)")
    for flag, wanted, have in (("--bench", benchmarks, {r.benchmark for r in found}),
                               ("--model", models, {r.model for r in found})):
        missing = sorted(set(wanted) - have)
        if missing:
            raise RescoreError(f"{flag} {', '.join(missing)}: not in {run_dir} (it holds {', '.join(sorted(have))})")
    return [r for r in found if (not benchmarks or r.benchmark in benchmarks) and (not models or r.model in models)]


def evaluation_dir(bench: Benchmark) -> Path:
    """The folder of the module that defines the benchmark's loader, where its ``test_*.py`` is."""
    module = sys.modules.get(bench.load.__module__) or importlib.import_module(bench.load.__module__)
    file = getattr(module, "__file__", None)
    folder = Path(file).resolve().parent if file else None
    if folder is None or not any(folder.glob("test_*.py")):
        raise RescoreError(f"benchmark {bench.name!r}: no test_*.py beside its module {bench.load.__module__} "
                           f"({folder}); run pytest on its evaluation with --replay yourself")
    return folder


def replay_args(summary: dict[str, Any]) -> tuple[str, ...]:
    """The options that replay the same rows as the summary holds (besides ``--model``)."""
    indexes = (summary.get("runs") or {}).get("indexes") or [0]
    args = ["--runs", str(max(indexes) + 1)]
    split = (summary.get("dataset") or {}).get("split")
    if split:
        args += ["--dataset-split", str(split)]
    selection = summary.get("selection") or {}
    if summary.get("sessions") == [summary.get("session")]:  # one session made it: its selection is the rows'
        for flag, key in (("--max-rows", "max_rows"), ("-k", "keyword"), ("-m", "markexpr")):
            if selection.get(key):
                args += [flag, str(selection[key])]
    return tuple(args)


def commands(run_dir: Path, out: Path, chosen: Sequence[Recorded], pytest_args: Sequence[str],
             python: str = sys.executable) -> list[tuple[list[str], list[Recorded]]]:
    """One pytest command line per (benchmark, replay options), with the recordings it replays."""
    groups: dict[tuple[str, tuple[str, ...]], list[Recorded]] = {}
    for r in chosen:
        groups.setdefault((r.benchmark, replay_args(r.summary)), []).append(r)
    out_cmds = []
    for (name, args), members in groups.items():
        try:
            bench = get_benchmark(name)
        except KeyError as exc:
            raise RescoreError(f"{run_dir}: {exc.args[0]}") from None
        models = [arg for r in members for arg in ("--model", r.model)]
        cmd = [python, "-m", "pytest", str(evaluation_dir(bench)), "--replay", str(run_dir.resolve()),
               "--output-dir", str(out.resolve()), *models, *args, *pytest_args]
        out_cmds.append((cmd, members))
    return out_cmds


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between a recorded summary and its rescored one in version, data and prompt."""
    def get(s: Any, path: tuple[str, ...]) -> Any:
        for key in path:
            s = s.get(key) if isinstance(s, dict) else None
        return s

    return [f"{'.'.join(p)}: {get(old, p)!r} -> {get(new, p)!r}" for p in COMPARED if get(old, p) != get(new, p)]


def check_out(run_dir: Path, out: Path) -> None:
    src, dst = run_dir.resolve(), out.resolve()
    if dst == src or src in dst.parents:
        raise RescoreError(f"--out {out}: inside {run_dir}, which rescore never writes to")
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise RescoreError(f"--out {out}: exists and is not an empty folder (a new run needs a folder of its own)")


def rescore(run_dir: Path, out: Path | None = None, *, benchmarks: Sequence[str] = (), models: Sequence[str] = (),
            pytest_args: Sequence[str] = ()) -> int:
    """Replay ``run_dir`` into ``out`` with the current scorers; prints the new summaries; pytest's exit code."""
    from metis_pytest.plugin import format_summary_line

    if out is None:
        src = run_dir.resolve()
        out = src.with_name(f"{src.name}-rescored-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}")
    check_out(run_dir, out)
    chosen = recorded(run_dir, benchmarks, models)
    plan = commands(run_dir, out, chosen, pytest_args)
    code = 0
    for cmd, members in plan:
        print(f"metis rescore: {members[0].benchmark} [{', '.join(r.model for r in members)}] from {run_dir} -> {out}")
        print("$ " + shlex.join(cmd), flush=True)
        rc = subprocess.run(cmd, check=False).returncode
        code = code or rc
        for r in members:
            path = out / slug(r.benchmark) / slug(r.model) / "summary.json"
            if not path.is_file():
                print(f"{r.benchmark} [{r.model}]: no new summary (pytest exited {rc})")
                continue
            new = {**json.loads(path.read_text(encoding="utf-8")), "path": str(path)}
            print(format_summary_line(new))
            print("  recorded: " + format_summary_line({**r.summary, "path": str(r.folder / "summary.json")}))
            for line in differences(r.summary, new):
                print(f"  changed since the recording: {line}")
    return code


def run_cli(args: argparse.Namespace) -> int:
    """``metis rescore``: pytest's exit code, or 2 when RUN_DIR or ``--out`` cannot be used."""
    try:
        return rescore(Path(args.run_dir), args.out, benchmarks=args.bench or (), models=args.model or (),
                       pytest_args=args.pytest_args)
    except RescoreError as exc:
        print(f"metis rescore: error: {exc}", file=sys.stderr)
        return 2

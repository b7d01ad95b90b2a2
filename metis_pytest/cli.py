"""``metis``: small commands around the harness (the evaluations themselves run under ``pytest``).

    metis fetch-model            # download + verify the embedded SmolLM2-135M GGUF, print its path
    metis serve-local            # run the embedded llama.cpp server in the foreground
    metis show runs/             # print every summary.json under a run folder
    metis plot runs/             # draw runs/<benchmark>/summary.png (models x metrics, 95% CIs)
    metis data export gsm8k --format verl --out data/gsm8k --dataset train.jsonl
                                 # a benchmark's rows as verl RL parquet: DIR/{train,test}.parquet + manifest
    metis rescore runs/ --out runs-new -- --dataset datasets/gsm8k_smoke.jsonl
                                 # re-score a recorded run's completions (no model calls) into a new run
    metis report runs/ [runs-pr/ ...] --out report
                                 # report.md (benchmark x model x group, 95% CIs, n), report.json, PNGs
    metis train grpo --bench ace --data data/ace [--detach] [--dry-run] -- trainer.total_training_steps=1
                                 # verl's GRPO on Modal GPUs, the benchmark's scorer as the reward
    metis train modpo --base MODEL --margin-attribute verbosity --preference-attribute helpfulness --out DIR
                                 # SFT -> DPO margin adapter -> check -> MODPO per w -> generate -> score
    metis serve modal Qwen/Qwen3-8B
                                 # deploy vLLM on Modal for --backend modal (or a checkpoint: volume:VOL/PATH)
    metis run modal --secret openai-secret -- evals/gsm8k --model openai/gpt-4o-mini
                                 # pytest in a Modal container; its run folder on the volume metis-runs
    metis fetch modal RUN [DEST] # that run folder, back here

The weights are cached in $XDG_CACHE_HOME/metis (else ~/.cache/metis); --cache-dir DIR picks another folder.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any


def _fetch_model(args: argparse.Namespace) -> int:
    from metis_pytest.backends.local_model import resolve_gguf

    path = resolve_gguf(args.local_model, cache_dir=args.cache_dir)
    print(path)
    return 0


def _serve_local(args: argparse.Namespace) -> int:
    from metis_pytest.backends.local import alias_for
    from metis_pytest.backends.local_model import resolve_gguf
    from metis_pytest.backends.local_server import LocalServer

    gguf = resolve_gguf(args.local_model, cache_dir=args.cache_dir)
    server = LocalServer(gguf, log_path=Path(args.log), alias=alias_for(args.local_model), port=args.port)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored
    server.start()
    try:
        # Printed once the handlers are in place: a signal right after the line is a clean stop.
        print(f"serving {alias_for(args.local_model)} at {server.base_url} (log: {args.log}); Ctrl-C stops it",
              flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


def _show(args: argparse.Namespace) -> int:
    from metis_pytest.plugin import format_summary_line

    found = sorted(Path(args.run_dir).glob("*/*/summary.json"))
    if not found:
        print(f"no summary.json under {args.run_dir}", file=sys.stderr)
        return 1
    for path in found:
        summary = json.loads(path.read_text())
        summary["path"] = str(path)
        print(format_summary_line(summary))
    return 0


def _plot(args: argparse.Namespace) -> int:
    from metis_pytest.store.plot import plot_benchmark

    written = [p for d in sorted(Path(args.run_dir).iterdir()) if d.is_dir() and (p := plot_benchmark(d))]
    for path in written:
        print(path)
    if not written:
        print(f"no summary.json under {args.run_dir}/<benchmark>/<model>/", file=sys.stderr)
    return 0 if written else 1


def _data_export(args: argparse.Namespace) -> int:
    from metis_pytest.export import run_cli

    return run_cli(args)


def _add_data(sub: Any) -> None:
    from metis_pytest.export import FORMATS, add_benchmark_options

    data = sub.add_parser("data", help="benchmark data for training (export to verl's RL parquet)")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    export = data_sub.add_parser(
        "export", help="write a benchmark's rows as DIR/train.parquet, DIR/test.parquet and DIR/manifest.json",
        description="Write a benchmark's rows (its registered loader) in verl's RL dataset schema, split "
                    "train/test by a seeded hash of the row id. Schema and decisions: metis_pytest/export.py.")
    export.add_argument("benchmark", help="a registered benchmark (gsm8k, ace, ...)")
    export.add_argument("--format", required=True, choices=FORMATS, help="output format")
    export.add_argument("--out", required=True, type=Path, metavar="DIR", help="folder to write the files into")
    export.add_argument("--dataset", default=None, metavar="SRC",
                        help="where the rows come from: a local file or folder, or 'hf'. Default: the benchmark's")
    export.add_argument("--dataset-split", default=None, help="split to load (GSM8K from the Hub: train or test)")
    export.add_argument("--dataset-revision", default=None, help="Hub revision (commit sha, tag or branch)")
    export.add_argument("--split-ratio", type=float, default=0.75, metavar="R",
                        help="share of the rows that go to train.parquet (default: 0.75)")
    export.add_argument("--seed", type=int, default=0, help="seed of the train/test hash (default: 0)")
    export.add_argument("--max-rows", type=int, default=None, metavar="N",
                        help="export only the first N rows the loader returns")
    add_benchmark_options(export)
    export.set_defaults(func=_data_export)


def _rescore(args: argparse.Namespace) -> int:
    from metis_pytest.rescore import run_cli

    return run_cli(args)


def _report(args: argparse.Namespace) -> int:
    from metis_pytest.report import run_cli

    return run_cli(args)


class _Parser(argparse.ArgumentParser):
    """A subcommand that declares ``pytest_args`` takes every argument after ``--`` as pytest's, untouched
    (argparse alone refuses ``RUN_DIR --out X -- -k foo``: it fills positionals in one go)."""

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        args = list(sys.argv[1:] if args is None else args)
        if self.get_default("pytest_args") is None or "--" not in args:
            return super().parse_known_args(args, namespace)
        cut = args.index("--")
        parsed, extra = super().parse_known_args(args[:cut], namespace)
        parsed.pytest_args = args[cut + 1:]
        return parsed, extra


def _add_rescore_and_report(sub: Any) -> None:
    rescore = sub.add_parser(
        "rescore", help="re-score a recorded run with the current scorers (no model calls) into a new run folder",
        description="Replay RUN_DIR's completions through each benchmark's evaluation (pytest --replay) and write "
                    "a new run; RUN_DIR is only read. Decisions: metis_pytest/rescore.py.",
        epilog="Arguments after -- go to pytest, last (so they win), e.g. -- --dataset datasets/gsm8k_smoke.jsonl -x")
    rescore.add_argument("run_dir", metavar="RUN_DIR", help="a recorded output folder, or one <benchmark>/<model> of it")
    rescore.add_argument("--out", type=Path, default=None, metavar="NEW_DIR",
                         help="the new run's output folder, new or empty (default: RUN_DIR-rescored-<UTC time>)")
    rescore.add_argument("--bench", action="append", metavar="B", help="only this benchmark (repeatable)")
    rescore.add_argument("--model", action="append", metavar="M", help="only this model label (repeatable)")
    rescore.set_defaults(func=_rescore, pytest_args=[])
    report = sub.add_parser(
        "report", help="report.md, report.json and PNGs (scores by group, run-over-run trend) from run folders",
        description="One Markdown table (benchmark x model x run x group: mean, 95% CI, n), its JSON twin and "
                    "PNGs from every <benchmark>/<model>/summary.json and history/ of each RUN. "
                    "Decisions: metis_pytest/report.py.")
    report.add_argument("runs", nargs="+", metavar="RUN", help="an output folder (runs/); several go into one table")
    report.add_argument("--out", default="report", metavar="DIR", help="where to write the report (default: report)")
    report.set_defaults(func=_report)


def _add_cache_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cache-dir", type=Path, default=None, metavar="DIR",
                        help="where the embedded model's weights are cached "
                             "(default: $XDG_CACHE_HOME/metis or ~/.cache/metis)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="metis", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    fetch = sub.add_parser("fetch-model", help="download and verify the embedded model's GGUF")
    fetch.add_argument("--local-model", default=None, help="a GGUF path or hf:OWNER/REPO/FILE.gguf")
    _add_cache_dir(fetch)
    fetch.set_defaults(func=_fetch_model)
    serve = sub.add_parser("serve-local", help="run the embedded llama.cpp server until Ctrl-C")
    serve.add_argument("--local-model", default=None, help="a GGUF path or hf:OWNER/REPO/FILE.gguf")
    _add_cache_dir(serve)
    serve.add_argument("--port", type=int, default=None)
    serve.add_argument("--log", default="local-server.log")
    serve.set_defaults(func=_serve_local)
    show = sub.add_parser("show", help="print the summaries in a run folder")
    show.add_argument("run_dir", nargs="?", default="runs")
    show.set_defaults(func=_show)
    plot = sub.add_parser("plot", help="draw <benchmark>/summary.png for every benchmark in a run folder")
    plot.add_argument("run_dir", nargs="?", default="runs")
    plot.set_defaults(func=_plot)
    _add_data(sub)
    _add_rescore_and_report(sub)
    from metis_pytest.backends.modal_cli import add_run, add_serve
    from metis_pytest.train.cli import add_train

    add_train(sub)
    add_serve(sub)
    add_run(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())

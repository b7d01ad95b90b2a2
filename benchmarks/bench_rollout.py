"""Rollout + scoring throughput: Metis's processor vs Eval Protocol's stock one vs a bare aiohttp floor.

Every variant sends the same GSM8K rows to the same scripted OpenAI-compatible server (one server
process for the whole run, with a fixed latency per request) at the same concurrency, and scores
every reply with the GSM8K scorer as it arrives:

* ``metis``: ``metis_pytest.rollout.single_turn.SingleTurnProcessor`` (OpenAI wire over aiohttp),
  then ``scoring.score(...).to_evaluate_result()`` on the row, as ``evals/gsm8k`` does;
* ``ep-stock``: Eval Protocol's ``SingleTurnRolloutProcessor`` (``litellm.acompletion`` and a write
  of every row to Eval Protocol's SQLite store, with HOME pointed at a temporary directory), then
  the same scoring;
* ``bare-aiohttp``: one ``aiohttp.ClientSession`` posting the same bodies under a semaphore, then
  ``scoring.score`` on the reply text: the practical floor.

Each run is a fresh child process (``--variant NAME``); runs are interleaved a,b,c,a,b,c.

    python benchmarks/bench_rollout.py --rows 1319 --latency 0.05 --concurrency 64 --repeats 3 \\
        --out benchmarks/results
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # before anything imports LiteLLM
os.environ.setdefault("EP_NO_UPLOAD", "1")

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from _machine import machine_info  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

VARIANTS: tuple[str, ...] = ("metis", "ep-stock", "bare-aiohttp")
MODEL = "openai/scripted"
WIRE_MODEL = "scripted"
MAX_TOKENS = 64
REPLY = "<answer>42</answer>"
EXPECTED_ANSWER = "42"
EP_API_KEY = "sk-bench-not-secret"  # OPENAI_API_KEY of the ep-stock variants (a loopback server)
RESULT_PREFIX = "BENCH_RESULT "
TARGET_METIS_OVER_BARE = 1.3
TARGET_EP_OVER_METIS = 5.0


# --------------------------------------------------------------------------- data


def default_data_path() -> Path:
    """``<repo>/../shared/datasets/gsm8k/train.jsonl`` (``--data`` chooses another file)."""
    return REPO.parent / "shared" / "datasets" / "gsm8k" / "train.jsonl"


SMOKE_DATA = REPO / "datasets" / "gsm8k_smoke.jsonl"


def prepare_data(source: Path, n: int, dest_dir: Path) -> tuple[Path, str]:
    """Write exactly ``n`` records of ``source`` to ``dest_dir/<same name>``; return it and a note.

    The first ``n`` non-blank lines, cycled when the file is shorter. Falls back to the repo's
    12-row smoke file when ``source`` does not exist. The copy keeps the file name, so row ids and
    the split (``gsm8k-train-00000``...) are what the original file gives; children then load only
    the rows they send, and their peak RSS is not the cost of parsing 7,473 rows.
    """
    note = str(source)
    if not source.is_file():
        note = f"{source} not found: FELL BACK to {SMOKE_DATA} (12 rows) repeated to {n}"
        source = SMOKE_DATA
    with source.open() as handle:
        lines = [line.rstrip("\n") for line in handle if line.strip()]
    if not lines:
        raise SystemExit(f"{source}: no records")
    if len(lines) < n and source != SMOKE_DATA:
        note += f" (only {len(lines)} rows: repeated to {n})"
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / source.name
    dest.write_text("".join(lines[i % len(lines)] + "\n" for i in range(n)))
    return dest, note


def load_rows(data: Path) -> list[Any]:
    """GSM8K ``EvaluationRow``s of a prepared file, through the eval's own loader."""
    from evals.gsm8k import dataset

    return dataset.load(str(data))


def write_bare_requests(rows: list[Any], path: Path) -> None:
    """Plain-JSON copies of what each row sends (messages) and its gold, for the bare client."""
    from metis_pytest.rollout.single_turn import request_messages

    with path.open("w") as handle:
        for row in rows:
            handle.write(json.dumps({"messages": request_messages(row), "ground_truth": str(row.ground_truth)}))
            handle.write("\n")


# --------------------------------------------------------------------------- child: scoring


def score_row(row: Any, scoring: Any, last_assistant_text: Any) -> bool:
    """Score one rolled-out row as ``evals/gsm8k`` does; True when the scripted answer came back."""
    result = scoring.score(last_assistant_text(row), str(row.ground_truth))
    row.evaluation_result = result.to_evaluate_result()
    return result.extracted.get("answer_tag") == EXPECTED_ANSWER


def new_counts() -> dict[str, int]:
    return {"rows_scored": 0, "rows_errored": 0, "rows_expected_answer": 0}


# --------------------------------------------------------------------------- child: variants


async def drain_rows(tasks: list[asyncio.Task[Any]], counts: dict[str, int], scoring: Any,
                     last_assistant_text: Any) -> None:
    """Score each row the moment its rollout finishes; count errors (raised or in rollout_status)."""
    for future in asyncio.as_completed(tasks):
        try:
            row = await future
        except Exception:
            counts["rows_errored"] += 1
            continue
        status = row.rollout_status
        if status is not None and status.is_error():
            counts["rows_errored"] += 1
            continue
        counts["rows_scored"] += 1
        counts["rows_expected_answer"] += score_row(row, scoring, last_assistant_text)


async def time_processor(processor: Any, params: dict[str, Any], args: argparse.Namespace, rows: list[Any],
                         counts: dict[str, int]) -> float:
    """Wall seconds for one Eval Protocol rollout processor to roll out and score every row."""
    from eval_protocol.pytest.types import RolloutProcessorConfig

    from evals.gsm8k import scoring
    from metis_pytest.ep import last_assistant_text

    config = RolloutProcessorConfig(completion_params=params, mcp_config_path="",
                                    semaphore=asyncio.Semaphore(args.concurrency))
    start = time.perf_counter()
    tasks = processor(rows, config)
    await drain_rows(tasks, counts, scoring, last_assistant_text)
    await processor.acleanup()
    return time.perf_counter() - start


async def run_metis(args: argparse.Namespace, rows: list[Any], counts: dict[str, int]) -> float:
    from metis_pytest.rollout.single_turn import SingleTurnProcessor

    params = {"model": MODEL, "api_base": args.url, "temperature": 0.0, "max_tokens": MAX_TOKENS}
    return await time_processor(SingleTurnProcessor(), params, args, rows, counts)


async def run_ep_stock(args: argparse.Namespace, rows: list[Any], counts: dict[str, int]) -> float:
    from eval_protocol.pytest.default_single_turn_rollout_process import SingleTurnRolloutProcessor

    # LiteLLM's OpenAI client wants a key even for a loopback server: from the environment, never in
    # completion params (which go into test ids, logs and Eval Protocol's store).
    os.environ.setdefault("OPENAI_API_KEY", EP_API_KEY)
    params = {"model": MODEL, "api_base": args.url, "temperature": 0.0, "max_tokens": MAX_TOKENS}
    return await time_processor(SingleTurnRolloutProcessor(), params, args, rows, counts)


async def run_bare(args: argparse.Namespace, requests: list[dict[str, Any]], counts: dict[str, int]) -> float:
    import aiohttp

    from evals.gsm8k import scoring

    url = f"{args.url.rstrip('/')}/chat/completions"
    semaphore = asyncio.Semaphore(args.concurrency)

    async def one(session: aiohttp.ClientSession, request: dict[str, Any]) -> bool:
        body = {"model": WIRE_MODEL, "messages": request["messages"], "temperature": 0.0,
                "max_tokens": MAX_TOKENS}
        async with semaphore:
            async with session.post(url, json=body) as resp:
                resp.raise_for_status()
                data = await resp.json()
        text = data["choices"][0]["message"]["content"] or ""
        return scoring.score(text, request["ground_truth"]).extracted.get("answer_tag") == EXPECTED_ANSWER

    start = time.perf_counter()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        tasks = [asyncio.create_task(one(session, r)) for r in requests]
        for future in asyncio.as_completed(tasks):
            try:
                ok = await future
            except Exception:
                counts["rows_errored"] += 1
                continue
            counts["rows_scored"] += 1
            counts["rows_expected_answer"] += ok
    return time.perf_counter() - start


def import_variant(variant: str) -> None:
    """Import what the variant's timed region needs, so import cost is measured separately."""
    if variant == "metis":
        import eval_protocol.pytest.types  # noqa: F401

        import metis_pytest.ep  # noqa: F401
        import metis_pytest.rollout.single_turn  # noqa: F401
    elif variant == "ep-stock":
        import eval_protocol.pytest.default_single_turn_rollout_process  # noqa: F401

        import metis_pytest.ep  # noqa: F401
    else:
        import aiohttp  # noqa: F401
    import evals.gsm8k.scoring  # noqa: F401


def load_variant_input(args: argparse.Namespace) -> list[Any]:
    """Rows (metis, ep-stock) or plain request dicts (bare-aiohttp)."""
    if args.variant == "bare-aiohttp":
        with open(args.requests) as handle:
            return [json.loads(line) for line in handle if line.strip()]
    return load_rows(Path(args.data))


def run_variant(args: argparse.Namespace, items: list[Any], counts: dict[str, int]) -> float:
    runner = {"metis": run_metis, "ep-stock": run_ep_stock, "bare-aiohttp": run_bare}[args.variant]
    return asyncio.run(runner(args, items, counts))


def write_profile(profiler: Any, out_dir: Path, variant: str) -> None:
    """``profile_<variant>.prof`` and a ``.txt`` with the top 30 by cumulative and by own time."""
    import io
    import pstats

    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"profile_{variant}"
    profiler.dump_stats(f"{stem}.prof")
    text = io.StringIO()
    for order in ("cumulative", "tottime"):
        text.write(f"==== top 30 by {order} ====\n")
        pstats.Stats(f"{stem}.prof", stream=text).sort_stats(order).print_stats(30)
    Path(f"{stem}.txt").write_text(text.getvalue())


def proc_status_mb(field: str) -> float | None:
    """A ``kB`` field of /proc/self/status (``VmHWM``, ``VmRSS``) in MB, or None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def peak_rss_mb() -> float:
    """This process's peak RSS in MB: ``VmHWM`` from /proc where there is one, else ``ru_maxrss``.

    On Linux ``ru_maxrss`` survives ``exec``: a child started by a big parent reports at least the
    parent's RSS at fork time, so it cannot tell a lean child from a heavy one. ``VmHWM`` is per
    address space and starts afresh at ``exec``.
    """
    hwm = proc_status_mb("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def child_main(args: argparse.Namespace) -> None:
    """Run one variant once and print one ``BENCH_RESULT {json}`` line."""
    t0 = time.perf_counter()
    import_variant(args.variant)
    import_s = time.perf_counter() - t0
    items = load_variant_input(args)
    load_s = time.perf_counter() - t0 - import_s
    counts = new_counts()
    peak_before_run = peak_rss_mb()
    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    cpu_start = time.process_time()
    wall = run_variant(args, items, counts)
    cpu = time.process_time() - cpu_start
    if profiler is not None:
        profiler.disable()
        write_profile(profiler, Path(args.out), args.variant)
    result = {"variant": args.variant, "wall_s": wall, "cpu_s": cpu, "rows": len(items), **counts,
              "peak_rss_mb": peak_rss_mb(), "peak_rss_before_run_mb": peak_before_run,
              "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
              "import_s": import_s, "load_s": load_s, "profiled": bool(args.profile)}
    print(RESULT_PREFIX + json.dumps(result), flush=True)


# --------------------------------------------------------------------------- parent


def child_command(args: argparse.Namespace, variant: str, url: str, requests: Path, profile: bool) -> list[str]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--variant", variant, "--url", url,
           "--rows", str(args.rows), "--latency", str(args.latency), "--concurrency", str(args.concurrency),
           "--data", str(args.data), "--requests", str(requests), "--out", str(args.out)]
    return cmd + (["--profile"] if profile else [])


def run_child(args: argparse.Namespace, variant: str, url: str, requests: Path, home: Path,
              profile: bool = False) -> dict[str, Any]:
    """One fresh child process; its result, or a failed record with the reason."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    if variant == "ep-stock":
        env["HOME"] = str(home)  # Eval Protocol's SQLite store goes to $HOME/.eval_protocol
    ideal = ideal_seconds(args.rows, args.concurrency, args.latency)
    timeout = max(120.0, 20 * ideal + 60)
    started = time.perf_counter()
    try:
        proc = subprocess.run(child_command(args, variant, url, requests, profile), env=env,
                              capture_output=True, text=True, timeout=timeout, cwd=REPO)
    except subprocess.TimeoutExpired:
        return {"variant": variant, "failed": f"timed out after {timeout:.0f}s"}
    process_s = time.perf_counter() - started
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout)[-2000:]
        return {"variant": variant, "failed": f"exit {proc.returncode}: {tail}"}
    result = json.loads(lines[-1][len(RESULT_PREFIX):])
    result["process_s"] = process_s
    return result


def ideal_seconds(rows: int, concurrency: int, latency: float) -> float:
    """ceil(N / C) * L: the wall time if only the server's latency cost anything."""
    return math.ceil(rows / concurrency) * latency


def run_problem(result: dict[str, Any], rows: int) -> str | None:
    """Why a run does not count (failed, missing rows, errors, wrong answers), or None."""
    if "failed" in result:
        return result["failed"]
    if result["rows"] != rows or result["rows_scored"] != rows:
        return f"scored {result['rows_scored']} of {rows} rows"
    if result["rows_errored"]:
        return f"{result['rows_errored']} rows errored"
    if result["rows_expected_answer"] != rows:
        return f"only {result['rows_expected_answer']} of {rows} replies read as {EXPECTED_ANSWER}"
    return None


def summarize(runs: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    """Per-variant median/min wall, ratio to ideal, per-row overhead and peak RSS; cross-variant ratios."""
    ideal = ideal_seconds(args.rows, args.concurrency, args.latency)
    variants: dict[str, Any] = {}
    for variant in VARIANTS:
        mine = [r for r in runs if r["variant"] == variant]
        problems = [p for p in (run_problem(r, args.rows) for r in mine) if p]
        good = [r for r in mine if run_problem(r, args.rows) is None]
        entry: dict[str, Any] = {"runs": len(mine), "ok_runs": len(good), "failed": bool(problems) or not good,
                                 "problems": problems}
        if good:
            walls = [r["wall_s"] for r in good]
            median = statistics.median(walls)
            entry.update(
                wall_median_s=median, wall_min_s=min(walls), ratio_to_ideal=median / ideal,
                overhead_ms_per_row=(median - ideal) * args.concurrency / args.rows * 1000,
                cpu_ms_per_row=statistics.median(r["cpu_s"] for r in good) / args.rows * 1000,
                peak_rss_mb=statistics.median(r["peak_rss_mb"] for r in good),
                import_s=statistics.median(r["import_s"] for r in good),
                process_s=statistics.median(r["process_s"] for r in good),
            )
        variants[variant] = entry

    def ratio(a: str, b: str) -> float | None:
        wa, wb = variants[a].get("wall_median_s"), variants[b].get("wall_median_s")
        return wa / wb if wa and wb else None

    metis_bare, ep_metis = ratio("metis", "bare-aiohttp"), ratio("ep-stock", "metis")
    cpu = {v: variants[v].get("cpu_ms_per_row") for v in VARIANTS}
    return {
        "ideal_s": ideal,
        "variants": variants,
        "ratios": {
            "metis_over_bare": metis_bare,
            "metis_over_bare_target_max": TARGET_METIS_OVER_BARE,
            "metis_over_bare_ok": metis_bare is not None and metis_bare <= TARGET_METIS_OVER_BARE,
            "ep_stock_over_metis": ep_metis,
            "ep_stock_over_metis_target_min": TARGET_EP_OVER_METIS,
            "ep_stock_over_metis_ok": ep_metis is not None and ep_metis >= TARGET_EP_OVER_METIS,
            "cpu_metis_over_bare": cpu["metis"] / cpu["bare-aiohttp"] if cpu["metis"] and cpu["bare-aiohttp"] else None,
            "cpu_ep_stock_over_metis": cpu["ep-stock"] / cpu["metis"] if cpu["ep-stock"] and cpu["metis"] else None,
        },
    }


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_table(summary: dict[str, Any], args: argparse.Namespace) -> str:
    """A plain-text table of the summary."""
    lines = [
        f"rows={args.rows} latency={args.latency:g}s concurrency={args.concurrency} repeats={args.repeats} "
        f"ideal=ceil(N/C)*L={summary['ideal_s']:.3f}s",
        f"{'variant':<14}{'wall med (s)':>13}{'wall min (s)':>13}{'x ideal':>9}{'ovh ms/row':>12}"
        f"{'CPU ms/row':>12}{'peak RSS MB':>13}{'import s':>10}{'status':>8}",
    ]
    for variant, v in summary["variants"].items():
        lines.append(
            f"{variant:<14}{fmt(v.get('wall_median_s'), '.3f'):>13}{fmt(v.get('wall_min_s'), '.3f'):>13}"
            f"{fmt(v.get('ratio_to_ideal'), '.2f'):>9}{fmt(v.get('overhead_ms_per_row'), '.2f'):>12}"
            f"{fmt(v.get('cpu_ms_per_row'), '.3f'):>12}{fmt(v.get('peak_rss_mb'), '.0f'):>13}{fmt(v.get('import_s'), '.2f'):>10}"
            f"{'FAILED' if v['failed'] else 'ok':>8}")
        for problem in v["problems"]:
            lines.append(f"    problem: {problem[:300]}")
    r = summary["ratios"]
    lines.append(f"metis / bare-aiohttp = {fmt(r['metis_over_bare'], '.2f')} "
                 f"(target <= {TARGET_METIS_OVER_BARE}: {'met' if r['metis_over_bare_ok'] else 'NOT met'})")
    lines.append(f"ep-stock / metis     = {fmt(r['ep_stock_over_metis'], '.2f')} "
                 f"(target >= {TARGET_EP_OVER_METIS:g}: {'met' if r['ep_stock_over_metis_ok'] else 'NOT met'})")
    lines.append(f"client CPU per row: metis / bare-aiohttp = {fmt(r['cpu_metis_over_bare'], '.2f')}, "
                 f"ep-stock / metis = {fmt(r['cpu_ep_stock_over_metis'], '.2f')}")
    lines.append("ep-stock includes Eval Protocol's per-row SQLite logging (HOME set to a temporary directory).")
    return "\n".join(lines)


def plot(summary: dict[str, Any], path: Path) -> None:
    """Bar chart of median wall per variant, min..median error bars, the ideal as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [v for v in VARIANTS if summary["variants"][v].get("wall_median_s") is not None]
    medians = [summary["variants"][v]["wall_median_s"] for v in names]
    mins = [summary["variants"][v]["wall_min_s"] for v in names]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = {"metis": "tab:blue", "ep-stock": "tab:orange", "bare-aiohttp": "tab:green"}
    ax.bar(names, medians, color=[colors[n] for n in names],
           yerr=[[m - lo for m, lo in zip(medians, mins)], [0] * len(names)], capsize=6)
    for i, m in enumerate(medians):
        ax.text(i, m, f"{m:.2f}s", ha="center", va="bottom")
    ax.axhline(summary["ideal_s"], color="black", linestyle="--", label=f"ideal ceil(N/C)*L = {summary['ideal_s']:.2f}s")
    r = summary["ratios"]
    ax.set_title(f"rollout+score wall (median; bar = min..median)\nmetis/bare = {fmt(r['metis_over_bare'], '.2f')}, "
                 f"ep-stock/metis = {fmt(r['ep_stock_over_metis'], '.2f')}", fontsize=10)
    ax.set_ylabel("seconds")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parent_main(args: argparse.Namespace) -> None:
    """Start the server, run the interleaved children, write rollout.json and rollout.png."""
    from metis_pytest.testing.scripted_server import run_in_subprocess

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="metis-bench-") as tmp:
        source = Path(args.data)
        prepared, data_note = prepare_data(source, args.rows, Path(tmp) / "data")
        print(f"data: {data_note}", file=sys.stderr)
        args.data = str(prepared)
        rows = load_rows(prepared)
        requests = Path(tmp) / "bare_requests.jsonl"
        write_bare_requests(rows, requests)
        del rows
        with run_in_subprocess(latency=args.latency, reply=REPLY) as server:
            print(f"scripted server pid {server.pid} at {server.base_url}", file=sys.stderr)
            for repeat in range(args.repeats):
                for variant in VARIANTS:
                    home = Path(tempfile.mkdtemp(prefix="home-", dir=tmp))
                    result = run_child(args, variant, server.base_url, requests, home)
                    result["repeat"] = repeat
                    runs.append(result)
                    problem = run_problem(result, args.rows)
                    shown = f"wall {result['wall_s']:.3f}s" if "wall_s" in result else ""
                    print(f"[{len(runs)}/{args.repeats * len(VARIANTS)}] {variant} repeat {repeat}: {shown} "
                          f"{'ok' if problem is None else 'PROBLEM: ' + problem[:200]}", file=sys.stderr)
            profiles = []
            if args.profile:
                for variant in VARIANTS:
                    home = Path(tempfile.mkdtemp(prefix="home-", dir=tmp))
                    profiles.append(run_child(args, variant, server.base_url, requests, home, profile=True))
                    print(f"profiled {variant}: {out / f'profile_{variant}.txt'}", file=sys.stderr)
    summary = summarize(runs, args)
    report = {
        "benchmark": "rollout",
        "parameters": {"rows": args.rows, "latency_s": args.latency, "concurrency": args.concurrency,
                       "repeats": args.repeats, "model": MODEL, "max_tokens": MAX_TOKENS, "reply": REPLY,
                       "data": data_note, "data_source": str(source)},
        "notes": [
            "wall = time.perf_counter() around rollout + scoring only (not imports or data loading)",
            "CPU ms/row = the child's time.process_time() over the same region / N (client CPU, all threads)",
            "ep-stock includes Eval Protocol's stock per-row SQLite logging (HOME set to a temporary directory)",
            "bare-aiohttp scores with scoring.score() but builds no EvaluationRow/EvaluateResult objects",
            "peak RSS = the child's VmHWM (includes imports and data loading); ru_maxrss_mb is kept in the raw "
            "runs but on Linux it is inherited across exec from the parent at fork time, so it overstates",
        ],
        "machine": machine_info(("eval-protocol", "litellm", "aiohttp", "metis-pytest", "pydantic")),
        "summary": summary,
        "runs": runs,
        "profile_runs": profiles,
    }
    (out / "rollout.json").write_text(json.dumps(report, indent=2))
    plot(summary, out / "rollout.png")
    print(format_table(summary, args))
    print(f"wrote {out / 'rollout.json'} and {out / 'rollout.png'}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1319, help="rows per run (N)")
    parser.add_argument("--latency", type=float, default=0.05, help="scripted server latency per request (L, s)")
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight (C)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per variant, interleaved")
    parser.add_argument("--data", default=str(default_data_path()), help="GSM8K JSONL file")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"), help="output folder")
    parser.add_argument("--profile", action="store_true",
                        help="after the timed runs, one extra cProfile'd run per variant -> <out>/profile_<v>.txt")
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # child mode
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--requests", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rows < 1 or args.concurrency < 1 or args.repeats < 1 or args.latency < 0:
        parser.error("--rows, --concurrency and --repeats must be >= 1 and --latency >= 0")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.variant:
        child_main(args)
    else:
        parent_main(args)


if __name__ == "__main__":
    main()

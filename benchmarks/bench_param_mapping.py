"""Two ways to send API-provider requests with per-model params: LiteLLM's mapping + our aiohttp transport,
or ``litellm.acompletion`` end to end.

Both send N chat requests for ``openai/o3-mini`` (whose params need mapping: ``max_tokens`` becomes
``max_completion_tokens``, ``temperature=0`` is dropped) to one scripted OpenAI-compatible server (its own
process, fixed latency per request) with C requests in flight:

* ``mapped-aiohttp``: ``metis_pytest.rollout.http.complete`` on an ``api``-backend ``ModelTarget``: params
  mapped once by ``litellm.get_optional_params(..., drop_params=True)`` (cached per model and params),
  then OpenAI's wire format over one ``aiohttp.ClientSession``;
* ``litellm-acompletion``: ``litellm.acompletion(model="openai/o3-mini", api_base=<server>, api_key=<dummy>,
  drop_params=True, num_retries=0)``: LiteLLM's mapping, the OpenAI SDK and LiteLLM's response handling.

Each run is a fresh child process; runs are interleaved a,b,a,b,... Before the timed runs, one request of
each variant goes to an in-process scripted server that records bodies, to check both send the same params.

    LITELLM_LOCAL_MODEL_COST_MAP=True .venv/bin/python benchmarks/bench_param_mapping.py \\
        --requests 500 --concurrency 32 --repeats 3
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # before anything imports LiteLLM
os.environ.setdefault("EP_NO_UPLOAD", "1")

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from _machine import machine_info  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

VARIANTS: tuple[str, ...] = ("mapped-aiohttp", "litellm-acompletion")
MODEL = "openai/o3-mini"
TEMPERATURE = 0.0
MAX_TOKENS = 64
REPLY = "<answer>42</answer>"
DUMMY_KEY = "sk-bench-not-secret"
RESULT_PREFIX = "BENCH_RESULT "


def messages_for(i: int) -> list[dict[str, Any]]:
    return [{"role": "system", "content": "Answer inside <answer></answer> tags."},
            {"role": "user", "content": f"Question {i}: what is 6 times 7?"}]


def public_params(url: str) -> dict[str, Any]:
    return {"model": MODEL, "api_base": url, "temperature": TEMPERATURE, "max_tokens": MAX_TOKENS}


# --------------------------------------------------------------------------- the two designs


def mapped_target(url: str) -> Any:
    from metis_pytest.backends.base import ModelTarget

    return ModelTarget(label=MODEL, backend="api", litellm_model=MODEL, api_base=url, openai_wire=True)


async def send_mapped(url: str, n: int, concurrency: int, first: int = 0) -> list[str]:
    """N requests through Metis's transport: cached LiteLLM param mapping, then aiohttp."""
    import aiohttp

    from metis_pytest.rollout.http import RetryPolicy, complete

    target, params, policy = mapped_target(url), public_params(url), RetryPolicy(max_retries=0, timeout=60)
    semaphore = asyncio.Semaphore(concurrency)

    async def one(session: aiohttp.ClientSession, i: int) -> str:
        async with semaphore:
            completion = await complete(session, target, params, messages_for(i), None, policy)
        return completion.message.get("content") or ""

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        return list(await asyncio.gather(*(one(session, first + i) for i in range(n)), return_exceptions=True))


async def send_litellm(url: str, n: int, concurrency: int, first: int = 0) -> list[str]:
    """N requests through ``litellm.acompletion`` (its own mapping, the OpenAI SDK, its response types)."""
    import litellm

    semaphore = asyncio.Semaphore(concurrency)

    async def one(i: int) -> str:
        async with semaphore:
            response = await litellm.acompletion(model=MODEL, api_base=url, api_key=DUMMY_KEY,
                                                 messages=messages_for(i), temperature=TEMPERATURE,
                                                 max_tokens=MAX_TOKENS, drop_params=True, num_retries=0,
                                                 timeout=60)
        return response.choices[0].message.content or ""

    return list(await asyncio.gather(*(one(first + i) for i in range(n)), return_exceptions=True))


SENDERS = {"mapped-aiohttp": send_mapped, "litellm-acompletion": send_litellm}


# --------------------------------------------------------------------------- child


def import_variant(variant: str) -> None:
    """What the timed region needs, imported first so import cost is measured separately."""
    import litellm  # noqa: F401  (both designs use LiteLLM: one for its mapping, one for everything)

    if variant == "mapped-aiohttp":
        import aiohttp  # noqa: F401

        import metis_pytest.rollout.http  # noqa: F401


def child_main(args: argparse.Namespace) -> None:
    """Run one variant once and print one ``BENCH_RESULT {json}`` line."""
    t0 = time.perf_counter()
    import_variant(args.variant)
    import_s = time.perf_counter() - t0
    sender = SENDERS[args.variant]
    cpu_start, start = time.process_time(), time.perf_counter()
    replies = asyncio.run(sender(args.url, args.requests, args.concurrency))
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    errors = [f"{type(r).__name__}: {r}" for r in replies if isinstance(r, BaseException)]
    result = {"variant": args.variant, "wall_s": wall, "cpu_s": cpu, "requests": len(replies),
              "errors": len(errors), "first_errors": errors[:3],
              "expected_replies": sum(1 for r in replies if r == REPLY), "import_s": import_s}
    print(RESULT_PREFIX + json.dumps(result), flush=True)


# --------------------------------------------------------------------------- parent


def ideal_seconds(n: int, concurrency: int, latency: float) -> float:
    """ceil(N / C) * L: the wall time if only the server's latency cost anything."""
    return math.ceil(n / concurrency) * latency


def run_child(args: argparse.Namespace, variant: str, url: str) -> dict[str, Any]:
    """One fresh child process; its result, or a failed record with the reason."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--variant", variant, "--url", url,
           "--requests", str(args.requests), "--concurrency", str(args.concurrency)]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    timeout = max(120.0, 20 * ideal_seconds(args.requests, args.concurrency, args.latency) + 60)
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    except subprocess.TimeoutExpired:
        return {"variant": variant, "failed": f"timed out after {timeout:.0f}s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        return {"variant": variant, "failed": f"exit {proc.returncode}: {(proc.stderr or proc.stdout)[-2000:]}"}
    return json.loads(lines[-1][len(RESULT_PREFIX):])


def run_problem(result: dict[str, Any], n: int) -> str | None:
    if "failed" in result:
        return result["failed"]
    if result["errors"]:
        return f"{result['errors']} of {n} requests errored: {result['first_errors']}"
    if result["expected_replies"] != n:
        return f"only {result['expected_replies']} of {n} replies were {REPLY!r}"
    return None


def wire_check() -> dict[str, Any]:
    """The body each design sends for the same params, from an in-process recording server."""
    from metis_pytest.rollout.http import map_params
    from metis_pytest.testing.scripted_server import ScriptedServer

    with ScriptedServer(default=REPLY) as server:
        bodies: dict[str, Any] = {}
        for variant, sender in SENDERS.items():
            before = server.request_count
            replies = asyncio.run(sender(server.base_url, 1, 1))
            body = dict(server.requests[before].body)
            body.pop("messages", None)
            bodies[variant] = {"body_without_messages": body, "reply_ok": replies == [REPLY]}
        mapping = map_params(mapped_target(server.base_url), public_params(server.base_url))
    keys = {v: sorted(b["body_without_messages"]) for v, b in bodies.items()}
    return {"bodies": bodies, "mapping": mapping.record(), "same_params": len({tuple(k) for k in keys.values()}) == 1,
            "note": "the OpenAI SDK under litellm.acompletion may add fields of its own; compare params, not bytes"}


def mapping_cost(url: str, loops: int = 20000) -> dict[str, float]:
    """Microseconds for :func:`map_params`: a first call for new params (LiteLLM runs) and a cached call."""
    from metis_pytest.rollout.http import map_params

    target = mapped_target(url)
    fresh = {**public_params(url), "max_tokens": MAX_TOKENS + 1}  # params no earlier call has mapped
    start = time.perf_counter()
    map_params(target, fresh)
    first_us = (time.perf_counter() - start) * 1e6
    start = time.perf_counter()
    for _ in range(loops):
        map_params(target, fresh)
    return {"first_call_us": first_us, "cached_call_us": (time.perf_counter() - start) / loops * 1e6}


def summarize(runs: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    ideal = ideal_seconds(args.requests, args.concurrency, args.latency)
    variants: dict[str, Any] = {}
    for variant in VARIANTS:
        mine = [r for r in runs if r["variant"] == variant]
        problems = [p for p in (run_problem(r, args.requests) for r in mine) if p]
        good = [r for r in mine if run_problem(r, args.requests) is None]
        entry: dict[str, Any] = {"runs": len(mine), "ok_runs": len(good), "failed": bool(problems) or not good,
                                 "problems": problems}
        if good:
            walls = [r["wall_s"] for r in good]
            median = statistics.median(walls)
            entry.update(wall_median_s=median, wall_min_s=min(walls), wall_max_s=max(walls),
                         ratio_to_ideal=median / ideal,
                         cpu_ms_per_request=statistics.median(r["cpu_s"] for r in good) / args.requests * 1000,
                         import_s=statistics.median(r["import_s"] for r in good))
        variants[variant] = entry
    a, b = variants["mapped-aiohttp"], variants["litellm-acompletion"]
    wall_ratio = b["wall_median_s"] / a["wall_median_s"] if "wall_median_s" in a and "wall_median_s" in b else None
    cpu_ratio = (b["cpu_ms_per_request"] / a["cpu_ms_per_request"]
                 if "cpu_ms_per_request" in a and "cpu_ms_per_request" in b else None)
    return {"ideal_s": ideal, "variants": variants,
            "ratios": {"wall_litellm_over_mapped": wall_ratio, "cpu_litellm_over_mapped": cpu_ratio}}


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_table(summary: dict[str, Any], args: argparse.Namespace) -> str:
    lines = [
        f"model={MODEL} N={args.requests} C={args.concurrency} latency={args.latency:g}s repeats={args.repeats} "
        f"ideal=ceil(N/C)*L={summary['ideal_s']:.3f}s",
        f"{'variant':<21}{'wall med (s)':>13}{'wall min (s)':>13}{'x ideal':>9}{'CPU ms/req':>12}"
        f"{'import s':>10}{'status':>8}",
    ]
    for variant, v in summary["variants"].items():
        lines.append(f"{variant:<21}{fmt(v.get('wall_median_s'), '.3f'):>13}{fmt(v.get('wall_min_s'), '.3f'):>13}"
                     f"{fmt(v.get('ratio_to_ideal'), '.2f'):>9}{fmt(v.get('cpu_ms_per_request'), '.3f'):>12}"
                     f"{fmt(v.get('import_s'), '.2f'):>10}{'FAILED' if v['failed'] else 'ok':>8}")
        for problem in v["problems"]:
            lines.append(f"    problem: {problem[:300]}")
    r = summary["ratios"]
    lines.append(f"litellm-acompletion / mapped-aiohttp: wall {fmt(r['wall_litellm_over_mapped'], '.2f')}x, "
                 f"client CPU per request {fmt(r['cpu_litellm_over_mapped'], '.2f')}x")
    return "\n".join(lines)


def parent_main(args: argparse.Namespace) -> None:
    from metis_pytest.testing.scripted_server import run_in_subprocess

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    check = wire_check()
    print(f"wire check: same params sent: {check['same_params']}; "
          + "; ".join(f"{v}: {json.dumps(b['body_without_messages'])}" for v, b in check["bodies"].items()),
          file=sys.stderr)
    cost = mapping_cost("http://127.0.0.1:9/v1")
    print(f"map_params: first call {cost['first_call_us']:.0f} us, cached {cost['cached_call_us']:.1f} us",
          file=sys.stderr)
    runs: list[dict[str, Any]] = []
    with run_in_subprocess(latency=args.latency, reply=REPLY) as server:
        print(f"scripted server pid {server.pid} at {server.base_url}", file=sys.stderr)
        for repeat in range(args.repeats):
            for variant in VARIANTS:
                result = run_child(args, variant, server.base_url)
                result["repeat"] = repeat
                runs.append(result)
                problem = run_problem(result, args.requests)
                shown = f"wall {result['wall_s']:.3f}s cpu {result['cpu_s']:.3f}s" if "wall_s" in result else ""
                print(f"[{len(runs)}/{args.repeats * len(VARIANTS)}] {variant} repeat {repeat}: {shown} "
                      f"{'ok' if problem is None else 'PROBLEM: ' + problem[:200]}", file=sys.stderr)
    summary = summarize(runs, args)
    report = {
        "benchmark": "param_mapping",
        "parameters": {"requests": args.requests, "concurrency": args.concurrency, "latency_s": args.latency,
                       "repeats": args.repeats, "model": MODEL, "temperature": TEMPERATURE,
                       "max_tokens": MAX_TOKENS, "reply": REPLY},
        "notes": [
            "mapped-aiohttp = metis_pytest.rollout.http.complete on an api-backend target: "
            "litellm.get_optional_params(drop_params=True) once per (model, params), then aiohttp",
            "litellm-acompletion = litellm.acompletion(api_base=<server>, api_key=<dummy>, drop_params=True, "
            "num_retries=0)",
            "wall = time.perf_counter() around the N requests only (imports excluded, measured as import_s); "
            "each run is a fresh process, so first-request costs (param mapping, client setup) are included",
            "CPU ms/req = the child's time.process_time() over the same region / N (client CPU, all threads)",
            "medians over the repeats; runs interleaved a,b,a,b,...; the server is a separate process",
        ],
        "machine": machine_info(("litellm", "aiohttp", "openai", "httpx", "metis-pytest")),
        "wire_check": check,
        "mapping_cost": cost,
        "summary": summary,
        "runs": runs,
    }
    path = out / "param_mapping.json"
    path.write_text(json.dumps(report, indent=2))
    print(format_table(summary, args))
    print(f"map_params per request (cached): {cost['cached_call_us']:.1f} us; first call for new params: "
          f"{cost['first_call_us']:.0f} us")
    print(f"wrote {path}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=500, help="requests per run (N)")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight (C)")
    parser.add_argument("--latency", type=float, default=0.05, help="scripted server latency per request (L, s)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per variant, interleaved")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"), help="output folder")
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # child mode
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.requests < 1 or args.concurrency < 1 or args.repeats < 1 or args.latency < 0:
        parser.error("--requests, --concurrency and --repeats must be >= 1 and --latency >= 0")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.variant:
        child_main(args)
    else:
        parent_main(args)


if __name__ == "__main__":
    main()

"""Output tokens/s of one vLLM server through the harness vs ``vllm bench serve``, same model, same prompts.

    python benchmarks/bench_modal_vllm.py --model Qwen/Qwen3-8B --where modal --rows 256 --concurrency 64
    python benchmarks/bench_modal_vllm.py --model Qwen/Qwen2.5-0.5B-Instruct --where local
    python benchmarks/bench_modal_vllm.py --model Qwen/Qwen3-8B --api-base http://127.0.0.1:8000   # already up

Where the server runs: ``--where local`` starts ``vllm serve`` here (needs ``vllm`` on PATH and
``nvidia-smi``); ``--where modal`` starts (or finds deployed) the app of ``--backend modal``
(needs a Modal token and, unless ``--public``, MODAL_PROXY_TOKEN_ID/SECRET); ``--api-base`` uses a
running server; ``auto`` (the default) takes local, then Modal. With none of them it says so and
exits 0 having measured nothing.

Both sides get the same GSM8K prompts (``--data``, default the repo's 12-row smoke sample, cycled to
``--rows``), ``--max-tokens`` and ``--concurrency``:

* **harness**: :class:`metis_pytest.rollout.single_turn.SingleTurnProcessor`, the path of
  ``pytest evals/gsm8k``; tokens are the servers' ``usage.completion_tokens``;
* **vllm bench serve**: ``--backend openai-chat --dataset-name custom`` on the same prompts (it
  needs ``vllm`` installed where this runs); its "Output token throughput" line is read.

The JSON written to ``--out`` holds both figures, the settings and the machine.
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("EP_NO_UPLOAD", "1")

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from _machine import machine_info  # noqa: E402

from metis_pytest.backends import modal_vllm as mv  # noqa: E402
from metis_pytest.backends.base import ModelTarget  # noqa: E402

SMOKE = REPO / "datasets" / "gsm8k_smoke.jsonl"


def where_available(choice: str, api_base: str | None) -> tuple[str | None, str]:
    """``(where, why)``: the place a server can run, or None and why there is none."""
    if api_base:
        return "url", api_base
    local = bool(shutil.which("vllm") and shutil.which("nvidia-smi"))
    try:
        mv.require_modal_token()
        modal_ok, modal_why = True, ""
    except (mv.ModalServeError, ImportError) as exc:
        modal_ok, modal_why = False, str(exc)
    if choice in ("local", "auto") and local:
        return "local", "vllm and nvidia-smi on PATH"
    if choice in ("modal", "auto") and modal_ok:
        return "modal", "Modal token configured"
    reasons = []
    if choice in ("local", "auto"):
        reasons.append("no local GPU server (needs `vllm` and `nvidia-smi` on PATH)")
    if choice in ("modal", "auto"):
        reasons.append(f"no Modal ({modal_why or 'modal not installed'})")
    return None, "; ".join(reasons)


def rows(data: Path, n: int) -> list[Any]:
    from evals.gsm8k.dataset import load

    loaded = load(str(data))
    return [loaded[i % len(loaded)].model_copy(deep=True) for i in range(n)]


def harness(base: str, target: ModelTarget, data: list[Any], args: argparse.Namespace) -> dict[str, Any]:
    from eval_protocol.pytest.types import RolloutProcessorConfig

    from metis_pytest.rollout.single_turn import SingleTurnProcessor

    processor = SingleTurnProcessor(resolver=lambda params: target)
    params = {"model": target.litellm_model, "temperature": 0.0, "max_tokens": args.max_tokens}

    async def go() -> tuple[float, list[Any]]:
        config = RolloutProcessorConfig(completion_params=params, mcp_config_path="",
                                        semaphore=asyncio.Semaphore(args.concurrency))
        start = time.perf_counter()
        done = await asyncio.gather(*processor(data, config))
        took = time.perf_counter() - start
        await processor.acleanup()
        return took, done

    took, done = asyncio.run(go())
    tokens = sum(r.execution_metadata.usage.completion_tokens for r in done if r.execution_metadata.usage)
    errored = sum(1 for r in done if r.rollout_status.is_error())
    return {"seconds": took, "completion_tokens": tokens, "tokens_per_s": tokens / took, "errored": errored}


def vllm_bench(base: str, model: str, data: list[Any], headers: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    if not shutil.which("vllm"):
        return {"skipped": "`vllm` is not installed here, so `vllm bench serve` cannot run"}
    with tempfile.TemporaryDirectory() as tmp:
        prompts = Path(tmp) / "prompts.jsonl"
        prompts.write_text("".join(json.dumps({"prompt": r.messages[-1].content}) + "\n" for r in data))
        command = ["vllm", "bench", "serve", "--backend", "openai-chat", "--base-url", base,
                   "--endpoint", "/v1/chat/completions", "--model", model, "--dataset-name", "custom",
                   "--dataset-path", str(prompts), "--num-prompts", str(len(data)),
                   "--max-concurrency", str(args.concurrency), "--custom-output-len", str(args.max_tokens)]
        for name, value in headers.items():
            command += ["--header", f"{name}={value}"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
    found = re.search(r"Output token throughput \(tok/s\):\s*([\d.]+)", done.stdout)
    if done.returncode != 0 or not found:
        return {"failed": f"exit {done.returncode}: {(done.stderr or done.stdout)[-800:]}"}
    return {"tokens_per_s": float(found.group(1))}


def start_local(model: str, port: int, log: Path) -> tuple[str, subprocess.Popen[bytes]]:
    spec = mv.ServeSpec(model=model, tool_parser=None)
    command = [c if c != "0.0.0.0" else "127.0.0.1" for c in mv.vllm_command(spec)]
    command[command.index("--port") + 1] = str(port)
    process = subprocess.Popen(command, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    return f"http://127.0.0.1:{port}", process


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="Qwen/Qwen2.5-0.5B-Instruct")
    parser.add_argument("--where", choices=("auto", "local", "modal"), default="auto")
    parser.add_argument("--api-base", default=None, help="root URL of a running vLLM server (no /v1)")
    parser.add_argument("--public", action="store_true", help="the Modal endpoint has no proxy auth")
    parser.add_argument("--data", type=Path, default=SMOKE)
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--port", type=int, default=8011)
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds for start-up and for each side")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args(argv)

    where, why = where_available(args.where, args.api_base)
    if where is None:
        print(f"bench_modal_vllm: nothing measured: {why}.")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    headers_env = () if args.public or where != "modal" else mv.PROXY_HEADERS
    target_of = lambda base: ModelTarget(label=args.model, backend="bench", litellm_model=f"openai/{args.model}",  # noqa: E731
                                         api_base=f"{base}/v1", served_model=args.model, header_env=headers_env)
    stop = lambda: None  # noqa: E731
    process = None
    if where == "url":
        base = args.api_base.rstrip("/")
    elif where == "local":
        base, process = start_local(args.model, args.port, args.out / "vllm-local.log")
    else:
        cfg_spec = mv.ServeSpec(model=args.model, gpu=mv.size_gpus(args.model, override=None, billions=None,
                                                                   config=None).gpu,
                                tool_parser=None, proxy_auth=not args.public, hf_secret="huggingface-secret")
        launched = mv.ModalLauncher().launch(cfg_spec)
        base, stop = launched.urls[0], (launched.stop if not launched.deployed else stop)
    try:
        target = target_of(base)
        mv.wait_healthy((base,), target.auth_headers(), timeout=args.timeout, log_tail=lambda: "")
        data = rows(args.data, args.rows)
        result = {"model": args.model, "where": where, "rows": args.rows, "concurrency": args.concurrency,
                  "max_tokens": args.max_tokens, "machine": machine_info(("vllm", "modal", "aiohttp", "metis-pytest")),
                  "harness": harness(base, target, data, args),
                  "vllm_bench_serve": vllm_bench(base, args.model, data, target.auth_headers(), args)}
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=60)
        stop()
    path = args.out / "modal_vllm.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("where", "harness", "vllm_bench_serve")}, indent=2))
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

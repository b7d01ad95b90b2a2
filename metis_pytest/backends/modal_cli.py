"""``metis serve modal MODEL``: deploy a model's vLLM app on Modal for a persistent endpoint.

    metis serve modal Qwen/Qwen3-8B [--shards 2] [--gpu H100:2] [--min-containers 1] [--wait]
    metis serve modal volume:metis-grpo-checkpoints/metis-grpo/gsm8k-Qwen2.5-0.5B/global_step_20
    metis serve modal Qwen/Qwen3-8B --dry-run      # print the spec and the vLLM command, touch nothing

It deploys :func:`metis_pytest.backends.modal_app.build_app` as ``metis-vllm-<model slug>`` (what
``modal deploy`` would), prints every replica's URL and the pytest command that uses it, and, with
``--wait``, waits for their ``/health``. ``pytest --backend modal --model MODEL`` then finds the
deployed app by that name and never stops it; ``modal app stop <name>`` does. A deployed app scales
to zero when idle unless ``--min-containers`` keeps replicas warm (each one holds its GPUs).
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from typing import Any


def add_serve(sub: Any) -> None:
    """Register ``metis serve modal`` on the top-level subparsers."""
    serve = sub.add_parser("serve", help="deploy a persistent model endpoint (vLLM on Modal)")
    serve_sub = serve.add_subparsers(dest="serve_command", required=True)
    modal = serve_sub.add_parser(
        "modal", help="deploy MODEL's vLLM app on Modal GPUs (metis-vllm-<model>)",
        description="Deploy vLLM serving MODEL on Modal; `pytest --backend modal --model MODEL` then uses it. "
                    "Decisions: metis_pytest/backends/modal_vllm.py and modal_app.py.")
    modal.add_argument("model", metavar="MODEL",
                       help="a Hugging Face id (Qwen/Qwen3-8B), or volume:<volume>/<path> for a checkpoint")
    modal.add_argument("--shards", type=int, default=1, metavar="N", help="replicas, one container each (default 1)")
    modal.add_argument("--gpu", default=None, metavar="SPEC",
                       help="GPUs per replica (H100, H100:2, ...); default: by parameter count")
    modal.add_argument("--max-model-len", type=int, default=8192, metavar="N", help="vLLM's --max-model-len")
    modal.add_argument("--tool-parser", default=None, metavar="NAME",
                       help="vLLM's --tool-call-parser, or none; default: by model family")
    modal.add_argument("--hf-secret", default="huggingface-secret", metavar="NAME",
                       help="Modal secret holding HF_TOKEN, or none (default: huggingface-secret)")
    modal.add_argument("--public", action="store_true", help="no proxy auth: anyone with the URL can call it")
    modal.add_argument("--min-containers", type=int, default=0, metavar="N",
                       help="containers kept warm per replica (default 0: scale to zero when idle)")
    modal.add_argument("--scaledown-window", type=int, default=15 * 60, metavar="S",
                       help="seconds an idle container waits before it stops (default 900)")
    modal.add_argument("--startup-timeout", type=float, default=1200.0, metavar="S",
                       help="seconds vLLM may take to load (and, with --wait, to answer /health)")
    modal.add_argument("--wait", action="store_true", help="wait until every replica answers /health")
    modal.add_argument("--dry-run", action="store_true", help="print the spec and the vLLM command; deploy nothing")
    modal.set_defaults(func=run_serve_modal)


def run_serve_modal(args: argparse.Namespace) -> int:
    from metis_pytest.backends.base import ModelTarget
    from metis_pytest.backends.modal_vllm import (
        PROXY_HEADERS,
        ModalServeError,
        current_launcher,
        spec_for,
        vllm_command,
        wait_healthy,
    )
    from metis_pytest.options import MetisConfig

    config = dataclasses.replace(
        MetisConfig(), backend="modal", models=(args.model,), shards=args.shards, modal_gpu=args.gpu,
        modal_max_model_len=args.max_model_len, modal_tool_parser=args.tool_parser, modal_hf_secret=args.hf_secret,
        modal_startup_timeout=args.startup_timeout, modal_public=args.public)
    launcher = current_launcher()
    try:
        spec = spec_for(args.model, config, launcher, min_containers=args.min_containers)
        spec = dataclasses.replace(spec, scaledown_window=args.scaledown_window)
        print(f"app {spec.app_name}: {spec.replicas} x {spec.gpu}, tool parser {spec.tool_parser or 'none'}, "
              f"proxy auth {'off' if args.public else 'on'}")
        print(f"vllm: {shlex.join(vllm_command(spec))}", flush=True)
        if args.dry_run:
            return 0
        launched = launcher.deploy(spec)
        for index, url in enumerate(launched.urls):
            print(f"replica {index}: {url}/v1")
        if args.wait:
            target = ModelTarget(label=args.model, backend="modal", litellm_model="",
                                 header_env=() if args.public else PROXY_HEADERS)
            wait_healthy(launched.urls, target.auth_headers(), timeout=spec.startup_timeout,
                         log_tail=launched.log_tail)
            print("healthy")
    except ModalServeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    shards = f" --shards {spec.replicas}" if spec.replicas > 1 else ""
    print(f"use it: pytest evals/gsm8k --backend modal --model {shlex.quote(args.model)}{shards}")
    print(f"stop it: modal app stop {spec.app_name}")
    return 0

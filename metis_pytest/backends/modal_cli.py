"""``metis serve modal MODEL``: deploy a model's vLLM app on Modal for a persistent endpoint.

    metis serve modal Qwen/Qwen3-8B [--shards 2] [--gpu H100:2] [--min-containers 1] [--wait]
    metis serve modal volume:metis-grpo-checkpoints/metis-grpo/gsm8k-Qwen2.5-0.5B/global_step_20
    metis serve modal Qwen/Qwen3-8B --dry-run      # print the spec and the vLLM command, touch nothing

It deploys :func:`metis_pytest.backends.modal_app.build_app` as ``metis-vllm-<model slug>`` (what
``modal deploy`` would), prints every replica's URL and the pytest command that uses it, and, with
``--wait``, waits for their ``/health``. ``pytest --backend modal --model MODEL`` then finds the
deployed app by that name and never stops it; ``modal app stop <name>`` does. A deployed app scales
to zero when idle unless ``--min-containers`` keeps replicas warm (each one holds its GPUs).

``metis run modal [--secret NAME]... [--name RUN] -- <pytest args>`` runs an evaluation in a Modal
container with its run folder on the volume ``metis-runs``; ``metis fetch modal RUN [DEST]`` brings that
folder back (:mod:`metis_pytest.backends.modal_run`, registered by :func:`add_run`).
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


def add_run(sub: Any) -> None:
    """Register ``metis run modal`` and ``metis fetch modal`` on the top-level subparsers."""
    from metis_pytest.backends.modal_run import DEFAULT_CPU, DEFAULT_TIMEOUT_S, VOLUME

    run = sub.add_parser("run", help="run a pytest evaluation elsewhere (in a Modal container)")
    run_sub = run.add_subparsers(dest="run_command", required=True)
    modal = run_sub.add_parser(
        "modal", help=f"pytest in a Modal CPU container; the run folder goes to the volume {VOLUME}",
        description="Run `python -m pytest <pytest args> --output-dir <run folder>` in a Modal container built "
                    f"from this checkout; the run folder is /<name> in the volume {VOLUME}. "
                    "Decisions: metis_pytest/backends/modal_run.py.",
        epilog="Arguments after -- go to pytest, e.g. -- evals/gsm8k --model openai/gpt-4o-mini -n 2")
    modal.add_argument("--secret", action="append", default=[], metavar="NAME",
                       help="a Modal secret whose variables the run reads (API keys), repeatable")
    modal.add_argument("--name", default=None, metavar="RUN",
                       help="the run folder's name in the volume (default: run-<UTC time>); a used name adds to it")
    modal.add_argument("--cpu", type=float, default=DEFAULT_CPU, metavar="N",
                       help=f"CPUs of the container (default {DEFAULT_CPU:g})")
    modal.add_argument("--timeout", type=int, default=DEFAULT_TIMEOUT_S, metavar="S",
                       help=f"seconds before Modal stops the container (default {DEFAULT_TIMEOUT_S})")
    modal.add_argument("--detach", action="store_true", help="keep the run going after this command exits")
    modal.add_argument("--dry-run", action="store_true", help="print the modal and pytest commands; run nothing")
    modal.set_defaults(func=run_modal_run, pytest_args=[])

    fetch = sub.add_parser("fetch", help="bring a run folder back from where it ran (a Modal volume)")
    fetch_sub = fetch.add_subparsers(dest="fetch_command", required=True)
    get = fetch_sub.add_parser(
        "modal", help=f"download run folder RUN from the volume {VOLUME}",
        description=f"Download /RUN of the volume {VOLUME} (what `metis run modal --name RUN` wrote) into DEST.")
    get.add_argument("run", metavar="RUN", help="the run's name (printed by `metis run modal`)")
    get.add_argument("dest", nargs="?", default=None, metavar="DEST", help="where to write it (default: ./RUN)")
    get.add_argument("--force", action="store_true", help="write into a non-empty DEST, replacing its files")
    get.set_defaults(func=run_fetch_modal)


def _check_secrets(names: tuple[str, ...]) -> str | None:
    """Why one of the named Modal secrets cannot be had (``None`` when all are there)."""
    import modal
    from modal.exception import NotFoundError

    from metis_pytest.backends.modal_run import missing_secret

    for name in names:
        try:
            modal.Secret.from_name(name).hydrate()
        except NotFoundError:
            return missing_secret(name)
    return None


def run_modal_run(args: argparse.Namespace) -> int:
    import subprocess
    from pathlib import Path

    from metis_pytest.backends import modal_run as mr
    from metis_pytest.backends import modal_vllm
    from metis_pytest.store.runs import git_info

    source = git_info(Path(mr.__file__).resolve().parents[2])  # the checkout the image is built from
    try:
        launch = mr.RunLaunch(name=args.name or mr.default_name(), pytest_args=tuple(args.pytest_args),
                              secrets=tuple(args.secret), cpu=args.cpu, timeout=args.timeout, detach=args.detach,
                              git_commit=source["commit"], git_dirty=source["dirty"])
    except ValueError as exc:
        print(f"metis run modal: {exc}", file=sys.stderr)
        return 2
    command = mr.modal_command(launch, modal=(sys.executable, "-m", "modal"))
    where = [f"run folder: /{launch.name} in volume {mr.VOLUME} (copied there from the container's disk when pytest "
             f"ends); cpu {launch.cpu:g}, timeout {launch.timeout}s; secrets (Modal secret names): "
             f"{', '.join(launch.secrets) or 'none'}",
             f"fetch it: metis fetch modal {launch.name}   (or: {shlex.join(mr.fetch_command(launch.name))})"]
    if args.dry_run:
        print("# modal, here:")
        print(shlex.join(command))
        print(f"# pytest, in the container (in {mr.CHECKOUT}, the checkout copied into the image):")
        print(shlex.join(mr.pytest_command(launch.pytest_args, f"{mr.SCRATCH}/{launch.name}")))
        for line in where:
            print(f"# {line}")
        return 0
    try:
        modal_vllm.require_modal_token()
    except modal_vllm.ModalServeError as exc:
        print(f"metis run modal: {exc}", file=sys.stderr)
        return 2
    missing = _check_secrets(launch.secrets)
    if missing:
        print(f"metis run modal: {missing}", file=sys.stderr)
        return 2
    for line in where:
        print(line, flush=True)
    return subprocess.call(command)


def run_fetch_modal(args: argparse.Namespace) -> int:
    from pathlib import Path
    from typing import cast

    from metis_pytest.backends import modal_run as mr
    from metis_pytest.backends import modal_vllm

    try:
        modal_vllm.require_modal_token()
    except modal_vllm.ModalServeError as exc:
        print(f"metis fetch modal: {exc}", file=sys.stderr)
        return 2
    import modal

    dest = Path(args.dest) if args.dest else Path(args.run)
    volume = cast(mr.RunsVolume, modal.Volume.from_name(mr.VOLUME))  # its blocking listdir/read_file
    try:
        count = mr.fetch_run(volume, args.run, dest, force=args.force)
    except (mr.FetchError, ValueError) as exc:
        print(f"metis fetch modal: {exc}", file=sys.stderr)
        return 1
    print(f"{count} files of /{args.run} (volume {mr.VOLUME}) -> {dest}")
    print(f"show it: metis show {shlex.quote(str(dest))}; Eval Protocol's store: HOME={shlex.quote(str(dest))} ep logs")
    return 0

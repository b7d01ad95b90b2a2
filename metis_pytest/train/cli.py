"""``metis train grpo``: verl's GRPO on Modal, with a benchmark's scorer as the reward.

    metis train grpo --bench gsm8k --data data/gsm8k
    metis train grpo --bench ace --data data/ace --detach -- trainer.total_training_steps=1
    metis train grpo --bench ace --data data/ace --dry-run     # print the commands, run nothing

Everything after ``--`` is passed to verl as Hydra overrides. The command checks the data folder, then
runs ``modal run [--detach] -m metis_pytest.train.grpo_modal::main --spec JSON`` (the Modal CLI of this
environment: ``python -m modal``); ``--dry-run`` prints that command and the verl command the container
will run instead, and needs neither Modal nor a network. Settings and decisions:
:mod:`metis_pytest.train.grpo`; the app: :mod:`metis_pytest.train.grpo_modal`.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from metis_pytest.train.grpo import (
    CHECKPOINT_VOLUME,
    DATA_VOLUME,
    DEFAULT_MODEL,
    GrpoConfig,
    GrpoLaunch,
    fetch_command,
    for_benchmark,
    installed_package_dir,
    modal_command,
    verl_command,
)

__all__ = ["CONTAINER_PACKAGE", "add_train", "launch_from_args", "run_grpo"]

# How --dry-run writes the container's metis_pytest folder, which only the container knows.
CONTAINER_PACKAGE = Path("<metis_pytest>")
MODAL_CLI = (sys.executable, "-m", "modal")  # the Modal CLI of this environment
_DEFAULTS = GrpoConfig(benchmark="gsm8k")


def launch_from_args(args: argparse.Namespace) -> GrpoLaunch:
    """The :class:`GrpoLaunch` of parsed ``metis train grpo`` arguments (``ValueError`` on a bad setting)."""
    cfg = for_benchmark(
        args.bench, model=args.model, train_batch_size=args.batch_size, max_prompt_length=args.max_prompt_length,
        max_response_length=args.max_response_length, rollout_n=args.rollouts, gpu=args.gpu, n_gpus=args.gpus,
        ppo_mini_batch_size=args.mini_batch_size, judge_model=args.judge_model,
        reward_workers=args.reward_workers, judge_concurrency=args.judge_concurrency, judge_rpm=args.judge_rpm,
        project=args.project, experiment=args.experiment, save_freq=args.save_freq,
        wandb=bool(args.wandb_secret))
    secrets = [args.hf_secret, args.judge_secret if cfg.judged else "",
               args.tools_secret if cfg.uses_tools else "", args.wandb_secret or ""]
    launch = GrpoLaunch(config=cfg, overrides=tuple(args.overrides), data=str(Path(args.data).resolve()),
                        secrets=tuple(s for s in secrets if s), detach=args.detach)
    verl_command(cfg, launch.overrides, package_dir=CONTAINER_PACKAGE)  # refuses reserved or empty overrides
    return launch


def _check_data(launch: GrpoLaunch) -> None:
    folder = Path(launch.data)
    missing = [name for name in ("train.parquet", "test.parquet") if not (folder / name).is_file()]
    if missing:
        raise ValueError(f"{folder}: no {' or '.join(missing)}; write them with `metis data export "
                         f"{launch.config.benchmark} --format verl --out {folder}`")
    manifest = folder / "manifest.json"
    if manifest.is_file():
        exported = json.loads(manifest.read_text(encoding="utf-8")).get("benchmark")
        if exported and exported != launch.config.benchmark:
            raise ValueError(f"{folder} holds an export of {exported!r}, not {launch.config.benchmark!r}")


def _describe(launch: GrpoLaunch) -> list[str]:
    cfg = launch.config
    files = ", ".join(remote for _, remote in launch.data_files())
    return [
        f"data: {files} in volume {DATA_VOLUME} (mounted at {cfg.data_dir.rsplit('/', 1)[0]})",
        f"gpus: {cfg.gpu_spec}; secrets (Modal secret names): {', '.join(launch.secrets) or 'none'}",
        f"checkpoints: {cfg.hf_checkpoint_path()} in volume {CHECKPOINT_VOLUME}",
        f"fetch one: {shlex.join(fetch_command(cfg))}",
    ]


def run_grpo(args: argparse.Namespace) -> int:
    try:
        launch = launch_from_args(args)
        _check_data(launch)
    except (KeyError, ValueError) as exc:
        print(f"metis train grpo: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(f"# verl, in the container ({CONTAINER_PACKAGE} is the installed package's folder there):")
        print(shlex.join(verl_command(launch.config, launch.overrides, package_dir=CONTAINER_PACKAGE)))
        print("# modal, here:")
        print(shlex.join(modal_command(launch, modal=MODAL_CLI)))
        for line in _describe(launch):
            print(f"# {line}")
        return 0
    if launch.config.uses_tools:
        tools = installed_package_dir() / str(launch.config.tool_config)
        if not tools.is_file():
            print(f"metis train grpo: the tool config {tools} is missing from this checkout", file=sys.stderr)
            return 2
    for line in _describe(launch):
        print(line, flush=True)
    return subprocess.call(modal_command(launch, modal=MODAL_CLI))


def add_train(sub: Any) -> None:
    """Add ``train grpo`` to the ``metis`` subcommands."""
    train = sub.add_parser("train", help="RL training with a benchmark's scorer as the reward (GRPO on Modal)")
    train_sub = train.add_subparsers(dest="train_command", required=True)
    grpo = train_sub.add_parser(
        "grpo", help="verl's GRPO on Modal GPUs, rewarded by the benchmark's scorer",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    grpo.add_argument("--bench", required=True, help="a registered benchmark (gsm8k, ace, ...)")
    grpo.add_argument("--data", required=True, metavar="DIR",
                      help="the benchmark's `metis data export --format verl` folder (train.parquet, test.parquet)")
    grpo.add_argument("--model", default=None, help=f"the policy, a Hugging Face model id (default: {DEFAULT_MODEL})")
    grpo.add_argument("--batch-size", type=int, default=None, metavar="N",
                      help=f"prompts per step, data.train_batch_size (default: {_DEFAULTS.train_batch_size})")
    grpo.add_argument("--mini-batch-size", type=int, default=None, metavar="N",
                      help=f"prompts per PPO update (default: {_DEFAULTS.ppo_mini_batch_size})")
    grpo.add_argument("--max-prompt-length", type=int, default=None, metavar="TOKENS",
                      help=f"default: {_DEFAULTS.max_prompt_length}")
    grpo.add_argument("--max-response-length", type=int, default=None, metavar="TOKENS",
                      help=f"default: {_DEFAULTS.max_response_length}")
    grpo.add_argument("--rollouts", type=int, default=None, metavar="N",
                      help=f"rollouts per prompt, the GRPO group (default: {_DEFAULTS.rollout_n})")
    grpo.add_argument("--gpu", default=None, help=f"Modal GPU type (default: {_DEFAULTS.gpu})")
    grpo.add_argument("--gpus", type=int, default=None, metavar="N",
                      help=f"GPUs in the container (default: {_DEFAULTS.n_gpus})")
    grpo.add_argument("--judge-model", default=None,
                      help="judged benchmarks: the judge (default: openai/gpt-4o)")
    grpo.add_argument("--reward-workers", type=int, default=None, metavar="N",
                      help=f"judged: verl's reward workers, reward.num_workers (default: {_DEFAULTS.reward_workers})")
    grpo.add_argument("--judge-concurrency", type=int, default=None, metavar="N",
                      help=f"judged: samples scored at once, over all reward workers "
                           f"(default: {_DEFAULTS.judge_concurrency})")
    grpo.add_argument("--judge-rpm", type=int, default=None, metavar="N",
                      help="judged: samples scored per minute, over all reward workers (default: no limit)")
    grpo.add_argument("--project", default=None, help=f"verl project name (default: {_DEFAULTS.project})")
    grpo.add_argument("--experiment", default=None,
                      help="verl experiment name, the run's folder in the volumes (default: <bench>-<model>)")
    grpo.add_argument("--save-freq", type=int, default=None, metavar="STEPS",
                      help=f"checkpoint every STEPS steps and at the last (default: {_DEFAULTS.save_freq})")
    grpo.add_argument("--hf-secret", default="huggingface-secret", metavar="NAME",
                      help="Modal secret with HF_TOKEN ('' for none; default: huggingface-secret)")
    grpo.add_argument("--judge-secret", default="openai-secret", metavar="NAME",
                      help="judged: Modal secret with the judge's key (default: openai-secret, OPENAI_API_KEY)")
    grpo.add_argument("--tools-secret", default="searchapi-secret", metavar="NAME",
                      help="tool-using: Modal secret with the tools' keys (default: searchapi-secret, "
                           "SEARCHAPI_IO_KEY and optionally JINA_API_KEY)")
    grpo.add_argument("--wandb-secret", default=None, metavar="NAME",
                      help="Modal secret with WANDB_API_KEY: logs to W&B too (default: console only)")
    grpo.add_argument("--detach", action="store_true", help="keep the run going after this command exits")
    grpo.add_argument("--dry-run", action="store_true", help="print the verl and modal commands, run nothing")
    grpo.add_argument("overrides", nargs="*", metavar="-- KEY=VALUE",
                      help="verl (Hydra) overrides, after --; each replaces the setting of its key")
    grpo.set_defaults(func=run_grpo)

    from metis_pytest.train.modpo.cli import add_modpo

    add_modpo(train_sub)  # metis train modpo (metis_pytest/train/modpo/)

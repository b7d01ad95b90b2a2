"""``metis train modpo``: SFT -> DPO margin adapter -> margin check -> MODPO per w -> generate -> score.

    metis train modpo --base meta-llama/Llama-2-7b-hf --margin-attribute verbosity \\
        --preference-attribute helpfulness --w 0.1,0.5,0.9 --margin-beta 0.1 --out runs/modpo
    metis train modpo ... --out runs/modpo --from modpo      # redo MODPO (every w) and what follows
    metis train modpo ... --out runs/modpo --only margin-check
    metis train modpo ... --out runs/modpo --modal --detach   # on a Modal H100; outputs in a volume
    metis train modpo --base tiny-random --data ../shared/datasets/helpsteer/helpsteer2_sample70.jsonl \\
        --dtype fp32 --out /tmp/modpo-cpu --set max_steps=2    # the plumbing, on a CPU, in minutes

Rerunning the same command skips completed stages and resumes an interrupted one from its last
checkpoint; a changed setting reruns the stages that read it and everything after them
(:mod:`metis_pytest.train.modpo.stages`). Every :class:`~metis_pytest.train.modpo.config.ModpoConfig`
field can be set with ``--set FIELD=VALUE`` (``--set lora_r=32 --set epochs=1``). Running locally needs
the ``train`` extra (``pip install 'metis-pytest[train]'``); ``--modal`` needs only ``modal``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from metis_pytest.train.modpo.config import (
    DTYPES,
    ModpoConfig,
    parse_overrides,
    parse_w_grid,
    require_hf_token,
)

__all__ = ["add_modpo", "config_from_args", "run_modpo"]

_DEFAULTS = ModpoConfig(base="<base>")
MODAL_CLI = (sys.executable, "-m", "modal")


def config_from_args(args: argparse.Namespace) -> ModpoConfig:
    """The run's :class:`ModpoConfig`: the named flags, then ``--set`` (``ValueError`` on a bad setting)."""
    named: dict[str, Any] = {
        "base": args.base, "source": args.data, "split": args.split, "margin_attribute": args.margin_attribute,
        "margin_direction": args.margin_direction, "preference_attribute": args.preference_attribute,
        "preference_direction": args.preference_direction, "beta": args.beta, "margin_beta": args.margin_beta,
        "dpo_beta": args.dpo_beta, "dtype": args.dtype,
        "w": parse_w_grid(args.w) if args.w is not None else None,
    }
    values = {k: v for k, v in named.items() if v is not None}
    values.update(parse_overrides(args.set or []))
    return ModpoConfig(**values)


def _local(cfg: ModpoConfig, args: argparse.Namespace) -> int:
    from metis_pytest.train.modpo.pipeline import run_pipeline
    from metis_pytest.train.modpo.stages import StageFailed

    try:
        require_hf_token(cfg.base, os.environ)
        import torch  # noqa: F401  (the train extra)
    except ImportError:
        print("metis train modpo: torch is not installed; pip install 'metis-pytest[train]' (or use --modal)",
              file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"metis train modpo: {exc}", file=sys.stderr)
        return 2
    try:
        run_pipeline(cfg, Path(args.out), start_from=args.start_from, only=args.only, argv=sys.argv[1:])
    except StageFailed as exc:
        print(f"metis train modpo: stopped: {exc}", file=sys.stderr)
        return 1
    return 0


def _modal(cfg: ModpoConfig, args: argparse.Namespace) -> int:
    from metis_pytest.train.modpo.launch import ModpoLaunch, fetch_command, modal_command

    if not args.hf_secret:
        try:
            require_hf_token(cfg.base, {})
        except ValueError as exc:
            print(f"metis train modpo: {exc}", file=sys.stderr)
            return 2
    name = args.name or Path(args.out).resolve().name
    launch = ModpoLaunch(config=cfg, name=name, start_from=args.start_from, only=args.only, gpu=args.gpu,
                         secrets=(args.hf_secret,) if args.hf_secret else (), detach=args.detach)
    launch.check()
    command = modal_command(launch, modal=MODAL_CLI)
    fetch = shlex.join(fetch_command(launch, args.out))
    if args.dry_run:
        print(shlex.join(command))
        print(f"# then: {fetch}")
        return 0
    print(f"run {name} on Modal ({launch.gpu}); outputs in volume {launch.volume}; fetch them with: {fetch}",
          flush=True)
    return subprocess.call(command)


def run_modpo(args: argparse.Namespace) -> int:
    try:
        cfg = config_from_args(args)
        if args.start_from and args.only:
            raise ValueError("give --from or --only, not both")
        if args.modal:
            return _modal(cfg, args)
    except (KeyError, ValueError) as exc:
        print(f"metis train modpo: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        from metis_pytest.train.modpo.pipeline import build_stages

        for stage in build_stages(cfg, "<data revision>"):
            print(f"{stage.name}" + (f"  (needs {', '.join(stage.needs)})" if stage.needs else ""))
        return 0
    return _local(cfg, args)


def add_modpo(train_sub: Any) -> None:
    """Add ``modpo`` to the ``metis train`` subcommands."""
    p = train_sub.add_parser("modpo", help="MODPO on HelpSteer: SFT, DPO margin adapter, check, MODPO per w, "
                             "generate, score (resumable; local GPU or Modal)",
                             description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    fields = {f.name: f.default for f in dataclasses.fields(ModpoConfig) if f.default is not dataclasses.MISSING}
    p.add_argument("--base", required=True,
                   help="base model: a Hugging Face id or folder, or 'tiny-random' (a tiny random model, CPU plumbing)")
    p.add_argument("--data", default=None, metavar="SOURCE",
                   help=f"HelpSteer source: a Hub id or a .jsonl (default: {fields['source']})")
    p.add_argument("--split", default=None, help=f"Hub split (default: {fields['split']})")
    p.add_argument("--margin-attribute", default=None,
                   help=f"the margin adapter's objective (default: {fields['margin_attribute']})")
    p.add_argument("--margin-direction", default=None, choices=("higher", "concise"),
                   help="concise flips complexity/verbosity (default: higher)")
    p.add_argument("--preference-attribute", default=None,
                   help=f"MODPO's preference objective (default: {fields['preference_attribute']})")
    p.add_argument("--preference-direction", default=None, choices=("higher", "concise"))
    p.add_argument("--w", default=None, metavar="W,W,...",
                   help="weights of the preference objective, 0 < w <= 1 (default: 0.1,0.5,0.9)")
    p.add_argument("--beta", type=float, default=None, help=f"MODPO's beta (default: {fields['beta']})")
    p.add_argument("--margin-beta", type=float, default=None,
                   help=f"r_margin = MARGIN_BETA * (logp_adapter - logp_sft) (default: {fields['margin_beta']})")
    p.add_argument("--dpo-beta", type=float, default=None,
                   help=f"the margin adapter's DPO beta (default: {fields['dpo_beta']})")
    p.add_argument("--dtype", default=None, choices=DTYPES, help=f"default: {fields['dtype']}")
    p.add_argument("--set", action="append", metavar="FIELD=VALUE", help="any ModpoConfig field (repeatable)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="the run folder (with --modal: where `modal volume get` puts it)")
    p.add_argument("--from", dest="start_from", default=None, metavar="STAGE",
                   help="rerun STAGE (or group: sft, margin, margin-check, modpo, generate, score) and what follows")
    p.add_argument("--only", default=None, metavar="STAGE", help="run STAGE (or group) alone")
    p.add_argument("--modal", action="store_true", help="run on Modal (H100, checkpoints in a volume)")
    p.add_argument("--name", default=None, help="--modal: the run's folder in the volume (default: --out's name)")
    p.add_argument("--gpu", default="H100", help="--modal: Modal GPU (default: H100)")
    p.add_argument("--hf-secret", default="huggingface-secret", metavar="NAME",
                   help="--modal: Modal secret with HF_TOKEN ('' for none; default: huggingface-secret)")
    p.add_argument("--detach", action="store_true", help="--modal: keep running after this command exits")
    p.add_argument("--dry-run", action="store_true",
                   help="print the stages (with --modal: the modal command), run nothing")
    p.set_defaults(func=run_modpo)

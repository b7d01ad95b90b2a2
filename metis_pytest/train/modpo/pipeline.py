"""The stages of a MODPO run and what each one's key covers (pure: torch is imported when a stage runs).

    sft -> margin -> margin-check -> modpo-w<w> (each w) -> generate-sft, generate-modpo-w<w> -> score

A stage's inputs are the settings it reads, :data:`PIPELINE_VERSION` and the data's revision (a local
file's SHA-256 prefix, the Hub's commit sha); with the rules of :mod:`metis_pytest.train.modpo.stages`
a changed setting reruns the stages that read it and everything after them, and adding a w to the grid
runs only that w's MODPO and generation, and the score. ``run.json`` in the run folder records the
settings of the last run and the command's arguments.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from metis_pytest.train.modpo.config import ModpoConfig, w_label
from metis_pytest.train.modpo.stages import RunReport, Stage, StageContext, run_stages

__all__ = ["PIPELINE_VERSION", "STAGE_GROUPS", "build_stages", "data_revision", "handoff", "run_pipeline"]

PIPELINE_VERSION = 1  # bump when a stage's code changes what it writes: every stage reruns
STAGE_GROUPS = ("sft", "margin", "margin-check", "modpo", "generate", "score")

_COMMON = ("base", "source", "split", "held_share", "seed", "prompt_template", "max_length", "dtype", "tiny_vocab")
_TRAINING = ("batch_size", "grad_accum", "warmup_ratio", "weight_decay", "save_steps", "max_steps",
             "gradient_checkpointing")
_ADAPTER = ("lora_r", "lora_alpha", "lora_dropout", "lora_targets", "learning_rate", "epochs")
_SETTINGS: Mapping[str, tuple[str, ...]] = {
    "sft": (*_COMMON, *_TRAINING, "sft_lora_r", "sft_lora_alpha", "sft_lora_dropout", "sft_learning_rate",
            "sft_epochs"),
    "margin": (*_COMMON, *_TRAINING, *_ADAPTER, "margin_attribute", "margin_direction", "dpo_beta", "loss_type"),
    "margin-check": (*_COMMON, "margin_attribute", "margin_direction", "dpo_beta", "margin_min_accuracy",
                     "generation_batch_size"),
    "modpo": (*_COMMON, *_TRAINING, *_ADAPTER, "preference_attribute", "preference_direction", "beta",
              "margin_beta"),
    "generate": (*_COMMON, "max_new_tokens", "generation_batch_size", "max_eval_prompts"),
    "score": (*_COMMON, "dpo_beta", "generation_batch_size"),
}


def data_revision(cfg: ModpoConfig) -> str:
    """The revision of the run's data (from the HelpSteer evaluation's loader)."""
    from evals.helpsteer.dataset import dataset_revision

    return dataset_revision(cfg.source, cfg.revision, split=cfg.split)


def _inputs(cfg: ModpoConfig, group: str, revision: str, **extra: Any) -> dict[str, Any]:
    settings = cfg.to_dict()
    picked = {name: settings[name] for name in _SETTINGS[group]}
    if not cfg.tiny:
        picked.pop("tiny_vocab")
    if Path(cfg.source).is_file():
        picked["source"] = Path(cfg.source).name  # the file's content is in data_revision, not its folder
    return {"pipeline_version": PIPELINE_VERSION, "data_revision": revision, **picked, **extra}


def _step(name: str, *args: Any) -> Callable[[StageContext], Mapping[str, Any] | None]:
    def run(ctx: StageContext) -> Mapping[str, Any] | None:
        from metis_pytest.train.modpo import steps

        result: Mapping[str, Any] | None = getattr(steps, name)(ctx, *args)
        return result

    return run


def build_stages(cfg: ModpoConfig, revision: str,
                 step: Callable[..., Callable[[StageContext], Mapping[str, Any] | None]] = _step) -> list[Stage]:
    """The run's stages in order; ``step(name, *args)`` makes a stage function (the tests pass fakes)."""
    stages = [
        Stage("sft", step("sft", cfg), _inputs(cfg, "sft", revision)),
        Stage("margin", step("margin", cfg), _inputs(cfg, "margin", revision), needs=("sft",)),
        Stage("margin-check", step("margin_check", cfg), _inputs(cfg, "margin-check", revision),
              needs=("sft", "margin")),
    ]
    policies: list[tuple[str, float | None]] = [("sft", None)]
    for w in cfg.w:
        name = f"modpo-{w_label(w)}"
        stages.append(Stage(name, step("modpo", cfg, w), _inputs(cfg, "modpo", revision, w=w),
                            needs=("sft", "margin", "margin-check"), group="modpo"))
        policies.append((name, w))
    for policy, weight in policies:
        needs = ("sft",) if policy == "sft" else ("sft", policy)
        stages.append(Stage(f"generate-{policy}", step("generate", cfg, policy, weight),
                            _inputs(cfg, "generate", revision, policy=policy), needs=needs, group="generate"))
    stages.append(Stage("score", step("score", cfg), _inputs(cfg, "score", revision),
                        needs=("sft", "margin", *(f"generate-{p}" for p, _ in policies))))
    return stages


def handoff(cfg: ModpoConfig, out: Path) -> list[str]:
    """Where the run's outputs are and the HelpSteer evaluation's commands that take them over (judge and
    length statistics per policy, then the comparison table and Pareto front over w)."""
    policies = ["sft", *(f"modpo-{w_label(w)}" for w in cfg.w)]
    weights = " ".join(["--w sft=0", *(f"--w modpo-{w_label(w)}={w:g}" for w in cfg.w)])
    return [f"margin adapter: {out}/margin/adapter (LoRA over {out}/sft/model); its check: "
            f"{out}/margin-check/report.json",
            f"implicit reward and length statistics: {out}/score/summary.json, {out}/score/scores.jsonl",
            f"generations, one file per policy: {out}/score/generations/",
            f"pytest evals/helpsteer/test_helpsteer.py --helpsteer-generations {out}/score/generations "
            f"--model {','.join(policies)} --judge-model JUDGE",
            f"python -m evals.helpsteer.pareto runs {weights}",
            f"(prompt template of this run, for the evaluation's --helpsteer-prompt-template: "
            f"{json.dumps(cfg.prompt_template)})"]


def run_pipeline(cfg: ModpoConfig, out: Path, *, start_from: str | None = None, only: str | None = None,
                 log: Callable[[str], None] = print, checkpoint: Callable[[], None] = lambda: None,
                 argv: list[str] | None = None) -> RunReport:
    """Run (or resume) the pipeline of ``cfg`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "run.json").write_text(json.dumps({"config": cfg.to_dict(), "argv": argv or []}, indent=2) + "\n",
                                  encoding="utf-8")
    report = run_stages(build_stages(cfg, data_revision(cfg)), out, start_from=start_from, only=only, log=log,
                        checkpoint=checkpoint)
    if "score" in report.ran or "score" in report.resumed or "score" in report.skipped:
        for line in handoff(cfg, out):
            log(line)
    return report

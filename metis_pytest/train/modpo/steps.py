"""The stages of ``metis train modpo`` (imports torch, transformers, peft, trl, datasets).

Each function takes the stage's :class:`~metis_pytest.train.modpo.stages.StageContext` and the run's
:class:`~metis_pytest.train.modpo.config.ModpoConfig` and writes into ``ctx.dir``:

* :func:`sft`: ``model/``, the SFT model (LoRA trained with TRL's ``SFTTrainer`` on every training
  response, completion-only loss, then merged) and its tokenizer. With ``--base tiny-random`` the tiny
  model is built first, in ``base/``.
* :func:`margin`: ``adapter/``, the DPO margin adapter (TRL's ``DPOTrainer``, sigmoid loss, a fresh LoRA
  over the SFT model; the reference is the SFT model, adapters disabled).
* :func:`margin_check`: ``report.json``; raises :class:`~metis_pytest.train.modpo.stages.StageFailed`
  when the adapter does not prefer chosen over rejected on the held-out pairs often enough.
* :func:`modpo`: ``adapter/``, the policy's LoRA over the SFT model (:class:`ModpoTrainer`).
* :func:`generate`: ``generations.jsonl``, one row per deduplicated held-out prompt, appended as batches
  finish; a resumed stage skips the prompts already there.
* :func:`score`: ``scores.jsonl`` (per policy and prompt: the margin adapter's implicit reward and length
  statistics), ``summary.json`` (their means per policy) and ``generations/<policy>.jsonl``, the policies'
  responses as the HelpSteer evaluation reads them (``--helpsteer-generations``).

Training stages checkpoint into ``checkpoints/`` every ``save_steps`` optimizer steps; a resumed stage
continues from the last one there (``Trainer.train(resume_from_checkpoint=...)``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset  # type: ignore[attr-defined]  # (mypy finds the repo's datasets/ folder)
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from transformers.trainer_utils import get_last_checkpoint
from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

from evals.helpsteer.policies import check_same_prompts
from evals.helpsteer.scoring import length_stats
from metis_pytest.train.modpo.config import ModpoConfig, require_hf_token
from metis_pytest.train.modpo.data import dpo_rows, load_run_data, sft_rows
from metis_pytest.train.modpo.stages import StageContext, StageFailed
from metis_pytest.train.modpo.trainer import MARGIN_ADAPTER, ModpoTrainer, implicit_rewards, modpo_config

__all__ = ["DTYPE", "generate", "load_model", "margin", "margin_check", "modpo", "score", "sft"]

DTYPE = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
GENERATIONS = "generations.jsonl"


def _device(cfg: ModpoConfig) -> str:
    if torch.cuda.is_available():
        return "cuda"
    if cfg.dtype != "fp32":
        raise StageFailed(f"dtype {cfg.dtype} needs a GPU and none is visible: give --dtype fp32 on a CPU")
    return "cpu"


def load_model(path: str | Path, cfg: ModpoConfig) -> tuple[Any, Any]:
    """``(model, tokenizer)`` from a Hub id or a folder, in ``cfg.dtype`` on the GPU (else the CPU); the
    tokenizer gets EOS as its pad token when it has none. A gated model without a token is a clear error."""
    require_hf_token(str(path), os.environ)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path))
        model: Any = AutoModelForCausalLM.from_pretrained(str(path), dtype=DTYPE[cfg.dtype])
    except OSError as exc:
        if "gated" in str(exc).lower():
            raise StageFailed(f"{path} is gated on the Hugging Face Hub: accept its licence there and set HF_TOKEN "
                              f"(with --modal: --hf-secret, a Modal secret holding HF_TOKEN)") from exc
        raise
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    return model.to(_device(cfg)), tokenizer


class _Checkpointed(TrainerCallback):  # type: ignore[misc]
    """Calls ``ctx.checkpoint`` after the Trainer saves (the Modal app commits its volume there)."""

    def __init__(self, checkpoint: Callable[[], None]) -> None:
        self.checkpoint = checkpoint

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.checkpoint()


def _training(cfg: ModpoConfig, ctx: StageContext, *, learning_rate: float, epochs: float) -> dict[str, Any]:
    """TrainingArguments shared by the three training stages."""
    return {
        "output_dir": str(ctx.dir / "checkpoints"), "per_device_train_batch_size": cfg.batch_size,
        "gradient_accumulation_steps": cfg.grad_accum, "learning_rate": learning_rate,
        "num_train_epochs": epochs, "max_steps": cfg.max_steps, "lr_scheduler_type": "cosine",
        "warmup_steps": cfg.warmup_ratio, "weight_decay": cfg.weight_decay, "save_strategy": "steps",
        "save_steps": cfg.save_steps, "save_total_limit": 2, "logging_steps": 10, "report_to": "none",
        "bf16": cfg.dtype == "bf16", "fp16": cfg.dtype == "fp16", "use_cpu": _device(cfg) == "cpu",
        "gradient_checkpointing": cfg.gradient_checkpointing, "seed": cfg.seed, "max_length": cfg.max_length,
        "dataset_num_proc": None, "disable_tqdm": True,
    }


def _resume_from(ctx: StageContext) -> str | None:
    folder = ctx.dir / "checkpoints"
    return get_last_checkpoint(str(folder)) if ctx.resume and folder.is_dir() else None


def _lora(cfg: ModpoConfig, *, r: int, alpha: int, dropout: float) -> LoraConfig:
    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(cfg.lora_targets),
                      bias="none", task_type="CAUSAL_LM")


def _train(trainer: Any, ctx: StageContext) -> dict[str, Any]:
    trainer.add_callback(_Checkpointed(ctx.checkpoint))
    resume = _resume_from(ctx)
    output = trainer.train(resume_from_checkpoint=resume)
    return {"steps": int(output.global_step), "train_loss": float(output.training_loss),
            "resumed_from": Path(resume).name if resume else None}


def _sft_model(ctx: StageContext, cfg: ModpoConfig) -> tuple[Any, Any]:
    return load_model(ctx.needs["sft"] / "model", cfg)


def sft(ctx: StageContext, cfg: ModpoConfig) -> dict[str, Any]:
    data = load_run_data(cfg)
    base: str | Path = cfg.base
    if cfg.tiny:
        from metis_pytest.train.modpo.tiny import build_tiny

        texts = [cfg.prompt_template.format(raw_prompt=r.prompt) + r.response for r in (*data.train, *data.held)]
        base = ctx.dir / "base"
        if not (base / "config.json").is_file():
            build_tiny(base, texts, vocab_size=cfg.tiny_vocab, seed=cfg.seed)
    model, tokenizer = load_model(base, cfg)
    args = SFTConfig(**_training(cfg, ctx, learning_rate=cfg.sft_learning_rate, epochs=cfg.sft_epochs),
                     completion_only_loss=True)
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(sft_rows(data.train,
                                                                                         cfg.prompt_template)),
                         processing_class=tokenizer,
                         peft_config=_lora(cfg, r=cfg.sft_lora_r, alpha=cfg.sft_lora_alpha,
                                           dropout=cfg.sft_lora_dropout))
    result = _train(trainer, ctx)
    trained: Any = trainer.model
    merged = trained.merge_and_unload()
    merged.save_pretrained(ctx.dir / "model")
    tokenizer.save_pretrained(ctx.dir / "model")
    return {**result, "responses": len(data.train)}


def margin(ctx: StageContext, cfg: ModpoConfig) -> dict[str, Any]:
    data = load_run_data(cfg)
    model, tokenizer = _sft_model(ctx, cfg)
    pairs = data.margin_pairs()
    args = DPOConfig(**_training(cfg, ctx, learning_rate=cfg.learning_rate, epochs=cfg.epochs),
                     beta=cfg.dpo_beta, loss_type=[cfg.loss_type])
    trainer = DPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(dpo_rows(pairs, cfg.prompt_template)),
                         processing_class=tokenizer,
                         peft_config=_lora(cfg, r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout))
    result = _train(trainer, ctx)
    trained: Any = trainer.model
    trained.save_pretrained(ctx.dir / "adapter")
    return {**result, "pairs": len(pairs)}


def _with_margin(ctx: StageContext, cfg: ModpoConfig) -> tuple[Any, Any]:
    model, tokenizer = _sft_model(ctx, cfg)
    model = PeftModel.from_pretrained(model, str(ctx.needs["margin"] / "adapter"), adapter_name=MARGIN_ADAPTER)
    model.eval()
    return model, tokenizer


def margin_check(ctx: StageContext, cfg: ModpoConfig) -> dict[str, Any]:
    """Accuracy (share of held-out pairs with ``r(chosen) > r(rejected)``) and mean margin of the adapter's
    implicit reward ``dpo_beta * (logp_adapter - logp_sft)``; fails below ``margin_min_accuracy``."""
    data = load_run_data(cfg)
    model, tokenizer = _with_margin(ctx, cfg)
    pairs = data.margin_pairs(held=True)
    prompts = [cfg.prompt_template.format(raw_prompt=p.prompt) for p in pairs]
    chosen = implicit_rewards(model, tokenizer, prompts, [p.chosen for p in pairs], beta=cfg.dpo_beta,
                              batch_size=cfg.generation_batch_size)
    rejected = implicit_rewards(model, tokenizer, prompts, [p.rejected for p in pairs], beta=cfg.dpo_beta,
                                batch_size=cfg.generation_batch_size)
    margins = [c[0] - r[0] for c, r in zip(chosen, rejected)]
    report: dict[str, Any] = {"attribute": cfg.margin_attribute, "direction": cfg.margin_direction, "pairs": len(pairs),
              "accuracy": sum(m > 0 for m in margins) / len(margins), "mean_margin": sum(margins) / len(margins),
              "min_accuracy": cfg.margin_min_accuracy, "beta": cfg.dpo_beta,
              "rows": [{"pair_id": p.pair_id, "chosen_reward": c[0], "rejected_reward": r[0]}
                       for p, c, r in zip(pairs, chosen, rejected)]}
    (ctx.dir / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if report["accuracy"] < cfg.margin_min_accuracy:
        raise StageFailed(
            f"the margin adapter does not prefer chosen over rejected on the held-out {cfg.margin_attribute} "
            f"pairs: accuracy {report['accuracy']:.3f} < {cfg.margin_min_accuracy} over {len(pairs)} pairs "
            f"(mean margin {report['mean_margin']:+.4f}; {ctx.dir / 'report.json'}). Train it longer or on more "
            f"data (rerun with --from margin), or lower the threshold with --set margin_min_accuracy=X")
    return {k: v for k, v in report.items() if k != "rows"}


def modpo(ctx: StageContext, cfg: ModpoConfig, w: float) -> dict[str, Any]:
    data = load_run_data(cfg)
    base, tokenizer = _sft_model(ctx, cfg)
    model = get_peft_model(base, _lora(cfg, r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout))
    model.load_adapter(str(ctx.needs["margin"] / "adapter"), adapter_name=MARGIN_ADAPTER, is_trainable=False)
    model.set_adapter("default")
    pairs = data.preference_pairs()
    args = modpo_config(w=w, beta=cfg.beta, **_training(cfg, ctx, learning_rate=cfg.learning_rate,
                                                         epochs=cfg.epochs))
    trainer = ModpoTrainer(model=model, args=args, w=w, beta=cfg.beta, margin_beta=cfg.margin_beta,
                           train_dataset=Dataset.from_list(dpo_rows(pairs, cfg.prompt_template)),
                           processing_class=tokenizer)
    result = _train(trainer, ctx)
    trained: Any = trainer.model
    trained.save_pretrained(ctx.dir / "adapter", selected_adapters=["default"])
    return {**result, "pairs": len(pairs), "w": w}


def _done_ids(path: Path) -> set[str]:
    if not path.is_file():
        return set()
    done = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            done.add(json.loads(line)["prompt_id"])
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by an interruption: generated again
    return done


def _rewrite_complete(path: Path) -> None:
    """Drop a partial last line an interruption may have left (complete lines only)."""
    if not path.is_file():
        return
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    keep = []
    for line in lines:
        try:
            json.loads(line)
        except ValueError:
            continue
        keep.append(line)
    path.write_text("".join(line + "\n" for line in keep), encoding="utf-8")


@torch.no_grad()
def _generate(model: Any, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int) -> list[str]:
    tokenizer.padding_side = "left"
    batch = tokenizer(list(prompts), return_tensors="pt", padding=True).to(model.device)
    out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    return [str(t) for t in tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)]


def generate(ctx: StageContext, cfg: ModpoConfig, policy: str, w: float | None) -> dict[str, Any]:
    """Greedy responses of ``policy`` (``sft``, or the MODPO policy at weight ``w``) to the deduplicated
    held-out prompts, as ``generations.jsonl`` rows ``{policy, w, prompt_id, prompt, response}``."""
    data = load_run_data(cfg)
    model, tokenizer = _sft_model(ctx, cfg)
    if w is not None:
        model = PeftModel.from_pretrained(model, str(ctx.needs[policy] / "adapter"))
    model.eval()
    path = ctx.dir / GENERATIONS
    _rewrite_complete(path)
    done = _done_ids(path)
    todo = [p for p in data.eval_prompts() if p["prompt_id"] not in done]
    for start in range(0, len(todo), cfg.generation_batch_size):
        chunk = todo[start:start + cfg.generation_batch_size]
        texts = _generate(model, tokenizer, [cfg.prompt_template.format(raw_prompt=p["prompt"]) for p in chunk],
                          cfg.max_new_tokens)
        with path.open("a", encoding="utf-8") as handle:
            for p, text in zip(chunk, texts):
                handle.write(json.dumps({"policy": policy, "w": w, "prompt_id": p["prompt_id"], "prompt": p["prompt"],
                                         "response": text}) + "\n")
        ctx.checkpoint()
    return {"policy": policy, "w": w, "prompts": len(data.eval_prompts()), "generated_now": len(todo)}


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def score(ctx: StageContext, cfg: ModpoConfig) -> dict[str, Any]:
    """Per policy: the margin adapter's implicit reward of each generated response (``dpo_beta`` times the
    log-ratio, the adapter's own scale) and :func:`evals.helpsteer.scoring.length_stats` plus tokens; and
    ``generations/<policy>.jsonl``, the folder the HelpSteer evaluation's ``--helpsteer-generations`` reads,
    after :func:`evals.helpsteer.policies.check_same_prompts` (every policy answered the same prompts)."""
    generated = {name.removeprefix("generate-"): _rows(folder / GENERATIONS)
                 for name, folder in ctx.needs.items() if name.startswith("generate-")}
    check_same_prompts({policy: [r["prompt_id"] for r in rows] for policy, rows in generated.items()})
    handoff = ctx.dir / "generations"
    handoff.mkdir(exist_ok=True)
    for policy, rows in generated.items():
        (handoff / f"{policy}.jsonl").write_text("".join(json.dumps(
            {"prompt_id": r["prompt_id"], "prompt": r["prompt"], "response": r["response"], "w": r["w"]}) + "\n"
            for r in rows), encoding="utf-8")
    model, tokenizer = _with_margin(ctx, cfg)
    out = ctx.dir / "scores.jsonl"
    summary: dict[str, dict[str, Any]] = {}
    with out.open("w", encoding="utf-8") as handle:
        for name, rows in generated.items():
            prompts = [cfg.prompt_template.format(raw_prompt=r["prompt"]) for r in rows]
            rewards = implicit_rewards(model, tokenizer, prompts, [r["response"] for r in rows], beta=cfg.dpo_beta,
                                       batch_size=cfg.generation_batch_size)
            scored = []
            for row, (reward, _, _) in zip(rows, rewards):
                stats = {**length_stats(row["response"]),
                         "tokens": float(len(tokenizer(text=row["response"])["input_ids"]))}
                scored.append({"policy": row["policy"], "w": row["w"], "prompt_id": row["prompt_id"],
                               "margin_reward": reward, **stats})
                handle.write(json.dumps(scored[-1]) + "\n")
            summary[name] = _means(scored, w=rows[0]["w"] if rows else None)
    (ctx.dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return {"policies": summary}


def _means(rows: Sequence[Mapping[str, Any]], *, w: float | None) -> dict[str, Any]:
    keys = ("margin_reward", "chars", "words", "lines", "tokens")
    n = len(rows)
    return {"w": w, "n": n, **{f"mean_{k}": (sum(float(r[k]) for r in rows) / n if n else None) for k in keys}}


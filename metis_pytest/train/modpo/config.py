"""A MODPO run's settings (:class:`ModpoConfig`), pure: no torch.

Defaults are the reference recipe (ZHZisZZ/modpo ``scripts/examples/sft/``, ``scripts/modpo/beavertails/``)
unless a line below says otherwise:

* **Prompt template** ``"\\n\\nHuman:\\n{raw_prompt}\\n\\nAssistant:\\n"``, the reference code's
  ``DEFAULT_PROMPT_TEMPLATE`` (``src/data/raw_data/utils.py``); the response follows it and then the
  tokenizer's EOS token, in SFT, DPO and MODPO alike.
* **SFT**: LoRA r 16, alpha 32, dropout 0.05 on ``q_proj k_proj v_proj o_proj``, learning rate 1e-4,
  3 epochs, then merged into the base (the reference's ``merge_peft_adapter.py``). Trained on every
  training response (the reference's ``chosen_only=False`` for HelpSteer's SFT: all rated responses).
* **DPO margin adapter and MODPO**: LoRA r 64, alpha 1, dropout 0 on the same modules, learning rate
  5e-4, 3 epochs, sigmoid loss, beta 0.1; the margin reward's beta (``margin_beta``) 0.1.
* **Batches**: 8 sequences (pairs for DPO/MODPO) per step with 12 accumulation steps, 96 per update (the
  reference's 6 x 2 x 8 GPUs); sequences up to 512 tokens; cosine schedule, warmup 10 %, weight decay
  0.05; a checkpoint every ``save_steps`` steps, the last 2 kept, which is what an interrupted stage
  resumes from.
* **Held-out prompts**: a seeded hash of the prompt text sends ``held_share`` (10 %) of the prompts, with
  all their responses, to the held set: the margin check's pairs and the generation prompts (deduplicated)
  come from there, training from the rest. Run on ``nvidia/HelpSteer``'s ``train`` split unless ``split``
  says otherwise.
* **Generation**: greedy, up to 512 new tokens, 16 prompts at a time, for the first 256 deduplicated
  held-out prompts (``max_eval_prompts``; 0 for all of them: about a thousand on HelpSteer).
* ``dtype`` is what the weights are loaded in (``bf16``, ``fp16`` or ``fp32``) and the Trainer's mixed
  precision (``bf16=True`` / ``fp16=True``; none for ``fp32``, the only one a CPU takes).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from metis_pytest.train.modpo.loss import modpo_weights

__all__ = ["DTYPES", "GATED_PREFIXES", "PROMPT_TEMPLATE", "TINY_BASE", "ModpoConfig", "parse_overrides",
           "parse_w_grid", "require_hf_token", "w_label"]

PROMPT_TEMPLATE = "\n\nHuman:\n{raw_prompt}\n\nAssistant:\n"
TINY_BASE = "tiny-random"  # --base: a randomly initialised 2-layer Llama and a tokenizer trained on the data
DTYPES = ("bf16", "fp16", "fp32")
ATTRIBUTES = ("helpfulness", "correctness", "coherence", "complexity", "verbosity", "overall")
DIRECTIONS = ("higher", "concise")
# Base models whose Hub repositories are gated (a token of an account that accepted the licence is needed).
GATED_PREFIXES = ("meta-llama/", "google/gemma", "mistralai/")
TOKEN_VARIABLES = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")


def parse_w_grid(text: str | Sequence[float]) -> tuple[float, ...]:
    """``"0.1,0.5,0.9"`` -> ``(0.1, 0.5, 0.9)``: each ``0 < w <= 1`` (see :func:`modpo_weights`), no repeats."""
    values = [float(v) for v in (text.split(",") if isinstance(text, str) else text) if str(v).strip()]
    if not values:
        raise ValueError("the w grid is empty")
    for w in values:
        modpo_weights(w)
    labels = [w_label(w) for w in values]
    if len(set(labels)) != len(labels):
        raise ValueError(f"the w grid repeats a value: {text!r}")
    return tuple(values)


def w_label(w: float) -> str:
    """A weight as a stage-name part: ``0.5`` -> ``w0.5``, ``1`` -> ``w1``."""
    return f"w{w:g}"


@dataclass(frozen=True)
class ModpoConfig:
    """One MODPO pipeline run (the module docstring says where each default comes from)."""

    base: str
    source: str = "nvidia/HelpSteer"
    split: str = "train"
    revision: str | None = None
    margin_attribute: str = "verbosity"
    margin_direction: str = "higher"
    preference_attribute: str = "helpfulness"
    preference_direction: str = "higher"
    w: tuple[float, ...] = (0.1, 0.5, 0.9)
    beta: float = 0.1
    margin_beta: float = 0.1
    dpo_beta: float = 0.1
    loss_type: str = "sigmoid"
    prompt_template: str = PROMPT_TEMPLATE
    held_share: float = 0.1
    seed: int = 0
    max_length: int = 512
    dtype: str = "bf16"
    gradient_checkpointing: bool = True
    sft_lora_r: int = 16
    sft_lora_alpha: int = 32
    sft_lora_dropout: float = 0.05
    sft_learning_rate: float = 1e-4
    sft_epochs: float = 3.0
    lora_r: int = 64
    lora_alpha: int = 1
    lora_dropout: float = 0.0
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    learning_rate: float = 5e-4
    epochs: float = 3.0
    batch_size: int = 8
    grad_accum: int = 12
    warmup_ratio: float = 0.1
    weight_decay: float = 0.05
    save_steps: int = 100
    max_steps: int = -1  # > 0 caps every training stage (the CPU plumbing run)
    margin_min_accuracy: float = 0.6
    max_new_tokens: int = 512
    generation_batch_size: int = 16
    max_eval_prompts: int = 256  # the first N deduplicated held prompts; 0: all of them
    tiny_vocab: int = 512  # --base tiny-random only

    def __post_init__(self) -> None:
        object.__setattr__(self, "w", parse_w_grid(self.w))
        object.__setattr__(self, "lora_targets", tuple(self.lora_targets))
        for name in ("margin_attribute", "preference_attribute"):
            if getattr(self, name) not in ATTRIBUTES:
                raise ValueError(f"{name} {getattr(self, name)!r}: expected one of {', '.join(ATTRIBUTES)}")
        if self.margin_attribute == self.preference_attribute and self.margin_direction == self.preference_direction:
            raise ValueError("the margin and the preference objectives are the same: MODPO needs two")
        for name in ("margin_direction", "preference_direction"):
            if getattr(self, name) not in DIRECTIONS:
                raise ValueError(f"{name} {getattr(self, name)!r}: expected one of {', '.join(DIRECTIONS)}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype {self.dtype!r}: expected one of {', '.join(DTYPES)}")
        if self.loss_type != "sigmoid":
            raise ValueError(f"loss_type {self.loss_type!r}: only 'sigmoid' (MODPO's loss) is implemented")
        if "{raw_prompt}" not in self.prompt_template:
            raise ValueError("prompt_template must contain {raw_prompt}")
        if not 0.0 < self.held_share < 1.0:
            raise ValueError(f"held_share must be between 0 and 1, got {self.held_share!r}")
        for name in ("beta", "dpo_beta"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        if self.margin_beta == 0 or not math.isfinite(self.margin_beta):
            raise ValueError("margin_beta must be a non-zero number (0 leaves no margin)")
        for name in ("max_length", "sft_lora_r", "lora_r", "batch_size", "grad_accum", "save_steps",
                     "max_new_tokens", "generation_batch_size", "tiny_vocab"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)!r}")

    @property
    def tiny(self) -> bool:
        return self.base == TINY_BASE

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["w"], data["lora_targets"] = list(self.w), list(self.lora_targets)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModpoConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown ModpoConfig field(s): {', '.join(unknown)}")
        values = dict(data)
        for name in ("w", "lora_targets"):
            if name in values:
                values[name] = tuple(values[name])
        return cls(**values)


def _convert(field: dataclasses.Field[Any], text: str) -> Any:
    kind = str(field.type)
    if "tuple" in kind:
        parts = [p for p in text.split(",") if p.strip()]
        return tuple(float(p) for p in parts) if "float" in kind else tuple(p.strip() for p in parts)
    if kind.startswith("bool"):
        if text.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"{field.name}: expected true or false, got {text!r}")
        return text.lower() in ("true", "1")
    if kind.startswith("int"):
        return int(text)
    if kind.startswith("float"):
        return float(text)
    if "None" in kind and text.lower() in ("", "none"):
        return None
    return text


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["lora_r=32", "w=0.2,0.8"]`` -> typed values by :class:`ModpoConfig` field (``ValueError`` on an
    unknown field or a malformed value)."""
    fields = {f.name: f for f in dataclasses.fields(ModpoConfig)}
    out: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in fields:
            raise ValueError(f"--set {item!r}: expected FIELD=VALUE with FIELD one of {', '.join(sorted(fields))}")
        try:
            out[name] = _convert(fields[name], value)
        except ValueError as exc:
            raise ValueError(f"--set {item!r}: {exc}") from None
    return out


def require_hf_token(base: str, env: Mapping[str, str]) -> None:
    """``ValueError`` with what to do when ``base`` is a gated Hub model (:data:`GATED_PREFIXES`) and
    ``env`` has no Hugging Face token."""
    if not base.startswith(GATED_PREFIXES) or any(env.get(name) for name in TOKEN_VARIABLES):
        return
    raise ValueError(f"{base} is a gated model on the Hugging Face Hub: accept its licence there, then set "
                     f"HF_TOKEN (locally) or give --hf-secret NAME, a Modal secret holding HF_TOKEN (with --modal)")

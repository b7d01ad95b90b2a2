"""MODPO on TRL's DPO trainer, and implicit rewards of a LoRA adapter (imports torch, transformers, peft, trl).

Written against **TRL 1.13.0** (the ``train`` extra's pin). TRL's ``DPOTrainer`` has no loss hook (the
loss is inline in ``_compute_loss``), but its sigmoid loss with precomputed reference log-probabilities
*is* the MODPO loss after a change of variables (:mod:`metis_pytest.train.modpo.loss`):
``beta' = beta / w0`` and ``ref(y) = logp_sft(y) + (w1 / beta) * r_margin(y)``. So
:class:`ModpoTrainer` overrides one public method, **``DPOTrainer.compute_ref_log_probs``** (called once
per batch by ``precompute_ref_log_probs=True`` before training), to return those shifted reference
log-probabilities; training, checkpointing, resuming and logging are TRL's. TRL's logged
``rewards/chosen`` and ``rewards/rejected`` are then MODPO's ``R(y_c)`` and ``R(y_r)``.

The model is a ``PeftModel`` over the SFT model holding two LoRA adapters: ``default``, the policy's,
trainable and freshly initialised (LoRA's B = 0, so it starts as the SFT model), and ``margin``, the DPO
margin adapter, frozen. ``logp_sft`` is computed with every adapter disabled, ``logp_adapter`` with only
``margin`` active; the margin reward is ``margin_beta * (logp_adapter - logp_sft)``. (TRL adds a third
adapter, ``ref``, a copy of ``default``, for its own reference pass; with precomputed reference
log-probabilities it is never used.)

Log-probabilities are sums over the response tokens: the prompt is tokenized alone and with the response
and the EOS token appended as text (as TRL tokenizes), and the tokens after the prompt's are the response's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from trl import DPOConfig, DPOTrainer
from trl.trainer.utils import selective_log_softmax, use_adapter

from metis_pytest.train.modpo.loss import modpo_weights

__all__ = ["MARGIN_ADAPTER", "ModpoTrainer", "adapter_state", "completion_logps", "implicit_rewards",
           "modpo_config", "sequence_logps"]

MARGIN_ADAPTER = "margin"


def completion_logps(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     completion_mask: torch.Tensor) -> torch.Tensor:
    """Per row, the sum of the log-probabilities of the tokens where ``completion_mask`` is 1 (as TRL)."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    per_token = selective_log_softmax(logits[..., :-1, :], input_ids[..., 1:])
    per_token[completion_mask[..., 1:] == 0] = 0.0
    return per_token.sum(dim=1)


def _batch(tokenizer: Any, prompts: Sequence[str], responses: Sequence[str],
           device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    rows, masks = [], []
    for prompt, response in zip(prompts, responses):
        prompt_ids = tokenizer(text=prompt)["input_ids"]
        full = tokenizer(text=prompt + response + tokenizer.eos_token)["input_ids"]
        rows.append(full)
        masks.append([0] * len(prompt_ids) + [1] * (len(full) - len(prompt_ids)))
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=device)
    attention = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=device)
    completion = torch.tensor([m + [0] * (width - len(m)) for m in masks], device=device)
    return ids, attention, completion


@torch.no_grad()
def sequence_logps(model: Any, tokenizer: Any, prompts: Sequence[str], responses: Sequence[str], *,
                   batch_size: int = 8) -> list[float]:
    """``logp(response + EOS | prompt)`` for each pair of texts (``prompts`` already templated)."""
    device = next(model.parameters()).device
    out: list[float] = []
    for start in range(0, len(prompts), batch_size):
        ids, attention, completion = _batch(tokenizer, prompts[start:start + batch_size],
                                            responses[start:start + batch_size], device)
        out += [float(v) for v in completion_logps(model, ids, attention, completion).cpu()]
    return out


@contextlib.contextmanager
def adapter_state(model: Any, adapter: str | None) -> Iterator[None]:
    """Only ``adapter`` active in ``model`` (a ``PeftModel``), or none when ``None``; restored after."""
    with use_adapter(model, adapter_name=adapter):
        yield


def implicit_rewards(model: Any, tokenizer: Any, prompts: Sequence[str], responses: Sequence[str], *,
                     beta: float, adapter: str | None = MARGIN_ADAPTER,
                     batch_size: int = 8) -> list[tuple[float, float, float]]:
    """``(beta * (logp_adapter - logp_base), logp_adapter, logp_base)`` per response, where the base is
    ``model`` with every adapter disabled; ``adapter=None`` disables it for both passes (the reward is 0)."""
    was_training = model.training
    model.eval()
    try:
        with adapter_state(model, None):
            base = sequence_logps(model, tokenizer, prompts, responses, batch_size=batch_size)
        with adapter_state(model, adapter):
            tuned = sequence_logps(model, tokenizer, prompts, responses, batch_size=batch_size)
    finally:
        model.train(was_training)
    return [(beta * (a - b), a, b) for a, b in zip(tuned, base)]


def modpo_config(*, w: float, beta: float, **settings: Any) -> DPOConfig:
    """TRL's ``DPOConfig`` for MODPO at weight ``w``: sigmoid loss, ``beta / w0``, reference
    log-probabilities precomputed (by :meth:`ModpoTrainer.compute_ref_log_probs`)."""
    w0, _ = modpo_weights(w)
    return DPOConfig(beta=beta / w0, loss_type=["sigmoid"], precompute_ref_log_probs=True, **settings)


class ModpoTrainer(DPOTrainer):
    """TRL's ``DPOTrainer`` with MODPO's loss at weight ``w`` (see the module docstring).

    ``model`` is a ``PeftModel`` whose ``default`` adapter is trained and whose :data:`MARGIN_ADAPTER`
    adapter is the frozen margin; ``args`` comes from :func:`modpo_config` with the same ``w`` and
    ``beta``."""

    def __init__(self, *args: Any, w: float, beta: float, margin_beta: float, **kwargs: Any) -> None:
        w0, w1 = modpo_weights(w)
        self.modpo_w, self.modpo_beta, self.margin_beta = w, beta, margin_beta
        self._shift = w1 / beta
        trainer_args = kwargs.get("args")
        if trainer_args is None or not trainer_args.precompute_ref_log_probs or \
                abs(trainer_args.beta - beta / w0) > 1e-12 * max(1.0, beta / w0):
            raise ValueError("ModpoTrainer needs args=modpo_config(w=w, beta=beta, ...) with the same w and beta")
        model = kwargs.get("model", args[0] if args else None)
        if MARGIN_ADAPTER not in getattr(model, "peft_config", {}):
            raise ValueError(f"ModpoTrainer needs a PeftModel holding the margin adapter as {MARGIN_ADAPTER!r}")
        super().__init__(*args, **kwargs)
        trained: Any = self.model
        trainable = [n for n, p in trained.named_parameters() if p.requires_grad]
        if not trainable or any(".default." not in n for n in trainable):
            raise RuntimeError(f"only the policy's 'default' adapter may train; trainable: {trainable[:4]}")

    def margin_rewards(self, model: Any, inputs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(logp_sft, logp_margin_adapter, r_margin)`` of a collated preference batch ([chosen; rejected])."""
        unwrapped = self.accelerator.unwrap_model(self.model)
        ids, attention, completion = inputs["input_ids"], inputs["attention_mask"], inputs["completion_mask"]
        with torch.no_grad():
            with adapter_state(unwrapped, None):
                sft = completion_logps(model, ids, attention, completion)
            with adapter_state(unwrapped, MARGIN_ADAPTER):
                margin = completion_logps(model, ids, attention, completion)
        return sft, margin, self.margin_beta * (margin - sft)

    def compute_ref_log_probs(self, model: Any, inputs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """The shifted reference ``logp_sft + (w1 / beta) * r_margin`` for chosen and rejected."""
        sft, _, reward = self.margin_rewards(model, inputs)
        shifted = sft + self._shift * reward
        chosen, rejected = shifted.chunk(2, dim=0)
        return chosen, rejected

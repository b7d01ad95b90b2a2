"""The MODPO loss (Zhou et al. 2024, "Beyond One-Preference-Fits-All Alignment: Multi-Objective Direct
Preference Optimization", arXiv:2310.03708; reference code ZHZisZZ/modpo, ``src/trainer/modpo_trainer.py``).

With the weights ``w = (w0, w1) = (w, 1 - w)``, the SFT model as the reference and the margin reward
``r_margin(x, y) = margin_beta * (logp_adapter(y|x) - logp_sft(y|x))`` of the DPO margin adapter::

    R(y)  = (1 / w0) * (beta * (logp_theta(y|x) - logp_sft(y|x)) - w1 * r_margin(x, y))
    loss  = -log sigmoid(R(y_chosen) - R(y_rejected))

``w0 = 1`` (``w = 1``) is DPO: the margin term is multiplied by ``w1 = 0``. ``w0 <= 0`` is refused (the
loss divides by it).

**The margin's sign.** Inside ``R`` the margin reward is subtracted: with ``margin_beta > 0`` it enters
``R`` as a cost, the convention the HelpSteer evaluation documents for ``MARGIN_BETA``. What that does to
the policy: a pair whose chosen response has the larger margin reward gets a *smaller* logit
``R(y_c) - R(y_r)``, so the loss pulls ``logp_theta(y_c)`` up harder (and less hard when the rejected
response has it). The loss is minimised where ``beta * log(pi_theta / pi_sft) = w0 * r_preference +
w1 * r_margin`` up to a term of the prompt alone (the paper's Eq. 7): the policy moves *toward* what the
margin adapter prefers, with weight ``w1 = 1 - w`` (the reference code's length penalty is a margin
reward of ``-length`` for this reason). A negative ``margin_beta`` (or an adapter trained with
``direction="concise"``) moves it away.

**On TRL** (:class:`metis_pytest.train.modpo.trainer.ModpoTrainer`): the loss is exactly TRL's sigmoid
DPO loss ``-log sigmoid(beta' * ((logp_theta(y_c) - ref_c) - (logp_theta(y_r) - ref_r)))`` with
``beta' = beta / w0`` and the reference log-probabilities shifted by the margin reward,
``ref(y) = logp_sft(y) + (w1 / beta) * r_margin(y)`` (:func:`trl_reference`): expand ``beta' * (...)``
and it is ``R(y_c) - R(y_r)``. The functions here are pure Python (``math``); :func:`modpo_loss_tensor`
is the same formula on tensors, used by the trainer's metrics and checked against them in the tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = ["ModpoTerms", "modpo_loss", "modpo_loss_tensor", "modpo_weights", "trl_reference"]


def modpo_weights(w: float) -> tuple[float, float]:
    """``(w0, w1) = (w, 1 - w)``; ``ValueError`` unless ``0 < w <= 1`` (``w0 > 0``: the loss divides by it)."""
    w = float(w)
    if not math.isfinite(w) or w <= 0.0 or w > 1.0:
        raise ValueError(f"w must satisfy 0 < w <= 1 (w0 = w divides the loss, w1 = 1 - w), got {w!r}")
    return w, 1.0 - w


@dataclass(frozen=True)
class ModpoTerms:
    """One pair's MODPO values: ``R(y_c)``, ``R(y_r)`` and the loss ``-log sigmoid(R(y_c) - R(y_r))``."""

    chosen_reward: float
    rejected_reward: float
    loss: float


def _log_sigmoid(x: float) -> float:
    # -log(1 + exp(-x)), stable for large |x|
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def modpo_loss(policy_chosen: float, policy_rejected: float, sft_chosen: float, sft_rejected: float,
               margin_chosen: float, margin_rejected: float, *, w: float, beta: float) -> ModpoTerms:
    """The MODPO loss of one pair from sequence log-probabilities (summed over response tokens) of the
    policy and the SFT model, and the margin rewards ``r_margin`` of both responses."""
    w0, w1 = modpo_weights(w)
    chosen = (beta * (policy_chosen - sft_chosen) - w1 * margin_chosen) / w0
    rejected = (beta * (policy_rejected - sft_rejected) - w1 * margin_rejected) / w0
    return ModpoTerms(chosen, rejected, -_log_sigmoid(chosen - rejected))


def trl_reference(sft_logp: float, margin_reward: float, *, w: float, beta: float) -> float:
    """The shifted reference log-probability that makes TRL's DPO loss (with ``beta / w0``) the MODPO loss:
    ``logp_sft + (w1 / beta) * r_margin``."""
    _, w1 = modpo_weights(w)
    if beta == 0:
        raise ValueError("beta must not be 0")
    return sft_logp + (w1 / beta) * margin_reward


def modpo_loss_tensor(policy_chosen: Any, policy_rejected: Any, sft_chosen: Any, sft_rejected: Any,
                      margin_chosen: Any, margin_rejected: Any, *, w: float, beta: float) -> tuple[Any, Any, Any]:
    """:func:`modpo_loss` on tensors of shape ``(batch,)``: ``(losses, R(y_c), R(y_r))`` (imports torch)."""
    import torch.nn.functional as F

    w0, w1 = modpo_weights(w)
    chosen = (beta * (policy_chosen - sft_chosen) - w1 * margin_chosen) / w0
    rejected = (beta * (policy_rejected - sft_rejected) - w1 * margin_rejected) / w0
    return -F.logsigmoid(chosen - rejected), chosen, rejected

"""ArmoRM's HelpSteer heads as a second attribute scorer (GPU; optional extra, imported only when used).

``RLHFlow/ArmoRM-Llama3-8B-v0.1`` (Wang et al. 2024, arXiv:2406.12845) returns 19 objective rewards per
conversation (``output.rewards``, shape ``[batch, 19]``); the first five are its HelpSteer heads, in
HelpSteer's order (helpfulness, correctness, coherence, complexity, verbosity), on a 0-1 scale. Its model
card maps them back to HelpSteer's 0-4 ratings with ``x * 5 - 0.5``; :func:`helpsteer_ratings` does
that (and nothing else: values are not clipped). Needs ``torch`` and ``transformers`` and a GPU
(``pip install torch transformers``), on a local GPU or inside a Modal function.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .dataset import ATTRIBUTES

__all__ = ["MODEL_ID", "ArmoRM", "helpsteer_ratings"]

MODEL_ID = "RLHFlow/ArmoRM-Llama3-8B-v0.1"
N_OBJECTIVES = 19


def helpsteer_ratings(rewards: Any) -> list[dict[str, float]]:
    """``rewards[:, 0:5] * 5 - 0.5`` per row, by attribute name. ``rewards`` is ArmoRM's ``output.rewards``
    (a tensor, or nested sequences) of shape ``[batch, 19]``."""
    rows: Sequence[Sequence[float]] = rewards.tolist() if hasattr(rewards, "tolist") else rewards
    out = []
    for row in rows:
        if len(row) != N_OBJECTIVES:
            raise ValueError(f"ArmoRM rewards have {N_OBJECTIVES} objectives per row, got {len(row)}")
        out.append({name: float(value) * 5 - 0.5 for name, value in zip(ATTRIBUTES, row[0:5])})
    return out


class ArmoRM:
    """ArmoRM loaded with ``transformers`` on ``device`` (bfloat16); :meth:`rate` scores prompt/response
    pairs through the model's chat template."""

    def __init__(self, device: str = "cuda", model_id: str = MODEL_ID) -> None:
        try:
            import torch
            from transformers import AutoModelForSequenceClassification, AutoTokenizer
        except ImportError as exc:
            raise ImportError(f"ArmoRM needs torch and transformers ({exc}): pip install torch transformers") from None
        self._torch = torch
        self.device = device
        self.model = AutoModelForSequenceClassification.from_pretrained(
            model_id, device_map=device, trust_remote_code=True, torch_dtype=torch.bfloat16)
        self.tokenizer = AutoTokenizer.from_pretrained(model_id, use_fast=True)

    def rate(self, prompt: str, response: str) -> dict[str, float]:
        """HelpSteer's five ratings (0-4 scale) of one response."""
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
        ids = self.tokenizer.apply_chat_template(messages, return_tensors="pt").to(self.device)
        with self._torch.no_grad():
            output = self.model(ids)
        return helpsteer_ratings(output.rewards.float().cpu())[0]

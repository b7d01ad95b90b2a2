"""The data of a MODPO run, from the HelpSteer evaluation's loader (``evals/helpsteer/dataset.py``): pure.

The records come from :func:`evals.helpsteer.dataset.load` and the pairs from
:func:`evals.helpsteer.dataset.build_pairs` (MODPO's own pairing: consecutive rows with one prompt, every
unordered pair, the higher rating chosen, ties dropped), so training and evaluation see the same pairs.
:func:`split_records` holds out whole prompts; both halves keep the records' order, so a prompt's
responses stay consecutive and pair as they do in the full data.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from evals.helpsteer.dataset import Pair, Record, build_pairs, load, prompt_id, unique_prompts
from metis_pytest.train.modpo.config import ModpoConfig

__all__ = ["RunData", "dpo_rows", "held_prompt", "load_run_data", "sft_rows", "split_records"]


def held_prompt(prompt: str, share: float, seed: int) -> bool:
    """Whether ``prompt`` is held out: the first 8 bytes of SHA-256 of ``"<seed>:<prompt>"``, as a
    fraction of 2**64, below ``share``."""
    digest = hashlib.sha256(f"{seed}:{prompt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def split_records(records: Sequence[Record], share: float, seed: int) -> tuple[list[Record], list[Record]]:
    """``(train, held)``: records of held prompts (:func:`held_prompt`) go to ``held``, in source order."""
    train: list[Record] = []
    held: list[Record] = []
    for record in records:
        (held if held_prompt(record.prompt, share, seed) else train).append(record)
    return train, held


def sft_rows(records: Sequence[Record], template: str) -> list[dict[str, str]]:
    """TRL's prompt-completion rows: the templated prompt and the response (TRL appends EOS)."""
    return [{"prompt": template.format(raw_prompt=r.prompt), "completion": r.response} for r in records]


def dpo_rows(pairs: Sequence[Pair], template: str) -> list[dict[str, str]]:
    """TRL's preference rows: the templated prompt, chosen and rejected (TRL appends EOS to both)."""
    return [{"prompt": template.format(raw_prompt=p.prompt), "chosen": p.chosen, "rejected": p.rejected,
             "pair_id": p.pair_id} for p in pairs]


class RunData:
    """The records of ``cfg.source`` split into training and held-out prompts, and the pairs of both."""

    def __init__(self, cfg: ModpoConfig, records: Sequence[Record]) -> None:
        self.cfg = cfg
        self.train, self.held = split_records(records, cfg.held_share, cfg.seed)
        if not self.train or not self.held:
            raise ValueError(f"{cfg.source}: held_share {cfg.held_share} leaves "
                             f"{len(self.train)} training and {len(self.held)} held-out records; need both")

    def pairs(self, attribute: str, direction: str, *, held: bool = False) -> list[Pair]:
        pairs = build_pairs(self.held if held else self.train, attribute, direction=direction)  # type: ignore[arg-type]
        if not pairs:
            raise ValueError(f"{self.cfg.source}: no {'held-out' if held else 'training'} pairs for {attribute} "
                             f"({direction}); every pair is a tie")
        return pairs

    def margin_pairs(self, *, held: bool = False) -> list[Pair]:
        return self.pairs(self.cfg.margin_attribute, self.cfg.margin_direction, held=held)

    def preference_pairs(self) -> list[Pair]:
        return self.pairs(self.cfg.preference_attribute, self.cfg.preference_direction)

    def eval_prompts(self) -> list[dict[str, Any]]:
        """The deduplicated held-out prompts (first-seen order; the first ``max_eval_prompts`` if set)."""
        prompts = unique_prompts(self.held)
        if self.cfg.max_eval_prompts > 0:
            prompts = prompts[: self.cfg.max_eval_prompts]
        return [{"prompt_id": prompt_id(p), "prompt": p} for p in prompts]


def load_run_data(cfg: ModpoConfig) -> RunData:
    """:class:`RunData` of ``cfg.source`` (a local JSONL or a HelpSteer Hub id, ``cfg.split``)."""
    return RunData(cfg, load(cfg.source, split=cfg.split, revision=cfg.revision))

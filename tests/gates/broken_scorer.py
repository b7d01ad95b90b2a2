"""A deliberately broken GSM8K scorer, for the gate tests: a "simplified" ``<answer>`` extractor
that reads digits only, so ``1,080``, ``-7`` and ``8.75`` no longer match (3 of the 12 smoke rows
the recorded run gets right). Load it with ``-p tests.gates.broken_scorer`` or as a conftest."""

import re

from evals.gsm8k import scoring

_DIGITS = re.compile(r"<answer>\s*(\d+)\s*</answer>")


def _digits_only(text: str) -> str | None:
    found = _DIGITS.findall(text)
    return found[-1] if found else None


scoring.EXTRACTORS["answer_tag"] = _digits_only

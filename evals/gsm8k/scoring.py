"""Pure GSM8K scorer, shared by the pytest eval, verl reward functions and Eval Protocol.

Benchmark: GSM8K (Cobbe et al. 2021, "Training Verifiers to Solve Math Word Problems",
arXiv:2110.14168). Every gold answer is the number on the final ``#### N`` line of the
reference solution.

Three extractors turn a model completion into a canonical number string:

* ``answer_tag`` (primary metric): the last ``<answer>...</answer>`` block, which is what
  the system prompt in ``evals.gsm8k.prompts`` asks for (Eval Protocol quickstart format).
* ``strict_match``: lm-evaluation-harness ``gsm8k`` task, filter ``strict-match``:
  regex ``#### (\\-?[0-9\\.\\,]+)``, first match.
* ``flexible_extract``: lm-evaluation-harness ``gsm8k`` task, filter ``flexible-extract``:
  regex ``(-?[$0-9.,]{2,})|(-?[0-9]+)``, last match.

Differences from lm-eval-harness, all in the direction of comparing numbers rather than
strings: answers are compared as exact decimals (``72`` == ``72.0`` == ``$72.00``); commas
must be valid thousands separators (``1,080``) rather than being deleted wherever they are
(``3,4,5`` is not read as ``345``); and ``flexible_extract`` returns the last regex match
that *is* a number, skipping trailing matches such as ``...`` that lm-eval would take and
then fail to compare.

This module does no I/O and imports nothing outside the standard library at import time;
``eval_protocol.models`` is imported only inside ``GSM8KScore.to_evaluate_result``.

Run the eval with ``pytest evals/gsm8k --model ...``; the scorer's own tests are
``pytest tests/evals/test_gsm8k_scoring.py``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover - typing only
    from eval_protocol.models import EvaluateResult

__all__ = [
    "BENCHMARK",
    "EXTRACTORS",
    "METRIC_NAMES",
    "PRIMARY_METRIC",
    "VERSION",
    "GSM8KScore",
    "answers_match",
    "extract_answer_tag",
    "extract_flexible",
    "extract_strict",
    "gold_from_answer",
    "gold_number",
    "normalize_number",
    "score",
]

BENCHMARK: str = "gsm8k"
VERSION: str = "1.0.0"
PRIMARY_METRIC: str = "answer_tag"
METRIC_NAMES: tuple[str, ...] = ("answer_tag", "strict_match", "flexible_extract")

# Characters read as a minus sign: ASCII hyphen-minus and U+2212 MINUS SIGN. (Not the en
# dash: "5\u20137" is a range far more often than it is "5, -7".)
_MINUS_CHARS = "-\u2212"
_UNICODE_MINUS = str.maketrans({"\u2212": "-"})

# A plain decimal after sign, currency, commas and percent have been dealt with.
_PLAIN_NUMBER = re.compile(r"(?:\d+(?:\.\d*)?|\.\d+)")
# Integer part with commas: only valid thousands grouping is accepted.
_GROUPED_INT = re.compile(r"\d{1,3}(?:,\d{3})+")

# lm-evaluation-harness gsm8k filters (lm_eval/tasks/gsm8k/gsm8k.yaml).
_STRICT_RE = re.compile(r"#### (\-?[0-9\.\,]+)")
_FLEXIBLE_RE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")

_ANSWER_TAG_RE = re.compile(r"<answer>(.*?)</answer>", re.IGNORECASE | re.DOTALL)
# A number inside free text: optional sign (not glued to a preceding word or digit),
# optional "$", digits with optional commas and decimals.
_NUMBER_IN_TEXT_RE = re.compile(
    r"(?:(?<![0-9A-Za-z])[" + _MINUS_CHARS + r"]\s?)?\$?\s?(?:\d[\d,]*(?:\.\d+)?|\.\d+)"
)
_GOLD_HASHES_RE = re.compile(r"####[ \t]*([^\n]*)")


def normalize_number(text: str) -> str | None:
    """Return the canonical string of the number in ``text``, or None if it is not a number.

    Accepted decoration: surrounding whitespace, a leading ``+`` or minus sign (ASCII ``-``,
    Unicode minus ``−``, optionally followed by a space), a ``$`` before or after
    the sign, valid thousands commas (``1,080``), a trailing ``%`` or ``$``, trailing ``.``/``,``
    punctuation. The result has no leading zeros, no trailing fractional zeros and no
    exponent: ``"$1,080.50"`` -> ``"1080.5"``, ``"12.0"`` -> ``"12"``, ``"− 7"`` -> ``"-7"``,
    ``".5"`` -> ``"0.5"``, ``"-0"`` -> ``"0"``. Words are not stripped: ``"12 dollars"`` -> None.
    """
    if not isinstance(text, str):
        return None
    s = text.strip()
    negative = False
    if s[:1] == "$":
        s = s[1:].lstrip()
    if s[:1] == "+":
        s = s[1:].lstrip()
    elif s[:1] and s[0] in _MINUS_CHARS:
        negative = True
        s = s[1:].lstrip()
    if s[:1] == "$":
        s = s[1:].lstrip()
    s = s.rstrip(".,")
    if s.endswith("%") or s.endswith("$"):  # "45%"; "97$" (common in GSM8K references)
        s = s[:-1].rstrip().rstrip(".,")
    if "," in s:
        int_part, dot, frac = s.partition(".")
        if not _GROUPED_INT.fullmatch(int_part):
            return None
        s = int_part.replace(",", "") + dot + frac
    if not _PLAIN_NUMBER.fullmatch(s):
        return None
    int_part, _, frac = s.partition(".")
    int_part = int_part.lstrip("0") or "0"
    frac = frac.rstrip("0")
    canonical = f"{int_part}.{frac}" if frac else int_part
    if negative and canonical != "0":
        canonical = "-" + canonical
    return canonical


def _to_decimal(text: str | None) -> Decimal | None:
    canonical = normalize_number(text) if text is not None else None
    if canonical is None:
        return None
    try:
        return Decimal(canonical)
    except InvalidOperation:  # pragma: no cover - normalize_number only returns plain decimals
        return None


def _last_number_in(text: str) -> str | None:
    """The last substring of ``text`` that normalizes to a number."""
    for match in reversed(list(_NUMBER_IN_TEXT_RE.finditer(text))):
        value = normalize_number(match.group(0))
        if value is not None:
            return value
    return None


def extract_answer_tag(text: str) -> str | None:
    """Number in the last complete ``<answer>...</answer>`` block of ``text`` (case-insensitive).

    Whitespace and newlines inside the tag are ignored. If the content is not a bare number
    (``<answer>The answer is $1,080.</answer>``) the last number inside the tag is used.
    An opening tag without its closing tag, an empty tag, or a tag without a number gives None.
    """
    if not isinstance(text, str):
        return None
    blocks = _ANSWER_TAG_RE.findall(text)
    if not blocks:
        return None
    content = blocks[-1].strip()
    if not content:
        return None
    value = normalize_number(content)
    if value is not None:
        return value
    return _last_number_in(content)


def extract_strict(text: str) -> str | None:
    """lm-eval-harness GSM8K ``strict-match``: first ``#### N`` in ``text``, normalized."""
    if not isinstance(text, str):
        return None
    match = _STRICT_RE.search(text.translate(_UNICODE_MINUS))
    if match is None:
        return None
    return normalize_number(match.group(1))


def extract_flexible(text: str) -> str | None:
    """lm-eval-harness GSM8K ``flexible-extract``: the last number in ``text``, normalized.

    Uses lm-eval's regex ``(-?[$0-9.,]{2,})|(-?[0-9]+)``; matches that are not numbers
    (``...``, ``1,2``) are skipped, so the result is the last match that is a number.
    """
    if not isinstance(text, str):
        return None
    for match in reversed(list(_FLEXIBLE_RE.finditer(text.translate(_UNICODE_MINUS)))):
        value = normalize_number(match.group(1) or match.group(2))
        if value is not None:
            return value
    return None


EXTRACTORS = {
    "answer_tag": extract_answer_tag,
    "strict_match": extract_strict,
    "flexible_extract": extract_flexible,
}


def answers_match(pred: str | None, gold: str) -> bool:
    """True when ``pred`` and ``gold`` are the same number (exact decimal equality).

    Both may be raw or normalized (``"72.0"`` matches ``"72"``, ``"$1,080"`` matches
    ``"1080"``). A missing or non-numeric ``pred`` never matches; a non-numeric ``gold``
    raises ValueError because it is a data bug, not a wrong answer.
    """
    gold_value = _to_decimal(gold)
    if gold_value is None:
        raise ValueError(f"gold answer {gold!r} is not a number")
    pred_value = _to_decimal(pred)
    return pred_value is not None and pred_value == gold_value


def gold_from_answer(answer: str) -> str:
    """Normalized number after the last ``####`` of a raw GSM8K ``answer`` field.

    Raises ValueError if there is no ``####`` line or what follows it is not a number.
    """
    if not isinstance(answer, str):
        raise ValueError(f"GSM8K answer must be a string, got {type(answer).__name__}")
    matches = _GOLD_HASHES_RE.findall(answer)
    if not matches:
        raise ValueError("GSM8K answer has no '#### N' final line")
    value = normalize_number(matches[-1])
    if value is None:
        raise ValueError(f"GSM8K answer's '####' line is not a number: {matches[-1].strip()!r}")
    return value


def gold_number(ground_truth: str) -> str:
    """Normalized gold number from a bare number or a full reference solution.

    Tried in order: the whole string as a number (``"72"``, ``"1,080"``), the last
    ``<answer>`` tag (Eval Protocol quickstart reference), the ``#### N`` line (raw GSM8K).
    """
    if isinstance(ground_truth, (int, float)) and not isinstance(ground_truth, bool):
        ground_truth = str(ground_truth)
    if not isinstance(ground_truth, str):
        raise ValueError(f"GSM8K ground truth must be a string, got {type(ground_truth).__name__}")
    value = normalize_number(ground_truth)
    if value is not None:
        return value
    value = extract_answer_tag(ground_truth)
    if value is not None:
        return value
    try:
        return gold_from_answer(ground_truth)
    except ValueError:
        pass
    preview = ground_truth if len(ground_truth) <= 80 else ground_truth[:77] + "..."
    raise ValueError(
        "GSM8K ground truth is neither a number, nor a reference with an <answer> tag, "
        f"nor a reference with a '#### N' line: {preview!r}"
    )


@dataclass(frozen=True)
class GSM8KScore:
    """Result of scoring one completion.

    ``score`` is the primary metric (``answer_tag``); ``metrics`` holds 1.0/0.0 for each of
    ``answer_tag``, ``strict_match`` and ``flexible_extract``; ``extracted`` holds what each
    extractor found (None when nothing); ``gold`` is the normalized gold number.
    """

    score: float
    metrics: dict[str, float]
    extracted: dict[str, str | None]
    reason: str
    gold: str = field(default="")

    def to_evaluate_result(self) -> EvaluateResult:
        """This score as an Eval Protocol ``EvaluateResult`` (imports eval_protocol lazily)."""
        from eval_protocol.models import EvaluateResult, MetricResult

        return EvaluateResult(
            score=self.score,
            reason=self.reason,
            is_score_valid=True,
            metrics={
                name: MetricResult(
                    score=value,
                    is_score_valid=True,
                    reason=f"extracted={self.extracted.get(name)!r}",
                    data={"extracted": self.extracted.get(name), "gold": self.gold},
                )
                for name, value in self.metrics.items()
            },
        )


_LABELS = {"answer_tag": "answer tag", "strict_match": "strict", "flexible_extract": "flexible"}


def score(completion: str, ground_truth: str) -> GSM8KScore:
    """Score ``completion`` against ``ground_truth`` (bare number or reference solution).

    Raises ValueError if no gold number can be read from ``ground_truth`` (see ``gold_number``).
    """
    gold = gold_number(ground_truth)
    text = completion if isinstance(completion, str) else ""
    extracted: dict[str, str | None] = {name: fn(text) for name, fn in EXTRACTORS.items()}
    metrics: dict[str, float] = {
        name: 1.0 if answers_match(value, gold) else 0.0 for name, value in extracted.items()
    }
    parts = []
    for name, value in extracted.items():
        label = _LABELS[name]
        if value is None:
            parts.append(f"{label}: none")
        else:
            parts.append(f"{label}: {value} {'==' if metrics[name] else '!='} {gold}")
    return GSM8KScore(
        score=metrics[PRIMARY_METRIC],
        metrics=metrics,
        extracted=extracted,
        reason="; ".join(parts),
        gold=gold,
    )

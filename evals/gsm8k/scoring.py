"""Pure GSM8K scorer, shared by the pytest eval, verl reward functions and Eval Protocol.

Benchmark: GSM8K (Cobbe et al. 2021, "Training Verifiers to Solve Math Word Problems",
arXiv:2110.14168). Every gold answer is the number on the final ``#### N`` line of the
reference solution.

Three extractors turn a model completion into a canonical number string:

* ``answer_tag`` (primary metric): the *leading* number of the last ``<answer>...</answer>``
  block, which is what the system prompt in ``evals.gsm8k.prompts`` asks for (Eval Protocol
  quickstart format); the exact rule is in ``extract_answer_tag``.
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

``METRIC_NOTES`` holds a one-sentence caveat per metric that needs one (the harness copies it
into ``summary.json``): ``strict_match`` in particular is 0 by construction under this prompt.

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
    "METRIC_NOTES",
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
VERSION: str = "1.1.0"
PRIMARY_METRIC: str = "answer_tag"
METRIC_NAMES: tuple[str, ...] = ("answer_tag", "strict_match", "flexible_extract")
# One sentence per metric that needs a caveat next to its number (copied into summary.json).
METRIC_NOTES: dict[str, str] = {
    "strict_match": (
        "lm-eval-harness strict-match reads only a '#### N' line, which this eval's <answer>-tag "
        "prompt never asks for, so it is 0 by construction for a model that follows the prompt "
        "(nonzero only when a model writes '#### N' anyway) and is not a measure of model failure."
    ),
    "flexible_extract": (
        "lm-eval-harness flexible-extract takes the last number anywhere in the completion, tag or "
        "not, so it can credit a right number in the reasoning when the tagged answer is wrong or "
        "missing, and miss a right tagged answer that is followed by other numbers."
    ),
}

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

# The last complete block: an opening tag (attributes allowed, ``<answer type="number">``), then
# content that holds no further opening tag (so ``<answer>18 <answer>20</answer>`` reads 20), then
# the closing tag.
_ANSWER_TAG_RE = re.compile(
    r"<answer(?:\s[^<>]*)?>((?:(?!<answer[\s>]).)*?)</answer\s*>", re.IGNORECASE | re.DOTALL
)
# LaTeX wrappers whose argument is kept: \boxed{18} -> 18, \text{ ft} -> " ft".
_LATEX_WRAPPER_RE = re.compile(r"\\(?:boxed|fbox|text|textrm|textbf|mathrm|mathbf)\s*\{")
# LaTeX math delimiters \( \) \[ \], dropped.
_LATEX_DELIMITER_RE = re.compile(r"\\[()\[\]]")
# LaTeX thin space used as a thousands separator between digit groups: 1\,080 -> 1,080.
_LATEX_THIN_SPACE_RE = re.compile(r"(?<=\d)\\,(?=\d{3}(?!\d))")
# A list marker ("- ", "* ", "+ ", "• ") at the start of a line: a bullet, never a sign.
_BULLET_RE = re.compile(r"^([ \t]*)[-*+\u2022][ \t]+", re.MULTILINE)
# A number-like token: optional sign and/or "$", then digits with commas inside and an optional
# decimal part, or a bare decimal part (".5"). Validity (comma grouping) is checked afterwards.
_NUMBER_TOKEN_RE = re.compile(
    r"(?P<prefix>[" + _MINUS_CHARS + r"]\$?|\$[" + _MINUS_CHARS + r"]?)?"
    r"(?P<digits>\d(?:[\d,]*\d)?(?:\.\d+)?|\.\d+)"
)
# After the leading token: a glued fraction ("3/4") or more digit groups ("1.2.3") make it
# something other than a plain decimal.
_NOT_A_PLAIN_NUMBER_AFTER_RE = re.compile(r"/\.?\d|[.,]\d")
_BRACKETS = {"(": ")", "[": "]", "{": "}"}
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


def _unwrap_latex_wrappers(text: str) -> str:
    r"""``\boxed{1{,}080}`` -> ``1{,}080`` (braces matched, nesting allowed; an unclosed one stays)."""
    while True:
        match = _LATEX_WRAPPER_RE.search(text)
        if match is None:
            return text
        depth, end = 1, match.end()
        while end < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[end], 0)
            end += 1
        if depth:  # unbalanced: drop just the command name so the loop ends
            return text[: match.start()] + text[match.end() - 1 :]
        text = text[: match.start()] + text[match.end() : end - 1] + text[end:]


def _clean_tag_content(content: str) -> str:
    """Tag content with LaTeX number markup and list markers removed, stripped."""
    text = _unwrap_latex_wrappers(content)
    text = text.replace("{,}", ",").replace("\\$", "$").replace("\\%", "%")
    text = _LATEX_THIN_SPACE_RE.sub(",", text)
    text = _LATEX_DELIMITER_RE.sub(" ", text)
    text = _BULLET_RE.sub(r"\1", text)
    return text.strip()


def _after_last_top_level_equals(text: str) -> str | None:
    """The text after the last ``=`` (or ``≈``) that is outside (), [] and {}; None if none."""
    depth, position = 0, None
    closers = set(_BRACKETS.values())
    for index, char in enumerate(text):
        if char in _BRACKETS:
            depth += 1
        elif char in closers:
            depth = max(depth - 1, 0)
        elif char in "=\u2248" and depth == 0:
            position = index
    return None if position is None else text[position + 1 :]


_NO_TOKEN = object()


def _leading_number(text: str) -> str | None | object:
    """Normalized leading number-like token of ``text``.

    Returns ``_NO_TOKEN`` when ``text`` has no number-like token, None when the leading token is
    not a plain decimal (bad comma grouping ``1,2``, fraction ``3/4``, ``1.2.3``).
    """
    stripped = text.strip()
    whole = normalize_number(stripped)
    if whole is not None:  # the text is exactly one number, e.g. "− 7", "$-5", "97$", "45 %"
        return whole
    for match in _NUMBER_TOKEN_RE.finditer(stripped):
        start = match.start()
        before = stripped[start - 1] if start else ""
        prefix = match.group("prefix") or ""
        if not prefix and (before.isalnum() or before == "_"):
            continue  # digits glued to a word: "x2", "m3"
        token = match.group(0)
        if prefix and prefix[0] in _MINUS_CHARS and before and before in _MINUS_CHARS + "+":
            return None  # "--7", "+-7": a doubled sign is not a number
        if prefix and prefix[0] in _MINUS_CHARS and (before.isalnum() or before in ")]}"):
            token = token[1:]  # "a-10", ")-10": the minus is an operator, not a sign
        if _NOT_A_PLAIN_NUMBER_AFTER_RE.match(stripped, match.end()):
            return None
        return normalize_number(token)
    return _NO_TOKEN


def extract_answer_tag(text: str) -> str | None:
    r"""Leading number of the last complete ``<answer>...</answer>`` block of ``text``.

    The rule, in order:

    1. **Block.** The last complete block wins: an opening tag ``<answer>`` (any case, attributes
       allowed: ``<answer type="number">``) and the next ``</answer>``; if the content holds another
       opening tag, the content starts after the last one. No closing tag -> None.
    2. **Clean-up.** LaTeX wrappers ``\boxed{}``, ``\fbox{}``, ``\text{}``, ``\textrm{}``,
       ``\textbf{}``, ``\mathrm{}``, ``\mathbf{}`` are unwrapped; ``{,}`` and ``\,`` between digit
       groups become thousands commas; ``\$`` -> ``$``, ``\%`` -> ``%``; ``\( \) \[ \]`` are dropped.
       A list marker (``-``, ``*``, ``+`` or ``•`` followed by a space or tab) at the start of a line
       is a bullet and is removed: ``"\n- 18\n"`` is 18, while ``-18`` and ``−18`` stay negative.
    3. **Equation.** If the content has an ``=`` (or ``≈``) outside (), [] and {}, the answer is read
       from the text after the last such sign: ``x = 18`` -> 18, ``3 boxes of 24 = 72`` -> 72,
       ``(3 + 15) = 18`` -> 18; an ``=`` inside brackets is commentary and ignored:
       ``19 (not 3*6 = 18)`` -> 19. If that text has no number, step 4 reads the whole content.
    4. **Leading number.** The text (the content, or what follows the ``=``) is read as a number if
       it is exactly one (``normalize_number``: ``− 7``, ``$-5``, ``97$``, ``1,080``); otherwise its
       *first* number-like token is the answer: ``19 (not 18)`` -> 19, ``18 ft^2`` -> 18,
       ``The answer is $1,080.`` -> 1080, ``15 - 10`` -> 15, ``Step 1: ... 18`` -> 1 (working
       belongs outside the tag). A token is an optional sign and/or ``$`` and digits with optional
       thousands commas and decimals; digits glued to a word (``x2``) are not a token. A minus
       (``-`` or ``−``) is the token's sign only when it touches the digits (``-18``, ``-$5``) and
       does not follow a letter, digit or closing bracket; ``15 - 10`` therefore never reads -10.
    5. **Unreadable.** A leading token that is not a plain decimal gives None rather than a guess:
       invalid comma grouping (``1,2``, ``3,4,5``), a fraction (``3/4``), ``1.2.3``. An empty tag or
       one without any number also gives None.
    """
    if not isinstance(text, str):
        return None
    blocks = _ANSWER_TAG_RE.findall(text)
    if not blocks:
        return None
    content = _clean_tag_content(blocks[-1])
    if not content:
        return None
    after_equals = _after_last_top_level_equals(content)
    if after_equals is not None:
        value = _leading_number(after_equals)
        if value is not _NO_TOKEN:
            return value  # type: ignore[return-value]
    value = _leading_number(content)
    return None if value is _NO_TOKEN else value  # type: ignore[return-value]


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

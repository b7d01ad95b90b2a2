"""Tests for the pure GSM8K scorer (``evals/gsm8k/scoring.py``).

GSM8K: Cobbe et al. 2021, arXiv:2110.14168; strict/flexible extractors follow the
lm-evaluation-harness ``gsm8k`` filters. The real-data tests read the shared dataset folder
(``<repo>/../shared/datasets``, or ``--shared-datasets DIR``) and skip if it is absent.

Run: ``pytest tests/evals/test_gsm8k_scoring.py``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from evals.gsm8k.scoring import (
    BENCHMARK,
    METRIC_NAMES,
    METRIC_NOTES,
    PRIMARY_METRIC,
    VERSION,
    GSM8KScore,
    answers_match,
    extract_answer_tag,
    extract_flexible,
    extract_strict,
    gold_from_answer,
    gold_number,
    normalize_number,
    score,
)
from tests.conftest import shared_file


def _read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


# --------------------------------------------------------------------------- constants


def test_module_constants() -> None:
    assert BENCHMARK == "gsm8k"
    assert VERSION == "1.1.0"
    assert PRIMARY_METRIC == "answer_tag"


def test_metric_notes() -> None:
    assert set(METRIC_NOTES) <= set(METRIC_NAMES)
    assert "strict_match" in METRIC_NOTES
    strict = METRIC_NOTES["strict_match"]
    assert "0 by construction" in strict and "#### N" in strict and "<answer>" in strict
    for name, note in METRIC_NOTES.items():
        assert isinstance(note, str) and note.strip(), name
        assert "\n" not in note, name
        assert note.count(". ") == 0 and note.endswith("."), f"{name}: one sentence"


# --------------------------------------------------------------------------- normalize_number

NORMALIZE_CASES = [
    ("integer", "72", "72"),
    ("surrounding whitespace", "  72 \n", "72"),
    ("thousands comma", "1,080", "1080"),
    ("two thousands commas", "109,200,000", "109200000"),
    ("dollar", "$18", "18"),
    ("dollar and trailing zeros", "$18.00", "18"),
    ("trailing zero decimal", "12.0", "12"),
    ("trailing zeros kept significant", "5.50", "5.5"),
    ("decimal", "0.25", "0.25"),
    ("leading dot", ".5", "0.5"),
    ("trailing period", "72.", "72"),
    ("trailing comma", "72,", "72"),
    ("leading plus", "+3", "3"),
    ("negative", "-7", "-7"),
    ("negative dollar", "-$5", "-5"),
    ("dollar negative", "$-5", "-5"),
    ("unicode minus", "\u22127", "-7"),
    ("unicode minus and space", "\u2212 7", "-7"),
    ("negative zero", "-0", "0"),
    ("zero decimal", "0.000", "0"),
    ("leading zeros", "007", "7"),
    ("percent", "45%", "45"),
    ("percent with space", "12.5 %", "12.5"),
    ("trailing dollar", "97$", "97"),
    ("dollar both sides", "$97$", "97"),
    ("comma and decimals", "1,080.50", "1080.5"),
    ("large", "123456789012345678901234567890", "123456789012345678901234567890"),
    ("empty", "", None),
    ("only whitespace", "   ", None),
    ("word", "seventy-two", None),
    ("unit words not stripped", "12 dollars", None),
    ("bad comma grouping", "1,08", None),
    ("comma list", "3,4,5", None),
    ("two dots", "1.2.3", None),
    ("exponent", "1e5", None),
    ("nan", "NaN", None),
    ("infinity", "Infinity", None),
    ("lone dollar", "$", None),
    ("lone minus", "-", None),
    ("lone dot", ".", None),
    ("double sign", "+-5", None),
    ("fraction", "3/4", None),
    ("inner space", "1 080", None),
]


@pytest.mark.parametrize(
    ("text", "expected"),
    [(text, expected) for _, text, expected in NORMALIZE_CASES],
    ids=[case_id for case_id, _, _ in NORMALIZE_CASES],
)
def test_normalize_number(text: str, expected: str | None) -> None:
    assert normalize_number(text) == expected


# --------------------------------------------------------------------------- extractors

ANSWER_TAG_CASES = [
    ("plain", "<answer>72</answer>", "72"),
    ("newlines and comma", "<answer>\n 1,080 \n</answer>", "1080"),
    ("negative", "<answer>-7</answer>", "-7"),
    ("unicode minus", "<answer>\u22127</answer>", "-7"),
    ("dollar decimals", "<answer>$18.00</answer>", "18"),
    ("decimal", "<answer>0.5</answer>", "0.5"),
    ("leading dot", "<answer>.5</answer>", "0.5"),
    ("upper case tag", "<ANSWER>72</ANSWER>", "72"),
    ("mixed case tag", "<Answer>72</answer>", "72"),
    ("prose in tag", "<answer>The answer is $1,080.</answer>", "1080"),
    ("units in tag", "<answer>12 dollars</answer>", "12"),
    ("percent in tag", "<answer>45%</answer>", "45"),
    ("equation result after =", "<answer>3 boxes of 24 = 72</answer>", "72"),
    # leading number, not the last one
    ("leading number, correction after", "<answer>19 (not 18)</answer>", "19"),
    ("subtraction is not a sign", "<answer>15 - 10</answer>", "15"),
    ("unicode subtraction is not a sign", "<answer>15 \u2212 10</answer>", "15"),
    ("leading number, remark after", "<answer>18 (see step 3)</answer>", "18"),
    ("leading number, unit with exponent", "<answer>18 ft^2</answer>", "18"),
    ("leading number, list after", "<answer>18, 20</answer>", "18"),
    ("step label is read", "<answer>Step 1: add them, 18</answer>", "1"),
    ("digits glued to a word skipped", "<answer>m2 area: 18</answer>", "18"),
    # LaTeX
    ("boxed latex thousands", "<answer>\\boxed{1{,}080}</answer>", "1080"),
    ("boxed in math mode", "<answer>$\\boxed{18}$</answer>", "18"),
    ("boxed in prose", "<answer>The answer is \\boxed{72}.</answer>", "72"),
    ("latex thin space thousands", "<answer>1\\,080</answer>", "1080"),
    ("latex paren delimiters", "<answer>\\(18\\)</answer>", "18"),
    ("latex text unit", "<answer>18\\text{ ft}^2</answer>", "18"),
    ("latex escaped dollar", "<answer>\\$18</answer>", "18"),
    # bullets and signs
    ("markdown bullet", "<answer>\n- 18\n</answer>", "18"),
    ("bullet on one line", "<answer>- 18</answer>", "18"),
    ("star bullet", "<answer>\n* 18\n</answer>", "18"),
    ("bold", "<answer>**18**</answer>", "18"),
    ("attached minus", "<answer>-18</answer>", "-18"),
    ("doubled minus is not a number", "<answer>--7</answer>", None),
    ("plus then minus is not a number", "<answer>+-7</answer>", None),
    ("a bullet, then a negative number", "<answer>\n- -7\n</answer>", "-7"),
    ("attached unicode minus", "<answer>\u221218</answer>", "-18"),
    ("unicode minus and space is a sign", "<answer>\u2212 18</answer>", "-18"),
    ("negative in prose", "<answer>It fell to -7 degrees</answer>", "-7"),
    ("negative in parentheses", "<answer>(-5)</answer>", "-5"),
    ("negative dollar", "<answer>-$5</answer>", "-5"),
    ("minus after a word is an operator", "<answer>a-10</answer>", "10"),
    # equations
    ("variable assignment", "<answer>x = 18</answer>", "18"),
    ("assignment negative", "<answer>x = -10</answer>", "-10"),
    ("chain takes the last =", "<answer>a = 3 + 15 = 18</answer>", "18"),
    ("= after brackets", "<answer>(3 + 15) = 18</answer>", "18"),
    ("= inside brackets ignored", "<answer>19 (not 3*6 = 18)</answer>", "19"),
    ("= with remark after", "<answer>3 * 6 = 18 (see step 3)</answer>", "18"),
    ("approximately", "<answer>3.14 * 6 \u2248 18.84</answer>", "18.84"),
    ("nothing after =", "<answer>18 =</answer>", "18"),
    # tags
    ("tag with attributes", '<answer type="number">18</answer>', "18"),
    ("space before >", "<answer >18</answer >", "18"),
    ("reopened tag, last opening wins", "<answer>18 <answer>20</answer>", "20"),
    ("answers is another tag", "<answers>18</answers>", None),
    # unreadable leading token -> None, not a guess
    ("fraction", "<answer>3/4</answer>", None),
    ("bad grouping leading", "<answer>1,2 apples</answer>", None),
    ("dotted", "<answer>1.2.3</answer>", None),
    ("after think", "<think>\n48/2 = 24\n48+24 = 72\n</think>\n\n<answer>\n72\n</answer>", "72"),
    ("two tags last wins", "<answer>5</answer> wait, no. <answer>72</answer>", "72"),
    ("last complete tag wins", "<answer>72</answer> and then <answer>80", "72"),
    ("missing closing tag", "<think>...</think><answer>72", None),
    ("empty tag", "<answer></answer>", None),
    ("whitespace tag", "<answer>\n  \n</answer>", None),
    ("tag without number", "<answer>seventy-two</answer>", None),
    ("no tag", "The answer is 72.", None),
    ("hashes only", "#### 72", None),
    ("empty string", "", None),
]


@pytest.mark.parametrize(
    ("text", "expected"),
    [(text, expected) for _, text, expected in ANSWER_TAG_CASES],
    ids=[case_id for case_id, _, _ in ANSWER_TAG_CASES],
)
def test_extract_answer_tag(text: str, expected: str | None) -> None:
    assert extract_answer_tag(text) == expected


STRICT_CASES = [
    ("gsm8k final line", "48+24 = <<48+24=72>>72\n#### 72", "72"),
    ("comma", "#### 1,080", "1080"),
    ("negative", "#### -7", "-7"),
    ("unicode minus", "#### \u22127", "-7"),
    ("decimal", "#### 2.50", "2.5"),
    ("trailing period", "#### 72.", "72"),
    ("first match wins", "#### 5\nactually\n#### 72", "5"),
    ("no space after hashes", "####72", None),
    ("dollar not matched", "#### $72", None),
    ("no hashes", "The answer is 72.", None),
    ("answer tag only", "<answer>72</answer>", None),
    ("empty string", "", None),
]


@pytest.mark.parametrize(
    ("text", "expected"),
    [(text, expected) for _, text, expected in STRICT_CASES],
    ids=[case_id for case_id, _, _ in STRICT_CASES],
)
def test_extract_strict(text: str, expected: str | None) -> None:
    assert extract_strict(text) == expected


FLEXIBLE_CASES = [
    ("prose", "The answer is 72.", "72"),
    ("last number wins", "First 5 then 10, so 72", "72"),
    ("single digit", "so x = 7", "7"),
    ("dollar comma", "She earned $1,080 in total", "1080"),
    ("dollar decimals", "It costs $18.00", "18"),
    ("negative", "The temperature is -7", "-7"),
    ("unicode minus", "The temperature is \u22127", "-7"),
    ("decimal", "Each costs 0.5 dollars", "0.5"),
    ("hashes", "#### 72", "72"),
    ("answer tag", "<answer>72</answer>", "72"),
    ("calculator annotation", "48+24 = <<48+24=72>>72 clips", "72"),
    ("trailing dollar", "He paid 1700$", "1700"),
    ("trailing ellipsis skipped", "The answer is 72...", "72"),
    ("ellipsis after number skipped", "It is 72. Hmm ...", "72"),
    ("no number", "I do not know.", None),
    ("empty string", "", None),
]


@pytest.mark.parametrize(
    ("text", "expected"),
    [(text, expected) for _, text, expected in FLEXIBLE_CASES],
    ids=[case_id for case_id, _, _ in FLEXIBLE_CASES],
)
def test_extract_flexible(text: str, expected: str | None) -> None:
    assert extract_flexible(text) == expected


# --------------------------------------------------------------------------- answers_match / gold

MATCH_CASES = [
    ("equal", "72", "72", True),
    ("decimal equal", "72.0", "72", True),
    ("raw pred", "$1,080", "1080", True),
    ("raw gold", "1080", "1,080", True),
    ("leading dot", ".5", "0.5", True),
    ("negative", "-3", "-3", True),
    ("sign matters", "-3", "3", False),
    ("different", "71", "72", False),
    ("none pred", None, "72", False),
    ("non-numeric pred", "seventy-two", "72", False),
    ("close is not equal", "72.0001", "72", False),
]


@pytest.mark.parametrize(
    ("pred", "gold", "expected"),
    [(pred, gold, expected) for _, pred, gold, expected in MATCH_CASES],
    ids=[case_id for case_id, _, _, _ in MATCH_CASES],
)
def test_answers_match(pred: str | None, gold: str, expected: bool) -> None:
    assert answers_match(pred, gold) is expected


def test_answers_match_rejects_non_numeric_gold() -> None:
    with pytest.raises(ValueError, match="not a number"):
        answers_match("72", "seventy-two")


GOLD_FROM_ANSWER_CASES = [
    ("simple", "Natalia sold 48+24 = <<48+24=72>>72 clips.\n#### 72", "72"),
    ("comma", "So 1,080 total.\n#### 1,080", "1080"),
    ("negative", "It drops.\n#### -7", "-7"),
    ("trailing newline", "x\n#### 10\n", "10"),
]


@pytest.mark.parametrize(
    ("answer", "expected"),
    [(answer, expected) for _, answer, expected in GOLD_FROM_ANSWER_CASES],
    ids=[case_id for case_id, _, _ in GOLD_FROM_ANSWER_CASES],
)
def test_gold_from_answer(answer: str, expected: str) -> None:
    assert gold_from_answer(answer) == expected


@pytest.mark.parametrize(
    ("answer", "message"),
    [("The answer is 72.", "no '#### N'"), ("#### seventy-two", "not a number")],
    ids=["no hashes", "hashes without number"],
)
def test_gold_from_answer_errors(answer: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        gold_from_answer(answer)


QUICKSTART_REFERENCE = (
    "<think>\nNatalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
    "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n</think>\n\n"
    "<answer>\n72\n</answer>"
)
RAW_REFERENCE = (
    "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
    "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72"
)

GOLD_NUMBER_CASES = [
    ("bare", "72", "72"),
    ("bare comma", "1,080", "1080"),
    ("bare negative", "-3", "-3"),
    ("bare whitespace", " 72\n", "72"),
    ("quickstart reference", QUICKSTART_REFERENCE, "72"),
    ("raw reference", RAW_REFERENCE, "72"),
]


@pytest.mark.parametrize(
    ("ground_truth", "expected"),
    [(gt, expected) for _, gt, expected in GOLD_NUMBER_CASES],
    ids=[case_id for case_id, _, _ in GOLD_NUMBER_CASES],
)
def test_gold_number(ground_truth: str, expected: str) -> None:
    assert gold_number(ground_truth) == expected


@pytest.mark.parametrize("ground_truth", ["", "seventy-two", "<answer>", "the answer is 72"], ids=repr)
def test_gold_number_errors(ground_truth: str) -> None:
    with pytest.raises(ValueError, match="GSM8K ground truth"):
        gold_number(ground_truth)


# --------------------------------------------------------------------------- score

# (id, completion, ground_truth, answer_tag, strict_match, flexible_extract)
SCORE_CASES = [
    ("tag", "<answer>72</answer>", "72", 1.0, 0.0, 1.0),
    ("19 (not 18) is wrong", "<answer>19 (not 18)</answer>", "18", 0.0, 0.0, 1.0),
    ("15 - 10 is not -10", "<answer>15 - 10</answer>", "-10", 0.0, 0.0, 0.0),
    ("18 (see step 3)", "<answer>18 (see step 3)</answer>", "18", 1.0, 0.0, 0.0),
    ("18 ft^2", "<answer>18 ft^2</answer>", "18", 1.0, 0.0, 0.0),
    ("boxed 1{,}080", "<answer>\\boxed{1{,}080}</answer>", "1080", 1.0, 0.0, 0.0),
    ("bullet 18", "<answer>\n- 18\n</answer>", "18", 1.0, 0.0, 1.0),
    ("-18 stays negative", "<answer>-18</answer>", "-18", 1.0, 0.0, 1.0),
    ("unicode -18 stays negative", "<answer>\u221218</answer>", "-18", 1.0, 0.0, 1.0),
    ("tag with attributes", '<answer type="number">18</answer>', "18", 1.0, 0.0, 1.0),
    ("prose dollar comma", "<answer>The answer is $1,080.</answer>", "1080", 1.0, 0.0, 1.0),
    ("x = 18", "<answer>x = 18</answer>", "18", 1.0, 0.0, 1.0),
    ("fraction is no answer", "<answer>3/4</answer>", "3", 0.0, 0.0, 0.0),
    ("tag newlines comma", "<answer>\n 1,080 \n</answer>", "1080", 1.0, 0.0, 1.0),
    ("tag negative", "<answer>-7</answer>", "-7", 1.0, 0.0, 1.0),
    ("tag dollar decimals vs 18", "<answer>$18.00</answer>", "18", 1.0, 0.0, 1.0),
    ("tag 0.5 vs .5", "<answer>0.5</answer>", ".5", 1.0, 0.0, 1.0),
    ("tag decimal", "<answer>2.25</answer>", "2.25", 1.0, 0.0, 1.0),
    ("tag decimal wrong", "<answer>2.2</answer>", "2.25", 0.0, 0.0, 0.0),
    ("two tags last wins", "<answer>5</answer>\n<answer>72</answer>", "72", 1.0, 0.0, 1.0),
    ("two tags last wrong", "<answer>72</answer>\n<answer>5</answer>", "72", 0.0, 0.0, 0.0),
    ("missing closing tag", "<think>48+24=72</think>\n<answer>72", "72", 0.0, 0.0, 1.0),
    ("hashes only", "48+24 = 72\n#### 72", "72", 0.0, 1.0, 1.0),
    ("prose", "The answer is 72.", "72", 0.0, 0.0, 1.0),
    ("wrong answer", "<think>48+24=73</think>\n<answer>73</answer>\n#### 73", "72", 0.0, 0.0, 0.0),
    ("negative gold positive pred", "<answer>3</answer>\n#### 3", "-3", 0.0, 0.0, 0.0),
    ("comma gold plain pred", "<answer>1080</answer>\n#### 1080", "1,080", 1.0, 1.0, 1.0),
    ("whitespace", "  \n<answer>  72  </answer>\n\n", " 72 ", 1.0, 0.0, 1.0),
    ("unicode minus", "<answer>\u22127</answer>\n#### \u22127", "-7", 1.0, 1.0, 1.0),
    ("all three", "<think>...</think>\n#### 72\n<answer>72</answer>", "72", 1.0, 1.0, 1.0),
    ("quickstart gold", "<answer>72</answer>", QUICKSTART_REFERENCE, 1.0, 0.0, 1.0),
    ("raw gold", "#### 72", RAW_REFERENCE, 0.0, 1.0, 1.0),
    ("empty completion", "", "72", 0.0, 0.0, 0.0),
]


@pytest.mark.parametrize(
    ("completion", "ground_truth", "answer_tag", "strict", "flexible"),
    [case[1:] for case in SCORE_CASES],
    ids=[case[0] for case in SCORE_CASES],
)
def test_score(
    completion: str, ground_truth: str, answer_tag: float, strict: float, flexible: float
) -> None:
    result = score(completion, ground_truth)
    assert result.metrics == {
        "answer_tag": answer_tag,
        "strict_match": strict,
        "flexible_extract": flexible,
    }
    assert result.score == answer_tag
    assert set(result.extracted) == set(result.metrics)


def test_score_reason_and_extracted() -> None:
    result = score("The total is 72.\n<answer>72</answer>", "72")
    assert result.reason == "answer tag: 72 == 72; strict: none; flexible: 72 == 72"
    assert result.extracted == {"answer_tag": "72", "strict_match": None, "flexible_extract": "72"}
    assert result.gold == "72"

    wrong = score("<answer>80</answer>", "72")
    assert wrong.reason == "answer tag: 80 != 72; strict: none; flexible: 80 != 72"


def test_score_is_frozen() -> None:
    result = score("<answer>72</answer>", "72")
    assert isinstance(result, GSM8KScore)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.score = 0.0  # type: ignore[misc]


def test_score_rejects_unreadable_gold() -> None:
    with pytest.raises(ValueError, match="GSM8K ground truth"):
        score("<answer>72</answer>", "no number here")


def test_to_evaluate_result() -> None:
    from eval_protocol.models import EvaluateResult, MetricResult

    result = score("<answer>72</answer>", "72").to_evaluate_result()
    assert isinstance(result, EvaluateResult)
    assert result.score == 1.0
    assert result.is_score_valid is True
    assert result.reason == "answer tag: 72 == 72; strict: none; flexible: 72 == 72"
    assert set(result.metrics) == {"answer_tag", "strict_match", "flexible_extract"}
    assert all(isinstance(metric, MetricResult) for metric in result.metrics.values())
    assert result.metrics["answer_tag"].score == 1.0
    assert result.metrics["answer_tag"].reason == "extracted='72'"
    assert result.metrics["strict_match"].score == 0.0
    assert result.metrics["strict_match"].reason == "extracted=None"


# --------------------------------------------------------------------------- real data


def test_train_gold_answers_score_one() -> None:
    rows = _read_jsonl(shared_file("gsm8k", "train.jsonl"))
    assert len(rows) == 7473
    failures: list[str] = []
    for index, row in enumerate(rows):
        answer = row["answer"]
        gold = gold_from_answer(answer)
        result = score(f"{answer}\n<answer>{gold}</answer>", gold)
        if result.metrics != {"answer_tag": 1.0, "strict_match": 1.0, "flexible_extract": 1.0}:
            failures.append(f"row {index} with tag: {result.reason}")
        raw = score(answer, gold)
        if raw.metrics["strict_match"] != 1.0 or raw.metrics["flexible_extract"] != 1.0:
            failures.append(f"row {index} raw answer: {raw.reason}")
        # The raw answer as ground truth (the '####' path of gold_number) agrees too.
        if gold_number(answer) != gold:
            failures.append(f"row {index}: gold_number(answer)={gold_number(answer)} != {gold}")
    assert not failures, f"{len(failures)} failures, first: {failures[:5]}"


def test_quickstart_reference_turns_score_one() -> None:
    rows = _read_jsonl(shared_file("gsm8k", "quickstart_gsm8k_sample.jsonl"))
    assert len(rows) == 1000
    failures: list[str] = []
    for index, row in enumerate(rows):
        assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant"]
        reference = row["messages"][-1]["content"]
        result = score(reference, row["ground_truth"])
        if result.metrics["answer_tag"] != 1.0 or result.metrics["flexible_extract"] != 1.0:
            failures.append(f"row {index}: {result.reason}")
        gold = gold_number(row["ground_truth"])
        with_hashes = score(f"{reference}\n#### {gold}", row["ground_truth"])
        if with_hashes.metrics != {"answer_tag": 1.0, "strict_match": 1.0, "flexible_extract": 1.0}:
            failures.append(f"row {index} with '####': {with_hashes.reason}")
    assert not failures, f"{len(failures)} failures, first: {failures[:5]}"

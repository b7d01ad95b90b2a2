"""Tests for the GSM8K loaders (``evals/gsm8k/dataset.py``) and prompt (``prompts.py``).

GSM8K: Cobbe et al. 2021, arXiv:2110.14168; Hugging Face ``openai/gsm8k`` (config ``main``).
Small inputs are written to ``tmp_path``; the real-data tests read the shared dataset folder
(``<repo>/../shared/datasets``, or ``$METIS_SHARED_DATASETS``) and skip if it is absent. The
Hugging Face loader is tested offline with a monkeypatched ``datasets.load_dataset``.

Run: ``pytest tests/evals/test_gsm8k_dataset.py``.
"""

from __future__ import annotations

import hashlib
import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from eval_protocol.models import EvaluationRow

from evals.gsm8k import dataset, prompts
from evals.gsm8k.dataset import (
    DEFAULT_SOURCE,
    DatasetError,
    dataset_id,
    dataset_revision,
    load,
    load_hf,
    load_jsonl,
    to_row,
)
from evals.gsm8k.scoring import score
from tests.conftest import shared_file

RAW_RECORDS = [
    {
        "question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many "
        "clips in May. How many clips did Natalia sell altogether in April and May?",
        "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
        "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72",
    },
    {
        "question": "A shop sells 36 boxes of 30 pens. How many pens does it sell?",
        "answer": "36 * 30 = <<36*30=1080>>1080\n#### 1,080",
    },
    {
        "question": "The temperature was 5 degrees and fell by 12 degrees. What is it now?",
        "answer": "5 - 12 = <<5-12=-7>>-7\n#### -7",
    },
]

QUICKSTART_REFERENCE = (
    "<think>\nNatalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
    "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n</think>\n\n"
    "<answer>\n72\n</answer>"
)
QUICKSTART_RECORD = {
    "messages": [
        {"role": "system", "content": prompts.SYSTEM_PROMPT},
        {"role": "user", "content": RAW_RECORDS[0]["question"]},
        {"role": "assistant", "content": QUICKSTART_REFERENCE},
    ],
    "ground_truth": QUICKSTART_REFERENCE,
}


def _write_jsonl(path: Path, lines: list[Any]) -> Path:
    """Write ``lines`` (objects are JSON-encoded, strings written verbatim) one per line."""
    text = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    path.write_text(text, encoding="utf-8")
    return path


def _contents(row: EvaluationRow) -> list[tuple[str, Any]]:
    return [(message.role, message.content) for message in row.messages]


# --------------------------------------------------------------------------- prompts


def test_prompt_constants() -> None:
    assert "<think>" in prompts.SYSTEM_PROMPT and "<answer>" in prompts.SYSTEM_PROMPT
    assert prompts.PROMPT_VERSION
    expected = hashlib.sha256(prompts.SYSTEM_PROMPT.encode("utf-8")).hexdigest()[:12]
    assert prompts.prompt_hash() == expected
    assert len(prompts.prompt_hash()) == 12


def test_prompt_is_the_quickstart_system_message() -> None:
    first = json.loads(shared_file("gsm8k", "quickstart_gsm8k_sample.jsonl").read_text("utf-8").splitlines()[0])
    assert prompts.SYSTEM_PROMPT == first["messages"][0]["content"]


# --------------------------------------------------------------------------- to_row


def test_to_row() -> None:
    row = to_row(
        "How many?", "1,080", row_id="gsm8k-test-00003", source="x.jsonl", reference="... #### 1,080",
        split="test", index=3,
    )
    assert isinstance(row, EvaluationRow)
    assert _contents(row) == [("system", prompts.SYSTEM_PROMPT), ("user", "How many?")]
    assert row.ground_truth == "1080"
    assert row.input_metadata.row_id == "gsm8k-test-00003"
    info = row.input_metadata.dataset_info
    assert info is not None
    assert info["dataset_id"] == "openai/gsm8k"
    assert info["source"] == "x.jsonl"
    assert info["split"] == "test"
    assert info["index"] == 3
    assert info["reference"] == "... #### 1,080"
    assert info["prompt_hash"] == prompts.prompt_hash()


@pytest.mark.parametrize(
    ("question", "gold", "message"),
    [("", "72", "question"), ("How many?", "seventy-two", "not a number")],
    ids=["empty question", "non-numeric gold"],
)
def test_to_row_errors(question: str, gold: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        to_row(question, gold, row_id="r", source="s")


# --------------------------------------------------------------------------- load_jsonl


def test_load_jsonl_raw_shape(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "train.jsonl", [RAW_RECORDS[0], "", RAW_RECORDS[1], "   ", RAW_RECORDS[2]])
    rows = load_jsonl(path)
    assert [row.ground_truth for row in rows] == ["72", "1080", "-7"]
    assert [row.input_metadata.row_id for row in rows] == [
        "gsm8k-train-00000",
        "gsm8k-train-00001",
        "gsm8k-train-00002",
    ]
    for row, record in zip(rows, RAW_RECORDS):
        assert _contents(row) == [("system", prompts.SYSTEM_PROMPT), ("user", record["question"])]
        info = row.input_metadata.dataset_info
        assert info is not None
        assert info["reference"] == record["answer"]
        assert info["split"] == "train"
        assert info["source"] == str(path)
        assert info["format"] == "raw"
        assert info["revision"] == dataset_revision(path)
    assert [row.input_metadata.dataset_info["line"] for row in rows] == [1, 3, 5]  # blank lines skipped
    assert [row.input_metadata.dataset_info["index"] for row in rows] == [0, 1, 2]


def test_load_jsonl_quickstart_shape_drops_reference_turn(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "sample.jsonl", [QUICKSTART_RECORD])
    (row,) = load_jsonl(path)
    assert _contents(row) == [("system", prompts.SYSTEM_PROMPT), ("user", RAW_RECORDS[0]["question"])]
    assert all(message.role != "assistant" for message in row.messages)
    assert row.ground_truth == "72"
    assert row.input_metadata.row_id == "gsm8k-sample-00000"
    info = row.input_metadata.dataset_info
    assert info is not None
    assert info["reference"] == QUICKSTART_REFERENCE
    assert info["format"] == "quickstart"
    assert info["split"] is None
    assert "source_system_prompt_hash" not in info  # same prompt as ours


def test_load_jsonl_mixed_shapes_and_foreign_system_prompt(tmp_path: Path) -> None:
    foreign = json.loads(json.dumps(QUICKSTART_RECORD))
    foreign["messages"][0]["content"] = "You are terse."
    foreign["ground_truth"] = "1,080"
    path = _write_jsonl(tmp_path / "mixed.jsonl", [RAW_RECORDS[0], foreign])
    raw_row, quick_row = load_jsonl(path)
    assert raw_row.input_metadata.dataset_info["format"] == "raw"
    assert quick_row.input_metadata.dataset_info["format"] == "quickstart"
    assert quick_row.ground_truth == "1080"
    assert quick_row.messages[0].content == prompts.SYSTEM_PROMPT  # always our prompt
    assert quick_row.input_metadata.dataset_info["source_system_prompt_hash"] == prompts.prompt_hash(
        "You are terse."
    )


def test_row_ids_are_stable(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "test.jsonl", RAW_RECORDS)
    first = [row.input_metadata.row_id for row in load_jsonl(path)]
    second = [row.input_metadata.row_id for row in load_jsonl(path)]
    assert first == second == ["gsm8k-test-00000", "gsm8k-test-00001", "gsm8k-test-00002"]


# (id, lines, expected line number, fragment naming the field/problem)
BAD_JSONL_CASES = [
    ("invalid json", [RAW_RECORDS[0], RAW_RECORDS[1], '{"question": "x", '], 3, "invalid JSON ("),
    ("no hashes", [RAW_RECORDS[0], {"question": "q", "answer": "The answer is 72."}], 2,
     "field 'answer' has no '#### N' final line"),
    ("hashes without number", [{"question": "q", "answer": "x\n#### lots"}], 1, "field 'answer'"),
    ("answer not a string", [{"question": "q", "answer": 72}], 1, "field 'answer' must be a string"),
    ("empty question", [{"question": " ", "answer": "#### 72"}], 1, "field 'question'"),
    ("neither shape", [{"prompt": "q", "completion": "72"}], 1,
     "expected fields 'question' and 'answer' (GSM8K) or 'messages' and 'ground_truth'"),
    ("not an object", [[1, 2, 3]], 1, "expected a JSON object"),
    ("quickstart no user", [{"messages": [{"role": "system", "content": "s"}], "ground_truth": "72"}], 1,
     "field 'messages' has no user message"),
    ("quickstart messages not list", [{"messages": "hi", "ground_truth": "72"}], 1, "field 'messages'"),
    ("quickstart bad ground truth",
     [{"messages": [{"role": "user", "content": "q"}], "ground_truth": "no number"}], 1,
     "field 'ground_truth'"),
]


@pytest.mark.parametrize(
    ("lines", "line_number", "fragment"),
    [case[1:] for case in BAD_JSONL_CASES],
    ids=[case[0] for case in BAD_JSONL_CASES],
)
def test_load_jsonl_bad_input(tmp_path: Path, lines: list[Any], line_number: int, fragment: str) -> None:
    path = _write_jsonl(tmp_path / "bad.jsonl", lines)
    with pytest.raises(DatasetError) as excinfo:
        load_jsonl(path)
    message = str(excinfo.value)
    assert "bad.jsonl" in message
    assert f"line {line_number}:" in message
    assert fragment in message
    assert isinstance(excinfo.value, ValueError)


def test_load_jsonl_bad_utf8(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(json.dumps(RAW_RECORDS[0]).encode() + b"\n\xff\xfe\n")
    with pytest.raises(DatasetError, match=r"bad\.jsonl line 2: not valid UTF-8"):
        load_jsonl(path)


@pytest.mark.parametrize(("name", "content"), [("missing.jsonl", None), ("empty.jsonl", "\n\n")])
def test_load_jsonl_missing_or_empty(tmp_path: Path, name: str, content: str | None) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(DatasetError, match=name):
        load_jsonl(path)


# --------------------------------------------------------------------------- real data


def test_load_shared_train() -> None:
    path = shared_file("gsm8k", "train.jsonl")
    rows = load_jsonl(path)
    assert len(rows) == 7473
    assert rows[0].input_metadata.row_id == "gsm8k-train-00000"
    assert rows[-1].input_metadata.row_id == "gsm8k-train-07472"
    assert len({row.input_metadata.row_id for row in rows}) == len(rows)
    assert rows[0].ground_truth == "72"
    assert any(row.ground_truth == "1080" for row in rows)  # '#### 1,080' normalized
    assert sum(row.ground_truth.startswith("-") for row in rows) == 3
    for row in rows:
        assert [message.role for message in row.messages] == ["system", "user"]
        reference = row.input_metadata.dataset_info["reference"]
        assert score(reference, row.ground_truth).metrics["strict_match"] == 1.0


def test_load_shared_quickstart() -> None:
    path = shared_file("gsm8k", "quickstart_gsm8k_sample.jsonl")
    rows = load_jsonl(path)
    raw = [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]
    assert len(rows) == len(raw) == 1000
    assert rows[0].input_metadata.row_id == "gsm8k-quickstart_gsm8k_sample-00000"
    for row, record in zip(rows, raw):
        assert [message.role for message in row.messages] == ["system", "user"]
        assert row.messages[1].content == record["messages"][1]["content"]
        info = row.input_metadata.dataset_info
        assert info["reference"] == record["ground_truth"]
        assert "source_system_prompt_hash" not in info
        assert score(record["messages"][-1]["content"], row.ground_truth).score == 1.0


def test_dataset_revision_local_file(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "test.jsonl", RAW_RECORDS)
    expected = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    assert dataset_revision(path) == expected
    assert dataset_revision(str(path)) == expected
    with pytest.raises(DatasetError, match="not an existing file"):
        dataset_revision(tmp_path / "nope.jsonl")


@pytest.mark.parametrize(
    ("source", "revision", "expected"),
    [("hf", None, "main"), ("openai/gsm8k", "abc123", "abc123"), ("hf:openai/gsm8k", None, "main")],
    ids=["hf default", "hf pinned", "hf prefixed"],
)
def test_dataset_revision_hf(source: str, revision: str | None, expected: str) -> None:
    assert dataset_revision(source, revision) == expected


@pytest.mark.parametrize(
    ("source", "expected"),
    [("hf", "openai/gsm8k"), ("openai/gsm8k", "openai/gsm8k"), ("/data/gsm8k/train.jsonl", "file:train.jsonl")],
    ids=["hf", "hf id", "file"],
)
def test_dataset_id(source: str, expected: str) -> None:
    assert dataset_id(source) == expected


def test_default_source_is_the_hub_test_split() -> None:
    assert DEFAULT_SOURCE == "hf"
    assert dataset_id(DEFAULT_SOURCE) == "openai/gsm8k"


def test_repo_smoke_sample_loads_and_its_references_score_1() -> None:
    """The project's own offline sample (datasets/gsm8k_smoke.jsonl) loads and its references score 1.0."""
    path = Path(__file__).resolve().parents[2] / "datasets" / "gsm8k_smoke.jsonl"
    rows = load(str(path))
    assert len(rows) == 12
    assert dataset_id(str(path)) == "file:gsm8k_smoke.jsonl"
    assert {"1080", "-7", "8.75", "15250", "-15"} <= {row.ground_truth for row in rows}
    for row in rows:
        reference = row.input_metadata.dataset_info["reference"]
        result = score(f"{reference}\n<answer>{row.ground_truth}</answer>", row.ground_truth)
        assert result.metrics == {"answer_tag": 1.0, "strict_match": 1.0, "flexible_extract": 1.0}, result.reason


# --------------------------------------------------------------------------- load_hf / load


class _FakeDatasets:
    """Records ``load_dataset`` calls and returns raw GSM8K records."""

    def __init__(self, records: list[dict[str, Any]]) -> None:
        self.records = records
        self.calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def load_dataset(self, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        self.calls.append((args, kwargs))
        return list(self.records)


@pytest.fixture
def fake_datasets(monkeypatch: pytest.MonkeyPatch) -> _FakeDatasets:
    """Replace ``datasets.load_dataset`` (or the whole module, if it is not installed)."""
    fake = _FakeDatasets(RAW_RECORDS)
    try:
        import datasets as real_datasets
    except ImportError:
        real_datasets = None
    if real_datasets is not None and hasattr(real_datasets, "load_dataset"):
        monkeypatch.setattr(real_datasets, "load_dataset", fake.load_dataset)
    else:
        module = types.ModuleType("datasets")
        module.load_dataset = fake.load_dataset  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "datasets", module)
    return fake


def test_load_hf_calls_load_dataset_and_converts_rows(fake_datasets: _FakeDatasets) -> None:
    rows = load_hf("test", revision="abc123")
    assert fake_datasets.calls == [(("openai/gsm8k", "main"), {"split": "test", "revision": "abc123"})]
    assert [row.input_metadata.row_id for row in rows] == [
        "gsm8k-test-00000",
        "gsm8k-test-00001",
        "gsm8k-test-00002",
    ]
    assert [row.ground_truth for row in rows] == ["72", "1080", "-7"]
    info = rows[1].input_metadata.dataset_info
    assert info["source"] == "hf:openai/gsm8k"
    assert info["split"] == "test"
    assert info["revision"] == "abc123"
    assert info["reference"] == RAW_RECORDS[1]["answer"]
    assert _contents(rows[1]) == [("system", prompts.SYSTEM_PROMPT), ("user", RAW_RECORDS[1]["question"])]


def test_load_hf_default_revision(fake_datasets: _FakeDatasets) -> None:
    rows = load_hf()
    assert fake_datasets.calls == [(("openai/gsm8k", "main"), {"split": "test", "revision": None})]
    assert rows[0].input_metadata.dataset_info["revision"] == "main"


def test_load_hf_bad_record(fake_datasets: _FakeDatasets) -> None:
    fake_datasets.records = [RAW_RECORDS[0], {"question": "q", "answer": "no final line"}]
    with pytest.raises(DatasetError, match=r"openai/gsm8k \(main, train\) row 1: field 'answer'"):
        load_hf("train")


def test_load_hf_unknown_split(fake_datasets: _FakeDatasets) -> None:
    with pytest.raises(DatasetError, match="unknown split 'validation'"):
        load_hf("validation")
    assert fake_datasets.calls == []


def test_load_hf_without_datasets_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` raise ImportError
    with pytest.raises(RuntimeError, match=r"pip install 'metis-pytest\[hf\]'"):
        load_hf("test")


def test_load_hf_with_namespace_shadow(monkeypatch: pytest.MonkeyPatch) -> None:
    """The repo's datasets/ data folder imports as a namespace package without ``load_dataset``."""
    monkeypatch.setitem(sys.modules, "datasets", types.ModuleType("datasets"))
    with pytest.raises(RuntimeError, match=r"pip install 'metis-pytest\[hf\]'"):
        load_hf("test")


@pytest.mark.parametrize("source", ["hf", "openai/gsm8k", "hf:openai/gsm8k"])
def test_load_dispatches_hf(fake_datasets: _FakeDatasets, source: str) -> None:
    rows = load(source, split="train", revision="r1")
    assert fake_datasets.calls == [(("openai/gsm8k", "main"), {"split": "train", "revision": "r1"})]
    assert rows[0].input_metadata.row_id == "gsm8k-train-00000"


def test_load_dispatches_file(tmp_path: Path, fake_datasets: _FakeDatasets) -> None:
    path = _write_jsonl(tmp_path / "train.jsonl", RAW_RECORDS)
    assert [row.ground_truth for row in load(str(path))] == ["72", "1080", "-7"]
    assert [row.ground_truth for row in load(str(tmp_path), split="train")] == ["72", "1080", "-7"]
    assert fake_datasets.calls == []


@pytest.mark.parametrize("source", ["no/such/file.jsonl", "openai/gsm8k-typo"])
def test_load_unknown_source(source: str) -> None:
    with pytest.raises(DatasetError, match="neither an existing file nor a known HF id"):
        load(source)


def test_load_directory_without_split_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="without test.jsonl"):
        load(str(tmp_path), split="test")


def test_datasets_is_not_shadowed_by_a_package() -> None:
    """``datasets/`` at the repo root is a data folder; it must never become a regular package."""
    repo_root = Path(dataset.__file__).resolve().parents[2]
    assert not (repo_root / "datasets" / "__init__.py").exists()

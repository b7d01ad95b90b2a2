"""Tests for the GSM8K loaders (``evals/gsm8k/dataset.py``) and prompt (``prompts.py``).

GSM8K: Cobbe et al. 2021, arXiv:2110.14168; Hugging Face ``openai/gsm8k`` (config ``main``).
Small inputs are written to ``tmp_path``; the real-data tests read the shared dataset folder
(``<repo>/../shared/datasets``, or ``--shared-datasets DIR``) and skip if it is absent. The
Hugging Face loader is tested offline with a monkeypatched ``datasets.load_dataset`` and
``huggingface_hub.HfApi`` (which resolves a revision to its commit sha).

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
    resolve_hf_revision,
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


GOOD_LINE = b'{"question": "q", "answer": "#### 1"}\n'

# (id, file bytes, line, exact text after "<file> line N: "). Columns are 1-based characters of the
# line (not bytes), counted from its start; len(line) + 1 is "at the end of the line".
BAD_LINE_MESSAGE_CASES = [
    ("truncated record, end of line", GOOD_LINE + b'{"question": "x", \n', 2,
     "invalid JSON (Expecting property name enclosed in double quotes at column 19)"),
    ("truncated after value", b'{"question": "x"\n', 1, "invalid JSON (Expecting ',' delimiter at column 17)"),
    ("truncated, crlf", b'{"a": 1,\r\n', 1,
     "invalid JSON (Expecting property name enclosed in double quotes at column 9)"),
    ("truncated, no final newline", GOOD_LINE + b'{"a":', 2, "invalid JSON (Expecting value at column 6)"),
    ("mid-line", b'{"question": 1,,}\n', 1,
     "invalid JSON (Expecting property name enclosed in double quotes at column 16)"),
    ("leading spaces count", b'   {"a" 1}\n', 1, "invalid JSON (Expecting ':' delimiter at column 9)"),
    ("extra data", b'{"question": "q", "answer": "#### 1"} trailing\n', 1, "invalid JSON (Extra data at column 39)"),
    # "Zo\u00eb paid \u20ac5 \U0001f4b0, " is 30 characters but 36 bytes: the column counts characters.
    ("multibyte before the error", '{"question": "Zo\u00eb paid \u20ac5 \U0001f4b0", oops}\n'.encode(), 1,
     "invalid JSON (Expecting property name enclosed in double quotes at column 31)"),
    ("control character in string", b'{"a": "x\x01"}\n', 1, "invalid JSON (Invalid control character at column 9)"),
    ("BOM on line 1 is not counted", b"\xef\xbb\xbf" + b'{"question": 1,,}\n', 1,
     "invalid JSON (Expecting property name enclosed in double quotes at column 16)"),
    ("BOM on a later line is an error", GOOD_LINE + b"\xef\xbb\xbf" + GOOD_LINE, 2,
     "invalid JSON (Unexpected UTF-8 BOM (decode using utf-8-sig) at column 1)"),
    ("bad UTF-8 after multibyte", '{"question": "\u00e9'.encode() + b'\xff"}\n', 1,
     "not valid UTF-8 (invalid start byte, byte 0xff, at column 16)"),
    ("bad UTF-8 after BOM", b"\xef\xbb\xbf\xff\n", 1, "not valid UTF-8 (invalid start byte, byte 0xff, at column 1)"),
]


@pytest.mark.parametrize(
    ("content", "line_number", "expected"),
    [case[1:] for case in BAD_LINE_MESSAGE_CASES],
    ids=[case[0] for case in BAD_LINE_MESSAGE_CASES],
)
def test_load_jsonl_bad_line_exact_message(tmp_path: Path, content: bytes, line_number: int, expected: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    with pytest.raises(DatasetError) as excinfo:
        load_jsonl(path)
    assert str(excinfo.value) == f"{path} line {line_number}: {expected}"


def test_load_jsonl_accepts_bom_on_line_1(tmp_path: Path) -> None:
    path = tmp_path / "test.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(RAW_RECORDS[0]).encode() + b"\n" + json.dumps(RAW_RECORDS[1]).encode())
    rows = load_jsonl(path)
    assert [row.ground_truth for row in rows] == ["72", "1080"]
    assert rows[0].messages[1].content == RAW_RECORDS[0]["question"]


def test_load_jsonl_bom_only_first_line_is_blank(tmp_path: Path) -> None:
    path = tmp_path / "test.jsonl"
    path.write_bytes(b"\xef\xbb\xbf\n" + json.dumps(RAW_RECORDS[0]).encode() + b"\n")
    (row,) = load_jsonl(path)
    assert row.input_metadata.dataset_info["line"] == 2


# --------------------------------------------------------------------------- one-line errors


@pytest.mark.parametrize(
    ("lines", "line_number", "fragment"),
    [case[1:] for case in BAD_JSONL_CASES],
    ids=[case[0] for case in BAD_JSONL_CASES],
)
def test_dataset_errors_are_one_line(tmp_path: Path, lines: list[Any], line_number: int, fragment: str) -> None:
    path = _write_jsonl(tmp_path / "bad.jsonl", lines)
    with pytest.raises(DatasetError) as excinfo:
        load_jsonl(path)
    assert len(str(excinfo.value).splitlines()) == 1


@pytest.mark.parametrize(
    ("record", "fragment"),
    [
        ({"question": "q", "answer": "line one\n#### seventy\ntwo"}, "field 'answer'"),
        ({"messages": [{"role": "user", "content": "q"}], "ground_truth": "no\nnumber\u2028here"},
         "field 'ground_truth'"),
        ({"que\nstion": "q", "answer": "#### 1"}, "'que\\nstion'"),
    ],
    ids=["newlines in answer", "line breaks in ground truth", "newline in a key"],
)
def test_dataset_error_with_line_breaks_in_values_is_one_line(
    tmp_path: Path, record: dict[str, Any], fragment: str
) -> None:
    path = _write_jsonl(tmp_path / "bad.jsonl", [RAW_RECORDS[0], record])
    with pytest.raises(DatasetError) as excinfo:
        load_jsonl(path)
    message = str(excinfo.value)
    assert len(message.splitlines()) == 1
    assert message.startswith(f"{path} line 2: ")
    assert fragment in message


def test_dataset_error_with_newline_in_path_is_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "odd\nfolder"
    folder.mkdir()
    path = _write_jsonl(folder / "bad.jsonl", [{"question": "q", "answer": 72}])
    with pytest.raises(DatasetError) as excinfo:
        load_jsonl(path)
    message = str(excinfo.value)
    assert len(message.splitlines()) == 1
    assert "odd\\nfolder" in message
    assert message.endswith("bad.jsonl line 1: field 'answer' must be a string")


def test_dataset_error_escapes_every_line_break() -> None:
    message = str(DatasetError("a\nb\rc\u2028d\x85e"))
    assert message == "a\\nb\\rc\\u2028d\\x85e"
    assert len(message.splitlines()) == 1


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


# --------------------------------------------------------------------------- Hub revision


FAKE_SHA = "0123456789abcdef0123456789abcdef01234567"
PINNED_SHA = "fedcba9876543210fedcba9876543210fedcba98"


class _FakeHub:
    """Stands in for ``huggingface_hub.HfApi``: records ``dataset_info`` calls, returns ``sha``."""

    def __init__(self) -> None:
        self.sha: Any = FAKE_SHA
        self.error: Exception | None = None
        self.calls: list[tuple[str, str | None]] = []

    def api_class(self) -> type:
        hub = self

        class FakeHfApi:
            def dataset_info(self, repo_id: str, revision: str | None = None, **kwargs: Any) -> Any:
                hub.calls.append((repo_id, revision))
                if hub.error is not None:
                    raise hub.error
                return types.SimpleNamespace(id=repo_id, sha=hub.sha)

        return FakeHfApi


@pytest.fixture
def fake_hub(monkeypatch: pytest.MonkeyPatch) -> _FakeHub:
    """Replace ``huggingface_hub.HfApi`` (or the whole module, if it is not installed); empty cache."""
    hub = _FakeHub()
    monkeypatch.setattr(dataset, "_RESOLVED_REVISIONS", {})
    try:
        import huggingface_hub as real_hub
    except ImportError:
        real_hub = None
    if real_hub is not None:
        monkeypatch.setattr(real_hub, "HfApi", hub.api_class())
    else:
        module = types.ModuleType("huggingface_hub")
        module.HfApi = hub.api_class()  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "huggingface_hub", module)
    return hub


def test_resolve_hf_revision_default_is_main_sha(fake_hub: _FakeHub) -> None:
    assert resolve_hf_revision(None) == FAKE_SHA
    assert fake_hub.calls == [("openai/gsm8k", "main")]


def test_resolve_hf_revision_branch_or_tag(fake_hub: _FakeHub) -> None:
    assert resolve_hf_revision("refs/convert/parquet") == FAKE_SHA
    assert fake_hub.calls == [("openai/gsm8k", "refs/convert/parquet")]


def test_resolve_hf_revision_is_remembered(fake_hub: _FakeHub) -> None:
    """One answer per revision per process: the rows and the recorded revision agree."""
    first = resolve_hf_revision("main")
    fake_hub.sha = PINNED_SHA  # "main" moves on the Hub
    assert resolve_hf_revision("main") == first == FAKE_SHA
    assert dataset_revision("hf") == FAKE_SHA
    assert fake_hub.calls == [("openai/gsm8k", "main")]


def test_resolve_hf_revision_full_sha_needs_no_hub(fake_hub: _FakeHub) -> None:
    assert resolve_hf_revision(PINNED_SHA.upper()) == PINNED_SHA
    assert fake_hub.calls == []


def test_resolve_hf_revision_offline(fake_hub: _FakeHub) -> None:
    fake_hub.error = ConnectionError("Max retries exceeded with url: /api/datasets/openai/gsm8k\n(caused by DNS)")
    with pytest.raises(DatasetError) as excinfo:
        resolve_hf_revision(None)
    message = str(excinfo.value)
    assert message == (
        "openai/gsm8k: cannot resolve revision 'main' to a commit sha (ConnectionError: Max retries "
        "exceeded with url: /api/datasets/openai/gsm8k); pass --dataset-revision <sha> or a local file "
        "(--dataset path/to/test.jsonl)"
    )
    with pytest.raises(DatasetError, match="cannot resolve revision 'v9'"):
        resolve_hf_revision("v9")
    assert dataset._RESOLVED_REVISIONS == {}  # failures are not remembered


def test_resolve_hf_revision_bad_sha_from_hub(fake_hub: _FakeHub) -> None:
    fake_hub.sha = None
    with pytest.raises(DatasetError, match=r"cannot resolve revision 'main' .*returned sha None"):
        resolve_hf_revision(None)


def test_resolve_hf_revision_without_huggingface_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dataset, "_RESOLVED_REVISIONS", {})
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # makes the import raise ImportError
    with pytest.raises(DatasetError) as excinfo:
        resolve_hf_revision("main")
    message = str(excinfo.value)
    assert message.startswith("openai/gsm8k: cannot resolve revision 'main' to a commit sha")
    assert "huggingface_hub is not installed" in message and "--dataset-revision <sha>" in message
    assert len(message.splitlines()) == 1


def test_dataset_revision_local_file(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "test.jsonl", RAW_RECORDS)
    expected = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    assert dataset_revision(path) == expected
    assert dataset_revision(str(path)) == expected
    with pytest.raises(DatasetError, match="not an existing file"):
        dataset_revision(tmp_path / "nope.jsonl")


@pytest.mark.parametrize(
    ("source", "revision", "expected", "asked"),
    [
        ("hf", None, FAKE_SHA, [("openai/gsm8k", "main")]),
        ("openai/gsm8k", "v1.0", FAKE_SHA, [("openai/gsm8k", "v1.0")]),
        ("hf:openai/gsm8k", None, FAKE_SHA, [("openai/gsm8k", "main")]),
        ("hf", PINNED_SHA, PINNED_SHA, []),
    ],
    ids=["hf default", "hf tag", "hf prefixed", "hf pinned sha"],
)
def test_dataset_revision_hf(
    fake_hub: _FakeHub, source: str, revision: str | None, expected: str, asked: list[tuple[str, str]]
) -> None:
    assert dataset_revision(source, revision) == expected
    assert fake_hub.calls == asked


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
def fake_datasets(monkeypatch: pytest.MonkeyPatch, fake_hub: _FakeHub) -> _FakeDatasets:
    """Replace ``datasets.load_dataset`` (or the whole module, if it is not installed); Hub faked too."""
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


def test_load_hf_calls_load_dataset_and_converts_rows(fake_datasets: _FakeDatasets, fake_hub: _FakeHub) -> None:
    rows = load_hf("test", revision="v1.0")
    assert fake_hub.calls == [("openai/gsm8k", "v1.0")]
    assert fake_datasets.calls == [(("openai/gsm8k", "main"), {"split": "test", "revision": FAKE_SHA})]
    assert [row.input_metadata.row_id for row in rows] == [
        "gsm8k-test-00000",
        "gsm8k-test-00001",
        "gsm8k-test-00002",
    ]
    assert [row.ground_truth for row in rows] == ["72", "1080", "-7"]
    info = rows[1].input_metadata.dataset_info
    assert info["source"] == "hf:openai/gsm8k"
    assert info["split"] == "test"
    assert info["revision"] == FAKE_SHA
    assert info["requested_revision"] == "v1.0"
    assert info["reference"] == RAW_RECORDS[1]["answer"]
    assert _contents(rows[1]) == [("system", prompts.SYSTEM_PROMPT), ("user", RAW_RECORDS[1]["question"])]


def test_load_hf_default_revision(fake_datasets: _FakeDatasets) -> None:
    rows = load_hf()
    assert fake_datasets.calls == [(("openai/gsm8k", "main"), {"split": "test", "revision": FAKE_SHA})]
    assert rows[0].input_metadata.dataset_info["revision"] == FAKE_SHA
    assert rows[0].input_metadata.dataset_info["requested_revision"] == "main"
    assert dataset_revision("hf") == FAKE_SHA  # what the run records is what the rows came from


def test_load_hf_pinned_sha(fake_datasets: _FakeDatasets, fake_hub: _FakeHub) -> None:
    rows = load_hf("train", revision=PINNED_SHA)
    assert fake_hub.calls == []
    assert fake_datasets.calls == [(("openai/gsm8k", "main"), {"split": "train", "revision": PINNED_SHA})]
    assert {row.input_metadata.dataset_info["revision"] for row in rows} == {PINNED_SHA}


def test_load_hf_offline(fake_datasets: _FakeDatasets, fake_hub: _FakeHub) -> None:
    fake_hub.error = OSError("Network is unreachable")
    with pytest.raises(DatasetError, match=r"openai/gsm8k: cannot resolve revision 'main' .*--dataset-revision <sha>"):
        load_hf("test")
    assert fake_datasets.calls == []  # never asked load_dataset for an unpinned "main"


def test_load_hf_bad_record(fake_datasets: _FakeDatasets) -> None:
    fake_datasets.records = [RAW_RECORDS[0], {"question": "q", "answer": "no final line"}]
    with pytest.raises(DatasetError, match=r"openai/gsm8k \(main, train\) row 1: field 'answer'"):
        load_hf("train")


def test_load_hf_unknown_split(fake_datasets: _FakeDatasets, fake_hub: _FakeHub) -> None:
    with pytest.raises(DatasetError) as excinfo:
        load_hf("validation")
    assert str(excinfo.value) == "openai/gsm8k: unknown split 'validation'; expected one of ['train', 'test']"
    assert fake_datasets.calls == []
    assert fake_hub.calls == []


@pytest.mark.parametrize("split", ["train", "test"])
def test_load_hf_split_is_selectable(fake_datasets: _FakeDatasets, split: str) -> None:
    rows = load("hf", split=split)
    assert fake_datasets.calls[0][1]["split"] == split
    assert {row.input_metadata.dataset_info["split"] for row in rows} == {split}
    assert rows[0].input_metadata.row_id == f"gsm8k-{split}-00000"


@pytest.mark.parametrize("source", ["hf", "dir"])
def test_load_unknown_split(tmp_path: Path, fake_datasets: _FakeDatasets, source: str) -> None:
    where = "openai/gsm8k" if source == "hf" else str(tmp_path)
    with pytest.raises(DatasetError) as excinfo:
        load(where if source == "dir" else "hf", split="validation")
    assert str(excinfo.value) == f"{where}: unknown split 'validation'; expected one of ['train', 'test']"
    assert fake_datasets.calls == []


def test_load_hf_without_datasets_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` raise ImportError
    with pytest.raises(DatasetError, match=r"pip install 'metis-pytest\[hf\]'"):
        load_hf("test")


def test_load_hf_with_namespace_shadow(monkeypatch: pytest.MonkeyPatch) -> None:
    """The repo's datasets/ data folder imports as a namespace package without ``load_dataset``."""
    monkeypatch.setitem(sys.modules, "datasets", types.ModuleType("datasets"))
    with pytest.raises(DatasetError, match=r"pip install 'metis-pytest\[hf\]'"):
        load_hf("test")


@pytest.mark.parametrize("source", ["hf", "openai/gsm8k", "hf:openai/gsm8k"])
def test_load_dispatches_hf(fake_datasets: _FakeDatasets, fake_hub: _FakeHub, source: str) -> None:
    rows = load(source, split="train", revision="r1")
    assert fake_hub.calls == [("openai/gsm8k", "r1")]
    assert fake_datasets.calls == [(("openai/gsm8k", "main"), {"split": "train", "revision": FAKE_SHA})]
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

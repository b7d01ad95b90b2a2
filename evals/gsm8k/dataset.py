"""GSM8K loaders: Hugging Face ``openai/gsm8k`` and local JSONL files -> Eval Protocol rows.

Benchmark: GSM8K (Cobbe et al. 2021, "Training Verifiers to Solve Math Word Problems",
arXiv:2110.14168), Hugging Face dataset ``openai/gsm8k``, config ``main``, splits
``train`` (7,473 problems) and ``test`` (1,319 problems).

Two JSONL shapes are accepted, detected per line:

* raw GSM8K: ``{"question": ..., "answer": "...\\n#### N"}``;
* Eval Protocol quickstart: ``{"messages": [system, user, assistant], "ground_truth": ...}``
  where the assistant turn and ``ground_truth`` are a reference solution ending in
  ``<answer>N</answer>``.

Every row becomes an ``EvaluationRow`` with ``messages = [system, user]`` (the system
prompt is always ``prompts.SYSTEM_PROMPT``; a reference assistant turn is never sent to the
model), ``ground_truth`` = the normalized gold number (``"1080"``), and the reference
solution, source, split, index and revision in ``input_metadata.dataset_info``.

Run the eval with ``pytest evals/gsm8k --model ...``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from eval_protocol.models import EvaluationRow, InputMetadata, Message

from . import prompts
from .scoring import gold_from_answer, gold_number, normalize_number

__all__ = [
    "DATASET_ID",
    "DEFAULT_SOURCE",
    "HF_CONFIG",
    "HF_SOURCE",
    "SPLITS",
    "DatasetError",
    "dataset_id",
    "dataset_revision",
    "load",
    "load_hf",
    "load_jsonl",
    "to_row",
]

DATASET_ID: str = "openai/gsm8k"
HF_CONFIG: str = "main"
SPLITS: tuple[str, ...] = ("train", "test")
HF_SOURCE: str = f"hf:{DATASET_ID}"
_HF_ALIASES = frozenset({"hf", DATASET_ID, HF_SOURCE})
# Default: the real benchmark, GSM8K's 1,319-row test split from the Hugging Face Hub. Offline,
# point ``--dataset`` at a local file (e.g. the repo's 12-row ``datasets/gsm8k_smoke.jsonl``).
DEFAULT_SOURCE: str = "hf"
_HF_INSTALL_HINT = "pip install 'metis-pytest[hf]'"


class DatasetError(ValueError):
    """A dataset file or record that cannot be turned into GSM8K rows."""


def to_row(
    question: str,
    gold: str,
    *,
    row_id: str,
    source: str,
    reference: str | None = None,
    split: str | None = None,
    index: int | None = None,
    extra: Mapping[str, Any] | None = None,
) -> EvaluationRow:
    """Build one ``EvaluationRow``: ``[system, user]`` messages and the normalized gold number.

    ``gold`` may be raw (``"1,080"``); it is normalized (``"1080"``). ``reference`` (the full
    reference solution) is kept in ``input_metadata.dataset_info["reference"]``, never in
    ``messages``. ``extra`` is merged into ``dataset_info``. Raises ValueError for an empty
    question or a non-numeric gold.
    """
    if not isinstance(question, str) or not question.strip():
        raise ValueError("question must be a non-empty string")
    gold_norm = normalize_number(gold) if isinstance(gold, str) else None
    if gold_norm is None:
        raise ValueError(f"gold answer {gold!r} is not a number")
    dataset_info: dict[str, Any] = {
        "dataset_id": DATASET_ID,
        "source": source,
        "split": split,
        "index": index,
        "reference": reference,
        "prompt_version": prompts.PROMPT_VERSION,
        "prompt_hash": prompts.prompt_hash(),
    }
    if extra:
        dataset_info.update(extra)
    return EvaluationRow(
        messages=[
            Message(role="system", content=prompts.SYSTEM_PROMPT),
            Message(role="user", content=question),
        ],
        ground_truth=gold_norm,
        input_metadata=InputMetadata(row_id=row_id, dataset_info=dataset_info),
    )


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def dataset_revision(source: str | Path, revision: str | None = None) -> str:
    """Revision recorded with results.

    For a local file: the first 12 hex characters of the file's SHA-256 (``revision`` is
    ignored). For the Hugging Face dataset (``"hf"``, ``"openai/gsm8k"``): ``revision`` or
    ``"main"``.
    """
    if isinstance(source, str) and source in _HF_ALIASES:
        return revision or "main"
    path = Path(source)
    if not path.is_file():
        raise DatasetError(f"{path}: not an existing file (and not a known HF id {sorted(_HF_ALIASES)})")
    return _file_sha256(path)[:12]


def dataset_id(source: str | Path) -> str:
    """Dataset id recorded with results: ``"openai/gsm8k"`` for the Hub, ``"file:<name>"`` for a file.

    A local file is identified by its name here and by its content hash in ``dataset_revision``
    (machine-specific directories are left out so runs on different machines compare).
    """
    if isinstance(source, str) and source in _HF_ALIASES:
        return DATASET_ID
    return f"file:{Path(source).name}"


def _split_of(path: Path) -> str | None:
    return path.stem if path.stem in SPLITS else None


def _field_error(where: str, field_name: str, problem: str) -> DatasetError:
    return DatasetError(f"{where}: field '{field_name}' {problem}")


def _quickstart_fields(record: Mapping[str, Any], where: str) -> tuple[str, str, str, str | None]:
    """(question, gold, reference, system text) of an Eval Protocol quickstart record."""
    messages = record["messages"]
    if not isinstance(messages, list) or not messages:
        raise _field_error(where, "messages", "must be a non-empty list of {role, content} objects")
    for position, message in enumerate(messages):
        if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
            raise _field_error(where, "messages", f"item {position} is not a {{role, content}} object")
    users = [m for m in messages if m["role"] == "user"]
    if not users:
        raise _field_error(where, "messages", "has no user message")
    question = users[-1].get("content")
    if not isinstance(question, str) or not question.strip():
        raise _field_error(where, "messages", "has a user message whose content is not a non-empty string")
    ground_truth = record["ground_truth"]
    if isinstance(ground_truth, (int, float)) and not isinstance(ground_truth, bool):
        ground_truth = str(ground_truth)
    if not isinstance(ground_truth, str):
        raise _field_error(where, "ground_truth", "must be a string")
    try:
        gold = gold_number(ground_truth)
    except ValueError as exc:
        raise _field_error(where, "ground_truth", f"has no gold number ({exc})") from None
    systems = [m.get("content") for m in messages if m["role"] == "system"]
    system_text = systems[0] if systems and isinstance(systems[0], str) else None
    return question, gold, ground_truth, system_text


def _raw_fields(record: Mapping[str, Any], where: str) -> tuple[str, str, str]:
    """(question, gold, reference) of a raw GSM8K record."""
    question = record["question"]
    if not isinstance(question, str) or not question.strip():
        raise _field_error(where, "question", "must be a non-empty string")
    answer = record["answer"]
    if not isinstance(answer, str):
        raise _field_error(where, "answer", "must be a string")
    try:
        gold = gold_from_answer(answer)
    except ValueError as exc:
        if "####" not in answer:
            raise _field_error(where, "answer", "has no '#### N' final line") from None
        raise _field_error(where, "answer", f"has an unreadable '#### N' line ({exc})") from None
    return question, gold, answer


def _record_to_row(
    record: Any,
    *,
    where: str,
    index: int,
    id_part: str,
    source: str,
    split: str | None,
    extra: Mapping[str, Any],
) -> EvaluationRow:
    if not isinstance(record, Mapping):
        raise DatasetError(f"{where}: expected a JSON object, got {type(record).__name__}")
    info: dict[str, Any] = dict(extra)
    if "messages" in record and "ground_truth" in record:
        question, gold, reference, system_text = _quickstart_fields(record, where)
        info["format"] = "quickstart"
        if system_text is not None and system_text != prompts.SYSTEM_PROMPT:
            info["source_system_prompt_hash"] = prompts.prompt_hash(system_text)
    elif "question" in record and "answer" in record:
        question, gold, reference = _raw_fields(record, where)
        info["format"] = "raw"
    else:
        raise DatasetError(
            f"{where}: expected fields 'question' and 'answer' (GSM8K) or 'messages' and "
            f"'ground_truth' (Eval Protocol quickstart); got {sorted(map(str, record))}"
        )
    try:
        return to_row(
            question,
            gold,
            row_id=f"gsm8k-{id_part}-{index:05d}",
            source=source,
            reference=reference,
            split=split,
            index=index,
            extra=info,
        )
    except ValueError as exc:  # pragma: no cover - fields were validated above
        raise DatasetError(f"{where}: {exc}") from None


def load_jsonl(path: str | Path) -> list[EvaluationRow]:
    """Load a GSM8K JSONL file (raw or quickstart shape, detected per line).

    Blank lines are skipped; ``index`` and the row id count records, not lines
    (``gsm8k-<split or file stem>-<index:05d>``). Any bad record raises ``DatasetError``
    naming the file, the 1-based line number and the offending field.
    """
    file_path = Path(path)
    if not file_path.is_file():
        raise DatasetError(f"{file_path}: no such file")
    revision = _file_sha256(file_path)[:12]
    split = _split_of(file_path)
    id_part = split or file_path.stem
    rows: list[EvaluationRow] = []
    with file_path.open("rb") as handle:
        for line_number, raw_line in enumerate(handle, start=1):
            where = f"{file_path} line {line_number}"
            try:
                line = raw_line.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DatasetError(f"{where}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{where}: invalid JSON ({exc.msg} at column {exc.colno})") from None
            rows.append(
                _record_to_row(
                    record,
                    where=where,
                    index=len(rows),
                    id_part=id_part,
                    source=str(file_path),
                    split=split,
                    extra={"line": line_number, "revision": revision},
                )
            )
    if not rows:
        raise DatasetError(f"{file_path}: contains no records")
    return rows


def load_hf(split: str = "test", revision: str | None = None) -> list[EvaluationRow]:
    """Load ``openai/gsm8k`` (config ``main``) from the Hugging Face Hub.

    Needs the optional ``datasets`` dependency (``pip install 'metis-pytest[hf]'``).
    ``revision`` pins a Hub commit/tag; it is recorded in each row's ``dataset_info``.
    """
    if split not in SPLITS:
        raise DatasetError(f"{DATASET_ID}: unknown split {split!r}; expected one of {list(SPLITS)}")
    try:
        import datasets as hf_datasets
    except ImportError:
        hf_datasets = None
    load_dataset = getattr(hf_datasets, "load_dataset", None)
    if load_dataset is None:
        # Also reached when `import datasets` finds the repository's own datasets/ data folder
        # (a namespace package, because Hugging Face's library is not installed).
        raise RuntimeError(
            f"Loading {DATASET_ID} from the Hugging Face Hub needs the `datasets` library: {_HF_INSTALL_HINT}"
        )
    records: Iterable[Any] = load_dataset(DATASET_ID, HF_CONFIG, split=split, revision=revision)
    extra = {"revision": revision or "main", "hf_config": HF_CONFIG}
    rows: list[EvaluationRow] = []
    for index, record in enumerate(records):
        where = f"{DATASET_ID} ({HF_CONFIG}, {split}) row {index}"
        if not isinstance(record, Mapping) or "question" not in record or "answer" not in record:
            raise DatasetError(f"{where}: expected fields 'question' and 'answer'")
        rows.append(
            _record_to_row(
                record,
                where=where,
                index=index,
                id_part=split,
                source=HF_SOURCE,
                split=split,
                extra=extra,
            )
        )
    return rows


def load(source: str, split: str = "test", revision: str | None = None) -> list[EvaluationRow]:
    """Load GSM8K rows from ``source``.

    * an existing file -> ``load_jsonl(source)`` (``split``/``revision`` unused);
    * an existing directory -> ``load_jsonl(source/<split>.jsonl)``;
    * ``"hf"``, ``"openai/gsm8k"`` or ``"hf:openai/gsm8k"`` -> ``load_hf(split, revision)``;
    * anything else -> ``DatasetError``.
    """
    source_str = str(source)
    path = Path(source_str)
    if path.is_file():
        return load_jsonl(path)
    if source_str in _HF_ALIASES:
        return load_hf(split=split, revision=revision)
    if path.is_dir():
        candidate = path / f"{split}.jsonl"
        if candidate.is_file():
            return load_jsonl(candidate)
        raise DatasetError(f"{path}: is a directory without {candidate.name}")
    raise DatasetError(
        f"{source_str!r} is neither an existing file nor a known HF id "
        f"(use a path to a .jsonl file, or one of {sorted(_HF_ALIASES)})"
    )

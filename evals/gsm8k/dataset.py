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
solution, source, split, index and revision in ``input_metadata.dataset_info``. The revision is
the file's SHA-256 prefix for a local file and the resolved Hub commit sha for ``openai/gsm8k``
(``resolve_hf_revision``), so a result names exactly the data it was computed on.

Every ``DatasetError`` message is one line (line breaks in paths or values are escaped) and names
the file (or ``openai/gsm8k (main, <split>) row N``), the 1-based line and the offending field.

Run the eval with ``pytest evals/gsm8k --model ...``.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from eval_protocol.models import EvaluationRow, InputMetadata, Message

from metis_pytest.errors import DatasetError as HarnessDatasetError
from metis_pytest.hub import HF_INSTALL_HINT, hf_load_dataset

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
    "resolve_hf_revision",
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
_HF_INSTALL_HINT = HF_INSTALL_HINT


# A full commit sha: already a pin, recorded as is without asking the Hub.
_COMMIT_SHA_RE = re.compile(r"[0-9a-fA-F]{40}")
# Hub revisions resolved in this process (requested revision -> commit sha), so the rows and the
# run's recorded revision agree even if a branch moves between ``load_hf`` and ``dataset_revision``.
_RESOLVED_REVISIONS: dict[str, str] = {}


class DatasetError(HarnessDatasetError):
    """A dataset file or record that cannot be turned into GSM8K rows.

    The message is always one line: line breaks in it (from a path or a value) are escaped.
    """


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


def resolve_hf_revision(revision: str | None) -> str:
    """The Hub commit sha of ``openai/gsm8k`` at ``revision`` (a branch, tag or sha; None = ``"main"``).

    A full 40-hex commit sha is returned as is (lower-cased) without contacting the Hub, so a pinned
    run works offline from the Hugging Face cache. Anything else is resolved with
    ``huggingface_hub.HfApi().dataset_info(DATASET_ID, revision=...).sha`` (imported lazily) and
    remembered for the rest of the process. Raises ``DatasetError`` (one line, naming the dataset and
    the revision) when ``huggingface_hub`` is missing or the Hub cannot be asked.
    """
    requested = revision or "main"
    if _COMMIT_SHA_RE.fullmatch(requested):
        return requested.lower()
    if requested in _RESOLVED_REVISIONS:
        return _RESOLVED_REVISIONS[requested]
    advice = "pass --dataset-revision <sha> or a local file (--dataset path/to/test.jsonl)"
    failed = f"{DATASET_ID}: cannot resolve revision {requested!r} to a commit sha"
    try:
        from huggingface_hub import HfApi
    except ImportError:
        raise DatasetError(
            f"{failed} (huggingface_hub is not installed: {_HF_INSTALL_HINT}); {advice}"
        ) from None
    try:
        sha = HfApi().dataset_info(DATASET_ID, revision=requested).sha
    except Exception as exc:  # offline, DNS, HTTP 4xx/5xx, unknown revision: all reported the same way
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        detail = detail if len(detail) <= 160 else detail[:157] + "..."
        reason = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
        raise DatasetError(f"{failed} ({reason}); {advice}") from None
    if not isinstance(sha, str) or not _COMMIT_SHA_RE.fullmatch(sha):
        raise DatasetError(f"{failed} (the Hub returned sha {sha!r}); {advice}")
    _RESOLVED_REVISIONS[requested] = sha.lower()
    return _RESOLVED_REVISIONS[requested]


def dataset_revision(source: str | Path, revision: str | None = None) -> str:
    """Revision recorded with results.

    For a local file: the first 12 hex characters of the file's SHA-256 (``revision`` is
    ignored). For the Hugging Face dataset (``"hf"``, ``"openai/gsm8k"``, ``"hf:openai/gsm8k"``):
    the full commit sha that ``revision`` (default ``"main"``) resolves to, see
    ``resolve_hf_revision``.
    """
    if isinstance(source, str) and source in _HF_ALIASES:
        return resolve_hf_revision(revision)
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
    (``gsm8k-<split or file stem>-<index:05d>``). A UTF-8 byte order mark at the start of the
    file (line 1) is accepted and ignored (``utf-8-sig``); anywhere else it is a JSON error. Any
    bad record raises ``DatasetError`` naming the file, the 1-based line number and the offending
    field; a JSON or UTF-8 error also gives the 1-based *character* column within the line (a
    line-1 BOM is not counted): ``<file> line N: invalid JSON (<msg> at column C)``.
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
            if line_number == 1 and raw_line.startswith(codecs.BOM_UTF8):
                raw_line = raw_line[len(codecs.BOM_UTF8) :]
            try:
                line = raw_line.decode("utf-8")
            except UnicodeDecodeError as exc:
                # The bytes before the bad one decode (the error is the first one); count characters.
                column = len(raw_line[: exc.start].decode("utf-8")) + 1
                bad = raw_line[exc.start : exc.start + 1].hex()
                raise DatasetError(
                    f"{where}: not valid UTF-8 ({exc.reason}, byte 0x{bad}, at column {column})"
                ) from None
            if not line.strip():
                continue
            # Drop the line terminator: left in, an error at the end of a truncated line is placed
            # by json after the "\n" (its line 2, column 1). Without it the text has no "\n", so
            # ``colno`` is ``pos + 1``: the 1-based column in characters (code points, not bytes)
            # from the start of the line (after a line-1 BOM, removed above); len(line) + 1 means
            # "at the end of the line".
            line = line[:-1] if line.endswith("\n") else line
            line = line[:-1] if line.endswith("\r") else line
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                message = exc.msg.removesuffix(" at")  # "Invalid control character at" + " at column"
                raise DatasetError(f"{where}: invalid JSON ({message} at column {exc.colno})") from None
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


def _check_split(split: str, where: str = DATASET_ID) -> None:
    if split not in SPLITS:
        raise DatasetError(f"{where}: unknown split {split!r}; expected one of {list(SPLITS)}")


def load_hf(split: str = "test", revision: str | None = None) -> list[EvaluationRow]:
    """Load ``openai/gsm8k`` (config ``main``) from the Hugging Face Hub.

    Needs the optional ``datasets`` dependency (``pip install 'metis-pytest[hf]'``).
    ``revision`` (a branch, tag or commit sha; default ``"main"``) is resolved to a commit sha
    (``resolve_hf_revision``); that sha is what ``load_dataset`` is asked for and what each row's
    ``dataset_info["revision"]`` records (``dataset_info["requested_revision"]`` keeps what was asked).
    """
    _check_split(split)
    load_dataset = hf_load_dataset(DATASET_ID, DatasetError)
    sha = resolve_hf_revision(revision)
    records: Iterable[Any] = load_dataset(DATASET_ID, HF_CONFIG, split=split, revision=sha)
    extra = {"revision": sha, "requested_revision": revision or "main", "hf_config": HF_CONFIG}
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

    ``split`` must be ``"train"`` or ``"test"`` for the Hub and for a directory (``DatasetError``
    otherwise).
    """
    source_str = str(source)
    path = Path(source_str)
    if path.is_file():
        return load_jsonl(path)
    if source_str in _HF_ALIASES:
        return load_hf(split=split, revision=revision)
    if path.is_dir():
        _check_split(split, where=str(path))
        candidate = path / f"{split}.jsonl"
        if candidate.is_file():
            return load_jsonl(candidate)
        raise DatasetError(f"{path}: is a directory without {candidate.name}")
    raise DatasetError(
        f"{source_str!r} is neither an existing file nor a known HF id "
        f"(use a path to a .jsonl file, or one of {sorted(_HF_ALIASES)})"
    )

"""ACE loaders: CSV files, a folder of ``ACE-<Domain>.csv`` files, or Hugging Face ``mercor/ACE`` -> Eval Protocol rows.

Benchmark: ACE, the AI Consumer Index (Mercor, arXiv:2512.04921; GitHub
Mercor-Intelligence/apex-evals, folder ``ace/``; Hugging Face ``mercor/ACE``, CC-BY-4.0). Four domains,
canonical names here lower case: ``shopping``, ``food``, ``gaming``, ``diy`` (``DOMAINS``; the files and
the paper write ``Shopping``, ``Food``, ``Gaming``, ``DIY``, see ``DISPLAY_NAMES``).

Shape of the data: one CSV row per *criterion*, with the columns ``Criterion ID, Task ID, Prompt,
Specified Prompt, Workflow, Hurdle Tag, Criteria type, Criterion Grounding Check, Description``, plus
``Shop vs. Product`` in the Shopping file only. Rows are grouped into tasks by ``Task ID`` (tasks in
first-seen order, criteria in file order), as upstream's ``pipeline/init_from_dataset.py`` does. The
model gets the task's ``Specified Prompt`` as the only message, a user turn: upstream's harness sends
that text alone (no system prompt) to every provider. Upstream also reads the column under its older
name ``Specified Prompt (where available)`` and falls back to ``Prompt`` where it is empty; so does
this loader. A criterion whose ``Criteria type`` is exactly ``Provides link(s)`` is a *link*
criterion (upstream's autograder grades those by checking the links, before looking at grounding);
``Criterion Grounding Check`` says whether a criterion is also checked against the cited sources;
``Hurdle Tag`` marks the criteria a response must all pass for its hurdle score.

Criterion IDs repeat across domains (Food and Gaming share some), so a criterion is keyed by
``(domain, task_id, criterion_id)`` (``criterion_key``) and a task by ``(domain, task_id)``
(``Task.key``). Within one domain a Criterion ID must be unique.

Every ``DatasetError`` is one line: ``<file> line N, column '<col>': <problem>``, where N is the
physical line on which that CSV record *starts* (records span several lines: prompts contain line
breaks), or ``mercor/ACE (<config>, train) row I, column '<col>': <problem>`` for the Hub.

Hugging Face: the dataset card (commits bb121fd / eaf3975 of ``mercor/ACE``) declares one config per
domain, named in lower case (``diy``, ``food``, ``shopping``, ``gaming``), each a single CSV file
(``data_files: "ACE-<Domain>.csv"``) with no split named, which ``datasets`` exposes as the one split
``train`` (``HF_SPLIT``). Its CSV builder parses the id columns as integers; they are turned back
into strings here.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from metis_pytest.errors import DatasetError as HarnessDatasetError
from metis_pytest.hub import hf_load_dataset
from metis_pytest.registry import DataSpec

if TYPE_CHECKING:
    from eval_protocol.models import EvaluationRow

__all__ = [
    "DATASET_ID",
    "DEFAULT_SOURCE",
    "DISPLAY_NAMES",
    "DOMAINS",
    "HF_CONFIGS",
    "HF_SOURCE",
    "HF_SPLIT",
    "LINK_CRITERIA_TYPE",
    "REQUIRED_COLUMNS",
    "Criterion",
    "DatasetError",
    "Task",
    "canonical_domain",
    "criteria_from_json",
    "criterion_key",
    "dataset_id",
    "dataset_revision",
    "load",
    "load_csv",
    "load_dir",
    "load_hf",
    "task_from_info",
    "task_from_row",
    "task_to_row",
]

DATASET_ID: str = "mercor/ACE"
HF_SOURCE: str = f"hf:{DATASET_ID}"
_HF_ALIASES = frozenset({"hf", DATASET_ID, HF_SOURCE})
# Default: the Hugging Face dataset. Offline, point ``--dataset`` at a folder of ACE-*.csv files or one file.
DEFAULT_SOURCE: str = "hf"
HF_SPLIT: str = "train"

DOMAINS: tuple[str, ...] = ("shopping", "food", "gaming", "diy")  # upstream's order
DISPLAY_NAMES: Mapping[str, str] = {"shopping": "Shopping", "food": "Food", "gaming": "Gaming", "diy": "DIY"}
HF_CONFIGS: Mapping[str, str] = {domain: domain for domain in DOMAINS}  # the card's config names
_FILE_NAME_RE = re.compile(r"ACE-(?P<domain>.+)\.csv", re.IGNORECASE)

LINK_CRITERIA_TYPE: str = "Provides link(s)"

COL_CRITERION_ID = "Criterion ID"
COL_TASK_ID = "Task ID"
COL_PROMPT = "Prompt"
COL_SPECIFIED_PROMPT = "Specified Prompt"
COL_WORKFLOW = "Workflow"
COL_HURDLE = "Hurdle Tag"
COL_CRITERIA_TYPE = "Criteria type"
COL_GROUNDING = "Criterion Grounding Check"
COL_DESCRIPTION = "Description"
COL_SHOP_VS_PRODUCT = "Shop vs. Product"
REQUIRED_COLUMNS: tuple[str, ...] = (
    COL_CRITERION_ID,
    COL_TASK_ID,
    COL_PROMPT,
    COL_SPECIFIED_PROMPT,
    COL_WORKFLOW,
    COL_HURDLE,
    COL_CRITERIA_TYPE,
    COL_GROUNDING,
    COL_DESCRIPTION,
)
# Older upstream files name the prompt column this way (upstream's loader accepts both).
_COLUMN_ALIASES: Mapping[str, str] = {"Specified Prompt (where available)": COL_SPECIFIED_PROMPT}

_HURDLE_VALUES: Mapping[str, bool] = {"Hurdle": True, "Not": False}
_GROUNDING_VALUES: Mapping[str, bool] = {"Grounded": True, "Not Grounded": False}
_SHOP_VS_PRODUCT_VALUES: tuple[str, ...] = ("Product", "Shop")

_CSV_LINE_BREAK_RE = re.compile(rb"\r\n|\r|\n")


class DatasetError(HarnessDatasetError):
    """A file, record or row that cannot be turned into ACE tasks. The message is always one line."""


@dataclass(frozen=True)
class Criterion:
    """One rubric line of a task. ``id`` is the ``Criterion ID`` (unique within a domain only)."""

    id: str
    description: str
    hurdle: bool
    grounded: bool
    criteria_type: str
    is_link: bool
    shop_vs_product: str | None = None


@dataclass(frozen=True)
class Task:
    """One ACE task: the prompt sent to the model and its criteria (file order)."""

    domain: str
    task_id: str
    prompt: str
    workflow: str
    criteria: tuple[Criterion, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not isinstance(self.criteria, tuple):
            object.__setattr__(self, "criteria", tuple(self.criteria))

    @property
    def key(self) -> tuple[str, str]:
        """``(domain, task_id)``: task ids are only unique within a domain."""
        return (self.domain, self.task_id)


def criterion_key(task: Task, criterion: Criterion) -> tuple[str, str, str]:
    """``(domain, task_id, criterion_id)``: criterion ids collide across domains."""
    return (task.domain, task.task_id, criterion.id)


def _value(value: str, limit: int = 60) -> str:
    return repr(value if len(value) <= limit else value[: limit - 3] + "...")


def canonical_domain(name: str, where: str = "ACE") -> str:
    """The canonical (lower-case) domain for ``name`` (any case: ``"DIY"``, ``"shopping"``)."""
    lowered = str(name).strip().lower()
    if lowered not in DOMAINS:
        raise DatasetError(f"{where}: unknown ACE domain {_value(str(name))}; known: {', '.join(DOMAINS)}")
    return lowered


def _canonical_domains(names: Sequence[str] | None) -> tuple[str, ...] | None:
    if names is None:
        return None
    if isinstance(names, str):
        names = [names]
    chosen = {canonical_domain(name, where="domains filter") for name in names}
    return tuple(domain for domain in DOMAINS if domain in chosen)


def _domain_from_path(path: Path) -> str:
    match = _FILE_NAME_RE.fullmatch(path.name)
    if match is None:
        raise DatasetError(
            f"{path}: cannot tell the ACE domain from the file name (expected ACE-<Domain>.csv, "
            "e.g. ACE-Food.csv); pass the domain"
        )
    return canonical_domain(match.group("domain"), where=f"{path} (from the file name)")


# --- records -> tasks ---------------------------------------------------------------------------


@dataclass
class _Pending:
    task_id: str
    prompt: str
    workflow: str
    loc: str
    criteria: list[Criterion]


def _header_columns(raw: Sequence[str], where: str) -> list[str]:
    """Header names, stripped, aliases mapped to their canonical names; duplicates are an error."""
    columns: list[str] = []
    for name in raw:
        name = str(name).strip().lstrip("\ufeff").strip()
        name = _COLUMN_ALIASES.get(name, name)
        if name and name in columns:
            raise DatasetError(f"{where}: duplicate column {name!r}")
        columns.append(name)
    return columns


def _check_columns(columns: Sequence[str], domain: str, where: str) -> None:
    required = list(REQUIRED_COLUMNS) + ([COL_SHOP_VS_PRODUCT] if domain == "shopping" else [])
    missing = [name for name in required if name not in columns]
    if missing:
        found = ", ".join(repr(name) for name in columns if name)
        raise DatasetError(
            f"{where}: missing required column(s) {', '.join(repr(name) for name in missing)} "
            f"(the header has {found or 'no names'})"
        )


def _tasks_from_records(domain: str, records: Iterable[tuple[str, Mapping[str, str]]], prefix: str) -> list[Task]:
    """Group validated records (``(location, {column: value})``, file order) into tasks."""
    pending: dict[str, _Pending] = {}
    first_seen: dict[str, str] = {}  # criterion id -> location of its first record
    for loc, record in records:
        where = f"{prefix} {loc}"

        def bad(column: str, problem: str, where: str = where) -> DatasetError:
            return DatasetError(f"{where}, column {column!r}: {problem}")

        criterion_id = record[COL_CRITERION_ID].strip()
        if not criterion_id:
            raise bad(COL_CRITERION_ID, "is empty")
        task_id = record[COL_TASK_ID].strip()
        if not task_id:
            raise bad(COL_TASK_ID, "is empty")
        description = record[COL_DESCRIPTION].strip()
        if not description:
            raise bad(COL_DESCRIPTION, "is empty")
        criteria_type = record[COL_CRITERIA_TYPE].strip()
        if not criteria_type:
            raise bad(COL_CRITERIA_TYPE, "is empty")
        hurdle_tag = record[COL_HURDLE].strip()
        if hurdle_tag not in _HURDLE_VALUES:
            raise bad(COL_HURDLE, f"expected 'Hurdle' or 'Not', got {_value(record[COL_HURDLE])}")
        grounding = record[COL_GROUNDING].strip()
        if grounding not in _GROUNDING_VALUES:
            raise bad(COL_GROUNDING, f"expected 'Grounded' or 'Not Grounded', got {_value(record[COL_GROUNDING])}")
        raw_shop = record.get(COL_SHOP_VS_PRODUCT)
        shop = (raw_shop or "").strip()
        if shop and shop not in _SHOP_VS_PRODUCT_VALUES:
            raise bad(COL_SHOP_VS_PRODUCT, f"expected 'Product' or 'Shop', got {_value(raw_shop or '')}")
        if not shop and domain == "shopping":
            raise bad(COL_SHOP_VS_PRODUCT, f"expected 'Product' or 'Shop', got {_value(raw_shop or '')}")
        prompt = record[COL_SPECIFIED_PROMPT]
        if not prompt.strip():
            prompt = record[COL_PROMPT]  # upstream: Specified Prompt, else Prompt
            if not prompt.strip():
                raise bad(COL_SPECIFIED_PROMPT, f"is empty (and so is {COL_PROMPT!r})")
        workflow = record[COL_WORKFLOW].strip()

        if criterion_id in first_seen:
            raise bad(COL_CRITERION_ID, f"duplicate criterion id {criterion_id!r} (first on {first_seen[criterion_id]})")
        first_seen[criterion_id] = loc
        task = pending.get(task_id)
        if task is None:
            task = pending[task_id] = _Pending(task_id, prompt, workflow, loc, [])
        else:
            if prompt != task.prompt:
                raise bad(COL_SPECIFIED_PROMPT, f"differs from {task.loc}, the first row of Task ID {task_id!r}")
            if workflow != task.workflow:
                raise bad(COL_WORKFLOW, f"{_value(workflow)} differs from {_value(task.workflow)} on {task.loc}, "
                                        f"the first row of Task ID {task_id!r}")
        task.criteria.append(Criterion(
            id=criterion_id,
            description=description,
            hurdle=_HURDLE_VALUES[hurdle_tag],
            grounded=_GROUNDING_VALUES[grounding],
            criteria_type=criteria_type,
            is_link=criteria_type == LINK_CRITERIA_TYPE,
            shop_vs_product=shop or None,
        ))
    if not pending:
        raise DatasetError(f"{prefix}: contains no criteria rows")
    return [Task(domain, t.task_id, t.prompt, t.workflow, tuple(t.criteria)) for t in pending.values()]


# --- CSV ----------------------------------------------------------------------------------------


def _decode(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")  # a leading byte order mark is dropped
    except UnicodeDecodeError as exc:
        line = len(_CSV_LINE_BREAK_RE.findall(exc.object[: exc.start])) + 1
        bad = exc.object[exc.start : exc.start + 1].hex()
        raise DatasetError(f"{path} line {line}: not valid UTF-8 ({exc.reason}, byte 0x{bad})") from None


def _csv_records(path: Path, text: str, domain: str) -> Iterator[tuple[str, dict[str, str]]]:
    """``(f"line N", {column: value})`` per CSV record, N the physical line the record starts on."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    columns: list[str] | None = None
    end = 0  # reader.line_num after the previous record: the next one starts on line end + 1
    while True:
        start = end + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise DatasetError(f"{path} line {start}: CSV syntax error ({exc})") from None
        end = reader.line_num
        if not any(cell.strip() for cell in row):
            continue  # a blank line (or a row of empty cells)
        if columns is None:
            columns = _header_columns(row, f"{path} line {start}")
            _check_columns(columns, domain, f"{path} line {start}")
            continue
        if len(row) != len(columns):
            raise DatasetError(
                f"{path} line {start}: record has {len(row)} field(s); the header has {len(columns)}"
            )
        yield f"line {start}", {name: value for name, value in zip(columns, row) if name}
    if columns is None:
        raise DatasetError(f"{path}: empty file (no header row)")


def load_csv(path: str | os.PathLike[str], domain: str | None = None) -> list[Task]:
    """The tasks of one ACE CSV file (decoded as ``utf-8-sig``, read with ``newline=""``).

    ``domain`` (any case) defaults to the one in the file name ``ACE-<Domain>.csv``. Rows are grouped
    by ``Task ID`` (tasks in first-seen order, criteria in file order); blank lines are skipped.
    Raises ``DatasetError`` (``<file> line N, column '<col>': <problem>``) for a missing column, a bad
    ``Hurdle Tag`` / ``Criterion Grounding Check`` / ``Shop vs. Product`` value, an empty id,
    description or prompt, a duplicate Criterion ID, or a task whose rows disagree on its prompt or
    workflow.
    """
    file_path = Path(path)
    if not file_path.is_file():
        raise DatasetError(f"{file_path}: no such file")
    chosen = canonical_domain(domain, where=str(file_path)) if domain is not None else _domain_from_path(file_path)
    text = _decode(file_path, file_path.read_bytes())
    return _tasks_from_records(chosen, _csv_records(file_path, text, chosen), str(file_path))


def _dir_files(path: Path) -> list[tuple[str, Path]]:
    """``(domain, file)`` for every ``ACE-*.csv`` in ``path``, in ``DOMAINS`` order."""
    found: dict[str, Path] = {}
    for file_path in sorted(path.glob("ACE-*.csv")):
        if not file_path.is_file():
            continue
        domain = _domain_from_path(file_path)
        if domain in found:
            raise DatasetError(f"{path}: two files for domain {domain!r}: {found[domain].name} and {file_path.name}")
        found[domain] = file_path
    if not found:
        raise DatasetError(f"{path}: no ACE-*.csv files in this folder")
    return [(domain, found[domain]) for domain in DOMAINS if domain in found]


def load_dir(path: str | os.PathLike[str]) -> list[Task]:
    """The tasks of every ``ACE-<Domain>.csv`` in a folder, domains in ``DOMAINS`` order.

    Whatever domains are there are loaded (the folder need not have all four)."""
    dir_path = Path(path)
    if not dir_path.is_dir():
        raise DatasetError(f"{dir_path}: not a folder")
    tasks: list[Task] = []
    for domain, file_path in _dir_files(dir_path):
        tasks.extend(load_csv(file_path, domain))
    return tasks


# --- Hugging Face -------------------------------------------------------------------------------


def _hf_text(value: Any) -> str:
    """A cell as ``datasets`` gives it (str, int, float, None) -> the CSV text."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        if value != value:  # NaN: an empty cell in a numeric column
            return ""
        if value.is_integer():
            return str(int(value))
    return str(value)


def _hf_records(records: Iterable[Any], domain: str, prefix: str) -> Iterator[tuple[str, dict[str, str]]]:
    checked = False
    for index, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise DatasetError(f"{prefix} row {index}: expected a record of columns, got {type(record).__name__}")
        columns = _header_columns(list(record), f"{prefix} row {index}")
        if not checked:
            _check_columns(columns, domain, prefix)
            checked = True
        values = {name: _hf_text(value) for name, value in zip(columns, record.values()) if name}
        missing = [name for name in REQUIRED_COLUMNS if name not in values]
        if missing:
            raise DatasetError(f"{prefix} row {index}: missing column(s) {', '.join(map(repr, missing))}")
        yield f"row {index}", values


def load_hf(
    domains: Sequence[str] | None = None,
    revision: str | None = None,
    *,
    split: str = HF_SPLIT,
) -> list[Task]:
    """The tasks of ``mercor/ACE`` on the Hugging Face Hub, one config per domain (default: all four).

    Calls ``datasets.load_dataset("mercor/ACE", <config>, split="train", revision=<revision or "main">)``
    for each domain, in ``DOMAINS`` order. Needs the optional ``datasets`` library
    (``pip install 'metis-pytest[hf]'``).
    """
    chosen = _canonical_domains(domains) or DOMAINS
    rev = revision or "main"
    load_dataset = hf_load_dataset(DATASET_ID, DatasetError)
    tasks: list[Task] = []
    for domain in chosen:
        config = HF_CONFIGS[domain]
        prefix = f"{DATASET_ID} ({config}, {split})"
        try:
            records = load_dataset(DATASET_ID, config, split=split, revision=rev)
        except Exception as exc:  # offline, unknown revision or config, HTTP errors: reported the same way
            text = str(exc).strip()
            detail = text.splitlines()[0] if text else ""
            detail = detail if len(detail) <= 160 else detail[:157] + "..."
            reason = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
            raise DatasetError(
                f"{prefix} at revision {rev!r}: cannot load ({reason}); offline, pass a folder of "
                "ACE-*.csv files (--dataset path/to/ace)"
            ) from None
        tasks.extend(_tasks_from_records(domain, _hf_records(records, domain, prefix), prefix))
    return tasks


# --- rows ---------------------------------------------------------------------------------------


def task_to_row(task: Task, *, source: str, revision: str) -> EvaluationRow:
    """One Eval Protocol row: ``messages = [user: prompt]``, the criteria as JSON in ``ground_truth``.

    ``input_metadata.row_id`` is ``ace-<domain>-<task_id>``; ``dataset_info`` holds ``domain``,
    ``task_id``, ``workflow``, ``prompt``, ``criteria`` (a list of ``asdict(Criterion)``), ``source``
    and ``revision`` (``task_from_info`` reads it back)."""
    from eval_protocol.models import EvaluationRow, InputMetadata, Message

    info: dict[str, Any] = {
        "domain": task.domain,
        "task_id": task.task_id,
        "workflow": task.workflow,
        "prompt": task.prompt,
        "criteria": [asdict(criterion) for criterion in task.criteria],
        "source": source,
        "revision": revision,
    }
    return EvaluationRow(
        messages=[Message(role="user", content=task.prompt)],
        ground_truth=json.dumps([asdict(criterion) for criterion in task.criteria], ensure_ascii=False),
        input_metadata=InputMetadata(row_id=f"ace-{task.domain}-{task.task_id}", dataset_info=info),
    )


_CRITERION_TYPES: Mapping[str, tuple[type, ...]] = {
    "id": (str,),
    "description": (str,),
    "hurdle": (bool,),
    "grounded": (bool,),
    "criteria_type": (str,),
    "is_link": (bool,),
    "shop_vs_product": (str, type(None)),
}


def _criterion_from_mapping(item: Any, where: str) -> Criterion:
    if not isinstance(item, Mapping):
        raise DatasetError(f"{where}: expected an object, got {type(item).__name__}")
    values: dict[str, Any] = {}
    for f in fields(Criterion):
        if f.name not in item:
            if f.name == "shop_vs_product":
                values[f.name] = None
                continue
            raise DatasetError(f"{where}: missing field {f.name!r}")
        value = item[f.name]
        if not isinstance(value, _CRITERION_TYPES[f.name]):
            raise DatasetError(f"{where}: field {f.name!r} has type {type(value).__name__}")
        values[f.name] = value
    return Criterion(**values)


def criteria_from_json(text: str) -> tuple[Criterion, ...]:
    """The criteria of a row's ``ground_truth`` (the JSON list ``task_to_row`` writes)."""
    try:
        items = json.loads(text)
    except (TypeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"ACE ground_truth: not a JSON list of criteria ({exc})") from None
    if not isinstance(items, list):
        raise DatasetError(f"ACE ground_truth: expected a JSON list of criteria, got {type(items).__name__}")
    return tuple(_criterion_from_mapping(item, f"ACE ground_truth item {i}") for i, item in enumerate(items))


def task_from_info(info: Mapping[str, Any], where: str = "ACE dataset_info") -> Task:
    """The ``Task`` a row's ``input_metadata.dataset_info`` describes (inverse of ``task_to_row``)."""
    if not isinstance(info, Mapping):
        raise DatasetError(f"{where}: expected a mapping, got {type(info).__name__}")
    for name in ("domain", "task_id", "prompt", "workflow"):
        if not isinstance(info.get(name), str):
            raise DatasetError(f"{where}: field {name!r} must be a string")
    criteria = info.get("criteria")
    if not isinstance(criteria, (list, tuple)) or not criteria:
        raise DatasetError(f"{where}: field 'criteria' must be a non-empty list")
    return Task(
        domain=canonical_domain(info["domain"], where=where),
        task_id=info["task_id"],
        prompt=info["prompt"],
        workflow=info["workflow"],
        criteria=tuple(
            _criterion_from_mapping(item, f"{where} criteria item {i}") for i, item in enumerate(criteria)
        ),
    )


def task_from_row(row: EvaluationRow) -> Task:
    """The ``Task`` behind an ACE row (from its ``dataset_info``; the prompt falls back to the user turn)."""
    metadata = row.input_metadata
    info = metadata.dataset_info if metadata is not None else None
    where = f"ACE row {metadata.row_id}" if metadata is not None and metadata.row_id else "ACE row"
    if not isinstance(info, Mapping):
        raise DatasetError(f"{where}: has no dataset_info")
    if "prompt" not in info:
        users = [m.content for m in row.messages if m.role == "user" and isinstance(m.content, str)]
        if users:
            info = {**info, "prompt": users[0]}
    return task_from_info(info, where=where)


# --- sources ------------------------------------------------------------------------------------


def _source_of(spec: DataSpec | str | os.PathLike[str]) -> str:
    return str(spec.source if isinstance(spec, DataSpec) else spec)


def _revision_of(spec: DataSpec | str | os.PathLike[str]) -> str | None:
    return spec.revision if isinstance(spec, DataSpec) else None


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def dataset_id(spec: DataSpec | str | os.PathLike[str]) -> str:
    """``"mercor/ACE"`` for the Hub, ``"file:<name>"`` for one CSV file, ``"dir:<name>"`` for a folder.

    Local data is named without its machine-specific directories; its content is named by
    ``dataset_revision``."""
    source = _source_of(spec)
    if source in _HF_ALIASES:
        return DATASET_ID
    path = Path(source)
    if path.is_dir():
        return f"dir:{path.resolve().name}"
    if path.is_file():
        return f"file:{path.name}"
    raise DatasetError(_unknown_source(source))


def dataset_revision(spec: DataSpec | str | os.PathLike[str]) -> str:
    """The revision recorded with results.

    Hub: the requested revision (``spec.revision``) or ``"main"``. A file: the first 12 hex digits of
    its SHA-256. A folder: the first 12 hex digits of the SHA-256 of its ``ACE-*.csv`` files' contents
    concatenated in file-name order."""
    source = _source_of(spec)
    if source in _HF_ALIASES:
        return _revision_of(spec) or "main"
    path = Path(source)
    if path.is_file():
        return _file_sha256(path)[:12]
    if path.is_dir():
        digest = hashlib.sha256()
        files = sorted((p for p in path.glob("ACE-*.csv") if p.is_file()), key=lambda p: p.name)
        if not files:
            raise DatasetError(f"{path}: no ACE-*.csv files in this folder")
        for file_path in files:
            digest.update(file_path.read_bytes())
        return digest.hexdigest()[:12]
    raise DatasetError(_unknown_source(source))


def _unknown_source(source: str) -> str:
    return (f"{source!r} is neither an existing ACE-*.csv file or folder of them nor a known HF id "
            f"(one of {sorted(_HF_ALIASES)})")


def load(
    spec: DataSpec,
    domains: Sequence[str] | None = None,
    task_ids: Sequence[str] | None = None,
) -> list[EvaluationRow]:
    """ACE rows from ``spec.source``: a CSV file, a folder of ``ACE-*.csv`` files, or ``"hf"``
    (also ``"mercor/ACE"``, ``"hf:mercor/ACE"``; revision ``spec.revision``, split ``train``).

    ``domains`` (any case) and ``task_ids`` keep only those tasks; an unknown domain name, a task id
    found in none of the chosen domains, or nothing left at all is a ``DatasetError``. ``spec.split``
    must be None or ``"train"`` for the Hub and is ignored for local files (ACE has one split).
    """
    source = _source_of(spec)
    chosen = _canonical_domains(domains)
    path = Path(source)
    if source in _HF_ALIASES:
        split = spec.split or HF_SPLIT
        if split != HF_SPLIT:
            raise DatasetError(f"{DATASET_ID}: unknown split {split!r}; ACE has one split, {HF_SPLIT!r}")
        tasks = load_hf(chosen, spec.revision, split=split)
        row_source = HF_SOURCE
    elif path.is_file():
        tasks = load_csv(path)
        row_source = str(path)
    elif path.is_dir():
        tasks = load_dir(path)
        row_source = str(path)
    else:
        raise DatasetError(_unknown_source(source))
    loaded_domains = sorted({task.domain for task in tasks}, key=DOMAINS.index)
    if chosen is not None:
        tasks = [task for task in tasks if task.domain in chosen]
    if task_ids is not None:
        wanted = [str(task_id).strip() for task_id in ([task_ids] if isinstance(task_ids, str) else task_ids)]
        missing = [task_id for task_id in wanted if task_id not in {task.task_id for task in tasks}]
        if missing:
            raise DatasetError(
                f"{source}: task id(s) {', '.join(map(repr, missing))} not found in domain(s) "
                f"{', '.join(chosen if chosen is not None else loaded_domains)}"
            )
        tasks = [task for task in tasks if task.task_id in set(wanted)]
    if not tasks:
        raise DatasetError(
            f"{source}: no ACE tasks left after the filters (it has domain(s) {', '.join(loaded_domains)}; "
            f"asked for {', '.join(chosen or ())})"
        )
    revision = dataset_revision(spec)
    return [task_to_row(task, source=row_source, revision=revision) for task in tasks]

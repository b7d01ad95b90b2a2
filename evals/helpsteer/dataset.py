"""HelpSteer loaders and MODPO's preference pairs: HF ``nvidia/HelpSteer`` / ``nvidia/HelpSteer2`` or local JSONL.

Benchmarks: HelpSteer (Wang et al. 2023, arXiv:2311.09528; Hugging Face ``nvidia/HelpSteer``, splits
``train`` 35,331 rows and ``validation`` 1,789) and HelpSteer2 (Wang et al. 2024, arXiv:2406.08673;
``nvidia/HelpSteer2``, ``train`` 20,324 and ``validation`` 1,038). Both have the same columns: ``prompt``,
``response`` and five ratings 0-4, ``helpfulness``, ``correctness``, ``coherence``, ``complexity``,
``verbosity``. **HelpSteer defines higher as better for every attribute, verbosity included** (verbosity
is "the amount of detail relative to what the prompt asks for"); ``direction="concise"`` is how an
objective that wants *less* complexity and verbosity is built (see :func:`objective`).

The stable API (the MODPO training pipeline imports it)::

    from evals.helpsteer.dataset import load, build_pairs
    records = load("hf:nvidia/HelpSteer", split="train")           # or a local .jsonl
    pairs = build_pairs(records, "verbosity", direction="concise")  # list[Pair]
    pairs[0].to_dpo()  # {"prompt": ..., "chosen": ..., "rejected": ...}

Pairs are built as MODPO's ``helpsteer_transform_to_preference`` builds them (ZHZisZZ/modpo,
``src/data/raw_data/helpsteer.py``): the responses to one prompt are *consecutive rows with an identical
prompt*; every unordered pair of them (in row order) is a candidate; the response with the higher
objective is chosen; ties are dropped; ``overall`` is the sum of the five ratings. (MODPO groups inside
each ``datasets.map`` batch, so a prompt whose rows straddle a batch boundary loses its cross-batch pairs
there; here the whole sequence is grouped.)

Every ``DatasetError`` is one line and names the file (or ``nvidia/HelpSteer (<split>) row N``), the
1-based line and the field.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from metis_pytest.errors import DatasetError as HarnessDatasetError
from metis_pytest.hub import HF_INSTALL_HINT, hf_load_dataset

__all__ = [
    "ATTRIBUTES",
    "CONCISE_FLIPPED",
    "DIRECTIONS",
    "HF_DATASETS",
    "OBJECTIVES",
    "SPLITS",
    "DatasetError",
    "Direction",
    "Pair",
    "Record",
    "build_pairs",
    "dataset_id",
    "dataset_revision",
    "load",
    "load_hf",
    "load_jsonl",
    "objective",
    "prompt_id",
    "unique_prompts",
]

ATTRIBUTES: tuple[str, ...] = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")
OVERALL = "overall"
OBJECTIVES: tuple[str, ...] = (*ATTRIBUTES, OVERALL)
Direction = Literal["higher", "concise"]
DIRECTIONS: tuple[str, ...] = ("higher", "concise")
# Under direction="concise" these count negatively (less detail and less complexity preferred).
CONCISE_FLIPPED: tuple[str, ...] = ("complexity", "verbosity")
RATING_RANGE = (0, 4)
SPLITS: tuple[str, ...] = ("train", "validation")
HF_DATASETS: tuple[str, ...] = ("nvidia/HelpSteer", "nvidia/HelpSteer2")
# "hf" alone is HelpSteer (v1), the dataset MODPO trains on.
_HF_ALIASES: dict[str, str] = {"hf": "nvidia/HelpSteer",
                               **{name: name for name in HF_DATASETS},
                               **{f"hf:{name}": name for name in HF_DATASETS}}
_COMMIT_SHA_RE = re.compile(r"[0-9a-fA-F]{40}")
_RESOLVED: dict[tuple[str, str], str] = {}


class DatasetError(HarnessDatasetError):
    """A HelpSteer file or record that cannot be read; the message is one line naming file, line, field."""


@dataclass(frozen=True)
class Record:
    """One rated response. ``index`` counts records from 0 in source order; ``where`` names its origin
    (``<file> line N`` or ``nvidia/HelpSteer (train) row I``) for error messages and provenance."""

    prompt: str
    response: str
    helpfulness: int
    correctness: int
    coherence: int
    complexity: int
    verbosity: int
    index: int = 0
    where: str = ""

    @property
    def ratings(self) -> dict[str, int]:
        """The five human ratings by attribute name."""
        return {name: int(getattr(self, name)) for name in ATTRIBUTES}

    def rating(self, attribute: str) -> int:
        """One attribute's rating; ``overall`` is the sum of the five."""
        if attribute == OVERALL:
            return sum(self.ratings.values())
        if attribute not in ATTRIBUTES:
            raise ValueError(f"unknown HelpSteer attribute {attribute!r}; expected one of {list(OBJECTIVES)}")
        return int(getattr(self, attribute))


def objective(record: Record, attribute: str, direction: Direction = "higher") -> int:
    """The value a pair compares: the rating (``overall``: the sum of the five) when ``direction`` is
    ``"higher"`` (HelpSteer's own sense); under ``"concise"`` complexity and verbosity count negatively,
    so ``objective(r, "verbosity", "concise") == -r.verbosity`` and ``overall`` becomes
    ``helpfulness + correctness + coherence - complexity - verbosity``. The other three attributes are
    the same in both directions."""
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r}; expected one of {list(DIRECTIONS)}")
    sign = {name: -1 if direction == "concise" and name in CONCISE_FLIPPED else 1 for name in ATTRIBUTES}
    if attribute == OVERALL:
        return sum(sign[name] * value for name, value in record.ratings.items())
    return sign.get(attribute, 1) * record.rating(attribute)


@dataclass(frozen=True)
class Pair:
    """A preference pair: ``chosen`` has the strictly higher objective. ``chosen_index`` and
    ``rejected_index`` are the records' ``index``; the scores are :func:`objective` values."""

    prompt: str
    chosen: str
    rejected: str
    attribute: str
    direction: str
    chosen_score: int
    rejected_score: int
    chosen_index: int
    rejected_index: int

    @property
    def pair_id(self) -> str:
        """Stable id: the prompt's id and the two records' indexes (``<prompt_id>-<i>-<j>``)."""
        low, high = sorted((self.chosen_index, self.rejected_index))
        return f"{prompt_id(self.prompt)}-{low}-{high}"

    def to_dpo(self) -> dict[str, str]:
        """The pair as DPO trainers take it: ``{"prompt", "chosen", "rejected"}`` (raw prompt text)."""
        return {"prompt": self.prompt, "chosen": self.chosen, "rejected": self.rejected}


def build_pairs(records: Sequence[Record], attribute: str, *, direction: Direction = "higher") -> list[Pair]:
    """MODPO's preference pairs for ``attribute`` (one of :data:`OBJECTIVES`).

    Groups are runs of consecutive records with an identical prompt (the same prompt again later, after
    another prompt, starts a new group, as in MODPO). Within a group every unordered pair ``(j, k)``,
    ``j < k`` in record order, gives one :class:`Pair` whose chosen response has the higher
    :func:`objective`; equal objectives (ties) give none. Pairs come out in group order, then ``(j, k)``.
    """
    if attribute not in OBJECTIVES:
        raise ValueError(f"unknown HelpSteer attribute {attribute!r}; expected one of {list(OBJECTIVES)}")
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r}; expected one of {list(DIRECTIONS)}")
    pairs: list[Pair] = []
    start = 0
    while start < len(records):
        end = start + 1
        while end < len(records) and records[end].prompt == records[start].prompt:
            end += 1
        group = records[start:end]
        for j in range(len(group)):
            for k in range(j + 1, len(group)):
                a, b = group[j], group[k]
                sa, sb = objective(a, attribute, direction), objective(b, attribute, direction)
                if sa == sb:
                    continue
                win, lose = (a, b) if sa > sb else (b, a)
                pairs.append(Pair(prompt=a.prompt, chosen=win.response, rejected=lose.response, attribute=attribute,
                                  direction=direction, chosen_score=max(sa, sb), rejected_score=min(sa, sb),
                                  chosen_index=win.index, rejected_index=lose.index))
        start = end
    return pairs


def prompt_id(prompt: str) -> str:
    """A prompt's stable id: ``helpsteer-`` and the first 12 hex characters of its text's SHA-256."""
    return "helpsteer-" + hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:12]


def unique_prompts(records: Iterable[Record]) -> list[str]:
    """The distinct prompts of ``records`` in first-seen order (the prompt set policies answer)."""
    return list(dict.fromkeys(r.prompt for r in records))


# ----------------------------------------------------------------------------- records


def _rating(value: Any, where: str, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise DatasetError(f"{where}: field '{name}' must be an integer {RATING_RANGE[0]}-{RATING_RANGE[1]}, "
                           f"got {value!r}")
    if not RATING_RANGE[0] <= int(value) <= RATING_RANGE[1]:
        raise DatasetError(f"{where}: field '{name}' must be between {RATING_RANGE[0]} and {RATING_RANGE[1]}, "
                           f"got {value!r}")
    return int(value)


def to_record(raw: Any, *, where: str, index: int) -> Record:
    """One source record (a mapping with HelpSteer's columns) as a :class:`Record`; ``DatasetError`` names
    ``where`` and the field when a column is missing or has the wrong type or range."""
    if not isinstance(raw, Mapping):
        raise DatasetError(f"{where}: expected a JSON object, got {type(raw).__name__}")
    for name in ("prompt", "response", *ATTRIBUTES):
        if name not in raw:
            raise DatasetError(f"{where}: field '{name}' is missing")
    prompt, response = raw["prompt"], raw["response"]
    if not isinstance(prompt, str) or not prompt.strip():
        raise DatasetError(f"{where}: field 'prompt' must be a non-empty string")
    if not isinstance(response, str):
        raise DatasetError(f"{where}: field 'response' must be a string, got {type(response).__name__}")
    ratings = {name: _rating(raw[name], where, name) for name in ATTRIBUTES}
    return Record(prompt=prompt, response=response, index=index, where=where, **ratings)


def load_jsonl(path: str | Path) -> list[Record]:
    """Records of a JSONL file with HelpSteer's columns (blank lines skipped; extra columns ignored)."""
    file_path = Path(path)
    if not file_path.is_file():
        raise DatasetError(f"{file_path}: no such file")
    records: list[Record] = []
    with file_path.open("r", encoding="utf-8-sig") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{file_path} line {line_number}"
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{where}: invalid JSON ({exc.msg} at column {exc.colno})") from None
            records.append(to_record(raw, where=where, index=len(records)))
    if not records:
        raise DatasetError(f"{file_path}: contains no records")
    return records


def resolve_hf_revision(name: str, revision: str | None) -> str:
    """The Hub commit sha of dataset ``name`` at ``revision`` (default ``main``); a full sha is used as is,
    without asking the Hub, so a pinned run works offline from the Hugging Face cache."""
    requested = revision or "main"
    if _COMMIT_SHA_RE.fullmatch(requested):
        return requested.lower()
    if (name, requested) in _RESOLVED:
        return _RESOLVED[(name, requested)]
    failed = f"{name}: cannot resolve revision {requested!r} to a commit sha"
    advice = "pass --dataset-revision <sha> or a local file"
    try:
        from huggingface_hub import HfApi
    except ImportError:
        raise DatasetError(f"{failed} (huggingface_hub is not installed: {HF_INSTALL_HINT}); {advice}") from None
    try:
        sha = HfApi().dataset_info(name, revision=requested).sha
    except Exception as exc:  # offline, HTTP errors, unknown revision: reported the same way
        first = (str(exc).strip().splitlines() or [""])[0][:160]
        raise DatasetError(f"{failed} ({type(exc).__name__}: {first}); {advice}") from None
    if not isinstance(sha, str) or not _COMMIT_SHA_RE.fullmatch(sha):
        raise DatasetError(f"{failed} (the Hub returned sha {sha!r}); {advice}")
    _RESOLVED[(name, requested)] = sha.lower()
    return _RESOLVED[(name, requested)]


def load_hf(name: str = "nvidia/HelpSteer", split: str = "train", revision: str | None = None) -> list[Record]:
    """``nvidia/HelpSteer`` or ``nvidia/HelpSteer2`` from the Hub (``pip install 'metis-pytest[hf]'``), at
    the commit sha ``revision`` resolves to."""
    if name not in HF_DATASETS:
        raise DatasetError(f"{name!r}: not a HelpSteer dataset; expected one of {list(HF_DATASETS)}")
    if split not in SPLITS:
        raise DatasetError(f"{name}: unknown split {split!r}; expected one of {list(SPLITS)}")
    load_dataset = hf_load_dataset(name, DatasetError)
    sha = resolve_hf_revision(name, revision)
    rows: Iterable[Any] = load_dataset(name, split=split, revision=sha)
    return [to_record(raw, where=f"{name} ({split}) row {i}", index=i) for i, raw in enumerate(rows)]


def load(source: str | Path, *, split: str = "train", revision: str | None = None) -> list[Record]:
    """HelpSteer records from ``source``: an existing ``.jsonl`` file; a directory holding
    ``<split>.jsonl``; or the Hub: ``hf`` (= ``nvidia/HelpSteer``), ``nvidia/HelpSteer``,
    ``nvidia/HelpSteer2``, each also with an ``hf:`` prefix (``split`` and ``revision`` apply there)."""
    text = str(source)
    path = Path(text)
    if path.is_file():
        return load_jsonl(path)
    if text in _HF_ALIASES:
        return load_hf(_HF_ALIASES[text], split=split, revision=revision)
    if path.is_dir():
        candidate = path / f"{split}.jsonl"
        if candidate.is_file():
            return load_jsonl(candidate)
        raise DatasetError(f"{path}: is a directory without {candidate.name}")
    raise DatasetError(f"{text!r} is neither an existing file nor a HelpSteer Hub id "
                       f"(use a .jsonl path or one of {sorted(_HF_ALIASES)})")


def dataset_id(source: str | Path) -> str:
    """``nvidia/HelpSteer`` / ``nvidia/HelpSteer2`` for the Hub, ``file:<name>`` for a local file."""
    text = str(source)
    return _HF_ALIASES[text] if text in _HF_ALIASES else f"file:{Path(text).name}"


def dataset_revision(source: str | Path, revision: str | None = None, *, split: str = "train") -> str:
    """The Hub commit sha, or a local file's (a directory's ``<split>.jsonl``) SHA-256 prefix (12 hex)."""
    text = str(source)
    if text in _HF_ALIASES:
        return resolve_hf_revision(_HF_ALIASES[text], revision)
    path = Path(text)
    if path.is_dir():
        path = path / f"{split}.jsonl"
    if not path.is_file():
        raise DatasetError(f"{path}: not an existing file (and not a HelpSteer Hub id)")
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]

"""``metis data export``: a benchmark's rows as training data (verl's RL parquet), split train/test.

    metis data export gsm8k --format verl --out data/gsm8k --dataset ../shared/datasets/gsm8k/train.jsonl
    metis data export ace --format verl --out data/ace --dataset datasets/ace_demo --domains shopping,food

The rows are the ones the pytest evaluation runs: the benchmark's registered loader, given a
:class:`~metis_pytest.registry.DataSpec` built from ``--dataset`` / ``--dataset-split`` /
``--dataset-revision`` and the benchmark's own *data* options (``Option(affects="data")``, e.g. ACE's
``--domains`` and ``--task-ids``). Those flags are known to the command line for every registered
benchmark; one the chosen benchmark does not declare is refused, naming the benchmarks that do.

verl row schema (one row per benchmark row; the same explicit Arrow schema in both files)::

    data_source   string                       the benchmark name: what metis_pytest.rewards.verl.compute_score
                                               dispatches on (point verl's custom_reward_function at it)
    prompt        list<struct<role, content>>  the chat the model is sent (role and content only)
    ability       string                       ABILITIES[name]; otherwise "agent" for a tool-using benchmark,
                                               "general" for the rest
    reward_model  struct<style, ground_truth>  style "rule" (a pure scorer) or "model" (an LLM-judged benchmark:
                                               one with a judge_prompt_version); ground_truth the row's
                                               ground truth as a string (GSM8K: the gold number; ACE: the
                                               JSON list of criteria), unchanged
    extra_info    struct<...>                  split ("train" | "test"), index (position in its file),
                                               row_id (the harness's row id), dataset_info (JSON text of the
                                               row's whole input_metadata.dataset_info: the exact record,
                                               read back with metadata_of), then every dataset_info key
                                               as a field of its own (see below), so extra_info is what the
                                               scorer reads as metadata (metis_pytest.rewards.verl passes it
                                               on); tool-using benchmarks add need_tools_kwargs (true) and
                                               tools_kwargs {tool: {"create_kwargs": {"row_id": ...}}}
    agent_name    string                       tool-using benchmarks only: "tool_agent" (verl reads it as a
                                               top-level column to pick the agent loop)

Decisions, so the files are writable and the same in shape whatever the rows:

* No struct is ever empty (Parquet cannot store a struct without fields): every struct above has
  fixed, non-empty fields; ``tools_kwargs`` exists only for tool-using benchmarks and always names
  its tools.
* Each ``dataset_info`` key (other than the ones verl or this schema reserve: ``split``, ``index``,
  ``row_id``, ...; the source's own split and index stay in the JSON) becomes an ``extra_info``
  field. When its values have one Arrow shape in every row it is stored natively (scalars typed,
  dicts as structs, lists as lists: ACE's criteria are a list of structs); null or missing fits any
  shape, int widens to float. When the shape varies across rows (dicts with different keys, a
  string in one row and a number in another) or cannot be stored (an empty dict anywhere, an int
  beyond int64), every row holds that key's value as JSON text instead: a string, never a struct.
  The schema is computed from all rows before the split, so both files have the same one.
* The split is by row id: each row's key is SHA-256 of ``"<seed>:<row id>"``; rows are ordered by
  key and the first ``floor(ratio * n + 0.5)`` are train, the rest test. Both files list their rows in
  key order. So the output depends only on the *set* of rows, the seed and the ratio: not on the
  order the loader returns them, the machine or the run; two exports of the same data are
  byte-identical. Filtering (``--domains``, ``--max-rows``) changes the set, so a row near the
  boundary can change sides between differently filtered exports: export once, then filter.
* ``DIR/manifest.json`` records the counts, the benchmark's version and prompt hash, the dataset id,
  revision and options, the split rule, each file's SHA-256 and the equivalent command line; it has
  no timestamp, so it is reproducible too.

In verl: ``data.train_files=DIR/train.parquet data.val_files=DIR/test.parquet``, the reward
``custom_reward_function.path=<metis_pytest>/rewards/verl.py custom_reward_function.name=compute_score``;
a tool-using benchmark's rows also need verl's multi-turn rollout with a tool config that registers
tools under the names in ``tools_kwargs``. verl joins several train files with ``datasets``, which
wants their features to agree: exports of different benchmarks have different ``extra_info`` fields
(each benchmark's metadata is its own), so check that before listing two benchmarks in one run.

Writing Parquet needs pyarrow (``pip install 'metis-pytest[verl-data]'``); it is imported only when
an export runs. A progress bar (tqdm, on stderr) is shown for exports of at least
``PROGRESS_MIN_ROWS`` rows when stderr is a terminal.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from metis_pytest.errors import DATA_ERRORS
from metis_pytest.registry import Benchmark, DataSpec, Option, benchmark_names, get_benchmark

if TYPE_CHECKING:
    from eval_protocol.models import EvaluationRow

__all__ = [
    "ABILITIES",
    "FORMATS",
    "PROGRESS_MIN_ROWS",
    "ExportError",
    "VerlProfile",
    "add_benchmark_options",
    "export",
    "metadata_fields",
    "metadata_of",
    "run_cli",
    "split_key",
    "split_rows",
    "verl_profile",
]

FORMATS: tuple[str, ...] = ("verl",)
SPLITS: tuple[str, ...] = ("train", "test")
# verl's ``ability`` per benchmark (a free-form label verl keeps with the row and logs by).
ABILITIES: Mapping[str, str] = {"gsm8k": "math", "ace": "web_agent"}
TOOL_AGENT = "tool_agent"  # verl's registered multi-turn tool agent loop
PROGRESS_MIN_ROWS = 1000
PYARROW_HINT = "pip install 'metis-pytest[verl-data]' (or pip install 'pyarrow>=15')"
# extra_info keys verl reads or this schema writes: never taken from a row's metadata.
RESERVED_KEYS = frozenset({"split", "index", "row_id", "dataset_info", "tools_kwargs", "need_tools_kwargs",
                           "interaction_kwargs", "agent_name"})
_INT64 = (-(2**63), 2**63 - 1)


class ExportError(ValueError):
    """A usage error of an export (unknown benchmark, a flag the benchmark does not declare, a bad
    ratio, pyarrow missing): one line, reported by the command line with exit status 2."""


@dataclass(frozen=True)
class VerlProfile:
    """How a benchmark's rows look to verl: ``ability``, reward style, and for tool-using benchmarks
    the agent loop and the tools whose ``create_kwargs`` each row carries."""

    ability: str
    reward_style: str = "rule"
    agent_name: str | None = None
    tools: tuple[str, ...] = ()


def _tools_of(bench: Benchmark) -> tuple[str, ...]:
    """The tools a tool-using benchmark's agent is given. The web toolbox is the one Metis has; a
    benchmark with another toolbox gets no ``tools_kwargs`` (verl's default, none per row)."""
    if bench.processor != "agent":
        return ()
    if bench.name == "ace":
        from metis_pytest.tools.toolbox import BROWSE_PAGE, WEB_SEARCH

        return (WEB_SEARCH, BROWSE_PAGE)
    return ()


def verl_profile(bench: Benchmark) -> VerlProfile:
    """The :class:`VerlProfile` of ``bench``: ``ABILITIES`` or one derived from its processor."""
    agent = bench.processor == "agent"
    ability = ABILITIES.get(bench.name) or ("agent" if agent else "general")
    return VerlProfile(ability=ability, reward_style="model" if bench.judge_prompt_version else "rule",
                       agent_name=TOOL_AGENT if agent else None, tools=_tools_of(bench))


# ----------------------------------------------------------------------------- the split


def split_key(row_id: str, seed: int) -> str:
    """The hex SHA-256 of ``"<seed>:<row id>"``: a row's place in the split order."""
    return hashlib.sha256(f"{seed}:{row_id}".encode()).hexdigest()


def train_count(n: int, ratio: float) -> int:
    """Rows of ``n`` that go to train: ``ratio * n`` rounded half up."""
    return min(n, max(0, math.floor(ratio * n + 0.5)))


def split_rows(row_ids: Iterable[str], ratio: float, seed: int = 0) -> dict[str, list[str]]:
    """``{"train": [...], "test": [...]}``: the row ids ordered by :func:`split_key` (ties, which need
    a SHA-256 collision, by id), the first :func:`train_count` of them train. Independent of the order
    of ``row_ids``; duplicate ids are an :class:`ExportError`."""
    ids = list(row_ids)
    dupes = sorted(row_id for row_id, count in Counter(ids).items() if count > 1)
    if dupes:
        shown = ", ".join(map(repr, dupes[:5])) + (" ..." if len(dupes) > 5 else "")
        raise ExportError(f"row ids must be unique to split by id; repeated: {shown}")
    ordered = sorted(ids, key=lambda i: (split_key(i, seed), i))
    cut = train_count(len(ordered), ratio)
    return {"train": ordered[:cut], "test": ordered[cut:]}


# ----------------------------------------------------------------------------- rows -> records


def _content(message: Any, where: str) -> str:
    content = getattr(message, "content", None)
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts: text only
        texts = [getattr(p, "text", None) if not isinstance(p, Mapping) else p.get("text") for p in content]
        if all(isinstance(t, str) for t in texts):
            return "".join(t for t in texts if isinstance(t, str))
    raise ExportError(f"{where}: content must be text, got {type(content).__name__}")


def _ground_truth(value: Any, where: str) -> str:
    if value is None:
        raise ExportError(f"{where}: has no ground truth")
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, sort_keys=True, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ExportError(f"{where}: ground truth is not JSON-safe ({exc})") from None


@dataclass(frozen=True)
class _Row:
    row_id: str
    prompt: list[dict[str, str]]
    ground_truth: str
    info: Mapping[str, Any]
    info_json: str


def _prepare(row: EvaluationRow, position: int) -> _Row:
    meta = row.input_metadata
    row_id = meta.row_id if meta is not None and meta.row_id else None
    if not row_id:
        raise ExportError(f"row {position}: has no input_metadata.row_id (the split is by row id)")
    where = f"row {row_id!r}"
    if not row.messages:
        raise ExportError(f"{where}: has no messages")
    prompt = [{"role": str(m.role), "content": _content(m, f"{where} message {i}")} for i, m in enumerate(row.messages)]
    info = dict(meta.dataset_info or {}) if meta is not None else {}
    try:
        info_json = _json(info)
    except (TypeError, ValueError) as exc:
        raise ExportError(f"{where}: dataset_info is not JSON-safe ({exc})") from None
    return _Row(row_id, prompt, _ground_truth(row.ground_truth, where), info, info_json)


class _Unstable(Exception):
    """A metadata value Arrow cannot hold with one type across rows (stored as JSON text instead)."""


Shape = Any  # "null" | "empty" | "bool" | "int" | "float" | "str" | ("list", Shape) | ("struct", ((key, Shape), ...))


def _shape(value: Any) -> Shape:
    """The Arrow shape of one JSON-safe value; :class:`_Unstable` for an empty dict (Parquet cannot
    store a struct without fields), a dict with non-string keys, an int beyond int64, anything else."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        if _INT64[0] <= value <= _INT64[1]:
            return "int"
        raise _Unstable
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, Mapping):
        if not value or not all(isinstance(key, str) for key in value):
            raise _Unstable
        return ("struct", tuple((key, _shape(value[key])) for key in sorted(value)))
    if isinstance(value, (list, tuple)):
        inner: Shape = "empty"
        for item in value:
            inner = _merge(inner, _shape(item))
        return ("list", inner)
    raise _Unstable


def _merge(a: Shape, b: Shape) -> Shape:
    """One shape for two values: null (and an empty list's element) fits anything, int widens to
    float; structs must have the same keys, everything else the same kind."""
    if a == b:
        return a
    if a in ("null", "empty"):
        return b if b != "empty" else a
    if b in ("null", "empty"):
        return a
    if {a, b} == {"int", "float"}:
        return "float"
    if isinstance(a, tuple) and isinstance(b, tuple) and a[0] == b[0]:
        if a[0] == "list":
            return ("list", _merge(a[1], b[1]))
        if [key for key, _ in a[1]] == [key for key, _ in b[1]]:
            return ("struct", tuple((key, _merge(x, y)) for (key, x), (_, y) in zip(a[1], b[1])))
    raise _Unstable


def metadata_fields(infos: Sequence[Mapping[str, Any]]) -> list[tuple[str, Shape, bool]]:
    """``(key, shape, as_json)`` for every metadata key of any row except ``RESERVED_KEYS``, sorted:
    ``as_json`` False when the key has one Arrow shape in every row (a row without it holds null),
    True when it does not (each row then holds the value's JSON text, shape ``"str"``)."""
    keys = sorted({key for info in infos for key in info if isinstance(key, str) and key not in RESERVED_KEYS})
    fields = []
    for key in keys:
        try:
            shape: Shape = "null"
            for info in infos:
                shape = _merge(shape, _shape(info.get(key)))
            fields.append((key, shape, False))
        except _Unstable:
            fields.append((key, "str", True))
    return fields


def _arrow_type(shape: Shape) -> Any:
    import pyarrow as pa

    if isinstance(shape, tuple):
        if shape[0] == "list":
            return pa.list_(_arrow_type(shape[1]))
        return pa.struct([pa.field(key, _arrow_type(inner)) for key, inner in shape[1]])
    return {"null": pa.null(), "empty": pa.null(), "bool": pa.bool_(), "int": pa.int64(), "float": pa.float64(),
            "str": pa.string()}[shape]


def _arrow_schema(fields: Sequence[tuple[str, Shape, bool]], profile: VerlProfile) -> Any:
    import pyarrow as pa

    extra = [pa.field("split", pa.string()), pa.field("index", pa.int64()), pa.field("row_id", pa.string()),
             pa.field("dataset_info", pa.string())]
    extra += [pa.field(key, _arrow_type(shape)) for key, shape, _ in fields]
    if profile.tools:
        create = pa.struct([pa.field("create_kwargs", pa.struct([pa.field("row_id", pa.string())]))])
        extra += [pa.field("need_tools_kwargs", pa.bool_()),
                  pa.field("tools_kwargs", pa.struct([pa.field(tool, create) for tool in profile.tools]))]
    columns = [
        pa.field("data_source", pa.string()),
        pa.field("prompt", pa.list_(pa.struct([pa.field("role", pa.string()), pa.field("content", pa.string())]))),
        pa.field("ability", pa.string()),
        pa.field("reward_model", pa.struct([pa.field("style", pa.string()), pa.field("ground_truth", pa.string())])),
        pa.field("extra_info", pa.struct(extra)),
    ]
    if profile.agent_name:
        columns.append(pa.field("agent_name", pa.string()))
    return pa.schema(columns)


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _record(bench: Benchmark, profile: VerlProfile, row: _Row, split: str, index: int,
            fields: Sequence[tuple[str, Shape, bool]]) -> dict[str, Any]:
    extra: dict[str, Any] = {"split": split, "index": index, "row_id": row.row_id, "dataset_info": row.info_json}
    for key, _, as_json in fields:
        value = row.info.get(key)
        extra[key] = _json(value) if as_json and value is not None else value
    if profile.tools:
        extra["need_tools_kwargs"] = True
        extra["tools_kwargs"] = {tool: {"create_kwargs": {"row_id": row.row_id}} for tool in profile.tools}
    record: dict[str, Any] = {
        "data_source": bench.name,
        "prompt": row.prompt,
        "ability": profile.ability,
        "reward_model": {"style": profile.reward_style, "ground_truth": row.ground_truth},
        "extra_info": extra,
    }
    if profile.agent_name:
        record["agent_name"] = profile.agent_name
    return record


def metadata_of(extra_info: Mapping[str, Any]) -> dict[str, Any]:
    """The row's ``dataset_info`` (what the pytest face gives the scorer) from a verl ``extra_info``
    this module wrote; ``{}`` when it has none."""
    raw = extra_info.get("dataset_info") if isinstance(extra_info, Mapping) else None
    if raw is None:
        return {}
    value = json.loads(raw) if isinstance(raw, str) else raw
    return dict(value) if isinstance(value, Mapping) else {}


# ----------------------------------------------------------------------------- the export


def _require_pyarrow() -> None:
    try:
        import pyarrow  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise ExportError(f"writing Parquet needs pyarrow, which is not installed: {PYARROW_HINT}") from None


def _benchmark(name: str) -> Benchmark:
    try:
        return get_benchmark(name)
    except KeyError as exc:
        raise ExportError(str(exc.args[0]) if exc.args else f"unknown benchmark {name!r}") from None


def data_options(bench: Benchmark) -> tuple[Option, ...]:
    return tuple(opt for opt in bench.options if opt.affects == "data")


def _spec_options(bench: Benchmark, given: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    declared = {opt.ini: opt for opt in data_options(bench)}
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise ExportError(f"benchmark {bench.name!r} declares no data option {', '.join(map(repr, unknown))}; "
                          f"its data options: {', '.join(sorted(declared)) or 'none'}")
    values = []
    for ini, opt in declared.items():
        value = given.get(ini, opt.default)
        if opt.kind == "list" and value is not None:
            value = tuple([value] if isinstance(value, str) else value)
        values.append((ini, value))
    return tuple(sorted(values))


def _default_source(bench: Benchmark) -> str:
    if isinstance(bench.default_source, str):
        return bench.default_source
    from metis_pytest.options import MetisConfig

    return bench.source_for(MetisConfig())  # what `pytest evals/<name>` reads with no options


def _progress(total: int, progress: bool | None, desc: str) -> Any:
    if progress is False or (progress is None and total < PROGRESS_MIN_ROWS):
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit="row", file=sys.stderr, disable=None if progress is None else False)


def _write_parquet(table: Any, path: Path) -> None:
    import pyarrow.parquet as pq

    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def export(
    benchmark: str,
    out: str | os.PathLike[str],
    *,
    fmt: str = "verl",
    source: str | None = None,
    split: str | None = None,
    revision: str | None = None,
    options: Mapping[str, Any] | None = None,
    ratio: float = 0.75,
    seed: int = 0,
    max_rows: int | None = None,
    progress: bool | None = None,
    command: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Export ``benchmark``'s rows to ``out/train.parquet``, ``out/test.parquet`` and
    ``out/manifest.json``; returns the manifest.

    ``source``/``split``/``revision`` and ``options`` (the benchmark's data options by ini name, e.g.
    ``{"ace_domains": ("shopping",)}``) make the :class:`DataSpec` its loader gets; ``max_rows`` keeps
    the first N rows the loader returns; ``ratio`` is the train share; ``progress`` True/False forces
    the progress bar on or off (None: for big exports on a terminal). Raises :class:`ExportError` for
    usage errors and the loader's ``DatasetError`` for bad data."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")
    if not (isinstance(ratio, (int, float)) and math.isfinite(ratio) and 0.0 <= ratio <= 1.0):
        raise ExportError(f"--split-ratio must be between 0 and 1 (the train share), got {ratio!r}")
    if max_rows is not None and max_rows < 1:
        raise ExportError(f"--max-rows must be at least 1, got {max_rows}")
    bench = _benchmark(benchmark)
    spec = DataSpec(source=source or _default_source(bench), split=split, revision=revision,
                    options=_spec_options(bench, options or {}))
    _require_pyarrow()
    import pyarrow as pa

    # Loaders build Eval Protocol rows, which imports LiteLLM: outside pytest nothing may have told it
    # to use its bundled price list instead of fetching one (as metis_pytest.rollout.http does).
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    rows = list(bench.load(spec))
    loaded = len(rows)
    if max_rows is not None:
        rows = rows[:max_rows]
    if not rows:
        raise ExportError(f"benchmark {bench.name!r}: the loader returned no rows from {spec.source!r}")
    profile = verl_profile(bench)
    bar = _progress(len(rows), progress, f"export {bench.name}")
    try:
        prepared = []
        for position, row in enumerate(rows):
            prepared.append(_prepare(row, position))
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    by_id = {row.row_id: row for row in prepared}
    sides = split_rows([row.row_id for row in prepared], ratio, seed)
    fields = metadata_fields([row.info for row in prepared])
    schema = _arrow_schema(fields, profile)
    target = Path(out)
    target.mkdir(parents=True, exist_ok=True)
    files: dict[str, Any] = {}
    for side in SPLITS:
        records = [_record(bench, profile, by_id[row_id], side, index, fields)
                   for index, row_id in enumerate(sides[side])]
        path = target / f"{side}.parquet"
        _write_parquet(pa.Table.from_pylist(records, schema=schema), path)
        files[path.name] = {"rows": len(records), "sha256": _sha256(path)}
    manifest: dict[str, Any] = {
        "format": fmt,
        "benchmark": bench.name,
        "benchmark_version": bench.version,
        "prompt_hash": bench.prompt_hash_value(),
        "judge_prompt_version": bench.judge_prompt_version,
        "dataset": {
            "source": spec.source,
            "id": bench.dataset_id(spec),
            "revision": bench.dataset_revision(spec),
            "split": spec.split,
            "options": {name: list(value) if isinstance(value, tuple) else value for name, value in spec.options},
        },
        "rows": {"loaded": loaded, "exported": len(rows), "train": len(sides["train"]), "test": len(sides["test"])},
        "max_rows": max_rows,
        "split": {"ratio": ratio, "seed": seed,
                  "rule": "rows ordered by sha256('<seed>:<row_id>'); the first floor(ratio*n+0.5) are train"},
        "verl": {"data_source": bench.name, "ability": profile.ability, "reward_style": profile.reward_style,
                 "agent_name": profile.agent_name, "tools": list(profile.tools),
                 "extra_info_fields": [f.name for f in schema.field("extra_info").type]},
        "files": files,
        "versions": {"metis-pytest": _version("metis-pytest"), "pyarrow": pa.__version__},
        "command": list(command) if command is not None else None,
    }
    tmp = target / f".manifest.json.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, target / "manifest.json")
    return manifest


# ----------------------------------------------------------------------------- the command line


def _registered_data_options() -> dict[str, list[tuple[str, Option]]]:
    """flag -> [(benchmark, option)] for every data option a registered benchmark declares. A registry
    that cannot be read gives none here (the export then reports why)."""
    found: dict[str, list[tuple[str, Option]]] = {}
    try:
        for name in benchmark_names():
            for opt in data_options(get_benchmark(name)):
                found.setdefault(opt.flag, []).append((name, opt))
    except Exception:  # a broken or shadowed entry point must not break every `metis` command
        return {}
    return found


def add_benchmark_options(parser: argparse.ArgumentParser) -> None:
    """Add every registered benchmark's data options (``--domains``...) to ``parser``, each collected
    raw (dest: its ini name) and read with the chosen benchmark's own definition."""
    for flag, owners in sorted(_registered_data_options().items()):
        names = ", ".join(sorted({name for name, _ in owners}))
        help_text = f"{owners[0][1].help} [benchmark: {names}]"
        dest = owners[0][1].ini
        try:
            if all(opt.kind == "bool" for _, opt in owners):
                parser.add_argument(flag, dest=dest, action="store_true", default=None, help=help_text)
            else:
                parser.add_argument(flag, dest=dest, action="append", default=None, metavar="VALUE", help=help_text)
        except argparse.ArgumentError:
            continue  # the flag is one of the export's own (--dataset...): the export's meaning wins


def _parse_option(opt: Option, raw: Any) -> Any:
    if opt.kind == "bool":
        return bool(raw)
    values = [str(v) for v in (raw if isinstance(raw, list) else [raw])]
    if opt.kind == "list":
        return tuple(part.strip() for value in values for part in value.split(",") if part.strip())
    value = values[-1]
    try:
        if opt.kind == "int":
            return int(value)
        if opt.kind == "float":
            number = float(value)
            if not math.isfinite(number):
                raise ValueError
            return number
    except ValueError:
        raise ExportError(f"{opt.flag}: expected {'a number' if opt.kind == 'int' else 'a finite number'}, "
                          f"got {value!r}") from None
    if opt.choices and value not in opt.choices:
        raise ExportError(f"{opt.flag}: {value!r} is not one of {', '.join(opt.choices)}")
    return value


def options_from_args(bench: Benchmark, args: argparse.Namespace) -> dict[str, Any]:
    """The benchmark data options given on the command line, by ini name, parsed by ``bench``'s own
    definitions; a flag ``bench`` does not declare is an :class:`ExportError` naming who does."""
    declared = {opt.ini: opt for opt in data_options(bench)}
    given: dict[str, Any] = {}
    for flag, owners in sorted(_registered_data_options().items()):
        ini = owners[0][1].ini
        raw = getattr(args, ini, None)
        if raw is None:
            continue
        mine = next((opt for opt in data_options(bench) if opt.flag == flag), None)
        if mine is None:
            names = ", ".join(sorted({name for name, _ in owners}))
            raise ExportError(f"{flag} is not an option of benchmark {bench.name!r} (its data options: "
                              f"{', '.join(o.flag for o in declared.values()) or 'none'}); {flag} belongs to: {names}")
        given[mine.ini] = _parse_option(mine, raw)
    return given


def command_line(args: argparse.Namespace, options: Mapping[str, Any], bench: Benchmark) -> list[str]:
    """The export as one canonical command line (every effective value), for the manifest."""
    argv = ["metis", "data", "export", args.benchmark, "--format", args.format, "--out", str(args.out)]
    for flag, value in (("--dataset", args.dataset), ("--dataset-split", args.dataset_split),
                        ("--dataset-revision", args.dataset_revision)):
        if value is not None:
            argv += [flag, str(value)]
    argv += ["--split-ratio", repr(float(args.split_ratio)), "--seed", str(args.seed)]
    if args.max_rows is not None:
        argv += ["--max-rows", str(args.max_rows)]
    flags = {opt.ini: opt for opt in data_options(bench)}
    for ini in sorted(options):
        opt, value = flags[ini], options[ini]
        if opt.kind == "bool":
            argv += [opt.flag] if value else []
        else:
            argv += [opt.flag, ",".join(value) if isinstance(value, tuple) else str(value)]
    return argv


def run_cli(args: argparse.Namespace) -> int:
    """``metis data export``: 0 on success, 2 for a usage error, 1 for data the loader refused."""
    try:
        bench = _benchmark(args.benchmark)
        options = options_from_args(bench, args)
        manifest = export(args.benchmark, args.out, fmt=args.format, source=args.dataset, split=args.dataset_split,
                          revision=args.dataset_revision, options=options, ratio=args.split_ratio, seed=args.seed,
                          max_rows=args.max_rows, command=command_line(args, options, bench))
    except ExportError as exc:
        print(f"metis data export: error: {exc}", file=sys.stderr)
        return 2
    except DATA_ERRORS as exc:
        print(f"metis data export: error: {exc}", file=sys.stderr)
        return 1
    counts = manifest["rows"]
    out = Path(args.out)
    print(f"{manifest['benchmark']}: {counts['exported']} rows -> {out / 'train.parquet'} ({counts['train']}), "
          f"{out / 'test.parquet'} ({counts['test']}); {out / 'manifest.json'}")
    return 0

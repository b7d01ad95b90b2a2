"""The gates' pytest hooks (registered by ``metis_pytest.plugin`` at configure time).

- Every evaluation item gets JUnit properties (``item.user_properties``, what ``record_property``
  writes, carried back from pytest-xdist workers with the report): ``score``, ``stderr``, ``n``,
  ``n_errored`` and ``primary_metric`` of the rows that item recorded.
- Under ``--metis-compare`` / ``--metis-compare-fail`` each item, once its rows are scored and
  recorded, is compared with its baseline over its own rows (an item of one shard of a benchmark's
  item axes expects only that shard's baseline rows), in whichever process ran it; a broken rule,
  a refusal or a missing baseline fails the item itself with the report as its message, so JUnit
  XML and CI name the benchmark. The item's properties then also carry the paired numbers.
- At session end the controller compares every merged summary (``rows.jsonl``) with its baseline
  for the terminal section ``metis compare``; a rule broken there only (the items of a sharded
  benchmark each pass, their union does not) makes the session fail. Then ``--metis-save-baseline``
  writes the new baselines.
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from metis_pytest import session as metis_session
from metis_pytest.gates import baseline as baselines
from metis_pytest.gates.compare import Comparison, compare, missing_baseline, number_text
from metis_pytest.gates.rules import Rule, parse_rule
from metis_pytest.store.runs import RowRecord, load_conditions, read_records, select_latest, summarize

_COMPARISONS = pytest.StashKey[list]()
_SAVED = pytest.StashKey[list]()
_RECORD_FIELDS = {f.name for f in fields(RowRecord)}


def rules(cfg: Any) -> list[Rule]:
    return [parse_rule(text) for text in cfg.compare_fail]


def baseline_file(cfg: Any, benchmark: str, model: str) -> Path | None:
    """The baseline a (benchmark, model) is compared with; None when ``--metis-compare FILE`` is
    another benchmark's."""
    path = cfg.compare_path
    if path is not None and path.is_file():
        return path if _file_benchmark(path) == benchmark else None
    return baselines.baseline_path(path if path is not None else cfg.baseline_dir, benchmark, model)


def _file_benchmark(path: Path) -> str | None:
    try:
        return str(json.loads(path.read_text(encoding="utf-8")).get("benchmark"))
    except (OSError, ValueError, AttributeError):
        return None


def shown(path: Path, root: Path) -> str:
    """A path as the report shows it: relative to the rootdir when it is inside it."""
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def records_since(path: Path, offset: int) -> list[RowRecord]:
    """The records appended to a records file after byte ``offset`` (this item's, in this process)."""
    if not path.is_file():
        return []
    with path.open("rb") as handle:
        handle.seek(offset)
        data = handle.read().decode("utf-8")
    out = []
    for line in data.splitlines():
        if line.strip():
            row = json.loads(line)
            out.append(RowRecord(**{k: v for k, v in row.items() if k in _RECORD_FIELDS}))
    return out


def _shard_rows(base: baselines.Baseline, session: metis_session.MetisSession, bench: Any,
                shard: dict[str, Any]) -> list[baselines.BaselineRow] | None:
    """The baseline rows one item expects: its shard's (None: every row, for a benchmark without axes)."""
    if not shard:
        return None
    fields_ = {a: v for a, v in shard.items() if a != "run"}
    ids = None
    if fields_:
        ids = {str(row.input_metadata.row_id) for row in session.rows(bench)
               if all((row.input_metadata.dataset_info or {}).get(a) == v for a, v in fields_.items())}
    return [r for r in base.rows if (ids is None or r.row_id in ids)
            and ("run" not in shard or r.run_index == shard["run"])]


def gate_item(item: pytest.Item, session: metis_session.MetisSession, bench: Any, label: str,
              rows: list[RowRecord]) -> Comparison | None:
    """This item's rows against its baseline; None when no baseline applies to its benchmark."""
    from metis_pytest.ep import item_shard

    cfg = session.cfg
    path = baseline_file(cfg, bench.name, label)
    if path is None:
        return None
    where = shown(path, item.config.rootpath)
    if not path.is_file():
        return missing_baseline(bench.name, label, where, rules(cfg))
    base = _load(path)
    cond = session.conditions(bench, item.callspec.params["completion_params"])  # type: ignore[attr-defined]
    return compare(base, [baselines.BaselineRow.of(r) for r in rows], where=where,
                   identity=baselines.identity_of(cond), context=baselines.context_of(cond), rules=rules(cfg),
                   force=cfg.compare_force, expected=_shard_rows(base, session, bench, item_shard(item)))


_LOADED: dict[tuple[Path, int, int], baselines.Baseline] = {}


def _load(path: Path) -> baselines.Baseline:
    """A baseline file, read once per process (again when it changed)."""
    stat = path.stat()
    key = (path, stat.st_mtime_ns, stat.st_size)
    if key not in _LOADED:
        _LOADED[key] = baselines.load(path)
    return _LOADED[key]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    from metis_pytest.fixtures import item_benchmark, item_model_label

    session = metis_session.current()
    label = item_model_label(item, session)
    bench = item_benchmark(item)
    if label is None or bench is None:
        return (yield)
    path = session.store.records_path(bench.name, label)
    offset = path.stat().st_size if path.is_file() else 0
    try:
        result = yield
    finally:
        rows = list(select_latest(records_since(path, offset)).values())
        s = summarize(rows)
        item.user_properties.extend([("primary_metric", bench.primary_metric), ("score", number_text(s["score"])),
                                     ("stderr", number_text(s["stderr"])), ("n", s["n"]), ("n_errored", s["n_errored"])])
    if session.cfg.compare:
        comparison = gate_item(item, session, bench, label, rows)
        if comparison is not None:
            item.user_properties.extend(comparison.properties())
            if comparison.failed:
                pytest.fail(comparison.report(), pytrace=False)
    return result


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Controller, after the run store's merge: compare every summary, then save the baselines."""
    metis = metis_session.current()
    cfg = metis.cfg
    if not metis.is_controller or not (cfg.compare or cfg.save_baseline):
        return
    root = session.config.rootpath
    comparisons, saved = [], []
    for model_dir in metis.store.session_dirs():
        if not (model_dir / "summary.json").is_file():
            continue
        if cfg.compare:
            comparison = _compare_summary(model_dir, cfg, root)
            if comparison is not None:
                comparisons.append(comparison)
        if cfg.save_baseline:
            saved.append(shown(baselines.save(baselines.from_run(model_dir), cfg.baseline_dir), root))
    session.config.stash[_COMPARISONS] = comparisons
    session.config.stash[_SAVED] = saved
    if any(c.failed for c in comparisons) and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _compare_summary(model_dir: Path, cfg: Any, root: Path) -> Comparison | None:
    summary = json.loads((model_dir / "summary.json").read_text(encoding="utf-8"))
    bench, model = summary["benchmark"], summary["model"]
    path = baseline_file(cfg, bench, model)
    cond = load_conditions(model_dir, summary.get("score_key", ""))
    if path is None or cond is None:
        return None
    where = shown(path, root)
    if not path.is_file():
        return missing_baseline(bench, model, where, rules(cfg))
    rows = [baselines.BaselineRow.of(r) for r in read_records(model_dir / "rows.jsonl")]
    return compare(baselines.load(path), rows, where=where, identity=baselines.identity_of(cond),
                   context=baselines.context_of(cond), rules=rules(cfg), force=cfg.compare_force)


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    comparisons = config.stash.get(_COMPARISONS, [])
    saved = config.stash.get(_SAVED, [])
    if not comparisons and not saved:
        return
    terminalreporter.section("metis compare")
    for comparison in comparisons:
        for line in comparison.report().splitlines():
            terminalreporter.write_line(line)
    for path in saved:
        terminalreporter.write_line(f"saved baseline {path}")

"""A resumable stage runner (pure Python: no torch), what ``metis train modpo`` runs its stages with.

A :class:`Stage` has a name, the stages it needs, JSON-able inputs and a function of a
:class:`StageContext`. Each stage owns the folder ``<root>/<name>/``. Rules:

* **Key.** A stage's key is the SHA-256 of its name, its inputs and the *run ids* of the stages it
  needs (a run id is new every time a stage completes). So changing an input changes that stage's key,
  and once it has rerun, every stage after it (everything that needs it, transitively) has a new key too.
* **Completed** means ``<name>/_stage_done.json`` exists and holds the stage's current key: a run skips it.
* **Interrupted** means ``<name>/_stage_started.json`` exists without a completion marker. With the same
  key the stage is started again with ``ctx.resume = True`` in its folder as it was left (a training
  stage continues from its last checkpoint there). With another key the folder is emptied first.
* **Failed** means the stage raised: the runner stops there, writes no marker and re-raises
  (:class:`StageFailed` is the expected kind: a check that did not pass, with a message for the user).
* ``start_from=NAME`` reruns NAME and everything after it from scratch (their folders emptied), and runs
  or skips the other stages by the rules above; ``only=NAME`` runs NAME alone from scratch, and refuses
  when a stage it needs is not completed. NAME is a stage name or a group (``modpo`` for every
  ``modpo-w*`` stage).

``<root>/_stages.json`` lists the stages with their keys and states after every change, for people.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

__all__ = ["DONE", "STARTED", "RunReport", "Stage", "StageContext", "StageFailed", "run_stages", "stage_key"]

DONE = "_stage_done.json"
STARTED = "_stage_started.json"
INDEX = "_stages.json"


class StageFailed(RuntimeError):
    """A stage that ran and decided the pipeline must stop (the message says why and what to do)."""


@dataclass(frozen=True)
class StageContext:
    """What a stage function gets: its folder, whether it resumes an interrupted run there, the folders of
    the stages it needs, and ``checkpoint``, to call after writing a checkpoint (the Modal app commits
    its volume there; a no-op locally)."""

    name: str
    dir: Path
    resume: bool
    needs: Mapping[str, Path]
    root: Path
    checkpoint: Callable[[], None] = field(default=lambda: None)


@dataclass(frozen=True)
class Stage:
    """One stage; ``run`` may return a JSON-able mapping, kept in the completion marker as ``result``."""

    name: str
    run: Callable[[StageContext], Mapping[str, Any] | None]
    inputs: Mapping[str, Any] = field(default_factory=dict)
    needs: tuple[str, ...] = ()
    group: str = ""

    @property
    def group_name(self) -> str:
        return self.group or self.name


@dataclass
class RunReport:
    """What a run did: stage names in order, by what happened to them."""

    ran: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)


def stage_key(name: str, inputs: Mapping[str, Any], need_run_ids: Mapping[str, str]) -> str:
    """The key of a stage: SHA-256 over its name, inputs and the run ids of the stages it needs."""
    text = _canonical({"stage": name, "inputs": dict(inputs), "needs": dict(need_run_ids)})
    return hashlib.sha256(text.encode()).hexdigest()


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _select(stages: Sequence[Stage], name: str) -> list[str]:
    chosen = [s.name for s in stages if name in (s.name, s.group_name)]
    if not chosen:
        known = sorted({s.name for s in stages} | {s.group_name for s in stages})
        raise ValueError(f"no stage or group {name!r}; known: {', '.join(known)}")
    return chosen


def _after(stages: Sequence[Stage], names: Iterable[str]) -> set[str]:
    """``names`` and every stage that needs one of them, transitively."""
    out = set(names)
    for stage in stages:  # stages are in order: a stage's needs come before it
        if out.intersection(stage.needs):
            out.add(stage.name)
    return out


def _check_order(stages: Sequence[Stage]) -> None:
    seen: set[str] = set()
    for stage in stages:
        if stage.name in seen:
            raise ValueError(f"stage {stage.name!r} is given twice")
        missing = [n for n in stage.needs if n not in seen]
        if missing:
            raise ValueError(f"stage {stage.name!r} needs {', '.join(missing)}, which must come before it")
        seen.add(stage.name)


def _fresh(folder: Path) -> None:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)


def run_stages(stages: Sequence[Stage], root: Path, *, start_from: str | None = None, only: str | None = None,
               log: Callable[[str], None] = print, checkpoint: Callable[[], None] = lambda: None) -> RunReport:
    """Run ``stages`` (in order; a stage's needs before it) under ``root`` by the module's rules.

    ``checkpoint`` is called after every stage completes and is handed to the stages (see
    :class:`StageContext`)."""
    if start_from and only:
        raise ValueError("give start_from or only, not both")
    _check_order(stages)
    root.mkdir(parents=True, exist_ok=True)
    forced: set[str] = set()
    selected: set[str] | None = None
    if start_from:
        forced = _after(stages, _select(stages, start_from))
    if only:
        selected = set(_select(stages, only))
        forced = set(selected)
    run_ids: dict[str, str] = {}
    states: dict[str, dict[str, Any]] = {}
    report = RunReport()

    def index() -> None:
        _write(root / INDEX, {"stages": [{"name": s.name, **states.get(s.name, {"state": "pending"})}
                                         for s in stages]})

    for stage in stages:
        folder = root / stage.name
        done = _read(folder / DONE)
        if selected is not None and stage.name not in selected:
            if done and done.get("run_id"):
                run_ids[stage.name] = str(done["run_id"])
            states[stage.name] = {"state": "completed" if done else "not run", "key": (done or {}).get("key")}
            continue
        missing = [n for n in stage.needs if n not in run_ids]
        if missing:
            raise StageFailed(f"stage {stage.name} needs {', '.join(missing)}, which has not completed; "
                              f"run without --only first")
        key = stage_key(stage.name, stage.inputs, {n: run_ids[n] for n in stage.needs})
        if stage.name not in forced and done and done.get("key") == key and done.get("run_id"):
            run_ids[stage.name] = str(done["run_id"])
            report.skipped.append(stage.name)
            report.results[stage.name] = done.get("result")
            states[stage.name] = {"state": "completed", "key": key}
            log(f"[{stage.name}] completed earlier with the same inputs: skipped")
            continue
        started = _read(folder / STARTED)
        resume = stage.name not in forced and started is not None and started.get("key") == key and done is None
        if resume:
            log(f"[{stage.name}] interrupted earlier with the same inputs: resuming")
        else:
            why = ("forced" if stage.name in forced else "inputs changed" if done or started else "new")
            log(f"[{stage.name}] running ({why})")
            _fresh(folder)
        (folder / DONE).unlink(missing_ok=True)
        _write(folder / STARTED, {"stage": stage.name, "key": key, "inputs": dict(stage.inputs),
                                  "started": datetime.now(timezone.utc).isoformat()})
        states[stage.name] = {"state": "running", "key": key}
        index()
        ctx = StageContext(name=stage.name, dir=folder, resume=resume, root=root, checkpoint=checkpoint,
                           needs={n: root / n for n in stage.needs})
        try:
            result = stage.run(ctx)
        except BaseException:
            states[stage.name] = {"state": "failed", "key": key}
            index()
            raise
        run_id = uuid.uuid4().hex
        _write(folder / DONE, {"stage": stage.name, "key": key, "run_id": run_id, "inputs": dict(stage.inputs),
                               "needs": {n: run_ids[n] for n in stage.needs}, "result": result,
                               "finished": datetime.now(timezone.utc).isoformat()})
        (folder / STARTED).unlink(missing_ok=True)
        run_ids[stage.name] = run_id
        (report.resumed if resume else report.ran).append(stage.name)
        report.results[stage.name] = result
        states[stage.name] = {"state": "completed", "key": key}
        index()
        checkpoint()
    index()
    return report

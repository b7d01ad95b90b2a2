"""The one registered session object: parsed options, targets, prepared runtimes, rows, run store.

pytest's ``pytest_configure`` creates it and registers it with the plugin manager under the name
``metis_session``; :func:`current` finds it (an evaluation module needs it at import time to know
which models to parametrize over). Outside pytest, :func:`current` gives a session with defaults.

Runtimes (a started llama.cpp server) belong to the process that owns the session: the only pytest
process, or under pytest-xdist the controller, which prepares them when its workers have collected
and writes their URLs to ``<output-dir>/.state/<session>/runtimes.json`` before any test is sent;
workers only read that file. There is no reference counting: the owner stops what it started at
session end.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from metis_pytest.backends import get_backend, resolve_target
from metis_pytest.backends.base import ModelTarget, PrepareContext, Runtime
from metis_pytest.options import MetisConfig
from metis_pytest.store.resume import ResumeIndex
from metis_pytest.store.runs import RowRecord, RunConditions, RunStore, load_conditions, read_records, slug

if TYPE_CHECKING:
    from eval_protocol.models import EvaluationRow

    from metis_pytest.registry import Benchmark, DataSpec

PLUGIN_NAME = "metis_session"
JUDGE_PREFIX = "judge:"  # a judge's label: "judge:<model>"
_stack: list[MetisSession] = []  # a stack, so a nested in-process pytest run (pytester) restores ours
_default: MetisSession | None = None


class MetisSession:
    """State of one pytest session (or one xdist worker of it)."""

    def __init__(self, cfg: MetisConfig, *, session_id: str | None = None, worker: str = "main",
                 repo_dir: Path | None = None, shared_runtimes: bool = False) -> None:
        self.cfg = cfg
        self.worker = worker
        self.session_id = session_id or new_session_id()
        self.shared_runtimes = shared_runtimes  # an xdist worker: runtimes come from the controller
        self.store = RunStore(cfg.output_dir, self.session_id, worker, repo_dir=repo_dir)
        self.resume = ResumeIndex(self.store)
        self.replay_source = RecordedRun(cfg.replay) if cfg.replay is not None else None
        self.data_problems: dict[str, str] = {}  # benchmark -> one-line reason its rows cannot be loaded
        self.cache: dict[str, Any] = {}  # per-process objects a benchmark keeps (ACE's web clients)
        self.finalizers: list[Any] = []  # called at session end in every process (close a snapshot)
        self._conditions: dict[tuple[str, str], RunConditions] = {}
        self._rows: dict[tuple[str, Any], list[EvaluationRow]] = {}
        self._targets: dict[str, ModelTarget] = {}
        self._runtimes: dict[str, Runtime] = {}
        self._owned: list[tuple[str, Runtime]] = []
        self._lock = threading.RLock()

    @property
    def is_controller(self) -> bool:
        return self.worker == "main"

    @property
    def state_dir(self) -> Path:
        """A folder every process of this session shares (xdist workers included)."""
        return self.cfg.output_dir / ".state" / self.session_id

    # ------------------------------------------------------------------ targets

    def target(self, label: str) -> ModelTarget:
        with self._lock:
            if label not in self._targets:
                if label.startswith(JUDGE_PREFIX):
                    self._targets[label] = self._resolve_judge(label)
                else:
                    self._targets[label] = resolve_target(label, self.cfg)
            return self._targets[label]

    def _resolve_judge(self, label: str) -> ModelTarget:
        judge_cfg = dataclasses.replace(self.cfg, backend=self.cfg.judge_backend, api_base=self.cfg.judge_api_base,
                                        api_key_env=self.cfg.judge_api_key_env)
        return dataclasses.replace(resolve_target(label.removeprefix(JUDGE_PREFIX), judge_cfg), label=label)

    def judge_label(self, bench: Benchmark) -> str | None:
        """``judge:<model>`` for the benchmark's judge: ``--judge-model``, else the benchmark's default."""
        model = bench.judge_for(self.cfg)
        return f"{JUDGE_PREFIX}{model}" if model else None

    def judge_target(self, bench: Benchmark) -> ModelTarget:
        """The judge, resolved on its own (``--judge-backend``/``--judge-api-base``), never the policy's URL."""
        label = self.judge_label(bench)
        if label is None:
            raise LookupError(f"{bench.name}: no judge (pass --judge-model)")
        return self.runtime_target_for(label)

    def judge_identity(self, bench: Benchmark) -> dict[str, Any]:
        label = self.judge_label(bench)
        return {"model": self.target(label).litellm_model if label else None}

    def targets(self) -> list[ModelTarget]:
        return [self.target(label) for label in self.cfg.models]

    def completion_params(self) -> list[dict[str, Any]]:
        """One params dict per ``--model``, safe to show: no keys, no credential-bearing URLs."""
        return [get_backend(t.backend).params(t, self.cfg) for t in self.targets()]

    def label_for(self, params: dict[str, Any] | None) -> str:
        """The ``--model`` label whose params these are."""
        model = (params or {}).get("model")
        for target in self.targets():
            if target.litellm_model == model:
                return target.label
        return str(model)

    # ------------------------------------------------------------------ runtimes

    def needs_prepare(self, label: str) -> bool:
        if self.cfg.replay is not None:
            return False  # replay sends nothing
        target = self.target(label)
        return get_backend(target.backend).needs_prepare(target)

    def prepare(self, label: str) -> Runtime:
        """The runtime serving ``label``: started here if this process owns the session, else read
        from the controller's hand-over file."""
        target = self.target(label)
        key = target.runtime_key
        with self._lock:
            if key in self._runtimes:
                return self._runtimes[key]
            if self.shared_runtimes:
                runtime = self._read_handover(key)
            else:
                backend = get_backend(target.backend)
                runtime = backend.prepare(target, PrepareContext(self.cfg, self.state_dir))
                self._owned.append((target.backend, runtime))
            self._runtimes[key] = runtime
            return runtime

    def hand_over(self, labels: list[str]) -> None:
        """Controller: prepare ``labels``' runtimes and write their URLs for the workers."""
        entries = {self.target(label).runtime_key: self.prepare(label).public() for label in labels}
        if entries:
            path = self.state_dir / "runtimes.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(json.dumps(entries, indent=2))
            os.replace(tmp, path)

    def _read_handover(self, key: str) -> Runtime:
        path = self.state_dir / "runtimes.json"
        try:
            entry = json.loads(path.read_text()).get(key)
        except (OSError, ValueError):
            entry = None
        if entry is None:
            raise RuntimeError(f"{key}: the pytest-xdist controller did not start this model's server "
                               f"(no entry in {path})")
        return Runtime(api_base=entry["api_base"], slot_lock=entry.get("slot_lock"),
                       api_bases=tuple(entry.get("api_bases") or ()))

    def runtime_target_for(self, label: str) -> ModelTarget:
        target = self.target(label)
        if self.needs_prepare(label):
            return target.with_runtime(self.prepare(label))
        return target

    def runtime_target(self, params: dict[str, Any]) -> ModelTarget:
        """The target to send requests to, with the base URL of a server prepared at run time."""
        return self.runtime_target_for(self.label_for(params))

    def close_runtimes(self) -> None:
        owned, self._owned = self._owned, []
        self._runtimes.clear()
        for backend, runtime in reversed(owned):
            get_backend(backend).close(runtime)

    # ------------------------------------------------------------------ data

    def data_spec(self, bench: Benchmark) -> DataSpec:
        from metis_pytest.registry import DataSpec

        return DataSpec(source=self.cfg.dataset or bench.source_for(self.cfg), split=self.cfg.dataset_split,
                        revision=self.cfg.dataset_revision, options=self.bench_options(bench, "data"))

    def bench_options(self, bench: Benchmark, affects: str) -> tuple[tuple[str, Any], ...]:
        """The values of the benchmark's own options that change ``affects`` (data, rollout, scoring)."""
        return tuple(sorted((o.ini, self.cfg.extra.get(o.ini, o.default)) for o in bench.options
                            if o.affects == affects))

    def toolbox_factory(self, bench: Benchmark) -> Any:
        """For tool-calling processors: ``row -> Toolbox``, from the benchmark's ``toolbox``."""
        if bench.toolbox is None:
            raise RuntimeError(f"benchmark {bench.name!r} runs a tool-calling processor but declares no toolbox")
        return lambda row: bench.toolbox(self, row)

    def rows(self, bench: Benchmark) -> list[EvaluationRow]:
        """The benchmark's rows, loaded once per process (collection checks them before any request)."""
        spec = self.data_spec(bench)
        key = (bench.name, spec)
        with self._lock:
            if key not in self._rows:
                self._rows[key] = bench.load(spec)
            return self._rows[key]

    def rows_or_defer(self, bench: Benchmark) -> list[EvaluationRow]:
        """Rows at import time (for item axes); a bad dataset is reported once collection is over."""
        from metis_pytest.errors import DATA_ERRORS

        try:
            return self.rows(bench)
        except DATA_ERRORS as exc:
            self.data_problems.setdefault(bench.name, f"{bench.name}: {exc}")
            return []

    def conditions(self, bench: Benchmark, params: dict[str, Any]) -> RunConditions:
        from metis_pytest.ep import conditions_for

        label = self.label_for(params)
        key = (bench.name, label)
        with self._lock:
            if key not in self._conditions:
                self._conditions[key] = conditions_for(bench, self, params, label)
            return self._conditions[key]

    def recorded_conditions(self, bench: Benchmark, label: str) -> RunConditions | None:
        if self.replay_source is None:
            return None
        return self.replay_source.conditions(bench.name, label)


class RecordedRun:
    """``--replay``: the rows of a recorded run, by (benchmark, model), handed out once per row and run."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._rows: dict[tuple[str, str], dict[tuple[str, int], RowRecord]] = {}
        self._lock = threading.Lock()

    def model_dir(self, benchmark: str, model: str) -> Path:
        if (self.folder / "rows.jsonl").is_file():
            return self.folder  # a <benchmark>/<model> folder itself
        return self.folder / slug(benchmark) / slug(model)

    def conditions(self, benchmark: str, model: str) -> RunConditions | None:
        folder = self.model_dir(benchmark, model)
        try:
            key = json.loads((folder / "summary.json").read_text()).get("score_key", "")
        except (OSError, ValueError):
            return None
        return load_conditions(folder, key)

    def load(self, benchmark: str, model: str) -> None:
        """Read the recorded completions of (benchmark, model) now (the plugin does, with the rows)."""
        with self._lock:
            self._records(benchmark, model)

    def take(self, cond: RunConditions, row_id: str, run_index: int) -> RowRecord | None:
        with self._lock:
            return self._records(cond.benchmark, cond.model).pop((row_id, run_index), None)

    def _records(self, benchmark: str, model: str) -> dict[tuple[str, int], RowRecord]:
        key = (benchmark, model)
        if key not in self._rows:
            path = self.model_dir(*key) / "rows.jsonl"
            records = read_records(path) if path.is_file() else []
            self._rows[key] = {r.key: r for r in records if r.has_completion}
        return self._rows[key]


def new_session_id() -> str:
    return f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:8]}"


def register(session: MetisSession) -> None:
    _stack.append(session)


def unregister(session: MetisSession) -> None:
    if session in _stack:
        _stack.remove(session)


def current() -> MetisSession:
    """The session of the running pytest process, or one with default options outside pytest."""
    global _default
    if _stack:
        return _stack[-1]
    if _default is None:
        _default = MetisSession(MetisConfig(output_dir=Path("runs").resolve()))
    return _default

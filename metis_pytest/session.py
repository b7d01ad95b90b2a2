"""The one registered session object: parsed options, model targets, running backends, run store.

pytest's ``pytest_configure`` creates it and registers it with the plugin manager under the name
``metis_session``; :func:`current` finds it (an evaluation module needs it at import time to know
which models to parametrize over). Outside pytest, :func:`current` gives a session with defaults.
"""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import Any

from metis_pytest.backends import get_backend, resolve_target
from metis_pytest.backends.base import ModelTarget
from metis_pytest.options import MetisConfig
from metis_pytest.store.resume import ResumeIndex
from metis_pytest.store.runs import RunStore, SummaryContext

PLUGIN_NAME = "metis_session"
_stack: list[MetisSession] = []  # a stack, so a nested in-process pytest run (pytester) restores ours
_default: MetisSession | None = None


class MetisSession:
    """State of one pytest session (or one xdist worker of it)."""

    def __init__(self, cfg: MetisConfig, *, session_id: str | None = None, worker: str = "main",
                 repo_dir: Path | None = None) -> None:
        self.cfg = cfg
        self.worker = worker
        self.session_id = session_id or new_session_id()
        self.store = RunStore(cfg.output_dir, self.session_id, worker, repo_dir=repo_dir)
        self.resume = ResumeIndex(self.store)
        self.contexts: dict[tuple[str, str, str], SummaryContext] = {}
        self._targets: dict[str, ModelTarget] = {}
        self._runtime_base: dict[str, str] = {}
        self._lock = threading.Lock()

    @property
    def is_controller(self) -> bool:
        return self.worker == "main"

    @property
    def state_dir(self) -> Path:
        """A folder every process of this session shares (xdist workers included)."""
        return self.cfg.output_dir / ".state" / self.session_id

    def target(self, label: str) -> ModelTarget:
        with self._lock:
            if label not in self._targets:
                self._targets[label] = resolve_target(label, self.cfg)
            return self._targets[label]

    def targets(self) -> list[ModelTarget]:
        return [self.target(label) for label in self.cfg.models]

    def completion_params(self) -> list[dict[str, Any]]:
        """One params dict per ``--model``, safe to show: no keys, no credential-bearing URLs."""
        return [t.public_params(temperature=self.cfg.temperature, max_tokens=self.cfg.max_tokens)
                for t in self.targets()]

    def label_for(self, params: dict[str, Any] | None) -> str:
        """The ``--model`` label whose params these are."""
        model = (params or {}).get("model")
        for target in self.targets():
            if target.litellm_model == model:
                return target.label
        return str(model)

    def needs_runtime(self, label: str) -> bool:
        target = self.target(label)
        return get_backend(target.backend).needs_runtime(target)

    def set_runtime_base(self, label: str, api_base: str) -> None:
        self._runtime_base[label] = api_base

    def runtime_target(self, params: dict[str, Any]) -> ModelTarget:
        """The target to send requests to, with the base URL of a server started at run time."""
        target = self.target(self.label_for(params))
        if self.needs_runtime(target.label):
            base = self._runtime_base.get(target.label)
            if base is None:
                raise RuntimeError(f"model {target.label!r} ({target.backend} backend) has no running server; "
                                   "it is started by the metis_local_server fixture of an evaluation item")
            return target.with_api_base(base)
        return target


def new_session_id() -> str:
    return uuid.uuid4().hex[:12]


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

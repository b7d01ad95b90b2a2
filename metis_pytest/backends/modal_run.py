"""``metis run modal``: a ``pytest`` evaluation in a Modal container, its run folder on a Modal Volume.

    metis run modal --secret openai-secret -- evals/gsm8k --model openai/gpt-4o-mini
    metis run modal --name gsm8k-mini --cpu 8 --detach --secret openai-secret -- evals/gsm8k -n 8 --model ...
    metis run modal --dry-run -- evals/gsm8k --model openai/gpt-4o-mini   # print the commands; run nothing
    metis fetch modal gsm8k-mini [DEST]        # the run folder, back here (default ./gsm8k-mini)

This module is pure (no ``modal`` import): the launch, the commands, the body the container runs
(:func:`run_in_container`) and the download (:func:`fetch_run`). The Modal app is
:mod:`metis_pytest.backends.modal_run_app`. Decisions:

- **What runs**: ``python -m pytest <args> --output-dir <run folder>`` in the checkout copied into the
  image (``/opt/metis``), so paths in the arguments are the checkout's (``evals/gsm8k``,
  ``datasets/...``). The run folder *is* the output dir, so it holds what a local run into
  ``--output-dir`` holds; ``--output-dir`` in the arguments is refused. The image holds no git checkout,
  so summaries written there say ``git_commit: null``; the commit the image was built from is recorded
  with the run (below).
- **Where it is written**: the volume :data:`VOLUME`, folder ``/<name>``. pytest writes on the
  container's own disk (:data:`SCRATCH`), never on the volume: the run store takes file locks, Eval
  Protocol's store is SQLite, and a Volume is made for write-once, read-many files. The scratch folder
  starts as a copy of what the volume holds under the name (a second run under a name adds to it, as a
  second local run into one ``--output-dir`` does); when pytest ends, however it ends, the folder is
  copied to the volume and the volume committed.
- **Eval Protocol's store** lives in ``~/.eval_protocol/`` (``logs.db``, what ``ep logs`` reads): pytest
  runs with ``HOME`` set to the run folder (``XDG_CACHE_HOME``/``XDG_CONFIG_HOME`` stay in the
  container's home), so the store lands in the run folder's ``.eval_protocol/``.
- **One record per run**: ``modal_run/<UTC time>.json`` (name, arguments, the command, the commit of
  the checkout the image was built from, exit code, whether the deadline stopped it) and
  ``modal_run/<UTC time>.log`` (pytest's output, which is also streamed to Modal's log).
- **Deadline**: Modal kills the container at ``--timeout`` and nothing would be copied, so pytest's
  process group (xdist workers included) gets SIGINT, as from Ctrl-C, :data:`STOP_MARGIN_S` before it,
  and is killed :data:`STOP_GRACE_S` later; what it wrote by then is copied like any other end.
- **Secrets**: Modal secrets by name (``--secret``, repeatable), attached per run; the harness reads the
  keys from the container's environment as it does here. Never in the arguments, the spec or the
  image. The container sets :data:`CONTAINER_ENV` (no Eval Protocol upload, LiteLLM's bundled cost map).
- **Fetch** (:func:`fetch_run`): every file under ``/<name>`` through ``Volume.listdir(recursive=True)``
  and ``read_file``, staged beside ``DEST`` and moved in whole (a new ``DEST`` appears at once, an
  existing one gets each file by ``os.replace``); a non-empty ``DEST`` is refused unless ``force``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

__all__ = ["APP_NAME", "CHECKOUT", "CONTAINER_ENV", "DEFAULT_CPU", "DEFAULT_TIMEOUT_S", "ENTRYPOINT",
           "MAX_TIMEOUT_S", "MIN_TIMEOUT_S", "RECORD_DIR", "RUNS_MOUNT", "SCRATCH", "STOP_GRACE_S", "STOP_MARGIN_S",
           "VOLUME", "FetchError", "RunLaunch", "RunsVolume", "check_name", "check_pytest_args", "container_env",
           "default_name", "explain_modal_error", "fetch_command", "fetch_run", "missing_secret", "modal_command",
           "pytest_command", "run_in_container"]

APP_NAME = "metis-run"
VOLUME = "metis-runs"
RUNS_MOUNT = "/runs"  # the volume, in the container
CHECKOUT = "/opt/metis"  # where the image has the checkout (modal_project.REMOTE_PROJECT); pytest runs there
SCRATCH = "/tmp/metis-run"  # the container's own disk, where pytest writes
ENTRYPOINT = "metis_pytest.backends.modal_run_app::main"
RECORD_DIR = "modal_run"
DEFAULT_CPU = 2.0
DEFAULT_TIMEOUT_S = 6 * 60 * 60
MIN_TIMEOUT_S = 300
MAX_TIMEOUT_S = 24 * 60 * 60  # Modal's longest function timeout (modal_project.TIMEOUT_S)
STOP_MARGIN_S = 120
STOP_GRACE_S = 30
CONTAINER_ENV = {"EP_NO_UPLOAD": "1", "LITELLM_LOCAL_MODEL_COST_MAP": "True", "PYTHONUNBUFFERED": "1"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_OUTPUT_DIR = re.compile(r"^(--output-dir(=.*)?|metis_output_dir=.*)$")


def _stamp() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


def default_name() -> str:
    """``run-<UTC time>``."""
    return f"run-{_stamp()}"


def check_name(name: str) -> str:
    if not _NAME.match(name) or name.endswith("."):
        raise ValueError(f"run name {name!r}: letters, digits, '.', '_' and '-' only (it names a folder)")
    return name


def check_pytest_args(args: Sequence[str]) -> tuple[str, ...]:
    """The arguments, or ``ValueError`` when there are none or they set the output dir."""
    if not args:
        raise ValueError("give pytest's arguments after --, e.g. `metis run modal -- evals/gsm8k --model ...`")
    for arg in args:
        if _OUTPUT_DIR.match(arg):
            raise ValueError(f"{arg!r}: the run folder on the volume is the output dir; name it with --name instead")
    return tuple(args)


@dataclass(frozen=True)
class RunLaunch:
    """A run on Modal: its folder name in the volume, pytest's arguments, the *names* of the Modal
    secrets the container gets (never their values), CPUs and timeout, and the commit of the checkout
    the image is built from (the container has no git checkout, so its summaries say ``git_commit: null``)."""

    name: str
    pytest_args: tuple[str, ...]
    secrets: tuple[str, ...] = ()
    cpu: float = DEFAULT_CPU
    timeout: int = DEFAULT_TIMEOUT_S
    detach: bool = False
    git_commit: str | None = None
    git_dirty: bool | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "cpu", float(self.cpu))
        check_name(self.name)
        check_pytest_args(self.pytest_args)
        if not self.cpu > 0:
            raise ValueError(f"--cpu {self.cpu:g}: must be above 0")
        if not MIN_TIMEOUT_S <= self.timeout <= MAX_TIMEOUT_S:
            raise ValueError(f"--timeout {self.timeout}: between {MIN_TIMEOUT_S} and {MAX_TIMEOUT_S} seconds")

    def to_json(self) -> str:
        return json.dumps({"name": self.name, "pytest_args": list(self.pytest_args), "secrets": list(self.secrets),
                           "cpu": self.cpu, "timeout": self.timeout, "detach": self.detach,
                           "git_commit": self.git_commit, "git_dirty": self.git_dirty},
                          sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> RunLaunch:
        raw = json.loads(text)
        return cls(name=str(raw["name"]), pytest_args=tuple(raw["pytest_args"]), secrets=tuple(raw.get("secrets", ())),
                   cpu=float(raw.get("cpu", DEFAULT_CPU)), timeout=int(raw.get("timeout", DEFAULT_TIMEOUT_S)),
                   detach=bool(raw.get("detach", False)), git_commit=raw.get("git_commit"),
                   git_dirty=raw.get("git_dirty"))


def pytest_command(args: Sequence[str], output_dir: Path | str, *, python: str = "python") -> list[str]:
    """``python -m pytest <args> --output-dir <output_dir>``."""
    return [python, "-m", "pytest", *args, "--output-dir", str(output_dir)]


def modal_command(launch: RunLaunch, *, modal: Sequence[str] = ("modal",)) -> list[str]:
    """``modal run [--detach] -m metis_pytest.backends.modal_run_app::main --spec JSON``."""
    return [*modal, "run", *(["--detach"] if launch.detach else []), "-m", ENTRYPOINT, "--spec", launch.to_json()]


def fetch_command(name: str) -> list[str]:
    """The Modal CLI's download of a run folder: it writes ``./<name>/`` (``modal volume get`` puts a folder
    inside an existing ``LOCAL_DESTINATION``)."""
    return ["modal", "volume", "get", VOLUME, name, "."]


def missing_secret(name: str) -> str:
    """What to do about a Modal secret that is not there."""
    return (f"Modal secret {name!r} not found: create it with `modal secret create {name} OPENAI_API_KEY=...` "
            f"(the variables the run reads), or drop --secret {name}")


def explain_modal_error(exc: BaseException, launch: RunLaunch) -> str:
    """Modal's error while starting the run, with what to do for a missing secret."""
    text = str(exc)
    missing = [name for name in launch.secrets if name in text]
    if missing and "secret" in text.lower():
        return f"{missing_secret(missing[0])} ({text})"
    return f"Modal could not run {APP_NAME}: {type(exc).__name__}: {text}"


# ----------------------------------------------------------------------------- in the container


def container_env(run_dir: Path, base: Mapping[str, str]) -> dict[str, str]:
    """pytest's environment: ``base`` with ``HOME`` at the run folder (Eval Protocol's store lands there), the
    caches and configuration kept in the old home, and :data:`CONTAINER_ENV`."""
    env = dict(base)
    home = env.get("HOME") or str(Path.home())
    env.setdefault("XDG_CACHE_HOME", f"{home}/.cache")
    env.setdefault("XDG_CONFIG_HOME", f"{home}/.config")
    env.update(CONTAINER_ENV, HOME=str(run_dir))
    return env


def _copy_into(src: Path, dst: Path) -> None:
    if src.is_dir():
        shutil.copytree(src, dst, dirs_exist_ok=True)


def _run_logged(command: list[str], *, cwd: Path, env: Mapping[str, str], log: Path,
                deadline_s: float, grace_s: float) -> tuple[int, bool]:
    """Run ``command`` in its own process group, its output to stdout and ``log``; the group gets SIGINT at
    ``deadline_s`` and SIGKILL ``grace_s`` later. Returns (exit code, whether the deadline stopped it)."""
    stopped = threading.Event()
    with log.open("w", encoding="utf-8") as out:
        proc = subprocess.Popen(command, cwd=cwd, env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, errors="replace", start_new_session=True)

        def signal_group(sig: int) -> None:
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:  # already gone
                pass

        def stop() -> None:
            stopped.set()
            signal_group(signal.SIGINT)
            try:
                proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                signal_group(signal.SIGKILL)

        timer = threading.Timer(deadline_s, stop)
        timer.daemon = True
        timer.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                sys.stdout.write(line)
                sys.stdout.flush()
                out.write(line)
                out.flush()
            code = proc.wait()
        finally:
            timer.cancel()
    return code, stopped.is_set()


def run_in_container(root: Path, launch: RunLaunch, *, commit: Callable[[], None], scratch: Path, cwd: Path,
                     python: str = sys.executable, environ: Mapping[str, str] | None = None,
                     deadline_s: float | None = None, grace_s: float = STOP_GRACE_S) -> dict[str, Any]:
    """The Modal function's body, with the volume mounted at ``root``: pytest in ``cwd`` writing to
    ``scratch/<name>`` (seeded from ``root/<name>``), then that folder copied to ``root/<name>`` and
    ``commit()`` called, whatever pytest did. Returns the name, the command and pytest's exit code."""
    run_dir = scratch / launch.name
    run_dir.mkdir(parents=True, exist_ok=True)
    _copy_into(root / launch.name, run_dir)
    started = _stamp()
    (run_dir / RECORD_DIR).mkdir(exist_ok=True)
    command = pytest_command(launch.pytest_args, run_dir, python=python)
    record: dict[str, Any] = {"name": launch.name, "pytest_args": list(launch.pytest_args), "command": command,
                              "git_commit": launch.git_commit, "git_dirty": launch.git_dirty, "started": started,
                              "exit_code": None, "stopped_at_deadline": False}
    print(shlex.join(command), flush=True)
    try:
        code, stopped = _run_logged(
            command, cwd=cwd, env=container_env(run_dir, os.environ if environ is None else environ),
            log=run_dir / RECORD_DIR / f"{started}.log",
            deadline_s=launch.timeout - STOP_MARGIN_S if deadline_s is None else deadline_s, grace_s=grace_s)
        record.update(exit_code=code, stopped_at_deadline=stopped)
    finally:
        record["finished"] = _stamp()
        (run_dir / RECORD_DIR / f"{started}.json").write_text(json.dumps(record, indent=2) + "\n")
        try:
            _copy_into(run_dir, root / launch.name)
        finally:
            commit()
    return {"name": launch.name, "command": command, "exit_code": code}


# ----------------------------------------------------------------------------- fetch


class FetchError(RuntimeError):
    """A run folder could not be fetched; the message says what to do."""


class Entry(Protocol):
    """What ``modal.Volume.listdir`` lists (``modal.volume.FileEntry``)."""

    path: str
    type: Any


class RunsVolume(Protocol):
    """The part of ``modal.Volume`` (1.6.4) that :func:`fetch_run` uses."""

    def listdir(self, path: str, *, recursive: bool = False) -> Sequence[Entry]: ...

    def read_file(self, path: str) -> Iterable[bytes]: ...


def _relative(entry_path: str, name: str) -> PurePosixPath | None:
    path = PurePosixPath(entry_path.lstrip("/"))
    if path.parts[:1] != (name,) or len(path.parts) < 2 or ".." in path.parts:
        return None
    return path.relative_to(name)


def _missing(volume: RunsVolume, name: str) -> FetchError:
    from modal.exception import NotFoundError

    try:
        top = volume.listdir("/")
    except NotFoundError:
        return FetchError(f"no Modal volume {VOLUME!r} (in this environment): nothing has been run with "
                          "`metis run modal` here yet")
    runs = sorted(PurePosixPath(e.path.lstrip("/")).name for e in top if _is_dir(e))
    return FetchError(f"no run {name!r} in Modal volume {VOLUME}; runs there: {', '.join(runs) or 'none'} "
                      f"(`modal volume ls {VOLUME}`)")


def _is_dir(entry: Entry) -> bool:
    from modal.types import FileEntryType

    return bool(entry.type == FileEntryType.DIRECTORY)


def fetch_run(volume: RunsVolume, name: str, dest: Path, *, force: bool = False) -> int:
    """Download run folder ``/<name>`` of ``volume`` into ``dest``; returns the number of files."""
    from modal.exception import NotFoundError
    from modal.types import FileEntryType

    check_name(name)
    if dest.exists() and not dest.is_dir():
        raise FetchError(f"{dest} is a file: name a folder as DEST")
    if dest.exists() and not force and any(dest.iterdir()):
        raise FetchError(f"{dest} exists and is not empty: pass --force to replace its files with the run's, "
                         "or name another DEST")
    try:
        listed = volume.listdir(name, recursive=True)
    except (NotFoundError, FileNotFoundError):
        listed = []
    entries = [(rel, e) for e in listed if (rel := _relative(e.path, name)) is not None]
    if not entries:
        raise _missing(volume, name)
    dest.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{dest.name}.fetch-", dir=dest.parent))
    try:
        files = []
        for rel, entry in entries:
            target = stage / rel
            if entry.type == FileEntryType.DIRECTORY:
                target.mkdir(parents=True, exist_ok=True)
            elif entry.type == FileEntryType.FILE:
                target.parent.mkdir(parents=True, exist_ok=True)
                with target.open("wb") as out:
                    for chunk in volume.read_file(entry.path):
                        out.write(chunk)
                files.append(rel)
        if dest.is_dir() and not any(dest.iterdir()):
            dest.rmdir()
        if not dest.exists():
            os.replace(stage, dest)
            return len(files)
        for rel in files:
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(stage / rel, dest / rel)
        return len(files)
    finally:
        shutil.rmtree(stage, ignore_errors=True)

"""Run llama-cpp-python's OpenAI-compatible server as a subprocess.

:class:`LocalServer` owns one ``python -m llama_cpp.server`` process. The process that owns a pytest
session starts it (``LocalBackend.prepare``) and stops it at session end; started with
``die_with_parent`` it also receives SIGTERM from the kernel if its parent is killed (Linux).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import deque
from pathlib import Path
from types import TracebackType

__all__ = [
    "LocalServer",
    "LocalServerError",
    "default_n_threads",
    "health_check",
    "log_tail",
    "pid_alive",
    "process_cmdline",
]

LOG_TAIL_LINES = 40
_SERVER_MODULE = "llama_cpp.server"
# urllib must not route loopback health checks through an HTTP(S)_PROXY.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class LocalServerError(RuntimeError):
    """The local model server failed to start or to answer its health check."""


# --------------------------------------------------------------------------- helpers


def default_n_threads() -> int:
    """Number of CPU cores this process may run on (affinity-aware)."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except (AttributeError, OSError):
        return max(os.cpu_count() or 1, 1)


def _free_port(host: str) -> int:
    """Ask the OS for a currently free TCP port on ``host``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _client_host(host: str) -> str:
    """Address to connect to for a server bound to ``host``."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def _parent_death_signal() -> None:
    """In the child before exec: ask the kernel for SIGTERM when the parent dies (Linux prctl)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """Last ``lines`` lines of a log file ('' if it does not exist)."""
    try:
        with path.open("r", encoding="utf-8", errors="replace") as fh:
            return "".join(deque(fh, maxlen=lines))
    except OSError:
        return ""


def health_check(base_url: str, alias: str | None, timeout: float = 2.0) -> bool:
    """True if ``GET {base_url}/models`` answers 200 and lists ``alias`` (if given)."""
    try:
        with _OPENER.open(f"{base_url}/models", timeout=timeout) as resp:
            if resp.status != 200:
                return False
            payload = json.loads(resp.read().decode("utf-8"))
    except (OSError, ValueError, urllib.error.URLError):
        return False
    if alias is None:
        return True
    models = payload.get("data") if isinstance(payload, dict) else None
    return any(isinstance(m, dict) and m.get("id") == alias for m in models or [])


def _proc_stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the ``(comm)`` field, or None."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rfind(")") + 2 :].split()


def pid_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    fields = _proc_stat_fields(pid)
    return not (fields and fields[0] in ("Z", "X"))


def process_cmdline(pid: int) -> list[str]:
    """Argument vector of ``pid`` from /proc ([] if unreadable)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode("utf-8", "replace") for a in raw.split(b"\0") if a]


# --------------------------------------------------------------------------- LocalServer


class LocalServer:
    """One ``python -m llama_cpp.server`` subprocess serving a GGUF file.

    The process is started in its own session so it survives the (xdist worker)
    process that launched it; :meth:`stop` ends it by PID.
    """

    def __init__(
        self,
        gguf: Path,
        *,
        log_path: Path,
        alias: str,
        n_threads: int | None = None,
        n_ctx: int = 4096,
        host: str = "127.0.0.1",
        port: int | None = None,
        chat_format: str | None = None,
        startup_timeout: float = 120.0,
        die_with_parent: bool = False,
    ) -> None:
        self.gguf = Path(gguf)
        self.log_path = Path(log_path)
        self.alias = alias
        self.n_threads = n_threads if n_threads is not None else default_n_threads()
        self.n_ctx = n_ctx
        self.host = host
        self._port = port
        self.chat_format = chat_format
        self.startup_timeout = startup_timeout
        self.die_with_parent = die_with_parent
        self._proc: subprocess.Popen[bytes] | None = None
        self.startup_seconds: float | None = None

    # ---- properties

    @property
    def port(self) -> int:
        """TCP port (chosen on first access when not given)."""
        if self._port is None:
            self._port = _free_port(self.host)
        return self._port

    @property
    def base_url(self) -> str:
        """OpenAI-compatible base URL, e.g. ``http://127.0.0.1:PORT/v1``."""
        return f"http://{_client_host(self.host)}:{self.port}/v1"

    @property
    def pid(self) -> int | None:
        """PID of the server process, or None when not started."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        """True while the started process has not exited."""
        return self._proc is not None and self._proc.poll() is None

    # ---- process control

    def _command(self) -> list[str]:
        """Command line of the server (overridden in tests with a fake server)."""
        cmd = [
            sys.executable, "-m", _SERVER_MODULE,
            "--model", str(self.gguf),
            "--model_alias", self.alias,
            "--host", self.host,
            "--port", str(self.port),
            "--n_threads", str(self.n_threads),
            "--n_threads_batch", str(self.n_threads),
            "--n_ctx", str(self.n_ctx),
            "--use_mlock", "false",
        ]  # fmt: skip
        if self.chat_format:
            cmd += ["--chat_format", self.chat_format]
        return cmd

    def _spawn(self) -> None:
        """Launch the process with stdout/stderr appended to ``log_path``."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                self._command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
                preexec_fn=_parent_death_signal if self.die_with_parent else None,
            )

    def _fail(self, reason: str) -> LocalServerError:
        """Build an error carrying the log tail."""
        tail = log_tail(self.log_path)
        return LocalServerError(
            f"local model server {reason} (log: {self.log_path}); last {LOG_TAIL_LINES} lines:\n{tail}"
        )

    def _wait_healthy(self) -> None:
        """Poll the health check until it passes, the process dies, or time runs out."""
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                raise self._fail(f"exited with code {code} during startup")
            if health_check(self.base_url, self.alias):
                return
            if time.monotonic() > deadline:
                self.stop()
                raise self._fail(f"not healthy after {self.startup_timeout:.0f}s at {self.base_url}")
            time.sleep(0.2)

    def start(self) -> LocalServer:
        """Start the server and block until ``/v1/models`` lists ``alias``."""
        if self.running:
            return self
        started = time.monotonic()
        self._spawn()
        self._wait_healthy()
        self.startup_seconds = time.monotonic() - started
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate by PID (SIGTERM, then SIGKILL after ``timeout`` s). Idempotent."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5.0)

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

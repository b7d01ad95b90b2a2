"""Tests for metis_pytest.backends.local_server.

Most tests use a fake "server" (a python http.server one-liner) so they run
without llama.cpp; the last tests start the real llama_cpp.server with the
embedded SmolLM2 model (skipped, saying why, when it is not cached).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from metis_pytest.backends import local_server as ls
from metis_pytest.backends.local_server import (
    LocalServer,
    LocalServerError,
    default_n_threads,
    health_check,
    pid_alive,
)

FAKE_SERVER = r"""
import http.server, json, sys
port, alias = int(sys.argv[1]), sys.argv[2]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"object": "list", "data": [{"id": alias, "object": "model"}]}).encode()
        self.send_response(200 if self.path == "/v1/models" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
print("fake server listening on", port, flush=True)
http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
"""


class FakeServer(LocalServer):
    """Serves /v1/models listing ``served_alias``; argv carries a llama_cpp.server marker."""

    served_alias: str | None = None
    marker: bool = True

    def _command(self) -> list[str]:
        cmd = [sys.executable, "-c", FAKE_SERVER, str(self.port), self.served_alias or self.alias]
        return cmd + (["llama_cpp.server"] if self.marker else [])


class CrashingServer(LocalServer):
    def _command(self) -> list[str]:
        lines = "".join(f"print('noise {i}');" for i in range(60))
        return [sys.executable, "-c", f"{lines} print('FATAL: cannot load model'); raise SystemExit(3)"]


def _fake(tmp_path: Path, cls: type[LocalServer] = FakeServer, **kw: object) -> LocalServer:
    kw.setdefault("startup_timeout", 20.0)
    return cls(tmp_path / "model.gguf", log_path=tmp_path / "server.log", alias="fake-model", **kw)  # type: ignore[arg-type]


def _wait_dead(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    return not pid_alive(pid)


# --------------------------------------------------------------------------- LocalServer unit


def test_default_n_threads_uses_affinity() -> None:
    assert default_n_threads() == len(os.sched_getaffinity(0))


def test_real_command_line(tmp_path: Path) -> None:
    server = LocalServer(tmp_path / "m.gguf", log_path=tmp_path / "l.log", alias="a", n_threads=3, port=8123)
    cmd = server._command()
    assert cmd[:3] == [sys.executable, "-m", "llama_cpp.server"]
    pairs = dict(zip(cmd[3::2], cmd[4::2]))
    assert pairs == {
        "--model": str(tmp_path / "m.gguf"),
        "--model_alias": "a",
        "--host": "127.0.0.1",
        "--port": "8123",
        "--n_threads": "3",
        "--n_threads_batch": "3",
        "--n_ctx": "4096",
        "--use_mlock": "false",
    }
    assert server.base_url == "http://127.0.0.1:8123/v1"
    assert server.pid is None
    server.chat_format = "chatml"
    assert server._command()[-2:] == ["--chat_format", "chatml"]


def test_free_port_is_assigned(tmp_path: Path) -> None:
    server = _fake(tmp_path)
    assert 0 < server.port < 65536
    assert server.port == server.port  # stable once chosen


def test_early_exit_raises_with_log_tail(tmp_path: Path) -> None:
    server = _fake(tmp_path, CrashingServer)
    with pytest.raises(LocalServerError) as err:
        server.start()
    msg = str(err.value)
    assert "exited with code 3" in msg
    assert "FATAL: cannot load model" in msg
    assert "noise 59" in msg and "noise 10\n" not in msg  # only the last 40 lines
    assert not server.running


def test_unhealthy_server_times_out_and_is_stopped(tmp_path: Path) -> None:
    server = _fake(tmp_path, startup_timeout=1.5)
    server.served_alias = "some-other-model"  # type: ignore[attr-defined]
    with pytest.raises(LocalServerError, match="not healthy") as err:
        server.start()
    assert "fake server listening" in str(err.value)
    assert server.pid is None and not server.running


def test_fake_server_health_and_stop(tmp_path: Path) -> None:
    server = _fake(tmp_path)
    with server:
        pid = server.pid
        assert pid is not None and pid_alive(pid)
        assert server.base_url == f"http://127.0.0.1:{server.port}/v1"
        assert health_check(server.base_url, "fake-model")
        assert not health_check(server.base_url, "other")
        assert os.getsid(pid) == pid  # own session: outlives an xdist worker
    assert not pid_alive(pid)
    server.stop()  # idempotent
    assert not health_check(server.base_url, None, timeout=0.5)


def test_stop_escalates_to_sigkill(tmp_path: Path) -> None:
    class Stubborn(FakeServer):
        def _command(self) -> list[str]:
            cmd = super()._command()
            cmd[2] = "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN)\n" + cmd[2]
            return cmd

    server = _fake(tmp_path, Stubborn).start()
    pid = server.pid
    assert pid is not None
    server.stop(timeout=0.5)  # SIGTERM is ignored: SIGKILL follows
    assert not pid_alive(pid)


# --------------------------------------------------------------------------- dies with its owner


OWNER = r"""
import sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from tests.backends.test_local_server import _fake
server = _fake(Path(sys.argv[2]), die_with_parent=True).start()
print(server.pid, flush=True)
time.sleep(600)
"""


def test_a_server_dies_with_the_process_that_started_it(tmp_path: Path) -> None:
    """kill -9 of the pytest process that owns the session leaves no llama.cpp server behind."""
    repo = str(Path(__file__).resolve().parents[2])
    owner = subprocess.Popen([sys.executable, "-c", OWNER, repo, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None
        pid = int(owner.stdout.readline())
        assert pid_alive(pid)
    finally:
        owner.kill()
        owner.wait(10)
    assert _wait_dead(pid, timeout=10), "the server outlived its owner"


# --------------------------------------------------------------------------- real llama.cpp server


def _real_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real SmolLM2 GGUF from the cache (`metis fetch-model` puts it there), or skip saying so."""
    from metis_pytest.backends.local_model import (
        DEFAULT_MODEL,
        ModelFetchError,
        default_cache_dir,
        fetch_default_model,
    )

    cached = default_cache_dir() / "models" / DEFAULT_MODEL.filename
    if not cached.is_file():
        pytest.skip(f"the embedded model is not cached at {cached} (run `metis fetch-model`)")
    try:
        return fetch_default_model()
    except ModelFetchError as exc:
        pytest.skip(f"default model cannot be resolved: {exc}")


@pytest.fixture(scope="module")
def real_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    pytest.importorskip("llama_cpp", reason="llama-cpp-python not installed: pip install 'metis-pytest[local]'")
    pytest.importorskip("llama_cpp.server.app", reason="llama-cpp-python[server] extras not installed")
    from metis_pytest.backends.local_model import DEFAULT_MODEL

    gguf = _real_gguf(tmp_path_factory)
    log = tmp_path_factory.mktemp("llama") / "server.log"
    server = LocalServer(gguf, log_path=log, alias=DEFAULT_MODEL.alias)
    server.start()
    yield server
    server.stop()


def _chat(server: LocalServer, content: str, max_tokens: int) -> dict:
    body = {
        "model": server.alias,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "temperature": 0,
    }
    req = urllib.request.Request(
        f"{server.base_url}/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with ls._OPENER.open(req, timeout=120) as resp:
        return json.loads(resp.read())


def test_real_chat_completion(real_server: LocalServer) -> None:
    reply = _chat(real_server, "What is the capital of France? Answer in one sentence.", 16)
    choice = reply["choices"][0]
    content = choice["message"]["content"]
    assert content and content.strip()
    assert "capital of France?" not in content  # embedded chat template used, not a prompt echo
    assert choice["finish_reason"] in ("stop", "length")
    assert reply["model"] == real_server.alias


def test_real_server_args(real_server: LocalServer) -> None:
    assert real_server.pid is not None
    argv = ls.process_cmdline(real_server.pid)
    assert argv[argv.index("--n_threads") + 1] == str(real_server.n_threads)
    assert "llama_cpp.server" in argv
    reply = _chat(real_server, "Write a short story about a robot and a cat.", 64)
    assert reply["usage"]["completion_tokens"] > 0


def test_real_server_stop(real_server: LocalServer) -> None:
    pid = real_server.pid
    assert pid is not None
    real_server.stop()
    assert not pid_alive(pid)
    real_server.stop()  # idempotent

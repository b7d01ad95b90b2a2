"""`metis serve-local` runs the embedded server until it is told to stop, then stops the server too."""

from __future__ import annotations

import importlib.util
import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest


def test_serve_local_serves_and_stops_on_sigint(tmp_path: Path) -> None:
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed (pip install -e '.[local]')")
    from metis_pytest.backends.local_model import DEFAULT_MODEL, default_cache_dir
    from metis_pytest.backends.local_server import _free_port, pid_alive

    cache = default_cache_dir()
    if not (cache / "models" / DEFAULT_MODEL.filename).exists():
        pytest.skip(f"the embedded model is not in {cache} (run `metis fetch-model`)")
    port = _free_port("127.0.0.1")
    proc = subprocess.Popen([sys.executable, "-m", "metis_pytest.cli", "serve-local", "--cache-dir", str(cache),
                             "--port", str(port), "--log", str(tmp_path / "server.log")],
                            stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()  # printed once the server is healthy
        assert f"http://127.0.0.1:{port}/v1" in line
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=10) as resp:
            assert DEFAULT_MODEL.alias in json.loads(resp.read())["data"][0]["id"]
        server_pid = next(int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()
                          and f"--port\x00{port}\x00".encode() in _cmdline(p))
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        deadline = time.monotonic() + 15  # only how long to wait for the server process to exit
        while pid_alive(server_pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not pid_alive(server_pid), "serve-local exited but left its llama.cpp server running"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def _cmdline(proc: Path) -> bytes:
    try:
        return (proc / "cmdline").read_bytes()
    except OSError:
        return b""

"""Helpers for tests that build Modal objects offline: the network blocked, and modal's lazy objects read."""

from __future__ import annotations

import importlib
import json
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest


@contextmanager
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[object]]:
    """Any connection other than a unix socket raises (and is recorded in the yielded list)."""
    attempts: list[object] = []
    real_connect = socket.socket.connect

    def connect(self: socket.socket, address: Any) -> Any:
        if self.family == getattr(socket, "AF_UNIX", object()):
            return real_connect(self, address)
        attempts.append(address)
        raise OSError(f"network blocked in this test: {address!r}")

    def create_connection(address: Any, *args: Any, **kwargs: Any) -> socket.socket:
        attempts.append(address)
        raise OSError(f"network blocked in this test: {address!r}")

    with monkeypatch.context() as patch:
        patch.setattr(socket.socket, "connect", connect)
        patch.setattr(socket, "create_connection", create_connection)
        yield attempts


def raw(obj: Any) -> Any:
    """The implementation object behind one of modal's synchronized wrappers (modal 1.6.4's internals)."""
    from modal._utils.async_utils import synchronizer

    return synchronizer._translate_in(obj)


def closure(fn: Any) -> dict[str, Any]:
    """The variables a lazy modal object's ``_load`` closes over (how it was defined), by name."""
    load = raw(fn)._load
    return dict(zip(load.__code__.co_freevars, (c.cell_contents for c in load.__closure__)))


@contextmanager
def imported_offline(monkeypatch: pytest.MonkeyPatch, name: str) -> Iterator[Any]:
    """Module ``name`` imported afresh with the network blocked; asserts it tried no connection, and
    puts back whatever copy was imported before."""
    pytest.importorskip("modal")
    saved = sys.modules.pop(name, None)
    with no_network(monkeypatch) as attempts:
        yield importlib.import_module(name)
    assert attempts == []
    sys.modules.pop(name, None)
    if saved is not None:
        sys.modules[name] = saved


NO_NETWORK_PREAMBLE = """
import socket
attempts = []
def blocked(*args, **kwargs):
    attempts.append(args[1:] or args)
    raise OSError("blocked")
socket.socket.connect = blocked
socket.create_connection = blocked
"""


def run_offline(body: str, tmp_path: Path, cwd: Path) -> dict[str, Any]:
    """``body`` run in a fresh interpreter with every socket blocked (the attempts counted in ``attempts``),
    no ``MODAL_*`` variables, ``HOME`` in ``tmp_path`` and an empty Modal config there; the JSON object its
    last line prints."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODAL_")}
    env.update(HOME=str(tmp_path), MODAL_CONFIG_PATH=str(tmp_path / "modal.toml"))
    script = NO_NETWORK_PREAMBLE + textwrap.dedent(body)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])

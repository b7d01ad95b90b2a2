"""Shared helpers for the harness's own tests."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[1]
_SHARED = [REPO.parent / "shared" / "datasets"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--shared-datasets", default=None,
                     help="Folder of the real benchmark data the tests read (default: ../shared/datasets beside "
                          "the checkout).")


def pytest_configure(config: pytest.Config) -> None:
    chosen = config.getoption("--shared-datasets", default=None)
    if chosen:
        _SHARED[0] = Path(chosen).resolve()


def shared_datasets() -> Path:
    """``../shared/datasets`` beside the checkout, or ``--shared-datasets``."""
    return _SHARED[0]


def shared_file(*parts: str) -> Path:
    """A file of the real benchmark data; skips the calling test, naming the path, when it is absent."""
    path = shared_datasets().joinpath(*parts)
    if not path.is_file():
        pytest.skip(f"real benchmark data not found at {path} (pass --shared-datasets DIR)")
    return path

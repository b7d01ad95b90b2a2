"""Shared helpers for the harness's own tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[1]


def shared_datasets() -> Path:
    """``../shared/datasets`` beside the checkout (override with METIS_SHARED_DATASETS)."""
    return Path(os.environ.get("METIS_SHARED_DATASETS", REPO.parent / "shared" / "datasets"))


def shared_file(*parts: str) -> Path:
    """A file of the real benchmark data; skips the calling test, naming the path, when it is absent."""
    path = shared_datasets().joinpath(*parts)
    if not path.is_file():
        pytest.skip(f"real benchmark data not found at {path} (set METIS_SHARED_DATASETS to the datasets folder)")
    return path

"""End-to-end helpers: run the real GSM8K evaluation in a child pytest against a scripted server."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "datasets" / "gsm8k_smoke.jsonl"


def smoke_golds() -> dict[str, str]:
    """Question -> gold number of the repo's smoke sample (through the real loader)."""
    from evals.gsm8k.dataset import load

    return {row.messages[-1].content: str(row.ground_truth) for row in load(str(SMOKE))}


def last_user(body: dict[str, Any]) -> str:
    return next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def ep_store_text(home: Path) -> str:
    """Everything in Eval Protocol's SQLite store under ``home`` (what `ep logs` shows), as text."""
    db = home / ".eval_protocol" / "logs.db"
    if not db.exists():
        return ""
    with sqlite3.connect(db) as conn:
        tables = [r[0] for r in conn.execute("select name from sqlite_master where type='table'")]
        return "\n".join(str(row) for t in tables for row in conn.execute(f"select * from {t}"))


@pytest.fixture
def run_eval(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch):
    """Run ``pytest`` on the GSM8K evaluation in a child process; HOME is private (EP store isolated)."""
    home = pytester.path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    monkeypatch.delenv("EP_NO_UPLOAD", raising=False)
    pytester.makepyfile(test_eval="from evals.gsm8k.test_gsm8k import test_gsm8k  # noqa: F401\n")

    def run(*args: str) -> pytest.RunResult:
        # -p metis_pytest.lazy_imports: as this repo's addopts (the child's rootdir is a temp folder)
        return pytester.runpytest_subprocess("-p", "metis_pytest.lazy_imports", "-p", "no:cacheprovider", "--output-dir", "out",
                                             "--dataset", str(SMOKE), *args, timeout=300)

    run.home = home  # type: ignore[attr-defined]
    run.out = pytester.path / "out"  # type: ignore[attr-defined]
    return run

"""``--replay``'s recorded completions are read with the rows, before any item: a bad file is one line."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RECORDED = REPO / "baselines" / "gsm8k" / "recorded" / "scripted-mix"


def test_a_broken_recorded_run_is_a_usage_error_naming_its_file_and_line(pytester: pytest.Pytester) -> None:
    recorded = pytester.path / "recorded"
    shutil.copytree(RECORDED, recorded)
    lines = (recorded / "rows.jsonl").read_text().splitlines()
    lines[2] = "{not json"
    (recorded / "rows.jsonl").write_text("\n".join(lines) + "\n")
    pytester.makepyfile(test_eval="from evals.gsm8k.test_gsm8k import test_gsm8k  # noqa: F401\n")
    result = pytester.runpytest_subprocess(
        "-p", "metis_pytest.lazy_imports", "-p", "no:cacheprovider", "--replay", str(recorded), "--model",
        "scripted-mix", "--dataset", str(REPO / "datasets" / "gsm8k_smoke.jsonl"), "--output-dir", "out", timeout=180)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: gsm8k: --replay: {recorded / 'rows.jsonl'} line 3: not a JSON record"])

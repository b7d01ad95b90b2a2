"""Smoke tests for the benchmark scripts: they run end to end and write well-formed results.

These check structure and completeness only, never timings (the machine running the tests is
not a benchmark machine): a timing field is only checked to be a recorded, positive number.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCHMARKS = REPO / "benchmarks"


def run_script(script: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True", EP_NO_UPLOAD="1")
    proc = subprocess.run([sys.executable, str(BENCHMARKS / script), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def test_bench_rollout_tiny(tmp_path: Path) -> None:
    rows = 20
    proc = run_script("bench_rollout.py", "--rows", str(rows), "--latency", "0.01", "--concurrency", "4",
                      "--repeats", "1", "--out", str(tmp_path))
    assert "metis / bare-aiohttp" in proc.stdout
    report = json.loads((tmp_path / "rollout.json").read_text())
    assert (tmp_path / "rollout.png").stat().st_size > 0
    assert report["parameters"]["rows"] == rows
    assert {"cpu_count", "python", "packages"} <= report["machine"].keys()
    variants = report["summary"]["variants"]
    assert set(variants) == {"metis", "ep-stock", "bare-aiohttp"}
    for name, summary in variants.items():
        assert not summary["failed"], (name, summary["problems"])
        assert summary["wall_median_s"] > 0
    assert len(report["runs"]) == 3
    for run in report["runs"]:
        assert run["rows"] == rows and run["rows_scored"] == rows and run["rows_errored"] == 0, run
        assert run["rows_expected_answer"] == rows, run
        assert run["peak_rss_mb"] > 0 and run["import_s"] >= 0


def test_bench_plugin_load_structure(tmp_path: Path) -> None:
    run_script("bench_plugin_load.py", "--repeats", "1", "--warmup", "0", "--out", str(tmp_path))
    report = json.loads((tmp_path / "plugin_load.json").read_text())
    assert (tmp_path / "plugin_load.png").stat().st_size > 0
    configs = report["summary"]["configs"]
    assert set(configs) == {"bare", "metis-only", "ep-only", "both", "both-lazy"}
    for name, config in configs.items():
        assert config["failed_runs"] == 0 and config["median_s"] > 0, (name, report["runs"])
    assert {"ours_median", "eval_protocol_median"} <= report["summary"]["deltas_s"].keys()
    imports = report["plugin_imports"]
    assert isinstance(imports["heavy_modules_loaded"], list)
    assert imports["importtime"]["top_cumulative"]


def test_bench_item_structure(tmp_path: Path) -> None:
    rows = 12
    proc = run_script("bench_item.py", "--rows", str(rows), "--latency", "0.01", "--concurrency", "4",
                      "--repeats", "1", "--warmup", "0", "--out", str(tmp_path), timeout=600)
    for target in ("item / bare", "replay rows/s", "trivial default - bare", "trivial lazy - bare"):
        line = next(ln for ln in proc.stdout.splitlines() if ln.startswith(target))
        assert ": met)" in line or ": NOT met)" in line, line
    report = json.loads((tmp_path / "item.json").read_text())
    assert (tmp_path / "item.png").stat().st_size > 0
    assert report["parameters"]["rows"] == rows
    assert {"cpu_count", "python", "packages"} <= report["machine"].keys()
    variants = report["summary"]["variants"]
    assert list(variants) == ["bare", "item", "replay", "ep-stock", "trivial-bare", "trivial-default", "trivial-lazy"]
    for name, summary in variants.items():
        assert not summary["failed"], (name, summary["problems"])
        assert summary["median_s"] > 0 and summary["process_median_s"] > 0
    assert {run["variant"] for run in report["runs"]} == set(variants) and len(report["runs"]) == len(variants)
    by_variant = {run["variant"]: run for run in report["runs"]}
    for name in ("item", "replay"):
        run = by_variant[name]
        assert run["junit"]["name"] == "test_gsm8k[scripted]" and run["durations"]["call"] >= 0, run
        assert run["store"]["n"] == rows and run["store"]["rows_expected_answer"] == rows and run["ep_store_written"]
    assert "--replay" in by_variant["replay"]["command"] and "--api-base" not in by_variant["replay"]["command"]
    assert by_variant["replay"]["store"]["replay"] == by_variant["item"]["out_dir"]
    assert "-p" in by_variant["ep-stock"]["command"] and "no:metis" in by_variant["ep-stock"]["command"]
    assert by_variant["ep-stock"]["counts"] == {"rows_scored": rows, "rows_errored": 0, "rows_expected_answer": rows}
    ratios = report["summary"]["ratios"]
    for key in ("item_over_bare", "item_over_ideal", "ep_stock_item_over_metis_item", "replay_rows_per_s",
                "trivial_default_minus_bare_s", "trivial_lazy_minus_bare_s"):
        assert isinstance(ratios[key], float), key
    for key in ("item_over_bare_met", "replay_rows_per_s_met", "trivial_default_minus_bare_met",
                "trivial_lazy_minus_bare_met"):
        assert isinstance(ratios[key], bool), key


def test_bench_row_costs_structure(tmp_path: Path) -> None:
    """Every piece of a row's work is timed and summed, and the PNG is written; no timing is checked."""
    run_script("bench_row_costs.py", "--rows", "24", "--repeats", "1", "--out", str(tmp_path))
    report = json.loads((tmp_path / "row_costs.json").read_text())
    pieces = ("conversation", "scorer", "evaluate_result", "record", "ep_json", "run_copy", "task")
    assert set(report["us_per_row"]) == set(pieces) and all(v > 0 for v in report["us_per_row"].values())
    assert report["sum_us_per_row"] == pytest.approx(sum(report["us_per_row"].values()))
    assert report["max_rows_per_s"] == pytest.approx(1e6 / report["sum_us_per_row"])
    assert (tmp_path / "row_costs.png").stat().st_size > 0

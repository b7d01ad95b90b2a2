"""What the Metis pytest plugin adds to an unrelated test run, beside Eval Protocol's auto-loaded plugin.

In a temporary directory holding one ``def test_ok(): assert True``, times
``python -m pytest -q -p no:cacheprovider test_trivial.py`` as a fresh subprocess with:

1. ``bare``: ``-p no:metis -p no:eval_protocol``;
2. ``metis-only``: ``-p no:eval_protocol``;
3. ``ep-only``: ``-p no:metis``;
4. ``both``: nothing disabled (the default for anyone with metis-pytest installed);
5. ``both-lazy``: ``-p metis_pytest.lazy_imports`` (what this repo's ``addopts`` adds: LiteLLM is
   not run until used, so Eval Protocol's plugin no longer pays for it).

Runs are interleaved (1,2,3,4,5,1,2,...); median and min are reported, with the deltas
``ours = (2) - (1)`` and ``eval-protocol = (3) - (1)``. Also recorded: the slowest cumulative
imports of ``python -X importtime -c "import metis_pytest.plugin"``, and which of ``litellm``,
``eval_protocol``, ``aiohttp``, ``pandas`` that import pulls in.

    python benchmarks/bench_plugin_load.py --repeats 5 --out benchmarks/results
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # before anything imports LiteLLM
os.environ.setdefault("EP_NO_UPLOAD", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from _machine import machine_info  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

REPO = Path(__file__).resolve().parents[1]

CONFIGS: dict[str, list[str]] = {
    "bare": ["-p", "no:metis", "-p", "no:eval_protocol"],
    "metis-only": ["-p", "no:eval_protocol"],
    "ep-only": ["-p", "no:metis"],
    "both": [],
    "both-lazy": ["-p", "metis_pytest.lazy_imports"],
}
HEAVY_MODULES: tuple[str, ...] = ("litellm", "eval_protocol", "aiohttp", "pandas")
TRIVIAL_TEST = "def test_ok():\n    assert True\n"
RUN_TIMEOUT_S = 120.0


def clean_env(home: Path) -> dict[str, str]:
    """The caller's environment with HOME in a temporary folder and no inherited pytest options."""
    env = dict(os.environ)
    env["HOME"] = str(home)  # anything a plugin writes under ~ stays in the temporary folder
    for name in ("PYTEST_ADDOPTS", "PYTEST_PLUGINS", "PYTEST_DISABLE_PLUGIN_AUTOLOAD"):
        env.pop(name, None)
    return env


def time_pytest(workdir: Path, env: dict[str, str], extra: list[str]) -> dict[str, Any]:
    """Wall seconds of one ``python -m pytest`` subprocess on the trivial test, and whether it passed."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *extra, "test_trivial.py"]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"wall_s": None, "ok": False, "error": f"timed out after {RUN_TIMEOUT_S:g}s"}
    wall = time.perf_counter() - start
    ok = proc.returncode == 0 and "1 passed" in proc.stdout
    result: dict[str, Any] = {"wall_s": wall, "ok": ok}
    if not ok:
        result["error"] = f"exit {proc.returncode}: {(proc.stdout + proc.stderr)[-1500:]}"
    return result


def heavy_imports(env: dict[str, str]) -> list[str] | str:
    """Which of HEAVY_MODULES ``import metis_pytest.plugin`` loads, in a fresh interpreter."""
    code = ("import metis_pytest.plugin, sys; "
            f"print(sorted(m for m in {HEAVY_MODULES!r} if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S, cwd=REPO)
    if proc.returncode != 0:
        return f"error: {proc.stderr[-1000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1].replace("'", '"'))


def import_profile(env: dict[str, str], top: int = 15) -> dict[str, Any]:
    """``-X importtime`` of ``import metis_pytest.plugin``: total and the top cumulative modules."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", "import metis_pytest.plugin"], env=env,
                          capture_output=True, text=True, timeout=RUN_TIMEOUT_S, cwd=REPO)
    entries = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        self_us, cumulative_us, name = line.split(":", 1)[1].split("|", 2)
        entries.append({"module": name.strip(), "self_us": int(self_us), "cumulative_us": int(cumulative_us)})
    plugin = next((e for e in entries if e["module"] == "metis_pytest.plugin"), None)
    entries.sort(key=lambda e: e["cumulative_us"], reverse=True)
    not_pytest = [e for e in entries if e["module"].split(".")[0] not in ("pytest", "_pytest", "metis_pytest")]
    pytest_entry = next((e for e in entries if e["module"] == "pytest"), None)
    return {"plugin_cumulative_ms": plugin["cumulative_us"] / 1000 if plugin else None,
            "pytest_cumulative_ms": pytest_entry["cumulative_us"] / 1000 if pytest_entry else None,
            "top_cumulative": entries[:top],
            "top_metis_pytest": [e for e in entries if e["module"].startswith("metis_pytest")][:top],
            "top_other": not_pytest[:top]}


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median/min per configuration and the two deltas against bare pytest."""
    configs: dict[str, Any] = {}
    for name in CONFIGS:
        walls = [r["wall_s"] for r in runs if r["config"] == name and r["ok"]]
        failed = [r for r in runs if r["config"] == name and not r["ok"]]
        configs[name] = {"runs": len(walls) + len(failed), "failed_runs": len(failed),
                         "median_s": statistics.median(walls) if walls else None,
                         "min_s": min(walls) if walls else None}

    def delta(name: str, key: str) -> float | None:
        a, b = configs[name][key], configs["bare"][key]
        return a - b if a is not None and b is not None else None

    return {
        "configs": configs,
        "deltas_s": {
            "ours_median": delta("metis-only", "median_s"), "ours_min": delta("metis-only", "min_s"),
            "eval_protocol_median": delta("ep-only", "median_s"), "eval_protocol_min": delta("ep-only", "min_s"),
            "both_median": delta("both", "median_s"), "both_min": delta("both", "min_s"),
            "both_lazy_median": delta("both-lazy", "median_s"), "both_lazy_min": delta("both-lazy", "min_s"),
        },
    }


def fmt(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def format_table(report: dict[str, Any]) -> str:
    s = report["summary"]
    lines = [f"{'config':<12}{'pytest flags':<34}{'median (s)':>11}{'min (s)':>10}{'failed':>8}"]
    for name, c in s["configs"].items():
        flags = " ".join(CONFIGS[name]) or "(none)"
        lines.append(f"{name:<12}{flags:<34}{fmt(c['median_s']):>11}{fmt(c['min_s']):>10}{c['failed_runs']:>8}")
    d = s["deltas_s"]
    lines.append(f"ours (metis-only - bare):        median {fmt(d['ours_median'], '+.3f')} s, "
                 f"min {fmt(d['ours_min'], '+.3f')} s")
    lines.append(f"eval-protocol (ep-only - bare):  median {fmt(d['eval_protocol_median'], '+.3f')} s, "
                 f"min {fmt(d['eval_protocol_min'], '+.3f')} s")
    lines.append(f"both (default - bare):           median {fmt(d['both_median'], '+.3f')} s, "
                 f"min {fmt(d['both_min'], '+.3f')} s")
    lines.append(f"both-lazy (repo default - bare): median {fmt(d['both_lazy_median'], '+.3f')} s, "
                 f"min {fmt(d['both_lazy_min'], '+.3f')} s")
    heavy = report["plugin_imports"]["heavy_modules_loaded"]
    verdict = "none" if heavy == [] else heavy
    lines.append(f"`import metis_pytest.plugin` loads heavy modules {list(HEAVY_MODULES)}: {verdict}"
                 f"{'' if heavy == [] else '  <-- REPORT: the plugin import is not lazy'}")
    prof = report["plugin_imports"]["importtime"]
    lines.append(f"`import metis_pytest.plugin` cumulative import time: {fmt(prof['plugin_cumulative_ms'], '.1f')} ms "
                 f"(of which `pytest` itself: {fmt(prof['pytest_cumulative_ms'], '.1f')} ms)")
    for title, key in (("top cumulative", "top_cumulative"), ("metis_pytest modules", "top_metis_pytest"),
                       ("neither pytest nor metis_pytest", "top_other")):
        lines.append(f"  {title}:")
        for e in prof[key][:8]:
            lines.append(f"    {e['cumulative_us'] / 1000:9.1f} ms  {e['module']}")
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> None:
    """Bar chart: median pytest wall per configuration with min..median error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    configs = report["summary"]["configs"]
    names = [n for n in CONFIGS if configs[n]["median_s"] is not None]
    medians = [configs[n]["median_s"] for n in names]
    mins = [configs[n]["min_s"] for n in names]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.bar(names, medians, color=["tab:gray", "tab:blue", "tab:orange", "tab:purple"][: len(names)],
           yerr=[[m - lo for m, lo in zip(medians, mins)], [0] * len(names)], capsize=6)
    for i, m in enumerate(medians):
        ax.text(i, m, f"{m:.2f}s", ha="center", va="bottom")
    d = report["summary"]["deltas_s"]
    ax.set_title(f"pytest on one trivial test (median; bar = min..median)\nours +{fmt(d['ours_median'])} s, "
                 f"eval-protocol +{fmt(d['eval_protocol_median'])} s over bare pytest", fontsize=10)
    ax.set_ylabel("seconds (whole process)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(repeats: int, out: Path, warmup: int = 1) -> dict[str, Any]:
    """All timings, the import checks, and the written JSON/PNG; returns the report."""
    out.mkdir(parents=True, exist_ok=True)
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="metis-plugin-load-") as tmp:
        workdir, home = Path(tmp) / "proj", Path(tmp) / "home"
        workdir.mkdir()
        home.mkdir()
        (workdir / "test_trivial.py").write_text(TRIVIAL_TEST)
        env = clean_env(home)
        for _ in range(warmup):  # untimed warm-up runs (bytecode caches, first-time dirs under HOME)
            for flags in CONFIGS.values():
                time_pytest(workdir, env, flags)
        total = repeats * len(CONFIGS)
        for repeat in range(repeats):
            for name, flags in CONFIGS.items():
                result = {"config": name, "repeat": repeat, **time_pytest(workdir, env, flags)}
                runs.append(result)
                state = "ok" if result["ok"] else "FAILED: " + result.get("error", "")[:200]
                print(f"[{len(runs)}/{total}] {name}: {fmt(result['wall_s'])} s {state}", file=sys.stderr)
        plugin_imports = {"heavy_modules_checked": list(HEAVY_MODULES), "heavy_modules_loaded": heavy_imports(env),
                          "importtime": import_profile(env)}
    report = {
        "benchmark": "plugin_load",
        "parameters": {"repeats": repeats, "warmup": warmup, "command": "python -m pytest -q -p no:cacheprovider [flags] test_trivial.py",
                       "configs": CONFIGS},
        "notes": ["wall = whole subprocess (interpreter start, plugin imports, collection, one test, exit)",
                  f"HOME points at a temporary folder; {warmup} untimed warm-up run(s) per configuration first"],
        "machine": machine_info(("pytest", "eval-protocol", "litellm", "aiohttp", "metis-pytest")),
        "summary": summarize(runs),
        "plugin_imports": plugin_imports,
        "runs": runs,
    }
    (out / "plugin_load.json").write_text(json.dumps(report, indent=2))
    plot(report, out / "plugin_load.png")
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per configuration, interleaved")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"), help="output folder")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per configuration first")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0:
        parser.error("--repeats must be >= 1 and --warmup >= 0")
    report = run(args.repeats, Path(args.out), args.warmup)
    print(format_table(report))
    print(f"wrote {Path(args.out) / 'plugin_load.json'} and {Path(args.out) / 'plugin_load.png'}")


if __name__ == "__main__":
    main()

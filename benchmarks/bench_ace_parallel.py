"""ACE under pytest-xdist: the whole ``pytest evals/ace`` process, serial vs ``-n 2`` / ``-n 4``.

The requirement (issue "ACE", section 6): with ``--concurrency 1`` against a scripted server with
0.2 s latency, ``pytest evals/ace -n 4`` is at least 3x faster than serial, and its merged
``summary.json`` is identical to the serial one (``score, stderr, n, n_errored, metrics, by``).

Two scripted OpenAI-compatible servers, each a child process of this script (``--serve agent`` /
``--serve judge``, a :class:`ScriptedServer` with a callable reply and a fixed latency), live for
the whole benchmark:

* the **agent** answers every task at once with a plain final answer (no tool calls, no URL), so a
  task costs exactly one agent request and nothing is fetched from the web;
* the **judge** answers valid JSON for the schema named in ``response_format.json_schema.name``;
  pass/fail verdicts are a hash of the request's messages, so grades vary across criteria but are
  the same whatever the order or the process that asks.

Every run is a fresh ``python -m pytest evals/ace ...`` (what a user runs), with its own
``--output-dir`` and its own ``HOME`` (Eval Protocol's store), ``LITELLM_LOCAL_MODEL_COST_MAP=True``
and ``EP_NO_UPLOAD=1``, the real ACE CSVs (``--dataset``, ``--domains``) and an empty snapshot in
replay mode (``--ace-snapshot``), so nothing can reach the internet. Variants are interleaved
(serial, -n 2, -n 4, serial, ...). Wall = the child process, start to exit, seen from here.

Both servers log the time of every answer; each run's slice of that log splits its wall into
*start-up* (process start to the first request), *active* (first request to last answer) and
*tail* (last answer to exit), which is what the analysis in benchmarks/README.md is built on.

    LITELLM_LOCAL_MODEL_COST_MAP=True .venv/bin/python benchmarks/bench_ace_parallel.py --repeats 2
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("EP_NO_UPLOAD", "1")

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from _machine import machine_info  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SUMMARY_KEYS: tuple[str, ...] = ("score", "stderr", "n", "n_errored", "metrics", "by")
TARGET_SPEEDUP_N4 = 3.0
AGENT_MODEL = "agent"
JUDGE_MODEL = "grader"
AGENT_ANSWER = ("Here is what I recommend.\n\n1. The Everyday Pick: a well-reviewed, widely available choice that "
                "fits what you asked for.\n2. The Budget Pick: cheaper, with fewer extras.\n\n"
                "Both meet the requirements you listed; the first is the better fit overall.")


def default_dataset() -> Path:
    return REPO.parent / "shared" / "datasets" / "ace"


# --------------------------------------------------------------------------- the scripted servers


def _verdict_bit(body: dict[str, Any], modulus: int = 3) -> bool:
    """A deterministic pass/fail from the request's messages: True for 2 in 3 prompts."""
    digest = hashlib.sha256(json.dumps(body.get("messages"), sort_keys=True).encode()).digest()
    return digest[0] % modulus != 0


def judge_reply(body: dict[str, Any]) -> str:
    """Valid JSON for the schema the judge asked for (``response_format.json_schema.name``)."""
    name = ((body.get("response_format") or {}).get("json_schema") or {}).get("name", "")
    ok = _verdict_bit(body)
    replies: dict[str, Any] = {
        "Recommendations": {"recommendations": ["The Everyday Pick", "The Budget Pick"]},
        "SourceMap": {"recommendations": [{"number": 1, "sources": []}, {"number": 2, "sources": []}]},
        "ProductLinks": {"urls": []},
        "LinkCheck": {"valid": ok, "page_type": "product" if ok else "other", "reason": "scripted"},
        "Stage1Check": {"passes": ok, "evaluation_type": "holistic", "reasoning": "scripted",
                        "violation_found": False},
        "GroundedStage1Check": {"passes": ok, "evaluation_type": "per_product_all", "required_pass_count": -1,
                                "reasoning": "scripted",
                                "recommendations_checked": [{"name": "The Everyday Pick", "meets_criterion": ok},
                                                            {"name": "The Budget Pick", "meets_criterion": ok}]},
        "SourceCheck": {"verified": ok, "reason": "scripted"},
    }
    if name not in replies:
        raise ValueError(f"unexpected judge schema {name!r}")
    return json.dumps(replies[name])


def serve_main(args: argparse.Namespace) -> None:
    """Child mode: one ScriptedServer until stdin closes; print ``URL <base_url>``; log every answer."""
    from metis_pytest.testing.scripted_server import ScriptedServer

    lock = threading.Lock()
    log = open(args.log, "a", buffering=1)  # noqa: SIM115  (open for the server's life)

    def record(kind: str) -> None:
        with lock:
            log.write(json.dumps({"t": time.time(), "kind": kind}) + "\n")

    def agent(body: dict[str, Any]) -> str:
        record("agent")
        return AGENT_ANSWER

    def judge(body: dict[str, Any]) -> str:
        name = ((body.get("response_format") or {}).get("json_schema") or {}).get("name", "?")
        record(f"judge:{name}")
        return judge_reply(body)

    server = ScriptedServer(default=agent if args.serve == "agent" else judge, latency=args.latency)
    with server:
        print(f"URL {server.base_url}", flush=True)
        sys.stdin.read()  # the parent closes our stdin (or dies) to stop us
    log.close()


@contextmanager
def scripted_server(kind: str, latency: float, log: Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """Start ``--serve kind`` as a child process; yield its base URL; stop it by closing its stdin."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--serve", kind, "--latency", str(latency),
           "--log", str(log)]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if not line.startswith("URL "):
            raise RuntimeError(f"{kind} server did not start: {line!r} (exit {proc.poll()})")
        yield line[4:], proc
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.terminate()
            proc.wait(5)


def machine_busy_s() -> float | None:
    """CPU seconds the whole machine has spent busy (all cores, /proc/stat), or None off Linux."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float | None:
    """utime + stime of one process (/proc/<pid>/stat), or None."""
    try:
        parts = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def wait_for_quiet(max_wait_s: float, busy_cores: float = 0.25, window_s: float = 2.0) -> float:
    """Wait (up to ``max_wait_s``) until the machine uses under ``busy_cores`` cores over ``window_s``;
    return the seconds waited. Other people's tests on a 2-core machine would swamp the numbers."""
    start = time.perf_counter()
    while time.perf_counter() - start < max_wait_s:
        before = machine_busy_s()
        time.sleep(window_s)
        after = machine_busy_s()
        if before is None or after is None or (after - before) / window_s < busy_cores:
            break
    return time.perf_counter() - start


def children_cpu_s() -> float:
    t = os.times()
    return t.children_user + t.children_system


def read_log(path: Path, start: float, end: float) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            entry = json.loads(line)
            if start <= entry["t"] <= end:
                out.append(entry)
    return out


# --------------------------------------------------------------------------- one pytest run


def empty_snapshot(path: Path) -> Path:
    """A valid snapshot file with nothing recorded, for ``--ace-snapshot`` (an existing file: replay)."""
    from metis_pytest.tools.snapshot import Snapshot

    snap = Snapshot(path, "record")
    snap.close()
    if not path.exists():
        raise RuntimeError(f"Snapshot(...).close() wrote nothing at {path}")
    return path


def variant_name(workers: int) -> str:
    return "serial" if workers == 0 else f"-n {workers}"


def pytest_command(args: argparse.Namespace, workers: int, out_dir: Path, agent_url: str, judge_url: str,
                   snapshot: Path) -> list[str]:
    cmd = [sys.executable, "-m", "pytest", "evals/ace", "-q", "-p", "no:cacheprovider",
           "--output-dir", str(out_dir), "--dataset", str(args.dataset), "--domains", args.domains,
           "--backend", "openai", "--api-base", agent_url, "--model", AGENT_MODEL,
           "--judge-model", JUDGE_MODEL, "--judge-backend", "openai", "--judge-api-base", judge_url,
           "--concurrency", "1", "--ace-snapshot", str(snapshot)]
    return cmd + (["-n", str(workers)] if workers else [])


OUTCOME_RE = re.compile(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed)")


def outcomes(stdout: str) -> dict[str, int]:
    """Counts from pytest's last summary line (``== 40 passed in 30.1s ==``)."""
    lines = [ln for ln in stdout.splitlines() if re.search(r"\d+ (passed|failed|error)", ln)]
    counts: dict[str, int] = {}
    for number, word in OUTCOME_RE.findall(lines[-1] if lines else ""):
        counts["errors" if word.startswith("error") else word] = int(number)
    return counts


def phases(entries: list[dict[str, Any]], start: float, end: float, latency: float) -> dict[str, Any]:
    """Start-up / active / tail of one run from the servers' answer log, and requests in flight."""
    if not entries:
        return {"requests": 0}
    answers = sorted(e["t"] for e in entries)
    arrivals = [t - latency for t in answers]
    events = sorted([(a, 1) for a in arrivals] + [(t, -1) for t in answers])
    in_flight = peak = 0
    for _, step in events:
        in_flight += step
        peak = max(peak, in_flight)
    first, last = min(arrivals), max(answers)
    agent = sorted(e["t"] for e in entries if e["kind"] == "agent")
    kinds: dict[str, int] = {}
    for e in entries:
        kinds[e["kind"]] = kinds.get(e["kind"], 0) + 1
    busy = _union_length(list(zip(arrivals, answers)))
    return {"requests": len(entries), "agent_requests": len(agent), "judge_requests": len(entries) - len(agent),
            "by_kind": kinds, "startup_s": first - start, "active_s": last - first, "tail_s": end - last,
            "first_agent_s": (agent[0] - latency - start) if agent else None,
            "peak_in_flight": peak, "latency_busy_s": busy,
            "mean_in_flight": sum(b - a for a, b in zip(arrivals, answers)) / (last - first) if last > first else None}


def _union_length(intervals: list[tuple[float, float]]) -> float:
    """Seconds during which at least one request was waiting on the server."""
    total, cur_a, cur_b = 0.0, None, None
    for a, b in sorted(intervals):
        if cur_b is None or a > cur_b:
            if cur_b is not None:
                total += cur_b - cur_a  # type: ignore[operator]
            cur_a, cur_b = a, b
        else:
            cur_b = max(cur_b, b)
    if cur_b is not None:
        total += cur_b - cur_a  # type: ignore[operator]
    return total


def rows_by_worker(rows_path: Path, started_at: float) -> dict[str, Any]:
    """Items each process ran, and when its first and last row were recorded (s after process start)."""
    if not rows_path.exists():
        return {}
    out: dict[str, Any] = {}
    for line in rows_path.read_text().splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        entry = out.setdefault(str(row.get("worker")), {"items": 0, "first_row_s": None, "last_row_s": None})
        entry["items"] += 1
        t = row.get("t")
        if isinstance(t, (int, float)):
            rel = t - started_at
            entry["first_row_s"] = rel if entry["first_row_s"] is None else min(entry["first_row_s"], rel)
            entry["last_row_s"] = rel if entry["last_row_s"] is None else max(entry["last_row_s"], rel)
    return dict(sorted(out.items()))


def run_once(args: argparse.Namespace, workers: int, tmp: Path, index: int, urls: tuple[str, str],
             snapshot: Path, logs: tuple[Path, Path], server_pids: tuple[int, ...], mpl_dir: Path | None
             ) -> dict[str, Any]:
    """One fresh pytest process; its wall, outcomes, summary and phase split."""
    run_dir = tmp / f"run{index:02d}-{variant_name(workers).replace(' ', '')}"
    out_dir, home = run_dir / "out", run_dir / "home"
    home.mkdir(parents=True)
    env = dict(os.environ)
    env.update(HOME=str(home), LITELLM_LOCAL_MODEL_COST_MAP="True", EP_NO_UPLOAD="1")
    if mpl_dir is not None:
        env["MPLCONFIGDIR"] = str(mpl_dir)  # one warmed font cache for every run (see --private-mpl-cache)
    env.pop("PYTEST_ADDOPTS", None)
    env.pop("PYTEST_XDIST_AUTO_NUM_WORKERS", None)
    cmd = pytest_command(args, workers, out_dir, urls[0], urls[1], snapshot)
    servers0 = [process_cpu_s(pid) for pid in server_pids]
    busy0, cpu0 = machine_busy_s(), children_cpu_s()
    started_at = time.time()
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=args.timeout)
        rc, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        rc = None
        stdout = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        stderr = f"timed out after {args.timeout}s"
    wall = time.perf_counter() - t0
    ended_at = time.time()
    pytest_cpu = children_cpu_s() - cpu0
    busy1 = machine_busy_s()
    servers1 = [process_cpu_s(pid) for pid in server_pids]
    server_cpu = sum(b - a for a, b in zip(servers0, servers1) if a is not None and b is not None)
    machine = busy1 - busy0 if busy0 is not None and busy1 is not None else None
    time.sleep(0.05)  # let the servers flush their last log lines
    entries = read_log(logs[0], started_at, ended_at) + read_log(logs[1], started_at, ended_at)
    summary_path = out_dir / "ace" / AGENT_MODEL / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else None
    pytest_line = next((ln for ln in reversed(stdout.splitlines()) if " in " in ln and "passed" in ln), "")
    result: dict[str, Any] = {
        "variant": variant_name(workers), "workers": workers, "wall_s": wall, "rc": rc,
        "outcomes": outcomes(stdout), "pytest_line": pytest_line.strip("= "),
        "summary": {k: summary.get(k) for k in SUMMARY_KEYS} if summary else None,
        "summary_workers": summary.get("workers") if summary else None,
        "rows_by_worker": rows_by_worker(out_dir / "ace" / AGENT_MODEL / "rows.jsonl", started_at),
        "phases": phases(entries, started_at, ended_at, args.latency),
        "cpu": {"pytest_s": pytest_cpu, "servers_s": server_cpu, "machine_busy_s": machine,
                "foreign_s": None if machine is None else machine - pytest_cpu - server_cpu,
                "pytest_cores_used": pytest_cpu / wall},
        "command": " ".join(cmd[1:]),
    }
    if rc != 0 or summary is None:
        result["failed"] = f"exit {rc}: {(stdout[-1500:] + stderr[-1500:]).strip()}"
    return result


# --------------------------------------------------------------------------- report


def summarize(runs: list[dict[str, Any]], variants: list[int], n_tasks: int) -> dict[str, Any]:
    serial_runs = [r for r in runs if r["workers"] == 0 and "failed" not in r]
    reference = serial_runs[0]["summary"] if serial_runs else None
    out: dict[str, Any] = {}
    for workers in variants:
        name = variant_name(workers)
        mine = [r for r in runs if r["workers"] == workers]
        good = [r for r in mine if "failed" not in r]
        entry: dict[str, Any] = {"runs": len(mine), "ok_runs": len(good),
                                 "problems": [r["failed"][:400] for r in mine if "failed" in r]}
        if good:
            walls = [r["wall_s"] for r in good]
            entry.update(wall_median_s=statistics.median(walls), wall_min_s=min(walls), walls_s=walls)
            entry["passed"] = [r["outcomes"].get("passed", 0) for r in good]
            entry["failed_tests"] = [r["outcomes"].get("failed", 0) + r["outcomes"].get("errors", 0) for r in good]
            entry["summary_identical_to_serial"] = (
                None if reference is None else all(r["summary"] == reference for r in good))
            entry["differing_keys"] = sorted({k for r in good for k in SUMMARY_KEYS
                                              if reference is not None and r["summary"].get(k) != reference.get(k)})
            for key in ("startup_s", "active_s", "tail_s", "first_agent_s", "peak_in_flight", "mean_in_flight",
                        "requests", "judge_requests", "agent_requests"):
                values = [r["phases"].get(key) for r in good if r["phases"].get(key) is not None]
                if values:
                    entry[f"{key}_median"] = statistics.median(values)
            for key in ("pytest_s", "foreign_s"):
                values = [r["cpu"].get(key) for r in good if r["cpu"].get(key) is not None]
                if values:
                    entry[f"cpu_{key}_median"] = statistics.median(values)
            entry["cpu_foreign_s_max"] = max((r["cpu"].get("foreign_s") or 0.0) for r in good)
        out[name] = entry
    serial = out.get("serial", {}).get("wall_median_s")
    for entry in out.values():
        if serial and entry.get("wall_median_s"):
            entry["speedup_vs_serial"] = serial / entry["wall_median_s"]
            entry["speedup_vs_serial_min"] = out["serial"]["wall_min_s"] / entry["wall_min_s"]
        s_active = out.get("serial", {}).get("active_s_median")
        if s_active and entry.get("active_s_median"):
            entry["active_speedup_vs_serial"] = s_active / entry["active_s_median"]
    n4 = out.get("-n 4", {})
    return {"variants": out, "n_tasks": n_tasks, "target_speedup_n4": TARGET_SPEEDUP_N4,
            "n4_speedup": n4.get("speedup_vs_serial"),
            "n4_target_met": bool(n4.get("speedup_vs_serial") and n4["speedup_vs_serial"] >= TARGET_SPEEDUP_N4),
            "n4_summary_identical": n4.get("summary_identical_to_serial"),
            "reference_summary": reference}


def fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_table(report: dict[str, Any]) -> str:
    s = report["summary"]
    p = report["parameters"]
    lines = [f"pytest evals/ace, {s['n_tasks']} tasks ({p['domains']}), latency {p['latency_s']:g}s on both servers, "
             f"--concurrency 1, repeats {p['repeats']}",
             f"{'variant':<8}{'wall med':>10}{'wall min':>10}{'speed-up':>10}{'pass/fail':>12}{'summary==serial':>17}"
             f"{'start-up':>10}{'active':>9}{'tail':>7}{'in flight':>11}{'requests':>10}{'CPU s':>8}{'foreign':>9}"]
    for name, v in s["variants"].items():
        pf = "-" if "passed" not in v else "/".join(
            f"{a}/{b}" for a, b in sorted(set(zip(v["passed"], v["failed_tests"]))))
        same = v.get("summary_identical_to_serial")
        lines.append(
            f"{name:<8}{fmt(v.get('wall_median_s'), '.2f'):>10}{fmt(v.get('wall_min_s'), '.2f'):>10}"
            f"{fmt(v.get('speedup_vs_serial'), '.2f'):>10}{pf:>12}"
            f"{('-' if same is None else 'yes' if same else 'NO ' + ','.join(v['differing_keys'])):>17}"
            f"{fmt(v.get('startup_s_median'), '.2f'):>10}{fmt(v.get('active_s_median'), '.2f'):>9}"
            f"{fmt(v.get('tail_s_median'), '.2f'):>7}{fmt(v.get('mean_in_flight_median'), '.2f'):>11}"
            f"{fmt(v.get('requests_median'), '.0f'):>10}{fmt(v.get('cpu_pytest_s_median'), '.1f'):>8}"
            f"{fmt(v.get('cpu_foreign_s_max'), '.1f'):>9}")
        for problem in v["problems"]:
            lines.append(f"    problem: {problem[:300]}")
    lines.append(f"-n 4 speed-up {fmt(s['n4_speedup'], '.2f')}x (target >= {TARGET_SPEEDUP_N4:g}x: "
                 f"{'met' if s['n4_target_met'] else 'NOT met'}); merged summary identical to serial: "
                 f"{s['n4_summary_identical']}")
    lines.append("start-up = process start -> first request; active = first request -> last answer; "
                 "tail = last answer -> exit; in flight = mean requests waiting on the servers while active")
    lines.append("CPU s = user+sys of the pytest process tree (median); foreign = max CPU s used by other "
                 "processes on the machine during a run (not pytest, not the two servers)")
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> None:
    """Stacked bars per variant (start-up, active, tail: medians), the min wall as an error bar, the
    3x target (serial median / 3) as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = report["summary"]["variants"]
    names = [n for n, v in variants.items() if v.get("wall_median_s") is not None]
    medians = [variants[n]["wall_median_s"] for n in names]
    mins = [variants[n]["wall_min_s"] for n in names]
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    bottom = [0.0] * len(names)
    parts = (("startup_s_median", "start-up (process start -> first request)", "tab:gray"),
             ("active_s_median", "active (first request -> last answer)", "tab:blue"),
             ("tail_s_median", "tail (last answer -> exit)", "tab:orange"))
    for key, label, color in parts:
        heights = [variants[n].get(key) or 0.0 for n in names]
        ax.bar(names, heights, bottom=bottom, color=color, label=label)
        for i, h in enumerate(heights):
            if h >= 2.5:
                ax.text(i, bottom[i] + h / 2, f"{h:.1f}", ha="center", va="center", fontsize=8, color="white")
        bottom = [b + h for b, h in zip(bottom, heights)]
    ax.errorbar(names, medians, yerr=[[m - lo for m, lo in zip(medians, mins)], [0] * len(names)], fmt="none",
                ecolor="black", capsize=6)
    for i, (m, n) in enumerate(zip(medians, names)):
        sp = variants[n].get("speedup_vs_serial")
        ax.text(i, max(m, bottom[i]) + 0.5, f"{m:.1f}s" + (f" ({sp:.2f}x)" if sp and n != "serial" else ""),
                ha="center", va="bottom", fontsize=9)
    if "serial" in variants and variants["serial"].get("wall_median_s"):
        target = variants["serial"]["wall_median_s"] / TARGET_SPEEDUP_N4
        ax.axhline(target, color="red", linestyle="--", label=f"3x target for -n 4: serial / 3 = {target:.1f}s")
    s = report["summary"]
    ax.set_title(f"pytest evals/ace, {s['n_tasks']} tasks, --concurrency 1, 0.2 s latency (wall = whole process)\n"
                 f"-n 4: {fmt(s['n4_speedup'], '.2f')}x ({'met' if s['n4_target_met'] else 'NOT met'}); "
                 f"merged summary identical to serial: {s['n4_summary_identical']}", fontsize=10)
    ax.set_ylabel("seconds (medians; error bar down to the min wall)")
    ax.set_ylim(0, max(max(medians), max(bottom)) * 1.3)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def count_tasks(args: argparse.Namespace) -> int:
    from evals.ace import dataset

    wanted = [d.strip().lower() for d in args.domains.split(",") if d.strip()]
    total = 0
    for domain in wanted:
        path = Path(args.dataset) / f"ACE-{dataset.DISPLAY_NAMES.get(domain, domain.capitalize())}.csv"
        if path.exists():
            total += len(list(dataset.load_csv(path)))
    return total


def warm_mpl_cache(path: Path) -> Path:
    """A matplotlib config/cache folder with its font cache built, shared by every run.

    A private HOME would otherwise make every run rebuild matplotlib's font list (~4 s here) when the
    summary plot is drawn: a first-run-only cost no user pays twice, and the same in every variant."""
    path.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, MPLCONFIGDIR=str(path))
    subprocess.run([sys.executable, "-c", "import matplotlib; matplotlib.use('Agg'); import matplotlib.font_manager"],
                   env=env, check=True, capture_output=True)
    return path


IMPORT_PROBES: tuple[str, ...] = ("litellm", "eval_protocol.models", "evals.ace.test_ace")


def import_probe(module: str, home: Path) -> dict[str, Any]:
    """Wall and CPU of ``import <module>`` in a fresh interpreter: what every pytest process (the
    controller and each xdist worker) pays before its first item."""
    env = dict(os.environ, HOME=str(home), LITELLM_LOCAL_MODEL_COST_MAP="True", EP_NO_UPLOAD="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    cpu0, t0 = children_cpu_s(), time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", f"import {module}"], cwd=REPO, env=env, capture_output=True)
    return {"module": module, "wall_s": time.perf_counter() - t0, "cpu_s": children_cpu_s() - cpu0,
            "ok": proc.returncode == 0}


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds: the running pytest child is killed, the servers stopped


def parent_main(args: argparse.Namespace) -> None:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    variants = [0] + [int(w) for w in args.workers.split(",") if w.strip()]
    n_tasks = count_tasks(args)
    runs: list[dict[str, Any]] = []
    discarded: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="metis-ace-par-") as tmp_name:
        tmp = Path(tmp_name)
        snapshot = empty_snapshot(tmp / "empty_snapshot.json")
        logs = (tmp / "agent.log", tmp / "judge.log")
        mpl_dir = None if args.private_mpl_cache else warm_mpl_cache(tmp / "mplconfig")
        with scripted_server("agent", args.latency, logs[0]) as (agent_url, agent_proc), \
                scripted_server("judge", args.latency, logs[1]) as (judge_url, judge_proc):
            pids = (agent_proc.pid, judge_proc.pid)
            print(f"agent {agent_url}  judge {judge_url}  tasks {n_tasks}", file=sys.stderr)
            total = args.repeats * len(variants)
            for repeat in range(args.repeats):
                for workers in variants:
                    for attempt in range(args.retries + 1):
                        waited = wait_for_quiet(args.quiet_wait)
                        result = run_once(args, workers, tmp, len(runs) + len(discarded), (agent_url, judge_url),
                                          snapshot, logs, pids, mpl_dir)
                        result.update(repeat=repeat, attempt=attempt, waited_for_quiet_s=waited)
                        foreign = result["cpu"]["foreign_s"]
                        if foreign is None or foreign <= args.max_foreign_cpu or attempt == args.retries:
                            break
                        print(f"    {result['variant']}: {foreign:.1f} CPU s used by other processes during the "
                              f"run (> {args.max_foreign_cpu:g}): discarded, run again", file=sys.stderr)
                        discarded.append(result)
                    runs.append(result)
                    ph = result["phases"]
                    print(f"[{len(runs)}/{total}] {result['variant']:<7} wall {result['wall_s']:6.2f}s  "
                          f"{result['pytest_line'] or result.get('failed', '')[:200]}  start-up "
                          f"{fmt(ph.get('startup_s'), '.2f')}s active {fmt(ph.get('active_s'), '.2f')}s "
                          f"requests {ph.get('requests')} CPU {result['cpu']['pytest_s']:.1f}s "
                          f"foreign {fmt(result['cpu']['foreign_s'], '.1f')}s", file=sys.stderr)
        home = tmp / "probe-home"
        home.mkdir()
        probes = [import_probe(m, home) for m in IMPORT_PROBES]
    summary = summarize(runs, variants, n_tasks)
    report = {
        "benchmark": "ace_parallel",
        "parameters": {"dataset": str(args.dataset), "domains": args.domains, "latency_s": args.latency,
                       "repeats": args.repeats, "variants": [variant_name(w) for w in variants],
                       "concurrency": 1, "agent_answer": AGENT_ANSWER,
                       "command_serial": runs[0]["command"] if runs else None},
        "notes": [
            "wall = the whole `python -m pytest evals/ace ...` child process, start to exit (time.perf_counter)",
            "each run: fresh --output-dir and HOME; LITELLM_LOCAL_MODEL_COST_MAP=True, EP_NO_UPLOAD=1; "
            "an empty replay snapshot via --ace-snapshot",
            "agent: one plain final answer per task (no tools, no URLs); judge: schema-valid JSON, pass/fail "
            "from a hash of the prompt (order-independent)",
            "MPLCONFIGDIR: one matplotlib cache warmed before the runs and shared (unless --private-mpl-cache)",
            "CPU: pytest_s = user+sys of the pytest process tree (os.times children delta); foreign_s = machine "
            "busy time (/proc/stat) minus pytest and the two servers: other people's load during the run",
            "before each run the bench waits (--quiet-wait) for the machine to be idle; a run during which other "
            "processes used > --max-foreign-cpu CPU s is discarded (kept under discarded_runs) and run again",
            "phases come from the servers' answer logs: start-up = process start -> first request arrival, "
            "active = first arrival -> last answer, tail = last answer -> process exit",
        ],
        "machine": machine_info(("metis-pytest", "eval-protocol", "pytest", "pytest-xdist", "litellm", "aiohttp")),
        "summary": summary,
        "import_probes": probes,
        "runs": runs,
        "discarded_runs": discarded,
    }
    (out / "ace_parallel.json").write_text(json.dumps(report, indent=2))
    plot(report, out / "ace_parallel.png")
    print(format_table(report))
    print("fresh interpreter: " + ", ".join(f"import {p['module']} {p['wall_s']:.2f}s wall / {p['cpu_s']:.2f}s CPU"
                                            for p in probes))
    print(f"wrote {out / 'ace_parallel.json'} and {out / 'ace_parallel.png'}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default=str(default_dataset()), help="folder of ACE-<Domain>.csv files")
    parser.add_argument("--domains", default="food,gaming,shopping", help="ACE domains (comma list)")
    parser.add_argument("--workers", default="2,4", help="xdist worker counts to compare with serial (comma list)")
    parser.add_argument("--latency", type=float, default=0.2, help="scripted latency of both servers (s)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per variant, interleaved")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds before one pytest run is killed")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"), help="output folder")
    parser.add_argument("--quiet-wait", type=float, default=180.0,
                        help="before each run, wait up to this long for the machine to be idle (s)")
    parser.add_argument("--max-foreign-cpu", type=float, default=5.0,
                        help="a run during which other processes used more CPU seconds than this is run again")
    parser.add_argument("--retries", type=int, default=3, help="re-runs of a run spoiled by foreign load")
    parser.add_argument("--private-mpl-cache", action="store_true",
                        help="do not share a warmed MPLCONFIGDIR: every run rebuilds matplotlib's font cache")
    parser.add_argument("--replot", metavar="JSON", help="only redraw the PNG beside an existing ace_parallel.json")
    parser.add_argument("--serve", choices=("agent", "judge"), help=argparse.SUPPRESS)  # server child mode
    parser.add_argument("--log", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.latency < 0:
        parser.error("--repeats must be >= 1 and --latency >= 0")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.serve:
        serve_main(args)
    elif args.replot:
        source = Path(args.replot)
        plot(json.loads(source.read_text()), source.with_suffix(".png"))
    else:
        parent_main(args)


if __name__ == "__main__":
    main()

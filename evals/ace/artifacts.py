"""The files ACE's seed pipeline wrote for every task, which its users read and diff.

    <output-dir>/ace/<model>/<domain>/task_<id>/[run_<k>/]
      trace.json                  # prompt, response, every message and tool call, the scoring breakdown
      2_scraped_sources.json      # what the grader read: every page the agent read, full text
      3_autograder_results.json   # per criterion: score, route, stage verdicts, reasoning, judge model, prompt version

``run_<k>/`` appears when ``--runs`` is more than 1. Each file is written atomically, so a killed run
leaves whole files or none.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from metis_pytest.store.runs import slug


def task_dir(output_dir: Path, model: str, domain: str, task_id: str, run_index: int, runs: int) -> Path:
    base = output_dir / "ace" / slug(model) / domain / f"task_{task_id}"
    return base / f"run_{run_index}" if runs > 1 else base


def _write(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def write_task(folder: Path, *, prompt: str, response: str, messages: Sequence[dict[str, Any]],
               agent: dict[str, Any], sources: Sequence[dict[str, Any]], grade: dict[str, Any],
               breakdown: dict[str, Any]) -> None:
    """Write the three files of one task (and run)."""
    tool_calls = [c for c in agent.get("tool_calls") or []]
    _write(folder / "trace.json", {
        "prompt": prompt,
        "response": response,
        "messages": list(messages),
        "tool_calls": tool_calls,
        "turns": agent.get("turns"),
        "turn_cap_reached": agent.get("turn_cap_reached"),
        "scoring": breakdown,
    })
    _write(folder / "2_scraped_sources.json", list(sources))
    _write(folder / "3_autograder_results.json", grade)

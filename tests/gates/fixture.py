"""The committed CI fixture: a recorded GSM8K run and its baseline, and how they were made.

The completions come from the scripted server (metis_pytest.testing.ScriptedServer), not from a
model: :func:`mixed_answer` scripts a realistic mix over the 12 rows of datasets/gsm8k_smoke.jsonl,
right and wrong, so a scorer change moves the numbers (9 of 12 right by the ``<answer>`` tag, one
right only by flexible-extract, one right only by strict-match...). Regenerate both with::

    LITELLM_LOCAL_MODEL_COST_MAP=True EP_NO_UPLOAD=1 .venv/bin/python -m tests.gates.fixture

which runs ``pytest evals/gsm8k`` against the scripted server into a temporary folder, keeps only
what ``--replay`` reads (``rows.jsonl``, ``summary.json``, ``conditions/``) with the server's address
taken out, and saves the baseline from a replay of that copy.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "datasets" / "gsm8k_smoke.jsonl"
MODEL = "scripted-mix"
RECORDED = REPO / "baselines" / "gsm8k" / "recorded" / MODEL
BASELINE = REPO / "baselines" / "gsm8k" / f"{MODEL}.json"
# What a replay of the recording needs besides --replay: the model label it was recorded under, its data.
REPLAY_ARGS = ("--model", MODEL, "--dataset", "datasets/gsm8k_smoke.jsonl")


def _golds() -> list[tuple[str, str]]:
    rows = [json.loads(line) for line in SMOKE.read_text().splitlines() if line.strip()]
    return [(r["question"], r["answer"].rsplit("####", 1)[1].strip()) for r in rows]


def mixed_answer(body: dict[str, Any]) -> str:
    """A scripted completion for one GSM8K request: right for most rows, wrong in several ways."""
    question = next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user")
    golds = _golds()
    i = next(k for k, (q, _) in enumerate(golds) if q == question)
    gold = golds[i][1]
    number = Decimal(gold.replace(",", ""))
    if i == 7:  # an arithmetic slip
        return f"<think>Adding up.</think>\n<answer>{number + 1}</answer>"
    if i == 8:  # right number, no tag: only flexible-extract credits it
        return f"Working it out step by step, the answer is {gold}."
    if i == 9:  # right, and the lm-eval '#### N' line too: strict-match credits it
        return f"<think>Done.</think>\n#### {gold}\n<answer>{gold}</answer>"
    if i == 10:  # the right number in the reasoning, a wrong one tagged
        return f"<think>Maybe {gold}, or twice that.</think>\n<answer>{number * 2}</answer>"
    if i == 11:  # right, then a trailing number that flexible-extract takes instead
        return f"<think>Two steps.</think>\n<answer>{gold}</answer> (checked in 2 steps)"
    return f"<think>Step by step.</think>\n<answer>{gold}</answer>"


def scrub(model_dir: Path, dest: Path) -> None:
    """Copy what ``--replay`` reads from a run's model folder, without the server's address."""
    if dest.exists():
        shutil.rmtree(dest)
    (dest / "conditions").mkdir(parents=True)
    shutil.copy(model_dir / "rows.jsonl", dest / "rows.jsonl")
    summary = json.loads((model_dir / "summary.json").read_text())
    summary["completion_params"].pop("api_base", None)
    (dest / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    cond_path = model_dir / "conditions" / f"{summary['score_key']}.json"
    cond = json.loads(cond_path.read_text())
    cond["completion_params"].pop("api_base", None)
    (dest / "conditions" / cond_path.name).write_text(json.dumps(cond, indent=2, sort_keys=True) + "\n")


def _pytest(*args: str, cwd: Path) -> None:
    subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args], cwd=cwd, check=True)


def main() -> None:
    from metis_pytest.testing import ScriptedServer

    with tempfile.TemporaryDirectory() as tmp, ScriptedServer(default=mixed_answer) as server:
        out = Path(tmp) / "out"
        _pytest("evals/gsm8k", "--backend", "openai", "--api-base", server.base_url, "--model", MODEL,
                "--dataset", "datasets/gsm8k_smoke.jsonl", "--output-dir", str(out), cwd=REPO)
        scrub(out / "gsm8k" / MODEL, RECORDED)
    with tempfile.TemporaryDirectory() as tmp:
        _pytest("evals/gsm8k", *REPLAY_ARGS, "--replay", str(RECORDED), "--output-dir", tmp,
                "--metis-save-baseline", cwd=REPO)
    print(f"wrote {RECORDED.relative_to(REPO)} and {BASELINE.relative_to(REPO)}")


if __name__ == "__main__":
    main()

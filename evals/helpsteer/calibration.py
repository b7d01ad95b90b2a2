"""How far to trust the attribute judge: it rates the dataset's own responses, and its ratings are compared
with the human ones, per attribute: Spearman's rho, Pearson's r and the mean absolute error.

::

    python -m evals.helpsteer.calibration ../shared/datasets/helpsteer/helpsteer2_sample70.jsonl \\
        --judge-model openai/gpt-4o-mini --out runs/helpsteer/calibration.json

Responses the judge never rated in its JSON contract are left out of the statistics and counted
(``invalid``), never scored 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from metis_pytest.judge import JudgeClient

from .dataset import Record, load
from .judge import PROMPT_VERSION, rate
from .scoring import calibration

__all__ = ["calibrate"]


async def calibrate(judge: JudgeClient, records: Sequence[Record]) -> dict[str, Any]:
    """Rate every record's response with ``judge`` and compare with its human ratings (see the module)."""
    verdicts = await asyncio.gather(*(rate(judge, r.prompt, r.response) for r in records))
    judged, human, invalid = [], [], 0
    for record, verdict in zip(records, verdicts):
        if verdict.valid and verdict.data is not None:
            judged.append(verdict.data.as_dict())
            human.append(record.ratings)
        else:
            invalid += 1
    return {"judge_model": judge.target.litellm_model, "prompt_version": PROMPT_VERSION, "n": len(judged),
            "invalid": invalid, "attributes": calibration(judged, human)}


def main(argv: Sequence[str] | None = None) -> int:
    from metis_pytest.rollout.single_turn import target_from_params

    parser = argparse.ArgumentParser(prog="python -m evals.helpsteer.calibration")
    parser.add_argument("source", help="A HelpSteer .jsonl, or hf / nvidia/HelpSteer / nvidia/HelpSteer2")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--max-rows", type=int)
    parser.add_argument("--judge-model", required=True, help="LiteLLM model name (openai/gpt-4o-mini)")
    parser.add_argument("--judge-api-base", help="An OpenAI-compatible URL serving the judge")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    records = load(args.source, split=args.split)[: args.max_rows]
    target = target_from_params({"model": args.judge_model, "api_base": args.judge_api_base})

    async def run() -> dict[str, Any]:
        async with JudgeClient(target) as judge:
            return await calibrate(judge, records)

    report = asyncio.run(run())
    text = json.dumps(report, indent=1)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

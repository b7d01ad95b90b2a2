"""Policies over the w-grid: resumable generation for one prompt set, folders of generations, the
same-prompt check.

A policy's generations are one JSONL file, a line ``{"prompt_id", "prompt", "response"}`` per answered
prompt (``prompt_id`` is :func:`evals.helpsteer.dataset.prompt_id`). :func:`generate` appends each
response the moment it arrives (one ``write`` of a whole line, flushed), so a run that is killed keeps
every finished line; run again, it skips the prompts already in the file and asks only for the rest.
A last line cut off by the kill is dropped (and asked again). A folder ``DIR/<policy>.jsonl`` is what
``pytest evals/helpsteer --helpsteer-generations DIR --model <policy>,...`` scores.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp

from metis_pytest.backends.base import ModelTarget
from metis_pytest.rollout.http import RetryPolicy, complete

from .dataset import DatasetError, prompt_id

__all__ = ["PromptMismatch", "check_same_prompts", "generate", "read_generations"]


class PromptMismatch(ValueError):
    """Policies that did not all answer the same prompts (their scores would not compare)."""


def read_generations(path: Path) -> dict[str, str]:
    """``prompt_id -> response`` of one policy's file ({} when it does not exist). A torn last line (no
    newline, not JSON) is ignored; any other bad line is a ``DatasetError`` naming file and line."""
    if not path.is_file():
        return {}
    out: dict[str, str] = {}
    lines = path.read_text(encoding="utf-8").split("\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            if number == len(lines):  # the last line, without its newline: a write cut short
                continue
            raise DatasetError(f"{path} line {number}: invalid JSON") from None
        for field in ("prompt_id", "response"):
            if not isinstance(record.get(field), str):
                raise DatasetError(f"{path} line {number}: field '{field}' must be a string")
        out[record["prompt_id"]] = record["response"]
    return out


def _drop_torn_tail(path: Path) -> None:
    if path.is_file():
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            path.write_bytes(data[: data.rfind(b"\n") + 1])


async def generate(target: ModelTarget, prompts: Sequence[str], path: Path, *, params: Mapping[str, Any],
                   policy: RetryPolicy | None = None, concurrency: int = 4) -> dict[str, str]:
    """Answer every prompt not yet in ``path`` with ``target`` (a user turn each), appending as they finish;
    returns ``prompt_id -> response`` for all of ``prompts``. Duplicate prompts are asked once. A request
    that fails after its retries raises (``RequestFailed``) once the others in flight are done; what
    finished is kept in the file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _drop_torn_tail(path)
    done = read_generations(path)
    todo = [p for p in dict.fromkeys(prompts) if prompt_id(p) not in done]
    slots = asyncio.Semaphore(concurrency)
    public = {"model": target.litellm_model, **{k: v for k, v in params.items() if k != "model"}}
    async with aiohttp.ClientSession() as http:
        with path.open("a", encoding="utf-8") as out:

            async def one(prompt: str) -> None:
                async with slots:
                    completion = await complete(http if target.openai_wire else None, target, public,
                                                [{"role": "user", "content": prompt}], None, policy or RetryPolicy())
                response = str(completion.message.get("content") or "")
                out.write(json.dumps({"prompt_id": prompt_id(prompt), "prompt": prompt, "response": response},
                                     ensure_ascii=False) + "\n")
                out.flush()
                done[prompt_id(prompt)] = response

            results = await asyncio.gather(*(one(p) for p in todo), return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        raise errors[0]
    return {prompt_id(p): done[prompt_id(p)] for p in prompts}


def check_same_prompts(answered: Mapping[str, Sequence[str] | Mapping[str, Any]]) -> list[str]:
    """The prompt ids every policy answered (sorted); :class:`PromptMismatch`, naming each policy that lacks
    some and the first few ids it lacks, when the policies did not answer exactly the same prompts."""
    sets = {policy: set(ids) for policy, ids in answered.items()}
    if not sets:
        raise PromptMismatch("no policies to compare")
    union = set().union(*sets.values())
    problems = []
    for policy, ids in sorted(sets.items()):
        missing = sorted(union - ids)
        if missing:
            problems.append(f"{policy} lacks {len(missing)} prompt(s) the others answered ({', '.join(missing[:3])})")
    if problems:
        raise PromptMismatch("policies did not answer the same prompts: " + "; ".join(problems))
    return sorted(union)

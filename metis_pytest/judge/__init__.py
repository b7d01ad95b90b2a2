"""LLM-as-judge: a separately resolved judge target that returns validated, versioned verdicts.

See :class:`JudgeClient`. Every verdict names its judge model and prompt version
(:meth:`Verdict.record`), and an invalid judge reply never becomes a score.
"""

from __future__ import annotations

from metis_pytest.judge.cache import JudgeCache, cache_key
from metis_pytest.judge.client import (
    DEFAULT_PARAMS,
    JudgeClient,
    JudgePrompt,
    Verdict,
    extract_json,
    parse_verdict,
)

__all__ = [
    "DEFAULT_PARAMS",
    "JudgeCache",
    "JudgeClient",
    "JudgePrompt",
    "Verdict",
    "cache_key",
    "extract_json",
    "parse_verdict",
]

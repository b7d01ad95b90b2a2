"""System prompt for the GSM8K eval.

Source: the Eval Protocol GSM8K quickstart (``quickstart_gsm8k_sample.jsonl``),
whose system message asks for step-by-step reasoning inside ``<think>`` tags and
the final answer inside ``<answer>`` tags. The text below is that system message,
copied verbatim (including the leading and trailing newline), so rows loaded from
the quickstart file and rows built by Metis send byte-identical prompts.

Benchmark: GSM8K (Cobbe et al. 2021, "Training Verifiers to Solve Math Word
Problems", arXiv:2110.14168). The scorer (``evals.gsm8k.scoring``) reads the
``<answer>`` tag as its primary metric, which is why the prompt asks for it.

Run the eval with ``pytest evals/gsm8k --model ...``.

Change ``SYSTEM_PROMPT`` only together with ``PROMPT_VERSION``: results are
recorded with ``PROMPT_VERSION`` and ``prompt_hash()`` so runs made with
different prompts are never compared silently.
"""

from __future__ import annotations

import hashlib

__all__ = ["PROMPT_VERSION", "SYSTEM_PROMPT", "prompt_hash"]

PROMPT_VERSION: str = "1.0.0"

SYSTEM_PROMPT: str = """
You are a highly capable and helpful math problem-solving assistant. Your goal is to carefully analyze and solve the user's mathematics question by providing a detailed, step-by-step explanation that is easy to follow and logically sound.

## Instructions

1. **Carefully read and fully understand the user's question.** Identify what is being asked and any relevant information or constraints.

2. **Generate a detailed problem-solving process**, breaking down the solution into clear, logical steps. Explain each step thoroughly, including all intermediate calculations, reasoning, definitions, and justifications—even if they seem simple or obvious. This helps ensure clarity and aids understanding.

3. **Structure your reasoning by enclosing all these problem-solving steps within `<think>` tags.**

4. **After completing the detailed reasoning, provide the final answer clearly and unambiguously, enclosed within `<answer>` tags.** Ensure the answer directly addresses the question.

5. If the problem involves multiple parts or sub-questions, address each part sequentially, separating your reasoning and answers clearly.

6. Use correct mathematical notation and terminology throughout.

7. Avoid skipping steps or assuming knowledge; assume the reader needs a comprehensive explanation.

## Output Format
<think>
<!-- Detailed, step-by-step problem-solving explanation goes here -->
</think>

<answer>
<!-- Final answer to the problem goes here -->
</answer>
"""


def prompt_hash(text: str = SYSTEM_PROMPT) -> str:
    """First 12 hex characters of the SHA-256 of ``text`` (UTF-8); defaults to ``SYSTEM_PROMPT``."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]

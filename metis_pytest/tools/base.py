"""What a tool-calling rollout needs from its tools: OpenAI tool schemas, and one call that never raises.

A :class:`Toolbox` is made per row (its caps and its record are per conversation). The agent loop
(``metis_pytest.rollout.agent``) sends :meth:`Toolbox.schemas` with every model call and runs each
tool call through :meth:`Toolbox.call`, which always returns a :class:`ToolOutcome`: a failure (a
dead service, a 429 after retries, an unsafe URL, a cap reached) is shown to the model as a tool
error and recorded, never raised and never turned into a score.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class ToolOutcome:
    """The result of one tool call.

    ``content`` is what the model sees (truncated pages, a one-line error); ``record`` is what is kept
    with the row (the full text, the URL, timings, the error and whether it is retryable)."""

    content: str
    error: bool = False
    retryable: bool = False
    record: dict[str, Any] = field(default_factory=dict)


class Toolbox(Protocol):
    def schemas(self) -> list[dict[str, Any]]:
        """OpenAI ``tools`` entries (``{"type": "function", "function": {...}}``)."""
        ...

    async def call(self, name: str, arguments: str) -> ToolOutcome:
        """Run one tool call (``arguments`` is the model's JSON string, possibly malformed)."""
        ...

    def records(self) -> list[dict[str, Any]]:
        """Everything this toolbox did, in order (for the trace and the grader)."""
        ...

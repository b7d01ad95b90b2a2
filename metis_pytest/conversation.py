"""Conversations as stored and scored: the final text of a row, and the whole trace as plain JSON."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from eval_protocol.models import EvaluationRow, Message


def message_text(message: Message) -> str:
    content = message.content
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(getattr(part, "text", "") or "" for part in content)
    return ""


def last_assistant_text(row: EvaluationRow) -> str:
    """The final assistant message's text ('' when the model said nothing)."""
    for message in reversed(row.messages):
        if message.role == "assistant":
            return message_text(message)
    return ""


def dump_messages(row: EvaluationRow) -> list[dict[str, Any]]:
    """Every message of the row (system, user, assistant, tool calls, tool results) as JSON-safe dicts."""
    return [m.model_dump(mode="json", exclude_none=True) for m in row.messages]


def load_messages(data: list[dict[str, Any]]) -> list[Message]:
    from eval_protocol.models import Message

    return [Message.model_validate(m) for m in data]

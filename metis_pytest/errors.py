"""Errors the harness reports as one line of usage error, before any request is sent."""

from __future__ import annotations

# Every character str.splitlines() breaks at: a message keeps them escaped, so it stays one line.
LINE_BREAKS = frozenset("\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029")


def one_line(message: str) -> str:
    """``message`` with every line break escaped (``\\n``), so a usage error is one line."""
    return "".join(ascii(char)[1:-1] if char in LINE_BREAKS else char for char in message)


class DatasetError(ValueError):
    """A dataset file or record that cannot be turned into rows; the message names the file (or Hub
    dataset), the line or row, and the field, and is always one line (a quoted field's line breaks
    are escaped). Benchmarks' loaders raise it (or a subclass)."""

    def __init__(self, message: object = "") -> None:
        super().__init__(one_line(str(message)))


DATA_ERRORS: tuple[type[BaseException], ...] = (DatasetError,)

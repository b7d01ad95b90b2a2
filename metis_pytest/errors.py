"""Errors the harness reports as one line of usage error, before any request is sent."""

from __future__ import annotations


class DatasetError(ValueError):
    """A dataset file or record that cannot be turned into rows; the message names the file (or Hub
    dataset), the line or row, and the field. Benchmarks' loaders raise it (or a subclass)."""


DATA_ERRORS: tuple[type[BaseException], ...] = (DatasetError,)

"""A disk cache of valid judge verdicts: one JSON file per key, written atomically.

The key is the sha256 of everything that decides what the judge is asked (judge model, prompt name
and version, the rendered messages, the output schema, the sampling params), so a prompt edit that
forgets to bump the version still misses (its rendered messages differ), and a version bump misses
even when the text did not change. Only valid verdicts are stored: a judge that failed this time
gets asked again next time. No key or credential is part of the key material or of an entry (the
transport reads the API key from the environment when it builds a request).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

CACHE_FORMAT = 1
_KEY = re.compile(r"[0-9a-f]{64}")


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no insignificant whitespace: equal values give equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def cache_key(*, judge_model: str, prompt_name: str, prompt_version: str, messages: list[dict[str, Any]],
              schema: dict[str, Any], params: dict[str, Any]) -> str:
    """The sha256 (hex) of one judge request's identity."""
    material = {
        "format": CACHE_FORMAT,
        "judge_model": judge_model,
        "prompt_name": prompt_name,
        "prompt_version": prompt_version,
        "messages": messages,
        "schema": schema,
        "params": params,
    }
    return hashlib.sha256(canonical_json(material).encode()).hexdigest()


def _read(path: Path, key: str) -> dict[str, Any] | None:
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(entry, dict) or entry.get("key") != key or entry.get("format") != CACHE_FORMAT:
        return None
    return entry


class JudgeCache:
    """Valid verdicts under ``directory``, one ``<key>.json`` file each.

    Reads never raise: a missing, unreadable or corrupt file is a miss (and is overwritten by the
    next valid verdict for that key). Writes go to a temporary file in the same directory and are
    moved into place with :func:`os.replace`, so concurrent writers (pytest-xdist workers) and
    readers never see half a file.
    """

    def __init__(self, directory: str | os.PathLike[str], fallbacks: tuple[str | os.PathLike[str], ...] = ()) -> None:
        self.directory = Path(directory)
        # Read-only caches looked up after this one (a recorded run's, under --replay); a hit there is
        # copied here, so this folder holds every verdict its run used.
        self.fallbacks = tuple(Path(f) for f in fallbacks)

    def path(self, key: str) -> Path:
        if not _KEY.fullmatch(key):
            raise ValueError(f"not a cache key: {key!r}")
        return self.directory / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored entry for ``key`` (here, else in a fallback, then copied here), or ``None``."""
        entry = _read(self.path(key), key)
        if entry is not None:
            return entry
        for folder in self.fallbacks:
            entry = _read(folder / self.path(key).name, key)
            if entry is not None:
                with contextlib.suppress(OSError):
                    self.put(key, {k: v for k, v in entry.items() if k not in ("key", "format")})
                return entry
        return None

    def put(self, key: str, entry: dict[str, Any]) -> Path:
        """Store ``entry`` (JSON-serialisable) for ``key``, atomically; returns the file's path."""
        target = self.path(key)
        self.directory.mkdir(parents=True, exist_ok=True)
        data = json.dumps({**entry, "key": key, "format": CACHE_FORMAT}, ensure_ascii=False, indent=1,
                          sort_keys=True)
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=f".{key[:16]}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(data)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return target

"""What machine and package versions a benchmark ran on, recorded beside its numbers."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from typing import Any


def machine_info(packages: tuple[str, ...]) -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for package in packages:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {"cpu_count": os.cpu_count(), "python": sys.version.split()[0],
            "implementation": platform.python_implementation(), "platform": platform.platform(),
            "packages": versions}

"""The source checkout the Modal training apps copy into their images (imported only by those apps).

An image is built from the checkout this package is in: ``pyproject.toml``, ``README.md``,
``metis_pytest/`` and ``evals/``, without caches, build output or ``.env`` files, under
:data:`REMOTE_PROJECT`; inside a Modal container (where the package is installed) there is nothing to copy.
"""

from __future__ import annotations

from pathlib import Path

import modal

__all__ = ["IGNORE", "PROJECT_DIRS", "PROJECT_FILES", "REMOTE_PROJECT", "TIMEOUT_S", "add_project", "project_root"]

REMOTE_PROJECT = "/opt/metis"
PROJECT_FILES = ("pyproject.toml", "README.md")
PROJECT_DIRS = ("metis_pytest", "evals")
IGNORE = ["**/__pycache__", "**/*.pyc", "**/*.egg-info", "**/.env", "**/.env.*", "**/.pytest_cache"]
TIMEOUT_S = 24 * 60 * 60  # Modal's longest function timeout


def project_root(command: str) -> Path | None:
    """The source checkout this module is in (``None`` inside a Modal container, where it is installed);
    ``command`` names what needs it in the error for a checkout that lacks a file."""
    if not modal.is_local():
        return None
    root = Path(__file__).resolve().parents[2]
    missing = [name for name in (*PROJECT_FILES, *PROJECT_DIRS) if not (root / name).exists()]
    if missing:
        raise RuntimeError(f"{command} builds its image from a source checkout of metis-pytest; {root} "
                           f"lacks {', '.join(missing)}")
    return root


def add_project(image: modal.Image, root: Path) -> modal.Image:
    """``image`` with the checkout at ``root`` copied to :data:`REMOTE_PROJECT` (not yet installed)."""
    for name in PROJECT_FILES:
        image = image.add_local_file(root / name, f"{REMOTE_PROJECT}/{name}", copy=True)
    for name in PROJECT_DIRS:
        image = image.add_local_dir(root / name, f"{REMOTE_PROJECT}/{name}", copy=True, ignore=IGNORE)
    return image

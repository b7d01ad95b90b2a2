"""The Modal app behind ``metis run modal``: ``pytest`` in a CPU container, the run folder on a Volume.

    modal run [--detach] -m metis_pytest.backends.modal_run_app::main --spec '<RunLaunch JSON>'

(``metis run modal`` builds that command; ``--dry-run`` prints it.) What runs where:

* **here** (the local entrypoint :func:`main`): :func:`run` is called with the launch's CPUs, timeout
  and secrets (``with_options``) and waited for; then the exit code and the fetch commands are printed,
  and a failing pytest's exit code is this process's too.
* **in the container** (:func:`run`): :func:`metis_pytest.backends.modal_run.run_in_container` with the
  volume ``metis-runs`` at ``/runs``: pytest in the copied checkout, its run folder copied to
  ``/runs/<name>`` and the volume committed when pytest ends, however it ends.
* **the image**: Debian slim, Python 3.12, this project from its source checkout with the ``hf`` extra
  (Hugging Face datasets, for benchmarks loaded from the Hub); besides what the training images copy
  (``pyproject.toml``, ``README.md``, ``metis_pytest/``, ``evals/``), the root ``conftest.py``,
  ``datasets/`` and ``baselines/``, so the same arguments find the same files as in a local checkout.
  No caches, ``*.egg-info`` or ``.env`` files; Modal's automatic source mount is off
  (``include_source=False``): the container imports this module from the installed package.

Importing this module imports ``modal`` and reads the project's files; it makes no network call (the
volume and the secrets are looked up by name when the app runs).
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

import modal

from metis_pytest.backends.modal_run import (
    APP_NAME,
    CONTAINER_ENV,
    DEFAULT_CPU,
    DEFAULT_TIMEOUT_S,
    RUNS_MOUNT,
    SCRATCH,
    VOLUME,
    RunLaunch,
    explain_modal_error,
    fetch_command,
    run_in_container,
)
from metis_pytest.train import modal_project
from metis_pytest.train.modal_project import IGNORE, REMOTE_PROJECT

__all__ = ["EXTRA_DIRS", "EXTRA_FILES", "PYTHON_VERSION", "app", "build_image", "configured", "main",
           "project_root", "run", "runs_volume"]

PYTHON_VERSION = "3.12"
EXTRA_FILES = ("conftest.py",)  # copied when the checkout has them
EXTRA_DIRS = ("datasets", "baselines")


def project_root() -> Path | None:
    """The source checkout this module is in (``None`` inside a Modal container, where it is installed)."""
    return modal_project.project_root("metis run modal")


def build_image(root: Path | None) -> modal.Image:
    """The project at ``root`` with its ``hf`` extra (``root=None``: in the container)."""
    image = modal.Image.debian_slim(python_version=PYTHON_VERSION)
    if root is None:
        return image
    image = modal_project.add_project(image, root)
    for name in EXTRA_FILES:
        if (root / name).is_file():
            image = image.add_local_file(root / name, f"{REMOTE_PROJECT}/{name}", copy=True)
    for name in EXTRA_DIRS:
        if (root / name).is_dir():
            image = image.add_local_dir(root / name, f"{REMOTE_PROJECT}/{name}", copy=True, ignore=IGNORE)
    return image.run_commands(f"pip install --no-cache-dir '{REMOTE_PROJECT}[hf]'").env(CONTAINER_ENV)


image = build_image(project_root())
runs_volume = modal.Volume.from_name(VOLUME, create_if_missing=True)
VOLUMES: dict[str | PurePosixPath, modal.Volume | modal.CloudBucketMount] = {RUNS_MOUNT: runs_volume}

app = modal.App(APP_NAME, include_source=False)


@app.function(image=image, cpu=DEFAULT_CPU, volumes=VOLUMES, timeout=DEFAULT_TIMEOUT_S)
def run(spec: str) -> dict[str, Any]:
    """Run the launch's pytest in the container; its name, command and exit code."""
    return run_in_container(Path(RUNS_MOUNT), RunLaunch.from_json(spec), commit=runs_volume.commit,
                            scratch=Path(SCRATCH), cwd=Path(REMOTE_PROJECT))


def configured(launch: RunLaunch) -> modal.Function:
    """:func:`run` with the launch's CPUs, timeout and secrets (looked up by name when it is called)."""
    return run.with_options(cpu=launch.cpu, timeout=launch.timeout,
                            secrets=[modal.Secret.from_name(name) for name in launch.secrets])


@app.local_entrypoint()
def main(spec: str) -> None:
    """Run pytest on Modal, say where the run folder is; exit with pytest's code."""
    launch = RunLaunch.from_json(spec)
    try:
        outcome = configured(launch).remote(spec)
    except modal.exception.Error as exc:
        raise SystemExit(f"metis run modal: {explain_modal_error(exc, launch)}") from exc
    code = int(outcome["exit_code"])
    print(f"pytest exited {code}; run folder: /{launch.name} in volume {VOLUME}")
    print(f"fetch it: metis fetch modal {launch.name}   (or: {' '.join(fetch_command(launch.name))})")
    if code:
        raise SystemExit(code)

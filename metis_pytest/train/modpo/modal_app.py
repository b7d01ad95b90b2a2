"""The Modal app behind ``metis train modpo --modal``: the whole pipeline in one GPU container.

    modal run [--detach] -m metis_pytest.train.modpo.modal_app::main --spec '<ModpoLaunch JSON>'

* **here** (:func:`main`): a local ``.jsonl`` source is uploaded into the volume ``metis-modpo`` under
  ``/<name>/input/``, then :func:`run` is called with the launch's GPU (``H100`` unless ``--gpu``) and
  secrets and waited for; ``modal run --detach`` keeps it going when this process exits.
* **in the container** (:func:`run`, up to 24 h): :func:`metis_pytest.train.modpo.pipeline.run_pipeline`
  in ``/runs/<name>`` (the volume), the Hugging Face cache in the volume ``metis-hf-cache``. The volume is
  committed after every checkpoint a training stage writes, after every stage and when the run ends,
  however it ends, so a relaunch with the same name resumes from there.
* **the image**: Debian slim, Python 3.12, then this project from its source checkout with the ``train``
  and ``hf`` extras (torch, transformers, peft, trl at the pins of ``pyproject.toml``; datasets). Only
  ``pyproject.toml``, ``README.md``, ``metis_pytest/`` and ``evals/`` are copied, without caches or
  ``.env`` files; Modal's automatic source mount is off.
* **secrets**: Modal secrets by name (``huggingface-secret`` with ``HF_TOKEN`` by default), attached per run
  and read from the container's environment; a gated base without ``HF_TOKEN`` there stops the run with
  a message saying so.

Importing this module imports ``modal`` and makes no network call (volumes and secrets are looked up
by name when the app runs).
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

import modal

from metis_pytest.train import modal_project
from metis_pytest.train.modal_project import REMOTE_PROJECT, TIMEOUT_S
from metis_pytest.train.modpo.launch import (
    HF_CACHE_MOUNT,
    HF_CACHE_VOLUME,
    RUNS_MOUNT,
    VOLUME,
    ModpoLaunch,
    fetch_command,
)

__all__ = ["APP_NAME", "app", "build_image", "configured", "main", "project_root", "run", "upload_data"]

APP_NAME = "metis-modpo"
PYTHON_VERSION = "3.12"


def project_root() -> Path | None:
    """The source checkout this module is in (``None`` inside a Modal container, where it is installed)."""
    return modal_project.project_root("metis train modpo --modal")


def build_image(root: Path | None) -> modal.Image:
    """The project at ``root`` with its ``train`` and ``hf`` extras (``root=None``: in the container)."""
    image = modal.Image.debian_slim(python_version=PYTHON_VERSION)
    if root is None:
        return image
    install = f"pip install --no-cache-dir '{REMOTE_PROJECT}[train,hf]'"
    return modal_project.add_project(image, root).run_commands(install).env(
        {"HF_HOME": HF_CACHE_MOUNT, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"})


image = build_image(project_root())
runs_volume = modal.Volume.from_name(VOLUME, create_if_missing=True)
hf_cache_volume = modal.Volume.from_name(HF_CACHE_VOLUME, create_if_missing=True)
VOLUMES: dict[str | PurePosixPath, modal.Volume | modal.CloudBucketMount] = {
    RUNS_MOUNT: runs_volume, HF_CACHE_MOUNT: hf_cache_volume}

app = modal.App(APP_NAME, include_source=False)


@app.function(image=image, gpu="H100", volumes=VOLUMES, timeout=TIMEOUT_S)
def run(spec: str) -> dict[str, Any]:
    """Run (or resume) the launch's pipeline in ``/runs/<name>``; what it did, or why it stopped."""
    from metis_pytest.train.modpo.pipeline import run_pipeline
    from metis_pytest.train.modpo.stages import StageFailed

    launch = ModpoLaunch.from_json(spec)
    try:
        report = run_pipeline(launch.container_config(), Path(launch.run_dir), start_from=launch.start_from,
                              only=launch.only, checkpoint=runs_volume.commit)
    except StageFailed as exc:
        return {"stopped": str(exc)}
    finally:
        runs_volume.commit()
    return {"ran": report.ran, "resumed": report.resumed, "skipped": report.skipped}


def configured(launch: ModpoLaunch) -> modal.Function:
    """:func:`run` with the launch's GPU and secrets (looked up by name when it is called)."""
    return run.with_options(gpu=launch.gpu, secrets=[modal.Secret.from_name(name) for name in launch.secrets])


def upload_data(launch: ModpoLaunch) -> str | None:
    """Upload a local data file into the volume; returns its path there (``None`` for a Hub source)."""
    if launch.data_file is None:
        return None
    with runs_volume.batch_upload(force=True) as batch:
        batch.put_file(str(launch.data_file), launch.remote_data())
    return launch.remote_data()


@app.local_entrypoint()
def main(spec: str) -> None:
    """Upload the data, run the pipeline on Modal, say how to fetch the run folder."""
    launch = ModpoLaunch.from_json(spec)
    launch.check()
    uploaded = upload_data(launch)
    if uploaded:
        print(f"data: {uploaded} in volume {VOLUME}", flush=True)
    outcome = configured(launch).remote(spec)
    if "stopped" in outcome:
        print(f"stopped: {outcome['stopped']}")
    else:
        print(f"ran: {', '.join(outcome['ran']) or '-'}; resumed: {', '.join(outcome['resumed']) or '-'}; "
              f"skipped: {', '.join(outcome['skipped']) or '-'}")
    print(f"fetch the run folder: {' '.join(fetch_command(launch))}")

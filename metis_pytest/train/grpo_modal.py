"""The Modal app behind ``metis train grpo``: verl's GRPO on Modal GPUs, our reward and tools inside.

    modal run [--detach] -m metis_pytest.train.grpo_modal::main --spec '<GrpoLaunch JSON>'

(``metis train grpo`` builds that command; ``--dry-run`` prints it.) What runs where:

* **here** (the local entrypoint :func:`main`): the exported parquet (``train.parquet``, ``test.parquet``,
  ``manifest.json``) is uploaded to the volume :data:`~metis_pytest.train.grpo.DATA_VOLUME` under
  ``/<experiment>/`` (replacing an earlier upload of the same experiment), then :func:`train` is called
  with the run's GPUs and secrets (``with_options``) and waited for. ``modal run --detach`` keeps the app
  running when this process exits.
* **in the container** (:func:`train`, ``H100:2`` unless the run says otherwise, up to 24 h): the verl
  command of :func:`metis_pytest.train.grpo.verl_command`, as a subprocess, with the data volume at
  ``/data``, the checkpoint volume at ``/checkpoints`` and a Hugging Face cache volume at ``/hf-cache``
  (``HF_HOME``). The run's settings and exact command are written beside its checkpoints as
  ``metis_grpo.json`` before verl starts; the checkpoint volume is committed when verl ends, however it ends.

**The image**: Debian slim, Python 3.12, ``verl[vllm]==0.9.1`` (verl's own pins: torch, vLLM,
transformers), then this project installed from its source checkout with pip under a constraint file
frozen from that environment, so our dependencies cannot move verl's (a conflict fails the image build).
Only ``pyproject.toml``, ``README.md``, ``metis_pytest/`` and ``evals/`` are copied in (the registry's
entry points need the installed distribution), without caches, ``*.egg-info`` or any ``.env`` file.
Modal's automatic source mount is off (``include_source=False``): the container imports this module
from the installed package, where the tool config YAML is too.

**Secrets** are Modal secrets named by the launch (Hugging Face; the judge's key for a judged benchmark;
the search key for a tool-using one; W&B when asked): attached per run, read from the container's
environment by verl, the judge client and the tools. Never on a command line, in the image or in the spec.

Importing this module imports ``modal`` and reads the project's files (it is imported only to launch a
run, and by Modal itself); it makes no network call: volumes and secrets are looked up by name when the
app runs.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import subprocess
import sys
from pathlib import Path, PurePosixPath

import modal

from metis_pytest.train import modal_project
from metis_pytest.train.grpo import (
    CHECKPOINT_MOUNT,
    CHECKPOINT_VOLUME,
    DATA_MOUNT,
    DATA_VOLUME,
    HF_CACHE_MOUNT,
    HF_CACHE_VOLUME,
    GrpoConfig,
    GrpoLaunch,
    fetch_command,
    verl_command,
)
from metis_pytest.train.modal_project import REMOTE_PROJECT, TIMEOUT_S

__all__ = ["APP_NAME", "VERL_REQUIREMENT", "app", "build_image",
           "configured", "main", "project_root", "train", "upload_data"]

APP_NAME = "metis-grpo"
PYTHON_VERSION = "3.12"  # verl 0.9.1 wants >=3.10,<3.13
VERL_REQUIREMENT = "verl[vllm]==0.9.1"  # the version pyproject's `verl` extra pins; the extra adds vLLM's pins
CONSTRAINTS = "/opt/verl-constraints.txt"
DEFAULT_GPU = GrpoConfig(benchmark="gsm8k").gpu_spec
RUN_RECORD = "metis_grpo.json"
LATEST = "latest_checkpointed_iteration.txt"  # what verl writes beside its global_step_<N> folders


def project_root() -> Path | None:
    """The source checkout this module is in (``None`` inside a Modal container, where it is installed)."""
    return modal_project.project_root("metis train grpo")


def build_image(root: Path | None) -> modal.Image:
    """verl and vLLM, then the project at ``root`` (skipped when ``None``: in the container)."""
    image = modal.Image.debian_slim(python_version=PYTHON_VERSION).uv_pip_install(VERL_REQUIREMENT)
    if root is None:
        return image
    return modal_project.add_project(image, root).run_commands(
        f"pip freeze > {CONSTRAINTS}",
        f"pip install --no-cache-dir --constraint {CONSTRAINTS} {REMOTE_PROJECT}",
    ).env({"HF_HOME": HF_CACHE_MOUNT, "PYTHONUNBUFFERED": "1"})


image = build_image(project_root())
data_volume = modal.Volume.from_name(DATA_VOLUME, create_if_missing=True)
checkpoint_volume = modal.Volume.from_name(CHECKPOINT_VOLUME, create_if_missing=True)
hf_cache_volume = modal.Volume.from_name(HF_CACHE_VOLUME, create_if_missing=True)
VOLUMES: dict[str | PurePosixPath, modal.Volume | modal.CloudBucketMount] = {
    DATA_MOUNT: data_volume, CHECKPOINT_MOUNT: checkpoint_volume, HF_CACHE_MOUNT: hf_cache_volume}

app = modal.App(APP_NAME, include_source=False)


def _latest_step(run_dir: Path) -> str | None:
    marker = run_dir / LATEST
    return marker.read_text().strip() if marker.is_file() else None


@app.function(image=image, gpu=DEFAULT_GPU, volumes=VOLUMES, timeout=TIMEOUT_S)
def train(spec: str) -> str:
    """Run the verl command of ``spec`` (a :class:`GrpoLaunch` JSON); return the latest checkpoint step
    ("" when verl saved none)."""
    launch = GrpoLaunch.from_json(spec)
    command = verl_command(launch.config, launch.overrides, python=sys.executable)
    run_dir = Path(CHECKPOINT_MOUNT) / launch.config.checkpoint_path
    run_dir.mkdir(parents=True, exist_ok=True)
    record = {"config": launch.config.to_dict(), "overrides": list(launch.overrides), "command": command}
    (run_dir / RUN_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    print(shlex.join(command), flush=True)
    try:
        subprocess.run(command, check=True)
    finally:
        checkpoint_volume.commit()
    return _latest_step(run_dir) or ""


def configured(launch: GrpoLaunch) -> modal.Function:
    """:func:`train` with the launch's GPUs and secrets (looked up by name when it is called)."""
    secrets = [modal.Secret.from_name(name) for name in launch.secrets]
    return train.with_options(gpu=launch.config.gpu_spec, secrets=secrets)


def upload_data(launch: GrpoLaunch) -> list[str]:
    """Put the launch's export files into the data volume; returns their paths there."""
    files = launch.data_files()
    names = {Path(local).name for local, _ in files}
    missing = [name for name in ("train.parquet", "test.parquet") if name not in names]
    if missing:
        raise FileNotFoundError(f"{launch.data}: no {' or '.join(missing)} (write them with "
                                f"`metis data export {launch.config.benchmark} --format verl --out {launch.data}`)")
    with data_volume.batch_upload(force=True) as batch:
        for local, remote in files:
            batch.put_file(local, remote)
    return [remote for _, remote in files]


@app.local_entrypoint()
def main(spec: str) -> None:
    """Upload the data, run :func:`train` on the launch's GPUs, say where the checkpoint is."""
    launch = GrpoLaunch.from_json(spec)
    uploaded = upload_data(launch)
    print(f"data: {', '.join(uploaded)} in volume {DATA_VOLUME}", flush=True)
    step = configured(launch).remote(dataclasses.replace(launch, data="").to_json())
    cfg = launch.config
    if not step:
        print(f"verl saved no checkpoint under {cfg.checkpoint_path} in volume {CHECKPOINT_VOLUME}")
        return
    print(f"checkpoint: {cfg.hf_checkpoint_path(step)} in volume {CHECKPOINT_VOLUME}")
    print(f"fetch it: {shlex.join(fetch_command(cfg, step))}")

"""The Modal app that serves one model with vLLM's OpenAI-compatible server, built per
:class:`~metis_pytest.backends.modal_vllm.ServeSpec` by :func:`build_app`.

``--backend modal`` runs it ephemeral (``app.run()``) for a session; ``metis serve modal MODEL``
deploys it (``app.deploy()``, what ``modal deploy`` does) under ``metis-vllm-<model slug>``, where
the backend looks it up by name. What it holds:

* **the image**: Debian slim, Python 3.12, ``vllm==`` :data:`VLLM_VERSION` (vLLM's own pins: torch,
  transformers), and this package's Python files (``metis_pytest/``, nothing else) so the container
  can import :func:`serve`; ``HF_HOME`` and ``VLLM_CACHE_ROOT`` point into the cache volume.
* **volumes**: ``metis-hf-cache`` at ``/hf-cache`` (the Hugging Face cache, shared with ``metis train
  grpo``, and vLLM's compile cache under ``vllm/``); for a checkpoint, its volume read-only at
  ``/checkpoints`` (where ``metis train grpo`` mounts ``metis-grpo-checkpoints``).
* **the secret**: ``HF_TOKEN`` from the Modal secret the spec names (none for ``--modal-hf-secret none``).
* **one web function per replica** (``replica_0``, ``replica_1``, ...): ``@modal.web_server`` on vLLM's
  port with ``requires_proxy_auth`` unless the spec is public, ``@modal.concurrent`` (vLLM batches
  requests itself), the spec's GPUs, ``max_containers=1`` (a replica is one container, so rows
  spread over replicas land on distinct GPUs), ``min_containers`` (1 for an ephemeral app, so every
  replica starts at once; 0 by default when deployed: scale to zero) and ``scaledown_window``.

Building the app makes no network call; volumes and the secret are looked up by name when it runs.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import PurePosixPath

import modal

from metis_pytest.backends.modal_vllm import VLLM_PORT, ServeSpec, vllm_command
from metis_pytest.train.grpo import CHECKPOINT_MOUNT, HF_CACHE_MOUNT, HF_CACHE_VOLUME

__all__ = ["MAX_INPUTS", "PYTHON_VERSION", "REQUEST_TIMEOUT_S", "SPEC_ENV", "VLLM_VERSION", "build_app",
           "build_image", "replica_name", "secrets", "serve", "volumes"]

VLLM_VERSION = "0.11.0"
PYTHON_VERSION = "3.12"
SPEC_ENV = "METIS_VLLM_SPEC"  # the spec, as JSON, in the container's environment
REQUEST_TIMEOUT_S = 60 * 60  # the longest one request may take
MAX_INPUTS = 512  # requests in flight per container; vLLM queues and batches them


def replica_name(index: int) -> str:
    return f"replica_{index}"


def build_image() -> modal.Image:
    return (modal.Image.debian_slim(python_version=PYTHON_VERSION)
            .uv_pip_install(f"vllm=={VLLM_VERSION}")
            .env({"HF_HOME": HF_CACHE_MOUNT, "VLLM_CACHE_ROOT": f"{HF_CACHE_MOUNT}/vllm", "PYTHONUNBUFFERED": "1"})
            .add_local_python_source("metis_pytest"))


def volumes(spec: ServeSpec) -> dict[str | PurePosixPath, modal.Volume | modal.CloudBucketMount]:
    mounts: dict[str | PurePosixPath, modal.Volume | modal.CloudBucketMount] = {
        HF_CACHE_MOUNT: modal.Volume.from_name(HF_CACHE_VOLUME, create_if_missing=True)}
    checkpoint = spec.checkpoint
    if checkpoint:
        mounts[CHECKPOINT_MOUNT] = modal.Volume.from_name(checkpoint[0]).read_only()
    return mounts


def secrets(spec: ServeSpec) -> list[modal.Secret]:
    return [modal.Secret.from_name(spec.hf_secret)] if spec.hf_secret else []


def serve() -> None:
    """In the container: start vLLM in the background; Modal routes requests to its port once open."""
    spec = ServeSpec.from_json(os.environ[SPEC_ENV])
    subprocess.Popen(vllm_command(spec))


def build_app(spec: ServeSpec) -> tuple[modal.App, list[modal.Function]]:
    """The app of ``spec`` and its replicas' web functions, in replica order."""
    app = modal.App(spec.app_name, include_source=False)
    image = build_image()
    functions: list[modal.Function] = []
    for index in range(spec.replicas):
        web = modal.web_server(VLLM_PORT, startup_timeout=spec.startup_timeout,
                               requires_proxy_auth=spec.proxy_auth)(serve)
        function: modal.Function = app.function(
            name=replica_name(index), image=image, gpu=spec.gpu, volumes=volumes(spec), secrets=secrets(spec),
            env={SPEC_ENV: spec.to_json()}, min_containers=spec.min_containers, max_containers=1,
            scaledown_window=spec.scaledown_window, timeout=REQUEST_TIMEOUT_S,
            startup_timeout=int(spec.startup_timeout),
        )(modal.concurrent(max_inputs=MAX_INPUTS)(web))
        functions.append(function)
    return app, functions

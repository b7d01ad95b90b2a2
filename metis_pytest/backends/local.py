"""The embedded default model: SmolLM2-135M-Instruct served by llama.cpp's OpenAI-compatible server.

``--model local`` (or no ``--model``) selects it; ``--local-model`` takes another GGUF. ``prepare``
starts the server once per pytest session in the process that owns the session (under pytest-xdist,
the controller, which hands its URL to the workers), health-checks it, and ``close`` stops it at
session end; the server also dies with that process if it is killed. It exists so the whole pipeline
runs with no keys and no GPU, not for good scores. llama.cpp's server runs one request at a time, so
requests to it hold a lock file: one in flight across all workers, whatever ``--concurrency`` says.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from metis_pytest.backends import register_backend
from metis_pytest.backends.base import BaseBackend, ModelTarget, PrepareContext, Runtime

if TYPE_CHECKING:
    from metis_pytest.options import MetisConfig

DEFAULT_ALIAS = "smollm2-135m-instruct"


def alias_for(local_model: str | None) -> str:
    """The name the server serves: the default's alias, or a slug of the GGUF file's name."""
    if not local_model or local_model in ("default", "smollm2"):
        return DEFAULT_ALIAS
    stem = Path(local_model.removeprefix("hf:")).name.removesuffix(".gguf")
    return re.sub(r"[^a-z0-9._-]+", "-", stem.lower()).strip("-") or "local-model"


@register_backend("local")
class LocalBackend(BaseBackend):
    name = "local"

    def resolve(self, model: str, config: MetisConfig) -> ModelTarget:
        alias = alias_for(config.local_model)
        return ModelTarget(
            label=model,
            backend=self.name,
            litellm_model=f"openai/{alias}",
            api_base=None,  # known once the server is up
            api_key_env=None,
            openai_wire=True,
            served_model=alias,
            max_concurrency=1,  # llama.cpp's server runs one request at a time
            json_format="json_object",  # llama-cpp-python: {"type": "json_object", "schema": ...}
        )

    def needs_prepare(self, target: ModelTarget) -> bool:
        return True

    def prepare(self, target: ModelTarget, ctx: PrepareContext) -> Runtime:
        from metis_pytest.backends.local_model import resolve_gguf
        from metis_pytest.backends.local_server import LocalServer

        cfg = ctx.config
        gguf = resolve_gguf(cfg.local_model, cache_dir=cfg.cache_dir)
        server = LocalServer(gguf, log_path=cfg.output_dir / "local-server.log", alias=target.served_model or "",
                             die_with_parent=True).start()
        ctx.state_dir.mkdir(parents=True, exist_ok=True)
        return Runtime(api_base=server.base_url, slot_lock=str(ctx.state_dir / f"slot-{server.port}.lock"),
                       handle=server)

    def close(self, runtime: Runtime) -> None:
        if runtime.handle is not None:
            runtime.handle.stop()

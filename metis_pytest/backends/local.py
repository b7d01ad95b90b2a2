"""The embedded default model: SmolLM2-135M-Instruct served by llama.cpp's OpenAI-compatible server.

``--model local`` (or no ``--model``) selects it; ``--local-model`` takes another GGUF. The server is
started once per pytest session by the ``metis_local_server`` fixture (shared by pytest-xdist workers
through a file lock), health-checked before use and stopped at session end. It exists so the whole
pipeline runs with no keys and no GPU, not for good scores.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from metis_pytest.backends import register_backend
from metis_pytest.backends.base import ModelTarget

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
class LocalBackend:
    name = "local"

    def target(self, model: str, config: MetisConfig) -> ModelTarget:
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
        )

    def needs_runtime(self, target: ModelTarget) -> bool:
        return True

"""Any OpenAI-compatible server: a local vLLM (``vllm serve``), llama.cpp's server, SGLang, TGI.

``pytest evals/gsm8k --backend openai --api-base http://127.0.0.1:8000/v1 --model Qwen/Qwen2.5-7B-Instruct``
sends ``model: Qwen/Qwen2.5-7B-Instruct`` to that URL. A key, if the server wants one, comes from the
variable named by ``--api-key-env``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from metis_pytest.backends import register_backend
from metis_pytest.backends.base import BaseBackend, ModelTarget

if TYPE_CHECKING:
    from metis_pytest.options import MetisConfig


@register_backend("openai")
class OpenAICompatibleBackend(BaseBackend):
    name = "openai"

    def resolve(self, model: str, config: MetisConfig) -> ModelTarget:
        if not config.api_base:
            raise pytest.UsageError("--backend openai needs --api-base (e.g. http://127.0.0.1:8000/v1)")
        return ModelTarget(
            label=model,
            backend=self.name,
            litellm_model=f"openai/{model}",
            api_base=config.api_base,
            api_key_env=config.api_key_env,
            openai_wire=True,
            served_model=model,
        )

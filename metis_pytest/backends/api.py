"""API models by their LiteLLM name (``openai/gpt-4o-mini``, ``anthropic/claude-...``), keys from the
environment. OpenAI-wire providers are called directly; the rest go through ``litellm.acompletion``.

Either way the sampling params are LiteLLM's per-model mapping of what the user set: for the direct
path :func:`metis_pytest.rollout.http.map_params` runs ``litellm.get_optional_params`` (so
``openai/o3-mini`` and the gpt-5 family get ``max_completion_tokens`` and no non-default
``temperature``) and records what it dropped or renamed. ``--backend openai`` sends params verbatim."""

from __future__ import annotations

from typing import TYPE_CHECKING

from metis_pytest.backends import register_backend
from metis_pytest.backends.base import (
    DEFAULT_API_BASES,
    OPENAI_WIRE_PREFIXES,
    PROVIDER_KEY_ENV,
    BaseBackend,
    ModelTarget,
    provider_of,
)

if TYPE_CHECKING:
    from metis_pytest.options import MetisConfig


@register_backend("api")
class ApiBackend(BaseBackend):
    name = "api"

    def resolve(self, model: str, config: MetisConfig) -> ModelTarget:
        litellm_model = model if "/" in model else f"openai/{model}"
        provider = provider_of(litellm_model)
        openai_wire = litellm_model.startswith(OPENAI_WIRE_PREFIXES)
        return ModelTarget(
            label=model,
            backend=self.name,
            litellm_model=litellm_model,
            api_base=config.api_base or (DEFAULT_API_BASES.get(provider) if openai_wire else None),
            api_key_env=config.api_key_env or PROVIDER_KEY_ENV.get(provider),
            openai_wire=openai_wire,
        )

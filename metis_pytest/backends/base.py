"""What a backend is: a named way to turn a model name plus options into LiteLLM completion params.

A backend has two moments. At collection time :meth:`Backend.target` says, with no side effects,
which model is meant and which environment variables it needs (missing ones skip the item). At run
time :meth:`Backend.prepare` may start something (the embedded llama.cpp server, a Modal app) and
returns the target with its base URL filled in. Keys are read from the environment only when a
request is built (:meth:`ModelTarget.litellm_params`); they are never part of
:meth:`ModelTarget.public_params`, which is what goes into test ids, logs and run records.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    from metis_pytest.options import MetisConfig

# LiteLLM prefixes whose wire format is OpenAI's chat completions: Metis talks to them directly.
OPENAI_WIRE_PREFIXES = ("openai/", "hosted_vllm/", "fireworks_ai/", "together_ai/", "groq/", "deepseek/",
                        "openrouter/")
DEFAULT_API_BASES = {
    "openai": "https://api.openai.com/v1",
    "fireworks_ai": "https://api.fireworks.ai/inference/v1",
    "together_ai": "https://api.together.xyz/v1",
    "groq": "https://api.groq.com/openai/v1",
    "deepseek": "https://api.deepseek.com/v1",
    "openrouter": "https://openrouter.ai/api/v1",
}
PROVIDER_KEY_ENV = {
    "openai": "OPENAI_API_KEY",
    "anthropic": "ANTHROPIC_API_KEY",
    "fireworks_ai": "FIREWORKS_API_KEY",
    "together_ai": "TOGETHERAI_API_KEY",
    "groq": "GROQ_API_KEY",
    "deepseek": "DEEPSEEK_API_KEY",
    "openrouter": "OPENROUTER_API_KEY",
    "gemini": "GEMINI_API_KEY",
    "mistral": "MISTRAL_API_KEY",
    "xai": "XAI_API_KEY",
    "cohere": "COHERE_API_KEY",
}


def public_url(url: str | None) -> str | None:
    """The URL without user info, query or fragment, so no credential can ride along into a record."""
    if not url:
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))


@dataclass(frozen=True)
class ModelTarget:
    """One model, reachable one way. ``label`` is what the user typed; it names items and run folders."""

    label: str
    backend: str
    litellm_model: str
    api_base: str | None = None
    api_key_env: str | None = None
    openai_wire: bool = True
    served_model: str | None = None
    # Requests the server can usefully take at once (llama.cpp's server: 1); None means no limit.
    # More would only queue at the server and eat into each request's timeout.
    max_concurrency: int | None = None

    @property
    def request_model(self) -> str:
        """The ``model`` field sent on the wire (LiteLLM's provider prefix removed)."""
        if self.served_model:
            return self.served_model
        return self.litellm_model.split("/", 1)[1] if "/" in self.litellm_model else self.litellm_model

    def missing_env(self) -> list[str]:
        """Environment variables this target needs that are not set."""
        if self.api_key_env and not os.environ.get(self.api_key_env):
            return [self.api_key_env]
        return []

    def api_key(self) -> str | None:
        """The key, read from the environment at the moment a request is made."""
        return os.environ.get(self.api_key_env) if self.api_key_env else None

    def public_params(self, *, temperature: float, max_tokens: int) -> dict[str, Any]:
        """Completion params safe for test ids, logs and records: no key, no credential-bearing URL."""
        params: dict[str, Any] = {"model": self.litellm_model, "temperature": temperature, "max_tokens": max_tokens}
        if self.api_base:
            params["api_base"] = public_url(self.api_base)
        return params

    def litellm_params(self, public: dict[str, Any]) -> dict[str, Any]:
        """Full LiteLLM params for one request: the public ones plus base URL and key from the environment."""
        params = dict(public)
        params["model"] = self.litellm_model
        if self.api_base:
            params["api_base"] = self.api_base
        key = self.api_key()
        if key:
            params["api_key"] = key
        return params

    def with_api_base(self, api_base: str) -> ModelTarget:
        return replace(self, api_base=api_base)


class Backend(Protocol):
    """A plug point: name one with ``--backend NAME``; register one with :func:`register_backend`."""

    name: str

    def target(self, model: str, config: MetisConfig) -> ModelTarget:
        """Which model is meant, decided at collection time with no side effects."""
        ...

    def needs_runtime(self, target: ModelTarget) -> bool:
        """Whether :meth:`prepare` must run (start a server, deploy an app) before requests."""
        ...


def provider_of(litellm_model: str) -> str:
    return litellm_model.split("/", 1)[0] if "/" in litellm_model else "openai"

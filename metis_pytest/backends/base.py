"""What a backend is: a named way to reach a model, with a life cycle.

resolve -> prepare -> params -> close:

- :meth:`Backend.resolve` (collection time, no side effects) says which model is meant and which
  environment variables it needs (missing ones skip the item);
- :meth:`Backend.prepare` (only when :meth:`Backend.needs_prepare`) starts or looks up what serves
  it (the embedded llama.cpp server; a Modal app later) and returns a :class:`Runtime` with its base
  URL. The pytest process that owns the session prepares it once; under pytest-xdist that is the
  controller, which hands the URL to its workers;
- :meth:`Backend.params` gives the completion params that go into Eval Protocol (public: no key);
- :meth:`Backend.close` stops what ``prepare`` started, at session end.

Keys are read from the environment only when a request is built (:meth:`ModelTarget.litellm_params`);
they are never part of :meth:`ModelTarget.public_params`, which is what goes into test ids, logs and
run records.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
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
    # A lock file that makes ``max_concurrency`` 1 hold across processes (pytest-xdist workers).
    slot_lock: str | None = None
    # How the server takes a JSON schema for structured output: OpenAI's ``json_schema`` (OpenAI, vLLM),
    # or ``json_object`` with a ``schema`` (llama-cpp-python's server, which refuses ``json_schema``).
    json_format: str = "json_schema"
    # Request headers read from the environment when a request is made: (header, variable) pairs, such
    # as Modal's proxy auth ("Modal-Key", "MODAL_PROXY_TOKEN_ID"). Their values go into no record.
    header_env: tuple[tuple[str, str], ...] = ()
    # Every replica's base URL when the runtime runs several (``--shards``); ``api_base`` is the first.
    api_bases: tuple[str, ...] = ()

    @property
    def runtime_key(self) -> str:
        """Targets with the same key share one prepared runtime (one server for policy and judge)."""
        return f"{self.backend}:{self.litellm_model}"

    @property
    def request_model(self) -> str:
        """The ``model`` field sent on the wire (LiteLLM's provider prefix removed)."""
        if self.served_model:
            return self.served_model
        return self.litellm_model.split("/", 1)[1] if "/" in self.litellm_model else self.litellm_model

    def missing_env(self) -> list[str]:
        """Environment variables this target needs that are not set."""
        needed = [self.api_key_env] if self.api_key_env else []
        needed += [env for _, env in self.header_env]
        return [env for env in needed if not os.environ.get(env)]

    def auth_headers(self) -> dict[str, str]:
        """The ``header_env`` headers, read from the environment at the moment a request is made."""
        return {header: os.environ[env] for header, env in self.header_env if os.environ.get(env)}

    def replica(self, index: int) -> ModelTarget:
        """This target sent to replica ``index`` (modulo their number) of a runtime with several."""
        if len(self.api_bases) < 2:
            return self
        return replace(self, api_base=self.api_bases[index % len(self.api_bases)])

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

    def with_runtime(self, runtime: Runtime) -> ModelTarget:
        return replace(self, api_base=runtime.api_base, api_bases=runtime.api_bases, slot_lock=runtime.slot_lock)


@dataclass(frozen=True)
class Runtime:
    """What :meth:`Backend.prepare` started or found: where to send requests. ``handle`` is the
    backend's own object (a server process) and never leaves the process that prepared it."""

    api_base: str
    slot_lock: str | None = None
    handle: Any = field(default=None, compare=False)
    api_bases: tuple[str, ...] = ()  # every replica's base URL, when there are several (api_base first)

    def public(self) -> dict[str, Any]:
        return {"api_base": self.api_base, "slot_lock": self.slot_lock, "api_bases": list(self.api_bases)}


@dataclass(frozen=True)
class PrepareContext:
    """What ``prepare`` may use: the session's options and a folder shared by its processes."""

    config: MetisConfig
    state_dir: Path


class Backend(Protocol):
    """A plug point: name one with ``--backend NAME``; register one with :func:`register_backend`."""

    name: str

    def resolve(self, model: str, config: MetisConfig) -> ModelTarget:
        """Which model is meant, decided at collection time with no side effects."""
        ...

    def needs_prepare(self, target: ModelTarget) -> bool:
        """Whether :meth:`prepare` must run (start a server, deploy an app) before requests."""
        ...

    def prepare(self, target: ModelTarget, ctx: PrepareContext) -> Runtime:
        """Start or look up what serves ``target``."""
        ...

    def params(self, target: ModelTarget, config: MetisConfig) -> dict[str, Any]:
        """Public completion params for Eval Protocol: no key, no credential-bearing URL."""
        ...

    def close(self, runtime: Runtime) -> None:
        """Stop what :meth:`prepare` started."""
        ...


class BaseBackend:
    """Defaults for backends that need nothing started: subclass and write :meth:`resolve`."""

    name = "base"

    def resolve(self, model: str, config: MetisConfig) -> ModelTarget:
        raise NotImplementedError

    def needs_prepare(self, target: ModelTarget) -> bool:
        return False

    def prepare(self, target: ModelTarget, ctx: PrepareContext) -> Runtime:
        raise RuntimeError(f"backend {self.name!r} has nothing to prepare")

    def params(self, target: ModelTarget, config: MetisConfig) -> dict[str, Any]:
        return target.public_params(temperature=config.temperature, max_tokens=config.max_tokens)

    def close(self, runtime: Runtime) -> None:
        return None


def provider_of(litellm_model: str) -> str:
    return litellm_model.split("/", 1)[0] if "/" in litellm_model else "openai"

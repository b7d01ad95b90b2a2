"""Backends by name: ``api`` (LiteLLM providers), ``openai`` (any OpenAI-compatible URL), ``local``
(the embedded llama.cpp server), ``modal`` (vLLM on Modal GPUs). Register another with :func:`register_backend` in a module that is
imported, or list it under the ``metis.backends`` entry-point group of its distribution; either way
it becomes selectable as ``--backend NAME``."""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, TypeVar

from metis_pytest.backends.base import Backend, BaseBackend, ModelTarget, PrepareContext, Runtime

if TYPE_CHECKING:
    from metis_pytest.options import MetisConfig

_REGISTRY: dict[str, Callable[[], Backend]] = {}
B = TypeVar("B")


def register_backend(name: str) -> Callable[[B], B]:
    """Class decorator: make a backend selectable as ``--backend NAME``. Returns the class unchanged."""

    def deco(cls: B) -> B:
        _REGISTRY[name] = cls  # type: ignore[assignment]
        return cls

    return deco


def get_backend(name: str) -> Backend:
    _load_builtin()
    try:
        return _REGISTRY[name]()
    except KeyError:
        raise KeyError(f"unknown backend {name!r}; known: {', '.join(sorted(_REGISTRY))}") from None


def backend_names() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def choose_backend(model: str, config: MetisConfig) -> str:
    """``--backend`` if given; else local for 'local', openai when --api-base is set, api otherwise."""
    from metis_pytest.options import LOCAL_MODEL

    if config.backend:
        return config.backend
    if model == LOCAL_MODEL:
        return "local"
    if config.api_base:
        return "openai"
    return "api"


def resolve_target(model: str, config: MetisConfig) -> ModelTarget:
    """The :class:`ModelTarget` for one ``--model`` value under the session's options."""
    return get_backend(choose_backend(model, config)).resolve(model, config)


_entry_points_loaded = False


def _load_builtin() -> None:
    # Importing the modules runs their @register_backend decorators.
    from metis_pytest.backends import api, local, modal_vllm, openai_compat  # noqa: F401

    global _entry_points_loaded
    if not _entry_points_loaded:
        _entry_points_loaded = True
        for ep in entry_points(group="metis.backends"):
            ep.load()


__all__ = ["Backend", "BaseBackend", "ModelTarget", "PrepareContext", "Runtime", "register_backend", "get_backend",
           "backend_names", "choose_backend", "resolve_target"]

"""Defer LiteLLM's import, and Eval Protocol's package ``__init__``, until something uses them:
``pytest -p metis_pytest.lazy_imports``.

Eval Protocol's package ``__init__`` runs ``import litellm`` (and sets one flag on it) and, under
pytest, imports its reward-function modules and with them all of its pydantic models, so every process
that imports any part of Eval Protocol pays for both: about 3 s of CPU each here, in every pytest start
(Eval Protocol's plugin is auto-loaded, even for an unrelated test) and in every pytest-xdist worker.
Most Metis runs never call LiteLLM: ``--backend openai`` and ``local`` speak the OpenAI wire format
over aiohttp, and ``--backend api`` only asks LiteLLM to map parameters. Neither Eval Protocol's
plugin nor Metis needs its ``__init__``: they import its submodules (``eval_protocol.models``, ...).

``eval_protocol`` gets a placeholder too, one that keeps the package's ``__path__``: its submodules
import as usual without running its ``__init__``, which runs on the first read of an attribute the
package does not hold yet (``eval_protocol.__version__``, ``from eval_protocol import make``), or
just before LiteLLM's code runs (:data:`LOAD_FIRST`), so LiteLLM never runs without Eval Protocol's flag.

Loading this module first puts a placeholder module under ``sys.modules["litellm"]``. ``import
litellm`` returns it without running LiteLLM's code; attributes set on it before then are kept; the
first attribute read (``litellm.acompletion``, ``from litellm import x``, importing a submodule) runs
LiteLLM's real ``__init__`` into the same module object, re-applies the attributes set earlier, and
from then on it is an ordinary module. Threads that read it while another loads it wait for the load.

It must load before Eval Protocol's plugin: the project's ``pyproject.toml`` puts ``-p
metis_pytest.lazy_imports`` in pytest's ``addopts`` (``-p`` plugins load before entry-point plugins);
another project can add the same to its own ``addopts``. A module already imported is left alone.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
import types
import warnings
from typing import Any

DEFERRED = ("litellm",)
# Packages whose submodules import without their ``__init__``: Eval Protocol's, which under pytest
# imports its reward-function modules and with them every pydantic model it has (about 3 s here),
# although its pytest plugin and Metis's imports need none of that (they import submodules).
DEFERRED_INITS = ("eval_protocol",)
# Run before a deferred module's own code: Eval Protocol's ``__init__`` sets a flag on LiteLLM for its
# calls through it, so LiteLLM never runs without it (as when Eval Protocol imported it first).
LOAD_FIRST = {"litellm": ("eval_protocol",)}

_STATE = "_metis_lazy"


class LazyModule(types.ModuleType):
    """A module whose code runs on the first attribute it does not already hold."""

    def __getattr__(self, name: str) -> Any:
        state: dict[str, Any] | None = self.__dict__.get(_STATE)
        if state is None:  # loaded by another thread meanwhile
            return types.ModuleType.__getattribute__(self, name)
        with state["lock"]:  # a thread reading it while another loads it waits here
            waited_for_another = self.__dict__.get(_STATE) is not state
            if not waited_for_another:
                if state["loading"]:  # a read from inside the module's own import: not there yet
                    raise AttributeError(f"partially initialized module {self.__name__!r} has no attribute {name!r}")
                for first in LOAD_FIRST.get(self.__name__, ()):
                    load_now(first)  # which may have loaded this one on the way
                still_deferred = self.__dict__.get(_STATE) is state
                if still_deferred:
                    _load(self, state)
        return getattr(self, name)


def _load(module: LazyModule, state: dict[str, Any]) -> None:
    spec = state["spec"]
    d = module.__dict__
    preset = {k: v for k, v in d.items() if k not in state["initial"] and k != _STATE}
    state["loading"] = True
    if state["path"] is not None:
        d["__path__"] = state["path"]
    try:
        with warnings.catch_warnings():  # its import's own warnings (pydantic, asyncio) are not the caller's
            warnings.simplefilter("ignore")
            spec.loader.exec_module(module)
    except BaseException:
        if sys.modules.get(module.__name__) is module:  # as a failed import: the next one starts afresh
            del sys.modules[module.__name__]
        raise
    finally:
        state["loading"] = False
    # What was set on it before: kept, except the submodules imported meanwhile, which its ``__init__``
    # may have bound other names to (as in a normal import, where the ``__init__`` runs first).
    prefix = f"{module.__name__}."
    d.update({k: v for k, v in preset.items()
              if not (isinstance(v, types.ModuleType) and v.__name__.startswith(prefix))})
    del d[_STATE]
    if type(module) is LazyModule:  # else its ``__init__`` gave it a class of its own (a subclass)
        module.__class__ = types.ModuleType  # type: ignore[assignment]


def defer(name: str, *, submodules_first: bool = False) -> bool:
    """Put a lazy placeholder for ``name`` in ``sys.modules``; False if it is imported already or absent.

    ``submodules_first``: a package's submodules import without running its ``__init__`` (which runs
    on the first attribute read that is not a submodule already imported)."""
    if name in sys.modules:
        return False
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        return False
    module = importlib.util.module_from_spec(spec)
    # Without ``__path__`` the first submodule import asks for it, and that loads the package first.
    path = module.__dict__.get("__path__") if submodules_first else module.__dict__.pop("__path__", None)
    module.__dict__[_STATE] = {"spec": spec, "path": path, "lock": threading.RLock(), "loading": False,
                               "initial": set(module.__dict__) | {"__path__"}}
    module.__class__ = LazyModule
    sys.modules[name] = module
    return True


def load_now(name: str) -> bool:
    """Run a deferred module's code now; False if it is not deferred (any more).

    The plugin calls it once a process has collected an evaluation item that runs Eval Protocol's
    wrapper (which imports LiteLLM in every item), so it is loaded before the first item starts."""
    module = sys.modules.get(name)
    if module is None or _STATE not in module.__dict__:
        return False
    getattr(module, "_metis_lazy_load_now_", None)  # a name it does not hold: reading it loads
    return True


def is_loaded(name: str) -> bool:
    """Whether ``name`` has run its code (False while it is still a lazy placeholder)."""
    module = sys.modules.get(name)
    return module is not None and _STATE not in module.__dict__


for _name in DEFERRED:
    defer(_name)
for _name in DEFERRED_INITS:
    defer(_name, submodules_first=True)

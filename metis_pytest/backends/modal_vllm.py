"""vLLM on Modal GPUs: ``pytest evals/gsm8k --backend modal --model Qwen/Qwen3-8B [--shards 2]``.

``resolve`` (no side effects) names the model vLLM serves; ``prepare``, in the process that owns the
session, sizes the GPUs, finds the model's app deployed by ``metis serve modal`` or starts an
ephemeral one (:mod:`metis_pytest.backends.modal_app`), waits for every replica's ``/health`` and
returns their URLs; ``close`` stops an ephemeral app at session end and leaves a deployed one running.

Decisions:

- **What is served.** A Hub id (``Qwen/Qwen3-8B``), or a checkpoint on a Modal volume written
  ``volume:<volume>/<path>``; a ``<path>`` that ends in verl's ``global_step_<N>`` gets
  ``/actor/huggingface`` appended (where ``metis train grpo`` leaves the Hugging Face model).
- **GPUs** (:func:`size_gpus`): ``--modal-gpu`` if given; else by parameter count: the Hub's
  safetensors metadata, else an estimate from ``config.json`` (the Hub's, or the checkpoint's on its
  volume), else :data:`KNOWN_SIZES` and a size in the name (``-8B``). Up to
  :data:`SINGLE_GPU_MAX_B` billion parameters: one H100; above: two, tensor parallel. bf16 weights
  that need more than :data:`GPU_MEMORY_FRACTION` of the GPUs' memory are refused before anything
  starts, naming the smallest H100 count that fits.
- **Tool calls**: ``--enable-auto-tool-choice`` with the parser of the model's family
  (:data:`TOOL_PARSERS`; ``--modal-tool-parser`` overrides, ``none`` turns it off).
- **Replicas** (``--shards N``): N web functions in one app, each its own container and URL;
  the runtime carries every URL and the rollout processors send rows to them round-robin.
- **Auth**: endpoints require Modal proxy auth unless ``--modal-public``; requests carry
  ``Modal-Key``/``Modal-Secret`` read from ``MODAL_PROXY_TOKEN_ID``/``MODAL_PROXY_TOKEN_SECRET``
  when sent (missing ones skip the item, as a missing API key does).
- **Launcher seam**: everything that talks to Modal is a :class:`Launcher`; :func:`use_launcher`
  swaps it (tests stand scripted servers in for Modal URLs).

Importing this module imports neither ``modal`` nor ``huggingface_hub``.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from metis_pytest.backends import register_backend
from metis_pytest.backends.base import BaseBackend, ModelTarget, PrepareContext, Runtime
from metis_pytest.train.grpo import CHECKPOINT_MOUNT

if TYPE_CHECKING:
    from metis_pytest.options import MetisConfig

VOLUME_PREFIX = "volume:"
APP_PREFIX = "metis-vllm"
PROXY_HEADERS: tuple[tuple[str, str], ...] = (("Modal-Key", "MODAL_PROXY_TOKEN_ID"),
                                              ("Modal-Secret", "MODAL_PROXY_TOKEN_SECRET"))
SINGLE_GPU_MAX_B = 16.0  # billions of parameters served on one H100
GPU_MEMORY_FRACTION = 0.9  # vLLM's default --gpu-memory-utilization: weights must fit in this share
BYTES_PER_PARAM = 2  # bf16
GPU_MEMORY_GB = {"H100": 80, "H200": 141, "B200": 180, "A100-80GB": 80, "A100": 40, "A100-40GB": 40,
                 "L40S": 48, "A10G": 24, "A10": 24, "L4": 24, "T4": 16}
# Families whose names do not say their size (or say the active size of a mixture of experts),
# matched on the lower-cased name before the "-<N>B" rule; billions of parameters.
KNOWN_SIZES: tuple[tuple[str, float], ...] = (
    (r"mixtral-8x22b", 141.0),
    (r"mixtral-8x7b", 46.7),
    (r"qwen3-235b-a22b", 235.1),
    (r"qwen3-30b-a3b", 30.5),
    (r"mistral-nemo", 12.2),
    (r"mistral-small", 24.0),
    (r"mistral-large", 123.0),
)
_SIZE_IN_NAME = re.compile(r"(?:^|[-_/])(\d+(?:\.\d+)?)b(?:$|[-_.])")
# Model family (a substring of the name or of config.json's model_type) -> vLLM tool-call parser.
TOOL_PARSERS: tuple[tuple[str, str], ...] = (
    ("hermes", "hermes"),
    ("qwen", "hermes"),
    ("mistral", "mistral"),
    ("mixtral", "mistral"),
    ("ministral", "mistral"),
    ("llama", "llama3_json"),
)
VLLM_PORT = 8000


class ModalServeError(RuntimeError):
    """A vLLM server on Modal could not be had; the message says what to do."""


# ----------------------------------------------------------------------------- what is served


@dataclass(frozen=True)
class ServeSpec:
    """Everything that decides what one model's app runs; travels to the container as JSON."""

    model: str  # a Hub id, or ``volume:<volume>/<path>``
    gpu: str = "H100"
    max_model_len: int = 8192
    tool_parser: str | None = None
    hf_secret: str | None = "huggingface-secret"
    replicas: int = 1
    proxy_auth: bool = True
    startup_timeout: float = 1200.0
    min_containers: int = 1  # an ephemeral app keeps each replica up for the session
    scaledown_window: int = 300
    revision: str | None = None

    @property
    def checkpoint(self) -> tuple[str, str] | None:
        """``(volume, path in it)`` for a checkpoint on a volume, else None."""
        return parse_checkpoint(self.model)

    @property
    def served_name(self) -> str:
        """The ``model`` requests name: the Hub id, or ``<volume>/<path>`` of a checkpoint."""
        return served_name(self.model)

    @property
    def tensor_parallel(self) -> int:
        return gpu_count(self.gpu)

    @property
    def app_name(self) -> str:
        return app_name(self.model)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ServeSpec:
        return cls(**json.loads(text))


def parse_checkpoint(model: str) -> tuple[str, str] | None:
    if not model.startswith(VOLUME_PREFIX):
        return None
    volume, _, path = model.removeprefix(VOLUME_PREFIX).partition("/")
    path = path.strip("/")
    if not volume or not path:
        raise ModalServeError(f"{model!r}: write a checkpoint as volume:<volume>/<path>, e.g. "
                              "volume:metis-grpo-checkpoints/metis-grpo/gsm8k-Qwen2.5-0.5B/global_step_20")
    if re.fullmatch(r"global_step_\d+", path.rsplit("/", 1)[-1]):
        path += "/actor/huggingface"
    return volume, path


def served_name(model: str) -> str:
    checkpoint = parse_checkpoint(model)
    return f"{checkpoint[0]}/{checkpoint[1]}" if checkpoint else model


def app_name(model: str) -> str:
    """``metis-vllm-<slug of the model>``, at most 64 characters (Modal's limit), unique per model."""
    slug = re.sub(r"[^a-z0-9]+", "-", served_name(model).lower()).strip("-")
    name = f"{APP_PREFIX}-{slug}"
    if len(name) <= 64:
        return name
    digest = hashlib.sha256(model.encode()).hexdigest()[:8]
    return f"{name[:55].rstrip('-')}-{digest}"


def model_path(spec: ServeSpec) -> str:
    """What ``vllm serve`` loads: the Hub id, or the checkpoint's path where its volume is mounted."""
    checkpoint = spec.checkpoint
    return f"{CHECKPOINT_MOUNT}/{checkpoint[1]}" if checkpoint else spec.model


def vllm_command(spec: ServeSpec) -> list[str]:
    """The exact command the container runs."""
    command = ["vllm", "serve", model_path(spec), "--served-model-name", spec.served_name,
               "--host", "0.0.0.0", "--port", str(VLLM_PORT),
               "--tensor-parallel-size", str(spec.tensor_parallel), "--max-model-len", str(spec.max_model_len)]
    if spec.revision and not spec.checkpoint:
        command += ["--revision", spec.revision]
    if spec.tool_parser:
        command += ["--enable-auto-tool-choice", "--tool-call-parser", spec.tool_parser]
    return command


# ----------------------------------------------------------------------------- sizing


def gpu_count(gpu: str) -> int:
    _, _, count = gpu.partition(":")
    return int(count) if count else 1


def gpu_memory_gb(gpu: str) -> float | None:
    """Total memory of a Modal GPU spec (``H100:2`` -> 160), None for a type not in the table."""
    kind = gpu.partition(":")[0].upper()
    per_gpu = GPU_MEMORY_GB.get(kind)
    return None if per_gpu is None else per_gpu * gpu_count(gpu)


def params_from_config(config: Mapping[str, Any]) -> float | None:
    """Billions of parameters of a decoder-only transformer from its ``config.json`` (gated MLP,
    grouped-query attention, mixture of experts when it has ``num_experts``/``num_local_experts``)."""
    cfg = dict(config.get("text_config") or config)
    try:
        h, layers, vocab = int(cfg["hidden_size"]), int(cfg["num_hidden_layers"]), int(cfg["vocab_size"])
        heads = int(cfg["num_attention_heads"])
    except (KeyError, TypeError, ValueError):
        return None
    kv_heads = int(cfg.get("num_key_value_heads") or heads)
    head_dim = int(cfg.get("head_dim") or h // heads)
    attention = 2 * h * heads * head_dim + 2 * h * kv_heads * head_dim
    experts = int(cfg.get("num_experts") or cfg.get("num_local_experts") or 0)
    if experts:
        mlp = experts * 3 * h * int(cfg.get("moe_intermediate_size") or cfg["intermediate_size"])
    else:
        mlp = 3 * h * int(cfg["intermediate_size"])
    embeddings = vocab * h * (1 if cfg.get("tie_word_embeddings") else 2)
    return (embeddings + layers * (attention + mlp)) / 1e9


def params_from_name(model: str) -> float | None:
    """Billions of parameters from :data:`KNOWN_SIZES`, else a size in the name (``Qwen3-8B`` -> 8)."""
    name = model.lower()
    for pattern, billions in KNOWN_SIZES:
        if re.search(pattern, name):
            return billions
    found = _SIZE_IN_NAME.findall(name.rsplit("/", 1)[-1]) or _SIZE_IN_NAME.findall(name)
    return float(found[-1]) if found else None


def hub_lookup(model: str, revision: str | None = None) -> tuple[float | None, dict[str, Any] | None]:
    """``(billions from the safetensors metadata, config.json)`` from the Hugging Face Hub, each None
    when it cannot be reached (offline, gated without a token, not installed)."""
    try:
        from huggingface_hub import HfApi, hf_hub_download
    except ImportError:
        return None, None
    billions = config = None
    try:
        info = HfApi().model_info(model, revision=revision)
        if info.safetensors is not None and info.safetensors.total:
            billions = info.safetensors.total / 1e9
    except Exception:  # any failure of the lookup means "not reachable": the next source is tried
        pass
    try:
        with open(hf_hub_download(model, "config.json", revision=revision)) as fh:
            config = json.load(fh)
    except Exception:
        pass
    return billions, config


@dataclass(frozen=True)
class Sizing:
    """What :func:`size_gpus` decided, and from what."""

    gpu: str
    billions: float | None
    source: str  # "--modal-gpu", "safetensors", "config.json", "name"
    family_hint: str | None = None  # config.json's model_type, when it was read


def size_gpus(model: str, *, override: str | None, billions: float | None, config: Mapping[str, Any] | None,
              ) -> Sizing:
    """The GPUs of one replica (see the module docstring); refuses bf16 weights that do not fit."""
    source = "safetensors" if billions else ""
    if not billions and config:
        billions = params_from_config(config)
        source = "config.json" if billions else ""
    if not billions:
        billions = params_from_name(served_name(model))
        source = "name" if billions else ""
    family_hint = str(config.get("model_type")) if config and config.get("model_type") else None
    if override:
        gpu, source = override, "--modal-gpu"
    elif billions is None:
        raise ModalServeError(f"{model}: cannot tell its parameter count (no Hub metadata, no config.json, no "
                              f"size in the name): pass --modal-gpu, e.g. --modal-gpu H100 or --modal-gpu H100:2")
    else:
        gpu = "H100" if billions <= SINGLE_GPU_MAX_B else "H100:2"
    memory = gpu_memory_gb(gpu)
    if billions is not None and memory is not None:
        needed = billions * BYTES_PER_PARAM
        if needed > GPU_MEMORY_FRACTION * memory:
            fits = next((n for n in (2, 4, 8) if needed <= GPU_MEMORY_FRACTION * 80 * n), None)
            hint = f"pass --modal-gpu H100:{fits}" if fits else "it does not fit on 8 x H100 in bf16 either"
            raise ModalServeError(f"{model}: about {billions:.0f}B parameters need {needed:.0f} GB in bf16, more "
                                  f"than {GPU_MEMORY_FRACTION:.0%} of {gpu}'s {memory:.0f} GB: {hint}")
    return Sizing(gpu=gpu, billions=billions, source=source, family_hint=family_hint)


def tool_parser_for(model: str, family_hint: str | None = None, override: str | None = None) -> str | None:
    """vLLM's tool-call parser for the model's family; ``override`` wins (``none``: no tool calling)."""
    if override:
        return None if override.lower() == "none" else override
    for text in (served_name(model).rsplit("/", 1)[-1].lower(), (family_hint or "").lower(), model.lower()):
        for family, parser in TOOL_PARSERS:
            if family in text:
                return parser
    return None


# ----------------------------------------------------------------------------- launching


@dataclass
class Launched:
    """What a launcher started or found: one URL per replica, how to read logs and how to stop."""

    urls: tuple[str, ...]
    deployed: bool
    stop: Callable[[], None] = lambda: None
    log_tail: Callable[[], str] = lambda: ""


class Launcher(Protocol):
    """Everything that talks to Modal (the real one is :class:`ModalLauncher`)."""

    def checkpoint_config(self, volume: str, path: str) -> dict[str, Any] | None:
        """A checkpoint's ``config.json`` read from its volume, None when it cannot be read."""
        ...

    def launch(self, spec: ServeSpec) -> Launched:
        """The replicas of ``spec``'s deployed app, or a new ephemeral app running them."""
        ...

    def deploy(self, spec: ServeSpec) -> Launched:
        """Deploy ``spec``'s app (``metis serve modal``); it runs until ``modal app stop``."""
        ...


class ModalLauncher:
    """Modal itself: look up ``spec.app_name`` as deployed by ``metis serve modal``, else run it ephemeral."""

    def checkpoint_config(self, volume: str, path: str) -> dict[str, Any] | None:
        import modal

        require_modal_token()
        try:
            data = b"".join(modal.Volume.from_name(volume).read_file(f"{path}/config.json"))
            return dict(json.loads(data))
        except Exception:  # unreadable: sizing falls back to the name, or asks for --modal-gpu
            return None

    def launch(self, spec: ServeSpec) -> Launched:
        require_modal_token()
        deployed = self.lookup(spec)
        return deployed if deployed is not None else self.run_ephemeral(spec)

    def deploy(self, spec: ServeSpec) -> Launched:
        from metis_pytest.backends.modal_app import build_app

        require_modal_token()
        app, functions = build_app(spec)
        try:
            app.deploy()
        except Exception as exc:
            raise explain_modal_error(exc, spec) from exc
        return Launched(urls=tuple(str(f.get_web_url()) for f in functions), deployed=True,
                        log_tail=lambda: logs_tail(functions))

    @staticmethod
    def lookup(spec: ServeSpec) -> Launched | None:
        import modal
        from modal.exception import NotFoundError

        from metis_pytest.backends.modal_app import replica_name

        functions = []
        for index in range(spec.replicas):
            function = modal.Function.from_name(spec.app_name, replica_name(index))
            try:
                function.hydrate()
            except NotFoundError:
                if index == 0:
                    return None
                raise ModalServeError(f"app {spec.app_name} is deployed with {index} replica(s) and --shards asks for "
                                      f"{spec.replicas}: redeploy with `metis serve modal {spec.model} --shards "
                                      f"{spec.replicas}` or lower --shards") from None
            functions.append(function)
        return Launched(urls=tuple(str(f.get_web_url()) for f in functions), deployed=True,
                        log_tail=lambda: logs_tail(functions))

    @staticmethod
    def run_ephemeral(spec: ServeSpec) -> Launched:
        from metis_pytest.backends.modal_app import build_app

        app, functions = build_app(spec)
        running = app.run()
        try:
            running.__enter__()
        except Exception as exc:
            raise explain_modal_error(exc, spec) from exc
        try:
            urls = tuple(str(f.get_web_url()) for f in functions)
        except BaseException:
            running.__exit__(None, None, None)
            raise
        return Launched(urls=urls, deployed=False, stop=lambda: running.__exit__(None, None, None),
                        log_tail=lambda: logs_tail(functions))


def require_modal_token() -> None:
    """Raise, saying what to do, when no Modal credentials are configured (env or ~/.modal.toml)."""
    from modal.config import config

    if (config.get("token_id") and config.get("token_secret")) or config.get("oauth_refresh_token"):
        return
    raise ModalServeError("no Modal token: run `modal setup` (writes ~/.modal.toml) or set MODAL_TOKEN_ID and "
                          "MODAL_TOKEN_SECRET")


def explain_modal_error(exc: BaseException, spec: ServeSpec) -> BaseException:
    """Modal's error while starting the app, with what to do for a missing secret or volume."""
    text = str(exc)
    if spec.hf_secret and "secret" in text.lower() and spec.hf_secret in text:
        return ModalServeError(f"Modal secret {spec.hf_secret!r} not found: create it with `modal secret create "
                               f"{spec.hf_secret} HF_TOKEN=hf_...`, name another with --modal-hf-secret, or pass "
                               f"--modal-hf-secret none for a public model ({text})")
    checkpoint = spec.checkpoint
    if checkpoint and checkpoint[0] in text:
        return ModalServeError(f"Modal volume {checkpoint[0]!r} cannot be mounted: check `modal volume ls "
                               f"{checkpoint[0]}` ({text})")
    return ModalServeError(f"Modal could not start app {spec.app_name}: {type(exc).__name__}: {text}")


def logs_tail(functions: list[Any], entries: int = 40) -> str:
    """The last ``entries`` log lines of each replica's containers (best effort: a note if unreadable)."""
    lines: list[str] = []
    for index, function in enumerate(functions):
        try:
            lines += [f"[replica {index}] {entry.message.rstrip()}" for entry in function.logs.tail(entries)]
        except Exception as exc:
            lines.append(f"[replica {index}] (its log could not be read: {type(exc).__name__}: {exc})")
    return "\n".join(lines)


_launcher: Launcher = ModalLauncher()


def use_launcher(launcher: Launcher) -> Launcher:
    """Make ``launcher`` the one ``prepare`` uses; returns the previous one."""
    global _launcher
    previous, _launcher = _launcher, launcher
    return previous


def current_launcher() -> Launcher:
    return _launcher


# ----------------------------------------------------------------------------- health


def wait_healthy(urls: tuple[str, ...], headers: Mapping[str, str], *, timeout: float,
                 log_tail: Callable[[], str], interval: float = 5.0) -> None:
    """Until every URL's ``/health`` answers 200: 503, 5xx, 404 (a container not yet routed) and
    refused connections are retried until ``timeout``; 401/403 (proxy auth refused) fail at once.
    The error of a server that never became healthy ends with the tail of its log."""
    deadline = time.monotonic() + timeout
    pending = list(urls)
    last: dict[str, str] = {}
    while pending:
        for url in list(pending):
            request = urllib.request.Request(f"{url.rstrip('/')}/health", headers=dict(headers))
            try:
                with urllib.request.urlopen(request, timeout=min(30.0, max(1.0, timeout))) as resp:
                    if resp.status == 200:
                        pending.remove(url)
                        continue
                    last[url] = f"HTTP {resp.status}"
            except urllib.error.HTTPError as exc:
                if exc.code in (401, 403):
                    raise ModalServeError(f"{url}: HTTP {exc.code}, Modal refused the proxy auth token: check "
                                          "MODAL_PROXY_TOKEN_ID / MODAL_PROXY_TOKEN_SECRET (a workspace proxy "
                                          "token, wk-/ws-, from `modal workspace proxy-tokens`)") from None
                last[url] = f"HTTP {exc.code}"
            except (urllib.error.URLError, OSError) as exc:
                last[url] = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
        if not pending:
            return
        if time.monotonic() >= deadline:
            states = "; ".join(f"{u}: {last.get(u, 'no answer')}" for u in pending)
            tail = log_tail() or "(no log lines)"
            raise ModalServeError(f"vLLM never became healthy within {timeout:g}s ({states}); raise "
                                  f"--modal-startup-timeout if it was still loading. Last log lines:\n{tail}")
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))


# ----------------------------------------------------------------------------- the backend


def spec_for(model: str, config: MetisConfig, launcher: Launcher, *, min_containers: int = 1) -> ServeSpec:
    """The :class:`ServeSpec` the session's options give ``model`` (looks sizes up: a side effect)."""
    checkpoint = parse_checkpoint(model)
    if config.modal_gpu:
        billions, cfg = None, None
        if config.modal_tool_parser is None and checkpoint:  # the family may only be in its config.json
            cfg = launcher.checkpoint_config(*checkpoint)
    elif checkpoint:
        billions, cfg = None, launcher.checkpoint_config(*checkpoint)
    else:
        billions, cfg = hub_lookup(model)
    sizing = size_gpus(model, override=config.modal_gpu, billions=billions, config=cfg)
    hf_secret = None if config.modal_hf_secret.lower() == "none" else config.modal_hf_secret
    return ServeSpec(model=model, gpu=sizing.gpu, max_model_len=config.modal_max_model_len,
                     tool_parser=tool_parser_for(model, sizing.family_hint, config.modal_tool_parser),
                     hf_secret=hf_secret, replicas=config.shards, proxy_auth=not config.modal_public,
                     startup_timeout=config.modal_startup_timeout, min_containers=min_containers)


@dataclass
class ModalHandle:
    """The ``Runtime.handle`` of a prepared model: what was launched and the spec it was launched with."""

    spec: ServeSpec
    launched: Launched
    stopped: bool = field(default=False)


@register_backend("modal")
class ModalVllmBackend(BaseBackend):
    name = "modal"

    def resolve(self, model: str, config: MetisConfig) -> ModelTarget:
        name = served_name(model)
        return ModelTarget(
            label=model,
            backend=self.name,
            litellm_model=f"openai/{name}",
            api_base=None,  # known once the app is up
            openai_wire=True,
            served_model=name,
            header_env=() if config.modal_public else PROXY_HEADERS,
        )

    def needs_prepare(self, target: ModelTarget) -> bool:
        return True

    def prepare(self, target: ModelTarget, ctx: PrepareContext) -> Runtime:
        missing = target.missing_env()
        if missing:
            raise ModalServeError(f"{target.label}: set {' and '.join(missing)} (a workspace proxy token from "
                                  "`modal workspace proxy-tokens`), or pass --modal-public for an endpoint without "
                                  "proxy auth")
        launcher = current_launcher()
        spec = spec_for(target.label, ctx.config, launcher)
        launched = launcher.launch(spec)
        try:
            wait_healthy(launched.urls, target.auth_headers(), timeout=spec.startup_timeout,
                         log_tail=launched.log_tail)
        except BaseException:
            if not launched.deployed:
                launched.stop()
            raise
        bases = tuple(f"{url.rstrip('/')}/v1" for url in launched.urls)
        return Runtime(api_base=bases[0], api_bases=bases if len(bases) > 1 else (),
                       handle=ModalHandle(spec, launched))

    def close(self, runtime: Runtime) -> None:
        handle = runtime.handle
        if isinstance(handle, ModalHandle) and not handle.launched.deployed and not handle.stopped:
            handle.stopped = True
            handle.launched.stop()

"""GRPO with verl: a run's settings (:class:`GrpoConfig`) and the exact verl command line they make.

    metis train grpo --bench gsm8k --data data/gsm8k
    metis train grpo --bench ace --data data/ace -- trainer.total_training_steps=1

Pure: no verl, no Modal, no network. :func:`verl_command` is what the Modal app
(:mod:`metis_pytest.train.grpo_modal`) runs in its container and what ``--dry-run`` prints; every key in
it was checked against verl 0.9.1's own config (``verl/trainer/config/ppo_trainer.yaml`` and the files it
composes; a test composes the command with Hydra where verl is installed). Keys verl's config does not
declare are added with Hydra's ``+``.

Decisions:

* **Defaults** are the ACE post-training recipe: ``Qwen/Qwen2-0.5B``, 32 prompts a step, prompts up to
  512 tokens, responses up to 2048, 5 rollouts per prompt (the GRPO group), 2 x H100, judge
  ``openai/gpt-4o``. The rest follows verl's GRPO examples (``examples/grpo_trainer/run_qwen2-7b.sh``): KL
  as a loss (``low_var_kl``, 0.001) and not in the reward, vLLM rollouts, overlong prompts filtered out.
  One vLLM replica per GPU (tensor parallel 1: a 0.5B model fits one GPU many times over).
* **Attention is PyTorch's SDPA**, without verl's padding removal (which needs ``flash-attn``): the image
  installs ``verl[vllm]`` and no ``flash-attn``, whose build needs a CUDA toolchain. Give
  ``actor_rollout_ref.model.use_remove_padding=True`` and the ``attn_implementation`` override back in an
  image that has it.
* **The reward** is :mod:`metis_pytest.rewards.verl` (``pkg://``, loaded by module name in every Ray
  worker): ``compute_score`` under verl's ``naive`` reward manager for a rule-based benchmark;
  ``compute_score_async`` under ``rate_limited`` for a judged one (one whose spec has a
  ``judge_prompt_version``), with its judge in ``reward_kwargs``. verl 0.9.1 starts ``reward.num_workers``
  reward workers (Ray actors, one process each) and the ``rate_limited`` manager's limits are class
  attributes, so each worker holds its own: :attr:`GrpoConfig.judge_concurrency` and
  :attr:`GrpoConfig.judge_rpm` are totals over all workers, divided among them here (per worker: total //
  workers). Both count *reward calls* (one sample each), not judge requests: a judged sample sends
  several (ACE: one or more per criterion, at most 4 at a time per sample, the judge client's default).
* **Tools** (a benchmark whose processor is ``agent``): verl's tool agent loop with the benchmark's tool
  config (:data:`TOOL_CONFIGS`, a file inside this package, passed as an absolute path of the installed
  package), the benchmark's ``--max-turns`` default as ``max_assistant_turns``, and tool responses up to
  :data:`TOOL_RESPONSE_CHARS` characters (verl cuts at 256 by default; ACE pages are up to 8000).
* **Checkpoints** are written every :attr:`GrpoConfig.save_freq` steps and at the last step (verl saves
  none when ``save_freq`` is not positive) with the model also in Hugging Face format, under
  ``/checkpoints/<project>/<experiment>/global_step_<N>/actor/huggingface``. verl's ``resume_mode=auto``
  continues a run of the same project and experiment from its latest checkpoint.
* **Overrides win.** Any ``key=value`` (``+key=value``, ``~key``...) passed through replaces the setting of
  the same key here (the key compared without Hydra's ``+``/``++``/``~`` prefix) and goes last, in the
  order given; except the keys in :data:`RESERVED`, which the Modal app depends on (where the data and
  checkpoints are, how many GPUs the container has): overriding one is a ``ValueError`` naming the option.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

__all__ = [
    "CHECKPOINT_MOUNT",
    "CHECKPOINT_VOLUME",
    "DATA_FILES",
    "DATA_MOUNT",
    "DATA_VOLUME",
    "DEFAULT_JUDGE",
    "DEFAULT_MODEL",
    "HF_CACHE_MOUNT",
    "HF_CACHE_VOLUME",
    "RESERVED",
    "REWARD_PATH",
    "TOOL_CONFIGS",
    "GrpoConfig",
    "GrpoLaunch",
    "fetch_command",
    "for_benchmark",
    "installed_package_dir",
    "modal_command",
    "override_key",
    "verl_command",
]

DEFAULT_MODEL = "Qwen/Qwen2-0.5B"
DEFAULT_JUDGE = "openai/gpt-4o"
REWARD_PATH = "pkg://metis_pytest.rewards.verl"
# Tool configs of tool-using benchmarks, relative to the metis_pytest package.
TOOL_CONFIGS: Mapping[str, str] = {"ace": "rewards/ace_tools.yaml"}
TOOL_RESPONSE_CHARS = 8500  # ACE's --page-chars default (8000) plus the tool's header lines
TOOL_AGENT = "tool_agent"  # verl's registered multi-turn tool agent loop
DATA_FILES = ("train.parquet", "test.parquet", "manifest.json")  # what `metis data export` writes

# Modal: volume names and where the container mounts them.
DATA_VOLUME = "metis-grpo-data"
CHECKPOINT_VOLUME = "metis-grpo-checkpoints"
HF_CACHE_VOLUME = "metis-hf-cache"
DATA_MOUNT = "/data"
CHECKPOINT_MOUNT = "/checkpoints"
HF_CACHE_MOUNT = "/hf-cache"
MODAL_ENTRYPOINT = "metis_pytest.train.grpo_modal::main"

# Keys the Modal app depends on (where the data and checkpoints are, how many GPUs the container has).
RESERVED: Mapping[str, str] = {
    "data.train_files": "--data (the files are uploaded to the data volume)",
    "data.val_files": "--data (the files are uploaded to the data volume)",
    "trainer.default_local_dir": "--project and --experiment (checkpoints go to the checkpoint volume)",
    "trainer.n_gpus_per_node": "--gpus (the container's GPU count)",
    "trainer.nnodes": "the Modal app (one container: 1)",
}

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "model"


@dataclass(frozen=True)
class GrpoConfig:
    """One GRPO run's settings (the module docstring says what each becomes in verl).

    ``judge_model`` set makes the reward the judged one; ``tool_config`` set (a path relative to the
    ``metis_pytest`` package) makes the rollout the tool agent loop. :func:`for_benchmark` sets both from
    the benchmark registry."""

    benchmark: str
    model: str = DEFAULT_MODEL
    train_batch_size: int = 32
    max_prompt_length: int = 512
    max_response_length: int = 2048
    rollout_n: int = 5
    gpu: str = "H100"
    n_gpus: int = 2
    ppo_mini_batch_size: int = 16
    ppo_micro_batch_size_per_gpu: int = 4
    log_prob_micro_batch_size_per_gpu: int = 8
    judge_model: str | None = None
    tool_config: str | None = None
    max_assistant_turns: int | None = None
    reward_workers: int = 4
    judge_concurrency: int = 16
    judge_rpm: int | None = None
    reward_timeout_s: float = 300.0
    project: str = "metis-grpo"
    experiment: str = ""  # default: <benchmark>-<model's last path part>
    save_freq: int = 20
    wandb: bool = False

    def __post_init__(self) -> None:
        if not self.experiment:
            object.__setattr__(self, "experiment", f"{self.benchmark}-{_slug(self.model.rsplit('/', 1)[-1])}")
        for name in ("project", "experiment"):
            value = getattr(self, name)
            if not _NAME.match(value) or value.endswith("."):
                raise ValueError(f"{name} {value!r}: letters, digits, '.', '_' and '-' only (it names a folder)")
        for name in ("train_batch_size", "max_prompt_length", "max_response_length", "rollout_n", "n_gpus",
                     "ppo_mini_batch_size", "ppo_micro_batch_size_per_gpu", "log_prob_micro_batch_size_per_gpu",
                     "reward_workers", "judge_concurrency", "save_freq"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)!r}")
        if self.ppo_mini_batch_size > self.train_batch_size:
            raise ValueError(f"ppo_mini_batch_size ({self.ppo_mini_batch_size}) must not exceed train_batch_size "
                             f"({self.train_batch_size}): verl refuses it")
        if self.judged and self.judge_concurrency < self.reward_workers:
            raise ValueError(f"judge_concurrency ({self.judge_concurrency}) is a total over reward_workers "
                             f"({self.reward_workers}): give at least one per worker")
        if self.judge_rpm is not None and self.judged and self.judge_rpm < self.reward_workers:
            raise ValueError(f"judge_rpm ({self.judge_rpm}) is a total over reward_workers "
                             f"({self.reward_workers}): give at least one per worker")
        if self.reward_timeout_s <= 0:
            raise ValueError(f"reward_timeout_s must be positive, got {self.reward_timeout_s!r}")

    @property
    def judged(self) -> bool:
        return bool(self.judge_model)

    @property
    def uses_tools(self) -> bool:
        return bool(self.tool_config)

    @property
    def gpu_spec(self) -> str:
        """Modal's GPU string: ``H100:2``."""
        return f"{self.gpu}:{self.n_gpus}"

    @property
    def data_dir(self) -> str:
        """Where the container reads ``train.parquet`` and ``test.parquet``."""
        return f"{DATA_MOUNT}/{self.experiment}"

    @property
    def checkpoint_path(self) -> str:
        """The run's folder in the checkpoint volume (verl's ``trainer.default_local_dir`` without the mount)."""
        return f"{self.project}/{self.experiment}"

    @property
    def checkpoint_dir(self) -> str:
        return f"{CHECKPOINT_MOUNT}/{self.checkpoint_path}"

    def hf_checkpoint_path(self, step: int | str = "<N>") -> str:
        """The Hugging Face model of step ``step``, in the checkpoint volume."""
        return f"{self.checkpoint_path}/global_step_{step}/actor/huggingface"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GrpoConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown GrpoConfig field(s): {', '.join(unknown)}")
        return cls(**data)


def _option_default(bench: Any, flag: str) -> Any:
    return next((opt.default for opt in getattr(bench, "options", ()) if opt.flag == flag), None)


def for_benchmark(name: str, **settings: Any) -> GrpoConfig:
    """The :class:`GrpoConfig` of registered benchmark ``name``: judged when its spec has a
    ``judge_prompt_version`` (the judge: ``settings["judge_model"]`` or :data:`DEFAULT_JUDGE`), tool-using
    when its processor is ``agent`` (its :data:`TOOL_CONFIGS` entry and ``--max-turns`` default)."""
    from metis_pytest.registry import get_benchmark

    bench = get_benchmark(name)
    chosen = {k: v for k, v in settings.items() if v is not None}
    if bench.judge_prompt_version:
        chosen.setdefault("judge_model", DEFAULT_JUDGE)
    else:
        chosen.pop("judge_model", None)
    if bench.processor == "agent":
        if name not in TOOL_CONFIGS:
            raise ValueError(f"benchmark {name!r} calls tools and has no verl tool config; known: "
                             f"{', '.join(sorted(TOOL_CONFIGS))}")
        chosen.setdefault("tool_config", TOOL_CONFIGS[name])
        turns = _option_default(bench, "--max-turns")
        if turns is not None:
            chosen.setdefault("max_assistant_turns", int(turns))
    return GrpoConfig(benchmark=name, **chosen)


def override_key(override: str) -> str:
    """The config key a Hydra override sets: ``+reward.x=1`` -> ``reward.x``, ``~trainer.logger`` -> ``trainer.logger``."""
    text = override.strip()
    key = text.split("=", 1)[0]
    return key.lstrip("+~").strip()


def _per_worker(total: int, workers: int) -> int:
    return max(1, total // workers)


def _settings(cfg: GrpoConfig, package_dir: Path) -> list[str]:
    data = cfg.data_dir
    out = [
        "algorithm.adv_estimator=grpo",
        "algorithm.use_kl_in_reward=False",
        f"data.train_files={data}/train.parquet",
        f"data.val_files={data}/test.parquet",
        f"data.train_batch_size={cfg.train_batch_size}",
        f"data.max_prompt_length={cfg.max_prompt_length}",
        f"data.max_response_length={cfg.max_response_length}",
        "data.filter_overlong_prompts=True",
        "data.truncation=error",
        f"actor_rollout_ref.model.path={cfg.model}",
        "actor_rollout_ref.model.use_remove_padding=False",
        "+actor_rollout_ref.model.override_config.attn_implementation=sdpa",
        f"actor_rollout_ref.actor.ppo_mini_batch_size={cfg.ppo_mini_batch_size}",
        f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={cfg.ppo_micro_batch_size_per_gpu}",
        "actor_rollout_ref.actor.use_kl_loss=True",
        "actor_rollout_ref.actor.kl_loss_coef=0.001",
        "actor_rollout_ref.actor.kl_loss_type=low_var_kl",
        "actor_rollout_ref.actor.checkpoint.save_contents=[model,optimizer,extra,hf_model]",
        "actor_rollout_ref.rollout.name=vllm",
        f"actor_rollout_ref.rollout.n={cfg.rollout_n}",
        "actor_rollout_ref.rollout.tensor_model_parallel_size=1",
        f"actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu={cfg.log_prob_micro_batch_size_per_gpu}",
        f"actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu={cfg.log_prob_micro_batch_size_per_gpu}",
        f"reward.custom_reward_function.path={REWARD_PATH}",
    ]
    if cfg.judged:
        out += [
            "reward.custom_reward_function.name=compute_score_async",
            f"+reward.custom_reward_function.reward_kwargs.judge_model={cfg.judge_model}",
            "reward.reward_manager.name=rate_limited",
            f"reward.num_workers={cfg.reward_workers}",
            f"+reward.max_concurrent={_per_worker(cfg.judge_concurrency, cfg.reward_workers)}",
        ]
        if cfg.judge_rpm is not None:
            out.append(f"+reward.max_rpm={_per_worker(cfg.judge_rpm, cfg.reward_workers)}")
        out.append(f"+reward.timeout={cfg.reward_timeout_s:g}")
    else:
        out += ["reward.custom_reward_function.name=compute_score", "reward.reward_manager.name=naive"]
    if cfg.uses_tools:
        tools = (package_dir / str(cfg.tool_config)).as_posix()
        out += [
            "actor_rollout_ref.rollout.multi_turn.enable=True",
            f"actor_rollout_ref.rollout.multi_turn.tool_config_path={tools}",
            f"actor_rollout_ref.rollout.multi_turn.max_tool_response_length={TOOL_RESPONSE_CHARS}",
            f"actor_rollout_ref.rollout.agent.default_agent_loop={TOOL_AGENT}",
        ]
        if cfg.max_assistant_turns is not None:
            out.append(f"actor_rollout_ref.rollout.multi_turn.max_assistant_turns={cfg.max_assistant_turns}")
    out += [
        f"trainer.n_gpus_per_node={cfg.n_gpus}",
        "trainer.nnodes=1",
        "trainer.logger=[console,wandb]" if cfg.wandb else "trainer.logger=[console]",
        f"trainer.project_name={cfg.project}",
        f"trainer.experiment_name={cfg.experiment}",
        f"trainer.default_local_dir={cfg.checkpoint_dir}",
        f"trainer.save_freq={cfg.save_freq}",
    ]
    return out


def installed_package_dir() -> Path:
    """This ``metis_pytest`` package's folder."""
    import metis_pytest

    return Path(metis_pytest.__file__).resolve().parent


def verl_command(cfg: GrpoConfig, overrides: Sequence[str] = (), *, python: str = "python",
                 package_dir: Path | None = None) -> list[str]:
    """The verl command line of ``cfg``, then ``overrides`` (each replacing the setting of its key).

    ``package_dir`` is the ``metis_pytest`` package the tool config is read from (default: this one, which
    in the container is the installed package). An override of a key in :data:`RESERVED` is a
    ``ValueError`` naming the option to use instead."""
    given = [o for o in (str(o).strip() for o in overrides) if o]
    for override in given:
        key = override_key(override)
        if not key:
            raise ValueError(f"override {override!r} names no config key")
        if key in RESERVED:
            raise ValueError(f"override {override!r}: {key} is set by {RESERVED[key]}")
    replaced = {override_key(o) for o in given}
    ours = [s for s in _settings(cfg, package_dir or installed_package_dir()) if override_key(s) not in replaced]
    return [python, "-m", "verl.trainer.main_ppo", *ours, *given]


# ----------------------------------------------------------------------------- launching on Modal


@dataclass(frozen=True)
class GrpoLaunch:
    """What ``metis train grpo`` hands the Modal app: the run, the overrides, the local data folder and the
    *names* of the Modal secrets the container gets (never their values)."""

    config: GrpoConfig
    overrides: tuple[str, ...] = ()
    data: str = ""
    secrets: tuple[str, ...] = ()
    detach: bool = False

    def to_json(self) -> str:
        return json.dumps({"config": self.config.to_dict(), "overrides": list(self.overrides),
                           "data": self.data, "secrets": list(self.secrets), "detach": self.detach},
                          sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> GrpoLaunch:
        raw = json.loads(text)
        return cls(config=GrpoConfig.from_dict(raw["config"]), overrides=tuple(raw.get("overrides", ())),
                   data=str(raw.get("data", "")), secrets=tuple(raw.get("secrets", ())),
                   detach=bool(raw.get("detach", False)))

    def data_files(self) -> list[tuple[Path, str]]:
        """``(local file, path in the data volume)`` for each export file present in :attr:`data`."""
        folder = Path(self.data)
        return [(folder / name, str(PurePosixPath("/", self.config.experiment, name)))
                for name in DATA_FILES if (folder / name).is_file()]


def modal_command(launch: GrpoLaunch, *, modal: Sequence[str] = ("modal",)) -> list[str]:
    """The ``modal run`` command line that launches ``launch`` (``--detach`` keeps it running after the
    local process exits); ``modal`` is how the Modal CLI is started."""
    return [*modal, "run", *(["--detach"] if launch.detach else []), "-m", MODAL_ENTRYPOINT,
            "--spec", launch.to_json()]


def fetch_command(cfg: GrpoConfig, step: int | str = "<N>", dest: str | None = None) -> list[str]:
    """The ``modal volume get`` command that downloads step ``step``'s Hugging Face model."""
    return ["modal", "volume", "get", CHECKPOINT_VOLUME, cfg.hf_checkpoint_path(step),
            dest or f"./checkpoints/{cfg.experiment}"]

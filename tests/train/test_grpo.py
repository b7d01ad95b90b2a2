"""``metis train grpo``: the verl command line key by key, the Modal app built offline, the CLI's dry run."""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from metis_pytest.cli import main
from metis_pytest.train import cli as train_cli
from metis_pytest.train.grpo import (
    CHECKPOINT_VOLUME,
    DATA_VOLUME,
    HF_CACHE_VOLUME,
    REWARD_PATH,
    GrpoConfig,
    GrpoLaunch,
    fetch_command,
    for_benchmark,
    installed_package_dir,
    modal_command,
    override_key,
    verl_command,
)
from tests.offline import imported_offline, no_network, raw

REPO = Path(__file__).resolve().parents[2]
PKG = Path("/pkg/metis_pytest")
MODAL_APP = "metis_pytest.train.grpo_modal"


def settings(cmd: list[str]) -> dict[str, str]:
    """``key=value`` arguments by key (prefix kept out of the key, but in the value's entry)."""
    assert cmd[:3] == ["python", "-m", "verl.trainer.main_ppo"]
    out: dict[str, str] = {}
    for arg in cmd[3:]:
        key, _, value = arg.partition("=")
        assert key not in out, f"{key} given twice"
        out[key] = value
    return out


COMMON = {
    "algorithm.adv_estimator": "grpo",
    "algorithm.use_kl_in_reward": "False",
    "data.train_batch_size": "32",
    "data.max_prompt_length": "512",
    "data.max_response_length": "2048",
    "data.filter_overlong_prompts": "True",
    "data.truncation": "error",
    "actor_rollout_ref.model.path": "Qwen/Qwen2-0.5B",
    "actor_rollout_ref.model.use_remove_padding": "False",
    "+actor_rollout_ref.model.override_config.attn_implementation": "sdpa",
    "actor_rollout_ref.actor.ppo_mini_batch_size": "16",
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu": "4",
    "actor_rollout_ref.actor.use_kl_loss": "True",
    "actor_rollout_ref.actor.kl_loss_coef": "0.001",
    "actor_rollout_ref.actor.kl_loss_type": "low_var_kl",
    "actor_rollout_ref.actor.checkpoint.save_contents": "[model,optimizer,extra,hf_model]",
    "actor_rollout_ref.rollout.name": "vllm",
    "actor_rollout_ref.rollout.n": "5",
    "actor_rollout_ref.rollout.tensor_model_parallel_size": "1",
    "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu": "8",
    "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu": "8",
    "reward.custom_reward_function.path": REWARD_PATH,
    "trainer.n_gpus_per_node": "2",
    "trainer.nnodes": "1",
    "trainer.logger": "[console]",
    "trainer.project_name": "metis-grpo",
    "trainer.save_freq": "20",
}


# ----------------------------------------------------------------------------- the verl command line


def test_gsm8k_defaults_key_by_key_with_the_sync_reward() -> None:
    cfg = for_benchmark("gsm8k")
    assert (cfg.judged, cfg.uses_tools, cfg.experiment, cfg.gpu_spec) == (False, False, "gsm8k-Qwen2-0.5B", "H100:2")
    assert settings(verl_command(cfg, package_dir=PKG)) == {
        **COMMON,
        "data.train_files": "/data/gsm8k-Qwen2-0.5B/train.parquet",
        "data.val_files": "/data/gsm8k-Qwen2-0.5B/test.parquet",
        "reward.custom_reward_function.name": "compute_score",
        "reward.reward_manager.name": "naive",
        "trainer.experiment_name": "gsm8k-Qwen2-0.5B",
        "trainer.default_local_dir": "/checkpoints/metis-grpo/gsm8k-Qwen2-0.5B",
    }


def test_ace_gets_the_async_judged_reward_rate_limits_and_the_tool_agent_loop() -> None:
    cfg = for_benchmark("ace")
    assert (cfg.judged, cfg.uses_tools, cfg.judge_model, cfg.max_assistant_turns) == (True, True, "openai/gpt-4o", 10)
    assert settings(verl_command(cfg, package_dir=PKG)) == {
        **COMMON,
        "data.train_files": "/data/ace-Qwen2-0.5B/train.parquet",
        "data.val_files": "/data/ace-Qwen2-0.5B/test.parquet",
        "reward.custom_reward_function.name": "compute_score_async",
        "+reward.custom_reward_function.reward_kwargs.judge_model": "openai/gpt-4o",
        "reward.reward_manager.name": "rate_limited",
        "reward.num_workers": "4",
        "+reward.max_concurrent": "4",  # 16 samples at once over 4 workers
        "+reward.timeout": "300",
        "actor_rollout_ref.rollout.multi_turn.enable": "True",
        "actor_rollout_ref.rollout.multi_turn.tool_config_path": "/pkg/metis_pytest/rewards/ace_tools.yaml",
        "actor_rollout_ref.rollout.multi_turn.max_tool_response_length": "8500",
        "actor_rollout_ref.rollout.multi_turn.max_assistant_turns": "10",
        "actor_rollout_ref.rollout.agent.default_agent_loop": "tool_agent",
        "trainer.experiment_name": "ace-Qwen2-0.5B",
        "trainer.default_local_dir": "/checkpoints/metis-grpo/ace-Qwen2-0.5B",
    }


def test_judge_limits_are_totals_divided_among_the_reward_workers() -> None:
    cfg = for_benchmark("ace", judge_model="anthropic/claude-sonnet-4", reward_workers=3, judge_concurrency=10,
                        judge_rpm=300)
    got = settings(verl_command(cfg, package_dir=PKG))
    assert got["reward.num_workers"] == "3"
    assert got["+reward.max_concurrent"] == "3"  # 10 // 3: never more than the total
    assert got["+reward.max_rpm"] == "100"
    assert got["+reward.custom_reward_function.reward_kwargs.judge_model"] == "anthropic/claude-sonnet-4"
    with pytest.raises(ValueError, match="at least one per worker"):
        for_benchmark("ace", reward_workers=8, judge_concurrency=4)
    with pytest.raises(ValueError, match="at least one per worker"):
        for_benchmark("ace", reward_workers=4, judge_rpm=2)


def test_a_rule_based_benchmark_ignores_a_judge_and_the_tool_config_defaults_to_this_package() -> None:
    cfg = for_benchmark("gsm8k", judge_model="openai/gpt-4o")
    assert cfg.judge_model is None and "rate_limited" not in " ".join(verl_command(cfg, package_dir=PKG))
    ace = verl_command(for_benchmark("ace"))
    tools = installed_package_dir() / "rewards" / "ace_tools.yaml"
    assert f"actor_rollout_ref.rollout.multi_turn.tool_config_path={tools.as_posix()}" in ace


def test_settings_change_their_keys_and_wandb_adds_a_logger() -> None:
    cfg = for_benchmark("gsm8k", model="Qwen/Qwen2.5-1.5B-Instruct", train_batch_size=64, rollout_n=8,
                        max_response_length=1024, n_gpus=4, gpu="H200", experiment="mine", project="p",
                        save_freq=5, wandb=True)
    got = settings(verl_command(cfg, package_dir=PKG))
    assert (got["actor_rollout_ref.model.path"], got["data.train_batch_size"], got["actor_rollout_ref.rollout.n"],
            got["data.max_response_length"], got["trainer.n_gpus_per_node"], got["trainer.save_freq"]) == (
        "Qwen/Qwen2.5-1.5B-Instruct", "64", "8", "1024", "4", "5")
    assert got["trainer.logger"] == "[console,wandb]"
    assert got["trainer.default_local_dir"] == "/checkpoints/p/mine"
    assert got["data.train_files"] == "/data/mine/train.parquet"
    assert cfg.gpu_spec == "H200:4"
    assert cfg.hf_checkpoint_path(7) == "p/mine/global_step_7/actor/huggingface"
    assert fetch_command(cfg, 7) == ["modal", "volume", "get", CHECKPOINT_VOLUME,
                                     "p/mine/global_step_7/actor/huggingface", "./checkpoints/mine"]


def test_overrides_pass_through_last_and_replace_our_setting_of_the_same_key() -> None:
    cfg = for_benchmark("ace")
    overrides = ["trainer.total_training_steps=1", "+reward.max_concurrent=2", "actor_rollout_ref.rollout.n=3",
                 "~trainer.save_freq"]
    cmd = verl_command(cfg, overrides, package_dir=PKG)
    assert cmd[-4:] == overrides
    keys = [override_key(a) for a in cmd[3:]]
    assert keys.count("reward.max_concurrent") == keys.count("actor_rollout_ref.rollout.n") == 1
    assert keys.count("trainer.save_freq") == 1
    assert "actor_rollout_ref.rollout.n=5" not in cmd and "+reward.max_concurrent=4" not in cmd
    assert override_key("++a.b=1") == override_key("+a.b=2") == override_key("~a.b") == "a.b"


@pytest.mark.parametrize("override", ["trainer.default_local_dir=/tmp/x", "data.train_files=a.parquet",
                                      "+trainer.n_gpus_per_node=8", "trainer.nnodes=2", "=1"])
def test_overrides_of_what_the_modal_app_depends_on_are_refused(override: str) -> None:
    with pytest.raises(ValueError, match="set by|names no config key"):
        verl_command(for_benchmark("gsm8k"), [override], package_dir=PKG)


@pytest.mark.parametrize("bad", [{"experiment": "a/b"}, {"project": ".."}, {"train_batch_size": 0},
                                 {"ppo_mini_batch_size": 64}, {"reward_timeout_s": 0}])
def test_bad_settings_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        GrpoConfig(benchmark="gsm8k", **bad)


def test_an_unknown_benchmark_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="gsm8k"):
        for_benchmark("no-such-bench")


def test_the_launch_round_trips_through_json_and_holds_secret_names_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-metis-test-secret")
    (tmp_path / "train.parquet").write_bytes(b"x")
    (tmp_path / "test.parquet").write_bytes(b"x")
    launch = GrpoLaunch(config=for_benchmark("ace"), overrides=("trainer.total_training_steps=1",),
                        data=str(tmp_path), secrets=("huggingface-secret", "openai-secret"), detach=True)
    assert GrpoLaunch.from_json(launch.to_json()) == launch
    cmd = modal_command(launch)
    assert cmd[:5] == ["modal", "run", "--detach", "-m", "metis_pytest.train.grpo_modal::main"]
    assert cmd[5] == "--spec" and GrpoLaunch.from_json(cmd[6]) == launch
    assert "sk-metis-test-secret" not in launch.to_json()
    assert launch.data_files() == [(tmp_path / "train.parquet", "/ace-Qwen2-0.5B/train.parquet"),
                                   (tmp_path / "test.parquet", "/ace-Qwen2-0.5B/test.parquet")]
    assert "--detach" not in modal_command(GrpoLaunch(config=launch.config))


def test_every_key_composes_in_verl_0_9_hydra_config() -> None:
    """Where verl is installed (the opt-in environment), Hydra composes verl's own ``ppo_trainer`` config
    with our command line: every plain key exists there, every ``+`` key does not (Hydra refuses both
    mistakes). verl itself is not imported: only its config folder is read."""
    spec = importlib.util.find_spec("verl")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("verl is not installed (pip install 'metis-pytest[verl]')")
    hydra = pytest.importorskip("hydra")
    config_dir = Path(next(iter(spec.submodule_search_locations))) / "trainer" / "config"
    for bench, extra in (("gsm8k", ["trainer.total_training_steps=1"]), ("ace", ["+reward.max_rpm=60"])):
        cmd = verl_command(for_benchmark(bench), extra, package_dir=PKG)
        with hydra.initialize_config_dir(config_dir=str(config_dir), version_base=None):
            cfg = hydra.compose("ppo_trainer", overrides=cmd[3:])
        assert cfg.algorithm.adv_estimator == "grpo"
        assert cfg.reward.custom_reward_function.path == REWARD_PATH
        assert list(cfg.actor_rollout_ref.actor.checkpoint.save_contents)[-1] == "hf_model"
        if bench == "ace":
            assert cfg.reward.reward_manager.name == "rate_limited"
            assert (cfg.reward.max_concurrent, cfg.reward.max_rpm) == (4, 60)
            assert cfg.reward.custom_reward_function.reward_kwargs.judge_model == "openai/gpt-4o"
            assert cfg.data.tool_config_path == "/pkg/metis_pytest/rewards/ace_tools.yaml"
        else:
            assert cfg.trainer.total_training_steps == 1
            assert cfg.reward.custom_reward_function.name == "compute_score"


def test_importing_the_package_the_cli_and_grpo_loads_no_modal_verl_or_torch() -> None:
    code = ("import sys, metis_pytest.train, metis_pytest.train.grpo, metis_pytest.train.cli; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('modal', 'verl', 'torch', 'vllm') "
            "or m == 'metis_pytest.train.grpo_modal'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_readme_shows_the_commands_verl_command_builds() -> None:
    """The README's complete GSM8K and ACE command lines are the ones the container runs."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## GRPO with verl on Modal", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(python -m verl\.trainer\.main_ppo .*?)\n```", section, re.S)
    assert len(blocks) == 2
    for block, bench in zip(blocks, ("gsm8k", "ace")):
        shown = shlex.split(block.replace("\\\n", " ").replace("$METIS_PKG", "METIS_PKG"))
        assert shown == verl_command(for_benchmark(bench), package_dir=Path("METIS_PKG"))


# ----------------------------------------------------------------------------- the Modal app, offline


@pytest.fixture
def modal_app(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """``metis_pytest.train.grpo_modal`` imported afresh with the network blocked."""
    with imported_offline(monkeypatch, MODAL_APP) as module:
        yield module


def layers(image: Any, version: str = "2025.06") -> list[tuple[list[str], list[tuple[Path, str]]]]:
    """An image's build steps, base first: (Dockerfile commands, files copied in), read from modal's
    lazy image definition (no network; modal 1.6.4's internals)."""
    load = raw(image)._load
    cells = dict(zip(load.__code__.co_freevars, (c.cell_contents for c in load.__closure__)))
    out: list[tuple[list[str], list[tuple[Path, str]]]] = []
    for base in cells["base_images"].values():
        out += layers(base, version)
    dockerfile = cells["dockerfile_function"]
    commands = list(dockerfile(version).commands) if dockerfile else []
    mount = cells["context_mount_function"](version) if cells["context_mount_function"] else None
    files = [(Path(local), str(remote)) for entry in (mount.entries if mount else ())
             for local, remote in entry.get_files_to_upload()]
    out.append((commands, files))
    return out


def test_the_app_its_gpu_volumes_and_image_are_built_without_a_network(modal_app: Any) -> None:
    assert modal_app.app.name == "metis-grpo"
    spec = raw(modal_app.train)._spec
    assert spec.gpus == "H100:2"
    assert {path: raw(vol)._name for path, vol in spec.volumes.items()} == {
        "/data": DATA_VOLUME, "/checkpoints": CHECKPOINT_VOLUME, "/hf-cache": HF_CACHE_VOLUME}
    assert spec.secrets == []  # attached per run: configured()
    load = raw(modal_app.train)._load
    options = dict(zip(load.__code__.co_freevars, (c.cell_contents for c in load.__closure__)))
    assert options["timeout"] == 24 * 60 * 60
    steps = layers(modal_app.image)
    commands = [c for cmds, _ in steps for c in cmds]
    install = next(c for c in commands if "uv pip install" in c)
    assert "'verl[vllm]==0.9.1'" in install
    extra = re.search(r'^verl = \[(.*)\]$', (REPO / "pyproject.toml").read_text(), re.M)
    assert extra is not None and extra.group(1) == '"verl==0.9.1"'  # the image installs the extra's pin
    assert commands.index(install) < commands.index(
        "RUN pip install --no-cache-dir --constraint /opt/verl-constraints.txt /opt/metis")
    assert "ENV HF_HOME=/hf-cache" in commands
    copied = {remote for _, files in steps for _, remote in files}
    assert {"/opt/metis/pyproject.toml", "/opt/metis/README.md", "/opt/metis/metis_pytest/rewards/verl.py",
            "/opt/metis/metis_pytest/train/grpo_modal.py", "/opt/metis/evals/gsm8k/benchmark.py"} <= copied
    assert not any("/.venv/" in r or "/runs/" in r or "__pycache__" in r for r in copied)


def test_a_run_gets_its_gpus_and_secrets_by_name(modal_app: Any) -> None:
    launch = GrpoLaunch(config=for_benchmark("ace", n_gpus=4),
                        secrets=("huggingface-secret", "openai-secret", "searchapi-secret"))
    options = raw(modal_app.configured(launch))._options
    assert [raw(s)._name for s in options.secrets] == ["huggingface-secret", "openai-secret", "searchapi-secret"]
    assert (options.resources.gpu_config.gpu_type, options.resources.gpu_config.count) == ("H100", 4)


def test_the_image_leaves_out_env_files_and_caches(tmp_path: Path, modal_app: Any) -> None:
    for name in ("pyproject.toml", "README.md"):
        (tmp_path / name).write_text("x")
    for folder in ("metis_pytest", "evals"):
        (tmp_path / folder / "__pycache__").mkdir(parents=True)
        (tmp_path / folder / "mod.py").write_text("x")
        (tmp_path / folder / ".env").write_text("OPENAI_API_KEY=sk-secret")
        (tmp_path / folder / ".env.local").write_text("x")
        (tmp_path / folder / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"x")
    copied = sorted(r for _, files in layers(modal_app.build_image(tmp_path)) for _, r in files)
    assert copied == ["/opt/metis/README.md", "/opt/metis/evals/mod.py", "/opt/metis/metis_pytest/mod.py",
                      "/opt/metis/pyproject.toml"]


class FakeVolume:
    def __init__(self) -> None:
        self.put: list[tuple[str, str]] = []
        self.commits = 0
        self.force: bool | None = None

    @contextmanager
    def batch_upload(self, force: bool = False) -> Iterator[FakeVolume]:
        self.force = force
        yield self

    def put_file(self, local: Any, remote: str) -> None:
        self.put.append((Path(local).name, remote))

    def commit(self) -> None:
        self.commits += 1


def test_the_local_entrypoint_uploads_the_data_and_names_the_checkpoint(
    tmp_path: Path, modal_app: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("train.parquet", "test.parquet", "manifest.json"):
        (tmp_path / name).write_text("x")
    volume, sent = FakeVolume(), []

    class Remote:
        def remote(self, spec: str) -> str:
            sent.append(GrpoLaunch.from_json(spec))
            return "12"

    monkeypatch.setattr(modal_app, "data_volume", volume)
    monkeypatch.setattr(modal_app, "configured", lambda launch: Remote())
    launch = GrpoLaunch(config=for_benchmark("gsm8k"), data=str(tmp_path), secrets=("huggingface-secret",))
    modal_app.main(launch.to_json())
    assert volume.force is True
    assert volume.put == [("train.parquet", "/gsm8k-Qwen2-0.5B/train.parquet"),
                          ("test.parquet", "/gsm8k-Qwen2-0.5B/test.parquet"),
                          ("manifest.json", "/gsm8k-Qwen2-0.5B/manifest.json")]
    assert sent[0].data == "" and sent[0].config == launch.config  # the local path stays here
    out = capsys.readouterr().out
    assert "metis-grpo/gsm8k-Qwen2-0.5B/global_step_12/actor/huggingface in volume metis-grpo-checkpoints" in out
    assert shlex.join(fetch_command(launch.config, "12")) in out
    with pytest.raises(FileNotFoundError, match="metis data export gsm8k"):
        modal_app.upload_data(GrpoLaunch(config=launch.config, data=str(tmp_path / "none")))


def test_the_container_records_the_command_runs_verl_and_commits_even_when_it_fails(
    tmp_path: Path, modal_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    volume, ran = FakeVolume(), []
    run_dir = tmp_path / "metis-grpo" / "gsm8k-Qwen2-0.5B"

    def run(cmd: list[str], check: bool) -> None:
        ran.append(cmd)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "latest_checkpointed_iteration.txt").write_text("3")

    monkeypatch.setattr(modal_app, "CHECKPOINT_MOUNT", str(tmp_path))
    monkeypatch.setattr(modal_app, "checkpoint_volume", volume)
    monkeypatch.setattr(modal_app.subprocess, "run", run)
    launch = GrpoLaunch(config=for_benchmark("gsm8k"), overrides=("trainer.total_training_steps=1",))
    assert modal_app.train.local(launch.to_json()) == "3"
    record = json.loads((run_dir / "metis_grpo.json").read_text())
    assert record["command"] == ran[0] and ran[0][0] == sys.executable
    assert ran[0][1:3] == ["-m", "verl.trainer.main_ppo"] and ran[0][-1] == "trainer.total_training_steps=1"
    assert volume.commits == 1

    def fail(cmd: list[str], check: bool) -> None:
        raise RuntimeError("verl failed")

    monkeypatch.setattr(modal_app.subprocess, "run", fail)
    with pytest.raises(RuntimeError, match="verl failed"):
        modal_app.train.local(launch.to_json())
    assert volume.commits == 2


# ----------------------------------------------------------------------------- the CLI


def export_dir(tmp_path: Path, bench: str) -> Path:
    folder = tmp_path / bench
    folder.mkdir()
    for name in ("train.parquet", "test.parquet"):
        (folder / name).write_bytes(b"x")
    (folder / "manifest.json").write_text(json.dumps({"benchmark": bench}))
    return folder


def test_dry_run_prints_the_verl_and_modal_commands_and_runs_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = export_dir(tmp_path, "ace")
    monkeypatch.setattr(train_cli.subprocess, "call", lambda *a, **k: pytest.fail("--dry-run ran something"))
    monkeypatch.delitem(sys.modules, MODAL_APP, raising=False)
    with no_network(monkeypatch) as attempts:
        code = main(["train", "grpo", "--bench", "ace", "--data", str(data), "--detach", "--dry-run", "--",
                     "trainer.total_training_steps=1"])
    assert code == 0 and attempts == []
    assert MODAL_APP not in sys.modules  # a dry run needs no Modal
    lines = capsys.readouterr().out.splitlines()
    cfg = for_benchmark("ace")
    assert lines[1] == shlex.join(verl_command(cfg, ["trainer.total_training_steps=1"],
                                               package_dir=train_cli.CONTAINER_PACKAGE))
    modal_cmd = shlex.split(lines[3])
    assert modal_cmd[:7] == [sys.executable, "-m", "modal", "run", "--detach", "-m",
                             "metis_pytest.train.grpo_modal::main"]
    launch = GrpoLaunch.from_json(modal_cmd[8])
    assert launch == GrpoLaunch(config=cfg, overrides=("trainer.total_training_steps=1",), data=str(data.resolve()),
                                secrets=("huggingface-secret", "openai-secret", "searchapi-secret"), detach=True)
    assert "# checkpoints: metis-grpo/ace-Qwen2-0.5B/global_step_<N>/actor/huggingface in volume " \
           "metis-grpo-checkpoints" in lines


def test_the_cli_launches_modal_run_with_the_runs_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = export_dir(tmp_path, "gsm8k")
    calls: list[list[str]] = []
    monkeypatch.setattr(train_cli.subprocess, "call", lambda cmd: calls.append(cmd) or 0)
    assert main(["train", "grpo", "--bench", "gsm8k", "--data", str(data), "--hf-secret", "",
                 "--wandb-secret", "wandb", "--rollouts", "8", "--", "trainer.total_epochs=1"]) == 0
    assert calls[0][:6] == [sys.executable, "-m", "modal", "run", "-m", "metis_pytest.train.grpo_modal::main"]
    launch = GrpoLaunch.from_json(calls[0][7])
    assert launch.secrets == ("wandb",)  # no judge, no tools, no HF secret asked for
    assert (launch.config.wandb, launch.config.rollout_n, launch.overrides) == (True, 8, ("trainer.total_epochs=1",))


@pytest.mark.parametrize(("setup", "args", "message"), [
    ("none", [], "no train.parquet or test.parquet"),
    ("gsm8k", [], "holds an export of 'gsm8k', not 'ace'"),
    ("ace", ["--", "trainer.default_local_dir=/x"], "set by --project and --experiment"),
    ("ace", ["--experiment", "../x"], "names a folder"),
])
def test_the_cli_refuses_bad_runs_with_status_2(
    tmp_path: Path, setup: str, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "none" if setup == "none" else export_dir(tmp_path, setup)
    assert main(["train", "grpo", "--bench", "ace", "--data", str(data), "--dry-run", *args]) == 2
    assert message in capsys.readouterr().err

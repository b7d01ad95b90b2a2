"""The resumable stage runner with fake stages, the MODPO stage plan, and ``metis train modpo`` without torch."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from metis_pytest.cli import main
from metis_pytest.train.modpo.config import ModpoConfig, parse_overrides, parse_w_grid, require_hf_token
from metis_pytest.train.modpo.pipeline import build_stages
from metis_pytest.train.modpo.stages import DONE, STARTED, Stage, StageContext, StageFailed, run_stages
from tests.conftest import shared_datasets, shared_file

SAMPLE = shared_datasets() / "helpsteer" / "helpsteer2_sample70.jsonl"  # named, not read, where the plan is built


class Recorder:
    """Fake stages: each records its calls (name, resume) and writes ``out.txt``; ``fail`` makes one raise
    after writing a checkpoint file, as an interrupted training stage leaves it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, bool]] = []
        self.fail: dict[str, BaseException] = {}
        self.seen_files: dict[str, list[str]] = {}

    def stage(self, name: str, needs: tuple[str, ...] = (), group: str = "", **inputs: Any) -> Stage:
        def run(ctx: StageContext) -> Mapping[str, Any]:
            self.calls.append((ctx.name, ctx.resume))
            self.seen_files[ctx.name] = sorted(p.name for p in ctx.dir.iterdir())
            for need, folder in ctx.needs.items():
                assert (folder / "out.txt").is_file(), f"{ctx.name} ran before {need} wrote its output"
            (ctx.dir / "checkpoint-1").write_text("x")
            if ctx.name in self.fail:
                raise self.fail.pop(ctx.name)
            (ctx.dir / "out.txt").write_text(ctx.name)
            return {"name": ctx.name}

        return Stage(name, run, inputs, needs=needs, group=group)

    def plan(self, **inputs: Any) -> list[Stage]:
        b = inputs.get("b", 1)
        return [self.stage("a", a=inputs.get("a", 1)),
                self.stage("b", ("a",), b=b),
                self.stage("m-1", ("b",), group="m", w=1),
                self.stage("m-2", ("b",), group="m", w=2),
                self.stage("c", ("m-1", "m-2"), c=1)]

    def names(self) -> list[str]:
        out = [name for name, _ in self.calls]
        self.calls.clear()
        return out


def quiet(_: str) -> None:
    pass


def test_a_rerun_skips_completed_stages_and_markers_hold_the_key(tmp_path: Path) -> None:
    rec = Recorder()
    first = run_stages(rec.plan(), tmp_path, log=quiet)
    assert rec.names() == ["a", "b", "m-1", "m-2", "c"] and first.ran == ["a", "b", "m-1", "m-2", "c"]
    marker = json.loads((tmp_path / "b" / DONE).read_text())
    assert marker["inputs"] == {"b": 1} and len(marker["key"]) == 64 and marker["result"] == {"name": "b"}
    assert not (tmp_path / "b" / STARTED).exists()
    second = run_stages(rec.plan(), tmp_path, log=quiet)
    assert rec.names() == [] and second.skipped == ["a", "b", "m-1", "m-2", "c"]
    assert second.results["c"] == {"name": "c"}
    index = json.loads((tmp_path / "_stages.json").read_text())
    assert [s["state"] for s in index["stages"]] == ["completed"] * 5


def test_a_changed_input_reruns_that_stage_and_everything_after_it(tmp_path: Path) -> None:
    rec = Recorder()
    run_stages(rec.plan(), tmp_path, log=quiet)
    rec.names()
    report = run_stages(rec.plan(b=2), tmp_path, log=quiet)
    assert rec.names() == ["b", "m-1", "m-2", "c"] and report.skipped == ["a"]
    assert rec.seen_files["b"] == [STARTED]  # rerun from scratch: the old checkpoint is gone
    run_stages(rec.plan(b=2), tmp_path, log=quiet)
    assert rec.names() == []


def test_an_interrupted_stage_resumes_in_its_folder_and_the_rest_follows(tmp_path: Path) -> None:
    rec = Recorder()
    rec.fail["m-1"] = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt):
        run_stages(rec.plan(), tmp_path, log=quiet)
    assert rec.names() == ["a", "b", "m-1"]
    assert (tmp_path / "m-1" / STARTED).is_file() and not (tmp_path / "m-1" / DONE).exists()
    report = run_stages(rec.plan(), tmp_path, log=quiet)
    assert rec.calls == [("m-1", True), ("m-2", False), ("c", False)]
    assert rec.seen_files["m-1"] == [STARTED, "checkpoint-1"]  # resumes from its checkpoint
    assert report.resumed == ["m-1"] and report.skipped == ["a", "b"] and report.ran == ["m-2", "c"]


def test_an_interrupted_stage_whose_inputs_changed_starts_over(tmp_path: Path) -> None:
    rec = Recorder()
    rec.fail["b"] = RuntimeError("out of memory")
    with pytest.raises(RuntimeError):
        run_stages(rec.plan(), tmp_path, log=quiet)
    rec.names()
    run_stages(rec.plan(b=3), tmp_path, log=quiet)
    assert rec.calls[0] == ("b", False) and rec.seen_files["b"] == [STARTED]


def test_a_stage_that_stops_the_run_leaves_no_marker_and_runs_again_next_time(tmp_path: Path) -> None:
    rec = Recorder()
    rec.fail["b"] = StageFailed("the adapter does not prefer chosen")
    with pytest.raises(StageFailed, match="does not prefer chosen"):
        run_stages(rec.plan(), tmp_path, log=quiet)
    assert rec.names() == ["a", "b"] and not (tmp_path / "b" / DONE).exists()
    assert json.loads((tmp_path / "_stages.json").read_text())["stages"][1]["state"] == "failed"
    run_stages(rec.plan(), tmp_path, log=quiet)
    assert rec.names() == ["b", "m-1", "m-2", "c"]


def test_from_reruns_a_stage_or_group_and_what_needs_it(tmp_path: Path) -> None:
    rec = Recorder()
    run_stages(rec.plan(), tmp_path, log=quiet)
    rec.names()
    report = run_stages(rec.plan(), tmp_path, start_from="m", log=quiet)
    assert rec.names() == ["m-1", "m-2", "c"] and report.skipped == ["a", "b"]
    assert rec.seen_files["m-1"] == [STARTED]  # forced: from scratch
    run_stages(rec.plan(), tmp_path, start_from="m-2", log=quiet)
    assert rec.names() == ["m-2", "c"]


def test_only_runs_one_stage_and_the_next_normal_run_redoes_what_needs_it(tmp_path: Path) -> None:
    rec = Recorder()
    run_stages(rec.plan(), tmp_path, log=quiet)
    rec.names()
    report = run_stages(rec.plan(), tmp_path, only="b", log=quiet)
    assert rec.names() == ["b"] and report.ran == ["b"]
    run_stages(rec.plan(), tmp_path, log=quiet)
    assert rec.names() == ["m-1", "m-2", "c"]  # b has a new run id: the stages after it are stale


def test_only_refuses_a_stage_whose_needs_have_not_completed(tmp_path: Path) -> None:
    rec = Recorder()
    with pytest.raises(StageFailed, match="needs b"):
        run_stages(rec.plan(), tmp_path, only="m-1", log=quiet)
    assert rec.names() == []


def test_the_checkpoint_hook_is_called_after_every_stage_and_handed_to_each(tmp_path: Path) -> None:
    commits: list[str] = []

    def commit() -> None:
        commits.append("commit")

    def stage(ctx: StageContext) -> None:
        assert ctx.checkpoint is commit
        ctx.checkpoint()  # what a training stage does after writing a checkpoint

    run_stages([Stage("a", stage), Stage("b", stage, needs=("a",))], tmp_path, log=quiet, checkpoint=commit)
    assert len(commits) == 4


def test_bad_names_and_orders_are_refused(tmp_path: Path) -> None:
    rec = Recorder()
    with pytest.raises(ValueError, match="known: a, b, c, m, m-1, m-2"):
        run_stages(rec.plan(), tmp_path, start_from="zzz", log=quiet)
    with pytest.raises(ValueError, match="must come before"):
        run_stages([rec.stage("b", ("a",)), rec.stage("a")], tmp_path, log=quiet)
    with pytest.raises(ValueError, match="not both"):
        run_stages(rec.plan(), tmp_path, start_from="a", only="b", log=quiet)


# ----------------------------------------------------------------------------- the MODPO stage plan


def fake_step(calls: list[str]) -> Callable[..., Callable[[StageContext], Mapping[str, Any] | None]]:
    def step(name: str, *args: Any) -> Callable[[StageContext], Mapping[str, Any] | None]:
        def run(ctx: StageContext) -> Mapping[str, Any] | None:
            calls.append(ctx.name)
            return None

        return run

    return step


def modpo_cfg(**changes: Any) -> ModpoConfig:
    return ModpoConfig(**{"base": "tiny-random", "source": str(SAMPLE), "dtype": "fp32", **changes})


def test_the_stage_plan_names_and_needs() -> None:
    stages = build_stages(modpo_cfg(w=(0.1, 0.5)), "rev", step=fake_step([]))
    assert [(s.name, s.needs) for s in stages] == [
        ("sft", ()), ("margin", ("sft",)), ("margin-check", ("sft", "margin")),
        ("modpo-w0.1", ("sft", "margin", "margin-check")), ("modpo-w0.5", ("sft", "margin", "margin-check")),
        ("generate-sft", ("sft",)), ("generate-modpo-w0.1", ("sft", "modpo-w0.1")),
        ("generate-modpo-w0.5", ("sft", "modpo-w0.5")),
        ("score", ("sft", "margin", "generate-sft", "generate-modpo-w0.1", "generate-modpo-w0.5"))]
    assert {s.group_name for s in stages} == {"sft", "margin", "margin-check", "modpo", "generate", "score"}


def test_settings_rerun_the_stages_that_read_them_and_a_new_w_runs_only_its_own(tmp_path: Path) -> None:
    calls: list[str] = []
    run_stages(build_stages(modpo_cfg(w=(0.5,)), "rev", step=fake_step(calls)), tmp_path, log=quiet)
    assert len(calls) == 7
    calls.clear()
    run_stages(build_stages(modpo_cfg(w=(0.5, 0.9)), "rev", step=fake_step(calls)), tmp_path, log=quiet)
    assert calls == ["modpo-w0.9", "generate-modpo-w0.9", "score"]
    calls.clear()
    run_stages(build_stages(modpo_cfg(w=(0.5, 0.9), margin_beta=-0.1), "rev", step=fake_step(calls)), tmp_path,
               log=quiet)
    assert calls == ["modpo-w0.5", "modpo-w0.9", "generate-modpo-w0.5", "generate-modpo-w0.9", "score"]
    calls.clear()
    run_stages(build_stages(modpo_cfg(w=(0.5, 0.9), margin_beta=-0.1), "other-data", step=fake_step(calls)),
               tmp_path, log=quiet)
    assert calls[0] == "sft" and len(calls) == 9  # new data: everything


def test_the_handoff_names_the_helpsteer_evaluations_commands(tmp_path: Path) -> None:
    from metis_pytest.train.modpo.pipeline import handoff

    lines = handoff(modpo_cfg(w=(0.1, 0.9)), tmp_path)
    assert (f"pytest evals/helpsteer/test_helpsteer.py --helpsteer-generations {tmp_path}/score/generations "
            "--model sft,modpo-w0.1,modpo-w0.9 --judge-model JUDGE") in lines
    assert "python -m evals.helpsteer.pareto runs --w sft=0 --w modpo-w0.1=0.1 --w modpo-w0.9=0.9" in lines


# ----------------------------------------------------------------------------- settings and the CLI


def test_settings_are_checked() -> None:
    assert parse_w_grid("0.1, 0.5,0.9") == (0.1, 0.5, 0.9)
    for bad in ("0,0.5", "0.5,0.5", "", "1.2"):
        with pytest.raises(ValueError):
            parse_w_grid(bad)
    with pytest.raises(ValueError, match="same"):
        modpo_cfg(margin_attribute="helpfulness")
    with pytest.raises(ValueError, match="dtype"):
        modpo_cfg(dtype="int8")
    with pytest.raises(ValueError, match="non-zero"):
        modpo_cfg(margin_beta=0.0)
    assert parse_overrides(["lora_r=32", "w=0.2,0.8", "gradient_checkpointing=false", "revision=none",
                            "lora_targets=q_proj,v_proj"]) == {
        "lora_r": 32, "w": (0.2, 0.8), "gradient_checkpointing": False, "revision": None,
        "lora_targets": ("q_proj", "v_proj")}
    with pytest.raises(ValueError, match="FIELD=VALUE"):
        parse_overrides(["no_such_field=1"])
    assert ModpoConfig.from_dict(json.loads(modpo_cfg().to_json())) == modpo_cfg()


def test_a_gated_base_needs_a_token() -> None:
    with pytest.raises(ValueError, match="gated.*HF_TOKEN.*--hf-secret"):
        require_hf_token("meta-llama/Llama-2-7b-hf", {})
    require_hf_token("meta-llama/Llama-2-7b-hf", {"HF_TOKEN": "hf_x"})
    require_hf_token("Qwen/Qwen2-0.5B", {})


def test_dry_run_lists_the_stages(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "modpo", "--base", "tiny-random", "--data", str(SAMPLE), "--w", "0.5", "--out", "x",
                 "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "sft" and out[3] == "modpo-w0.5  (needs sft, margin, margin-check)" and out[-1].startswith("score")


def test_modal_dry_run_prints_the_launch_and_a_gated_base_without_a_secret_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from metis_pytest.train.modpo.launch import ModpoLaunch

    sample = shared_file("helpsteer", "helpsteer2_sample70.jsonl")
    assert main(["train", "modpo", "--base", "meta-llama/Llama-2-7b-hf", "--data", str(sample), "--out",
                 str(tmp_path / "run7"), "--modal", "--detach", "--dry-run", "--set", "epochs=1"]) == 0
    out = capsys.readouterr().out.splitlines()
    command = out[0].split(" ")
    assert command[1:6] == ["-m", "modal", "run", "--detach", "-m"]
    launch = ModpoLaunch.from_json(json.loads(json.dumps(out[0].split(" --spec ", 1)[1].strip("'"))))
    assert (launch.name, launch.secrets, launch.gpu, launch.config.epochs) == ("run7", ("huggingface-secret",),
                                                                                "H100", 1.0)
    assert launch.container_config().source == "/runs/run7/input/helpsteer2_sample70.jsonl"
    assert out[1] == f"# then: modal volume get metis-modpo run7 {tmp_path / 'run7'}"
    assert main(["train", "modpo", "--base", "meta-llama/Llama-2-7b-hf", "--out", "x", "--modal",
                 "--hf-secret", "", "--dry-run"]) == 2
    assert "gated" in capsys.readouterr().err


def test_a_local_run_of_a_gated_base_without_a_token_stops_before_anything_runs(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    assert main(["train", "modpo", "--base", "meta-llama/Llama-2-7b-hf", "--out", str(tmp_path / "run")]) == 2
    assert "gated" in capsys.readouterr().err and not (tmp_path / "run").exists()


def test_a_local_run_without_torch_says_what_to_install(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    try:
        import torch  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("torch is installed here (the opt-in environment runs the pipeline itself)")
    sample = shared_file("helpsteer", "helpsteer2_sample70.jsonl")
    assert main(["train", "modpo", "--base", "tiny-random", "--data", str(sample), "--out", str(tmp_path)]) == 2
    assert "metis-pytest[train]" in capsys.readouterr().err


def test_importing_the_pure_modules_loads_no_torch_trl_or_modal() -> None:
    code = ("import sys, metis_pytest.train.modpo, metis_pytest.train.modpo.loss, metis_pytest.train.modpo.stages, "
            "metis_pytest.train.modpo.pipeline, metis_pytest.train.modpo.cli, metis_pytest.train.modpo.launch, "
            "metis_pytest.train.modpo.data, metis_pytest.train.cli; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'peft', 'trl', "
            "'modal')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"

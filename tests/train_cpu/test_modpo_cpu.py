"""Opt-in (``tox -e modpo-cpu``; skipped without torch): the whole MODPO pipeline on a CPU with the tiny random
model over the shared HelpSteer sample, then its pieces against their definitions: the trainer's loss is
the MODPO formula, an implicit reward with the adapter disabled is exactly 0, an interrupted stage resumes
from its checkpoint, a failing margin check stops the run."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (pip install 'metis-pytest[train]')")
pytest.importorskip("trl", reason="trl is not installed (pip install 'metis-pytest[train]')")

from metis_pytest.train.modpo.config import ModpoConfig  # noqa: E402
from metis_pytest.train.modpo.loss import modpo_loss_tensor  # noqa: E402
from metis_pytest.train.modpo.pipeline import run_pipeline  # noqa: E402
from metis_pytest.train.modpo.stages import DONE, STARTED, StageFailed  # noqa: E402
from tests.conftest import shared_file  # noqa: E402

STAGES = ["sft", "margin", "margin-check", "modpo-w0.5", "modpo-w0.9", "generate-sft", "generate-modpo-w0.5",
          "generate-modpo-w0.9", "score"]


def tiny_config(sample: Path, **changes: Any) -> ModpoConfig:
    """The plumbing run: 2 optimizer steps per training stage, 8 new tokens, no threshold on the check."""
    settings: dict[str, Any] = dict(base="tiny-random", source=str(sample), dtype="fp32", w=(0.5, 0.9),
                                    held_share=0.3, max_steps=2, batch_size=2, grad_accum=1, save_steps=1,
                                    max_length=256, max_new_tokens=8, margin_min_accuracy=0.0,
                                    gradient_checkpointing=False)
    settings.update(changes)
    return ModpoConfig(**settings)


def quiet(_: str) -> None:
    pass


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModpoConfig, Path]:
    cfg = tiny_config(shared_file("helpsteer", "helpsteer2_sample70.jsonl"))
    out = tmp_path_factory.mktemp("modpo") / "run"
    report = run_pipeline(cfg, out, log=quiet)
    assert report.ran == STAGES
    return cfg, out


def test_the_pipeline_runs_end_to_end_and_a_rerun_skips_every_stage(run: tuple[ModpoConfig, Path]) -> None:
    cfg, out = run
    for stage in STAGES:
        assert json.loads((out / stage / DONE).read_text())["stage"] == stage
    assert (out / "sft" / "model" / "model.safetensors").is_file()
    assert (out / "margin" / "adapter" / "adapter_model.safetensors").is_file()
    assert (out / "modpo-w0.5" / "adapter" / "adapter_model.safetensors").is_file()
    check = json.loads((out / "margin-check" / "report.json").read_text())
    assert check["pairs"] == len(check["rows"]) > 0 and 0.0 <= check["accuracy"] <= 1.0
    prompts = {json.loads(line)["prompt_id"] for line in
               (out / "generate-sft" / "generations.jsonl").read_text().splitlines()}
    for policy in ("modpo-w0.5", "modpo-w0.9"):
        rows = [json.loads(line) for line in (out / f"generate-{policy}" / "generations.jsonl").read_text().splitlines()]
        assert {r["prompt_id"] for r in rows} == prompts and len(rows) == len(prompts) > 0
        assert {r["policy"] for r in rows} == {policy}
    from evals.helpsteer.policies import read_generations

    for policy in ("sft", "modpo-w0.5", "modpo-w0.9"):  # what --helpsteer-generations reads
        assert set(read_generations(out / "score" / "generations" / f"{policy}.jsonl")) == prompts
    summary = json.loads((out / "score" / "summary.json").read_text())
    assert set(summary) == {"sft", "modpo-w0.5", "modpo-w0.9"}
    assert summary["modpo-w0.9"]["w"] == 0.9 and summary["sft"]["n"] == len(prompts)
    assert all(isinstance(summary[p]["mean_margin_reward"], float) for p in summary)
    again = run_pipeline(cfg, out, log=quiet)
    assert again.skipped == STAGES and again.ran == again.resumed == []


def _with_margin(cfg: ModpoConfig, out: Path) -> tuple[Any, Any]:
    from peft import PeftModel

    from metis_pytest.train.modpo.steps import load_model
    from metis_pytest.train.modpo.trainer import MARGIN_ADAPTER

    model, tokenizer = load_model(out / "sft" / "model", cfg)
    return PeftModel.from_pretrained(model, str(out / "margin" / "adapter"), adapter_name=MARGIN_ADAPTER), tokenizer


def _randomise(model: Any, adapter: str, scale: float = 0.05) -> None:
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if f"lora_B.{adapter}." in name:
                param.copy_(torch.randn_like(param) * scale)


def test_an_implicit_reward_with_the_adapter_disabled_is_exactly_zero(run: tuple[ModpoConfig, Path]) -> None:
    from peft import LoraConfig

    from metis_pytest.train.modpo.trainer import implicit_rewards

    cfg, out = run
    model, tokenizer = _with_margin(cfg, out)
    _randomise(model, "margin")
    prompts = [cfg.prompt_template.format(raw_prompt=p) for p in ("hi", "what is C#?")]
    responses = ["hello there", "A language."]
    assert [r[0] for r in implicit_rewards(model, tokenizer, prompts, responses, beta=0.1, adapter=None)] == [0.0, 0.0]
    active = implicit_rewards(model, tokenizer, prompts, responses, beta=0.1)
    assert all(r[0] != 0.0 for r in active)
    assert active[0][0] == pytest.approx(0.1 * (active[0][1] - active[0][2]))
    model.add_adapter("fresh", LoraConfig(r=8, lora_alpha=16, target_modules=list(cfg.lora_targets)))
    assert [r[0] for r in implicit_rewards(model, tokenizer, prompts, responses, beta=0.1, adapter="fresh")] == [0.0, 0.0]


@pytest.mark.parametrize("w", [0.5, 0.9])
def test_the_trainers_loss_is_the_modpo_loss(run: tuple[ModpoConfig, Path], w: float) -> None:
    """TRL's DPO loss in :class:`ModpoTrainer` (beta / w0, shifted precomputed references) equals
    :func:`modpo_loss_tensor` of independently computed policy, SFT and margin log-probabilities."""
    from datasets import Dataset
    from peft import PeftModel, get_peft_model

    from metis_pytest.train.modpo.data import dpo_rows, load_run_data
    from metis_pytest.train.modpo.steps import _lora, load_model
    from metis_pytest.train.modpo.trainer import MARGIN_ADAPTER, ModpoTrainer, completion_logps, modpo_config

    cfg, out = run
    base, tokenizer = load_model(out / "sft" / "model", cfg)
    model = get_peft_model(base, _lora(cfg, r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=0.0))
    model.load_adapter(str(out / "margin" / "adapter"), adapter_name=MARGIN_ADAPTER, is_trainable=False)
    model.set_adapter("default")
    _randomise(model, "margin", scale=0.2)  # a margin that moves log-probabilities visibly
    _randomise(model, "default", scale=0.2)  # a policy away from the SFT model
    assert isinstance(model, PeftModel)
    rows = dpo_rows(load_run_data(cfg).preference_pairs()[:4], cfg.prompt_template)
    args = modpo_config(w=w, beta=cfg.beta, output_dir=str(out / "trainer-test"), report_to="none", bf16=False,
                        use_cpu=True, max_length=cfg.max_length, per_device_train_batch_size=4,
                        gradient_checkpointing=False)
    trainer = ModpoTrainer(model=model, args=args, w=w, beta=cfg.beta, margin_beta=cfg.margin_beta,
                           train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(rows))])
    loss = trainer.compute_loss(trainer.model, batch)

    ids, attention, completion = batch["input_ids"], batch["attention_mask"], batch["completion_mask"]
    with torch.no_grad():
        policy = completion_logps(model, ids, attention, completion)
        with model.disable_adapter():
            sft = completion_logps(model, ids, attention, completion)
        model.set_adapter(MARGIN_ADAPTER)
        margin = cfg.margin_beta * (completion_logps(model, ids, attention, completion) - sft)
        model.set_adapter("default")
    pc, pr = policy.chunk(2)
    sc, sr = sft.chunk(2)
    mc, mr = margin.chunk(2)
    assert float(margin.abs().max()) > 1e-3
    want, _, _ = modpo_loss_tensor(pc, pr, sc, sr, mc, mr, w=w, beta=cfg.beta)
    assert float(loss.detach()) == pytest.approx(float(want.mean()), rel=1e-4, abs=1e-5)
    shift = (1 - w) / cfg.beta
    assert [float(v) for v in trainer.train_dataset["ref_chosen_logps"]] == pytest.approx(
        [float(v) for v in sc + shift * mc], rel=1e-5, abs=1e-4)


def test_an_interrupted_stage_resumes_from_its_last_checkpoint(run: tuple[ModpoConfig, Path], tmp_path: Path) -> None:
    cfg, out = run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    stage = copy / "modpo-w0.9"
    done = json.loads((stage / DONE).read_text())
    (stage / DONE).unlink()
    shutil.rmtree(stage / "checkpoints" / "checkpoint-2")
    shutil.rmtree(stage / "adapter")
    (stage / STARTED).write_text(json.dumps({"stage": "modpo-w0.9", "key": done["key"]}))
    report = run_pipeline(cfg, copy, log=quiet)
    assert report.resumed == ["modpo-w0.9"]
    assert report.results["modpo-w0.9"]["resumed_from"] == "checkpoint-1"
    assert report.results["modpo-w0.9"]["steps"] == 2
    assert report.ran == ["generate-modpo-w0.9", "score"]  # a new run id: what needs it reruns


def test_a_margin_adapter_that_does_not_prefer_chosen_stops_the_run(run: tuple[ModpoConfig, Path],
                                                                    tmp_path: Path) -> None:
    cfg, out = run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    strict = dataclasses.replace(cfg, margin_min_accuracy=1.01)
    with pytest.raises(StageFailed, match="does not prefer chosen over rejected.*--from margin"):
        run_pipeline(strict, copy, log=quiet)
    assert not (copy / "margin-check" / DONE).exists() and (copy / "margin-check" / "report.json").is_file()


def test_a_gated_hub_error_and_a_half_precision_cpu_run_are_explained(monkeypatch: pytest.MonkeyPatch,
                                                                      tmp_path: Path) -> None:
    import transformers

    from metis_pytest.train.modpo import steps

    cfg = tiny_config(tmp_path / "unused.jsonl")

    def gated(*args: Any, **kwargs: Any) -> Any:
        raise OSError("You are trying to access a gated repo. Make sure to have access to it.")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", gated)
    with pytest.raises(StageFailed, match="gated.*HF_TOKEN.*--hf-secret"):
        steps.load_model("some-org/some-model", cfg)
    if not torch.cuda.is_available():
        with pytest.raises(StageFailed, match="--dtype fp32"):
            steps._device(dataclasses.replace(cfg, dtype="bf16"))


def test_an_interrupted_generation_keeps_its_rows_and_asks_only_for_the_rest(run: tuple[ModpoConfig, Path],
                                                                             tmp_path: Path) -> None:
    cfg, out = run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    stage = copy / "generate-sft"
    done = json.loads((stage / DONE).read_text())
    lines = (stage / "generations.jsonl").read_text().splitlines()
    (stage / DONE).unlink()
    (stage / "generations.jsonl").write_text(lines[0] + "\n" + lines[1][:20])  # a row cut short by the kill
    (stage / STARTED).write_text(json.dumps({"stage": "generate-sft", "key": done["key"]}))
    report = run_pipeline(cfg, copy, log=quiet)
    assert report.resumed == ["generate-sft"]
    assert report.results["generate-sft"]["generated_now"] == len(lines) - 1
    rows = [json.loads(line) for line in (stage / "generations.jsonl").read_text().splitlines()]
    assert sorted(r["prompt_id"] for r in rows) == sorted(json.loads(line)["prompt_id"] for line in lines)

"""``metis train modpo --modal``: the Modal app built offline with sockets blocked, its entrypoint and its
container function with fakes for the volume and the pipeline."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from metis_pytest.train.modpo.config import ModpoConfig
from metis_pytest.train.modpo.launch import ModpoLaunch, fetch_command, modal_command
from metis_pytest.train.modpo.stages import RunReport, StageFailed
from tests.offline import imported_offline, raw

REPO = Path(__file__).resolve().parents[2]
MODAL_APP = "metis_pytest.train.modpo.modal_app"


@pytest.fixture
def modal_app(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The app module imported afresh with the network blocked."""
    with imported_offline(monkeypatch, MODAL_APP) as module:
        yield module


def layers(image: Any, version: str = "2025.06") -> list[tuple[list[str], list[str]]]:
    """An image's build steps, base first: (Dockerfile commands, paths copied in), from modal 1.6.4's lazy
    image definition (no network)."""
    load = raw(image)._load
    cells = dict(zip(load.__code__.co_freevars, (c.cell_contents for c in load.__closure__)))
    out: list[tuple[list[str], list[str]]] = []
    for base in cells["base_images"].values():
        out += layers(base, version)
    dockerfile = cells["dockerfile_function"]
    commands = list(dockerfile(version).commands) if dockerfile else []
    mount = cells["context_mount_function"](version) if cells["context_mount_function"] else None
    files = [str(remote) for entry in (mount.entries if mount else ()) for _, remote in entry.get_files_to_upload()]
    out.append((commands, files))
    return out


def launch_for(tmp_path: Path, **changes: Any) -> ModpoLaunch:
    data = tmp_path / "sample.jsonl"
    data.write_text("{}\n")
    cfg = ModpoConfig(base="meta-llama/Llama-2-7b-hf", source=str(data))
    return ModpoLaunch(**{"config": cfg, "name": "run1", "secrets": ("huggingface-secret",), **changes})


def test_the_app_its_gpu_volumes_and_image_are_built_without_a_network(modal_app: Any) -> None:
    assert modal_app.app.name == "metis-modpo"
    spec = raw(modal_app.run)._spec
    assert spec.gpus == "H100"
    assert {path: raw(vol)._name for path, vol in spec.volumes.items()} == {
        "/runs": "metis-modpo", "/hf-cache": "metis-hf-cache"}
    assert spec.secrets == []  # attached per run: configured()
    load = raw(modal_app.run)._load
    options = dict(zip(load.__code__.co_freevars, (c.cell_contents for c in load.__closure__)))
    assert options["timeout"] == 24 * 60 * 60
    steps = layers(modal_app.image)
    commands = [c for cmds, _ in steps for c in cmds]
    assert "RUN pip install --no-cache-dir '/opt/metis[train,hf]'" in commands
    assert "ENV HF_HOME=/hf-cache" in commands
    copied = {remote for _, files in steps for remote in files}
    assert {"/opt/metis/pyproject.toml", "/opt/metis/metis_pytest/train/modpo/steps.py",
            "/opt/metis/evals/helpsteer/dataset.py"} <= copied
    assert not any("/.venv/" in r or "__pycache__" in r or r.endswith("/.env") for r in copied)


def test_the_train_extra_pins_torch_transformers_peft_and_trl() -> None:
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    block = re.search(r"^train = \[(.*?)\]$", text, re.M | re.S)
    assert block is not None
    pins = dict(re.findall(r'"([a-z]+)==([0-9.]+)"', block.group(1)))
    assert {"torch", "transformers", "peft", "trl"} <= set(pins)
    assert pins["trl"] == "1.13.0"  # the version metis_pytest/train/modpo/trainer.py is written against


def test_a_run_gets_its_gpu_and_secrets_by_name(modal_app: Any, tmp_path: Path) -> None:
    options = raw(modal_app.configured(launch_for(tmp_path, gpu="H200")))._options
    assert [raw(s)._name for s in options.secrets] == ["huggingface-secret"]
    assert options.resources.gpu_config.gpu_type == "H200"


class FakeVolume:
    def __init__(self) -> None:
        self.put: list[tuple[str, str]] = []
        self.commits = 0

    @contextmanager
    def batch_upload(self, force: bool = False) -> Iterator[FakeVolume]:
        assert force
        yield self

    def put_file(self, local: Any, remote: str) -> None:
        self.put.append((Path(local).name, remote))

    def commit(self) -> None:
        self.commits += 1


def test_the_entrypoint_uploads_a_local_file_and_says_how_to_fetch_the_run(
    modal_app: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    volume, sent = FakeVolume(), []

    class Remote:
        def remote(self, spec: str) -> dict[str, Any]:
            sent.append(ModpoLaunch.from_json(spec))
            return {"ran": ["sft"], "resumed": [], "skipped": []}

    monkeypatch.setattr(modal_app, "runs_volume", volume)
    monkeypatch.setattr(modal_app, "configured", lambda launch: Remote())
    launch = launch_for(tmp_path)
    modal_app.main(launch.to_json())
    assert volume.put == [("sample.jsonl", "/run1/input/sample.jsonl")]
    assert sent == [launch]
    out = capsys.readouterr().out
    assert "ran: sft" in out and "modal volume get metis-modpo run1 ./run1" in out


def test_the_container_runs_the_pipeline_in_the_volume_and_commits_however_it_ends(
    modal_app: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from metis_pytest.train.modpo import pipeline

    volume, calls = FakeVolume(), []

    def fake_run(cfg: ModpoConfig, out: Path, **kwargs: Any) -> RunReport:
        calls.append((cfg.source, str(out), kwargs["start_from"], kwargs["only"]))
        kwargs["checkpoint"]()
        return RunReport(ran=["score"], skipped=["sft"])

    monkeypatch.setattr(modal_app, "runs_volume", volume)
    monkeypatch.setattr(pipeline, "run_pipeline", fake_run)
    launch = launch_for(tmp_path, start_from="modpo")
    assert modal_app.run.local(launch.to_json()) == {"ran": ["score"], "resumed": [], "skipped": ["sft"]}
    assert calls == [("/runs/run1/input/sample.jsonl", "/runs/run1", "modpo", None)]
    assert volume.commits == 2  # the checkpoint hook, then the end

    def stopped(cfg: ModpoConfig, out: Path, **kwargs: Any) -> RunReport:
        raise StageFailed("the margin adapter does not prefer chosen")

    monkeypatch.setattr(pipeline, "run_pipeline", stopped)
    assert modal_app.run.local(launch.to_json()) == {"stopped": "the margin adapter does not prefer chosen"}
    assert volume.commits == 3


def test_the_launch_round_trips_and_names_the_commands(tmp_path: Path) -> None:
    launch = launch_for(tmp_path, detach=True, only="score")
    assert ModpoLaunch.from_json(launch.to_json()) == launch
    cmd = modal_command(launch)
    assert cmd[:5] == ["modal", "run", "--detach", "-m", "metis_pytest.train.modpo.modal_app::main"]
    assert ModpoLaunch.from_json(cmd[6]) == launch
    assert fetch_command(launch, "out/dir") == ["modal", "volume", "get", "metis-modpo", "run1", "out/dir"]
    hub = ModpoLaunch(config=ModpoConfig(base="Qwen/Qwen2-0.5B"), name="hub")
    assert hub.data_file is None and hub.container_config() == hub.config
    with pytest.raises(ValueError, match="names a folder"):
        ModpoLaunch(config=hub.config, name="a/b").check()

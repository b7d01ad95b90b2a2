"""What ``metis train modpo --modal`` hands the Modal app (:mod:`metis_pytest.train.modpo.modal_app`): pure.

The run lives in the volume :data:`VOLUME` under ``/<name>/`` (mounted at :data:`RUNS_MOUNT`): the same
folder layout as a local run, stage markers included, so a second launch with the same name resumes it.
A local ``.jsonl`` source is uploaded to ``/<name>/input/<file>`` in the volume first and the container
reads it there; a Hub source is downloaded in the container (the Hugging Face cache is the volume
``metis-hf-cache``, shared with ``metis train grpo``).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from metis_pytest.train.modpo.config import ModpoConfig

__all__ = ["ENTRYPOINT", "HF_CACHE_MOUNT", "HF_CACHE_VOLUME", "RUNS_MOUNT", "VOLUME", "ModpoLaunch",
           "fetch_command", "modal_command"]

VOLUME = "metis-modpo"
RUNS_MOUNT = "/runs"
HF_CACHE_VOLUME = "metis-hf-cache"
HF_CACHE_MOUNT = "/hf-cache"
ENTRYPOINT = "metis_pytest.train.modpo.modal_app::main"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class ModpoLaunch:
    """A run on Modal: its settings, its folder name in the volume, ``--from``/``--only``, the GPU and the
    *names* of the Modal secrets the container gets (never their values)."""

    config: ModpoConfig
    name: str
    start_from: str | None = None
    only: str | None = None
    gpu: str = "H100"
    secrets: tuple[str, ...] = ()
    detach: bool = False

    @property
    def volume(self) -> str:
        return VOLUME

    @property
    def run_dir(self) -> str:
        """The run folder inside the container."""
        return f"{RUNS_MOUNT}/{self.name}"

    @property
    def data_file(self) -> Path | None:
        """The local data file to upload (``None`` for a Hub source)."""
        path = Path(self.config.source)
        return path if path.suffix == ".jsonl" or path.is_file() else None

    def remote_data(self) -> str:
        """Where the uploaded data file is in the volume (relative to the volume's root)."""
        assert self.data_file is not None
        return str(PurePosixPath("/", self.name, "input", self.data_file.name))

    def check(self) -> None:
        """``ValueError`` for a name that cannot be a folder or a local data file that is not there."""
        if not _NAME.match(self.name) or self.name.endswith("."):
            raise ValueError(f"run name {self.name!r}: letters, digits, '.', '_' and '-' only (it names a folder)")
        if self.data_file is not None and not self.data_file.is_file():
            raise ValueError(f"{self.data_file}: no such file")

    def container_config(self) -> ModpoConfig:
        """The settings as the container runs them: a local data file read from the volume."""
        if self.data_file is None:
            return self.config
        return dataclasses.replace(self.config, source=f"{RUNS_MOUNT}{self.remote_data()}")

    def to_json(self) -> str:
        return json.dumps({"config": self.config.to_dict(), "name": self.name, "start_from": self.start_from,
                           "only": self.only, "gpu": self.gpu, "secrets": list(self.secrets),
                           "detach": self.detach}, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> ModpoLaunch:
        raw = json.loads(text)
        return cls(config=ModpoConfig.from_dict(raw["config"]), name=str(raw["name"]), start_from=raw.get("start_from"),
                   only=raw.get("only"), gpu=str(raw.get("gpu", "H100")), secrets=tuple(raw.get("secrets", ())),
                   detach=bool(raw.get("detach", False)))


def modal_command(launch: ModpoLaunch, *, modal: Sequence[str] = ("modal",)) -> list[str]:
    """``modal run [--detach] -m metis_pytest.train.modpo.modal_app::main --spec JSON``."""
    return [*modal, "run", *(["--detach"] if launch.detach else []), "-m", ENTRYPOINT, "--spec", launch.to_json()]


def fetch_command(launch: ModpoLaunch, dest: str | None = None) -> list[str]:
    """The ``modal volume get`` command that downloads the run folder."""
    return ["modal", "volume", "get", VOLUME, launch.name, dest or f"./{launch.name}"]

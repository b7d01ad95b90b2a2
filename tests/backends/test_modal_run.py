"""``metis run modal`` / ``metis fetch modal``: pytest in a Modal container, its run folder on a volume.

No Modal account here: the Modal objects are built with every socket blocked; the container's body runs
here on GSM8K against the scripted server, with a tmp folder standing in for the volume, and is compared
with the same pytest arguments run locally; fetch runs against a fake volume with modal 1.6.4's
``listdir``/``read_file`` shapes and its own ``FileEntry`` type.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from metis_pytest.backends import modal_run as mr
from metis_pytest.cli import main as metis_main
from metis_pytest.store.runs import git_info
from metis_pytest.testing import ScriptedServer
from tests.e2e.conftest import SMOKE, ep_store_text, last_user, read_jsonl, smoke_golds
from tests.offline import closure, imported_offline, no_network, raw, run_offline

REPO = Path(__file__).resolve().parents[2]
APP_MODULE = "metis_pytest.backends.modal_run_app"
ROWS = 4


# ----------------------------------------------------------------------------- the Modal objects, offline


@pytest.fixture
def app_module(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """``metis_pytest.backends.modal_run_app`` imported afresh with the network blocked."""
    with imported_offline(monkeypatch, APP_MODULE) as module:
        yield module


def layers(image: Any, version: str = "2025.06") -> list[tuple[list[str], list[tuple[Path, str]]]]:
    """An image's build steps, base first: (Dockerfile commands, (local file, path in the image) copied in),
    from modal 1.6.4's lazy image definition (no network)."""
    cells = closure(image)
    out: list[tuple[list[str], list[tuple[Path, str]]]] = []
    for base in cells["base_images"].values():
        out += layers(base, version)
    dockerfile = cells["dockerfile_function"]
    mount = cells["context_mount_function"](version) if cells["context_mount_function"] else None
    files = [(Path(local), str(remote)) for entry in (mount.entries if mount else ())
             for local, remote in entry.get_files_to_upload()]
    out.append((list(dockerfile(version).commands) if dockerfile else [], files))
    return out


def test_the_app_image_volume_and_function_are_built_without_a_network(app_module: Any) -> None:
    from metis_pytest.train.modal_project import REMOTE_PROJECT, TIMEOUT_S

    app = raw(app_module.app)
    assert app_module.app.name == "metis-run" and app._local_state_attr.include_source_default is False
    assert list(app._local_state_attr.local_entrypoints) == ["main"]
    spec = raw(app_module.run)._spec
    assert {path: raw(vol)._name for path, vol in spec.volumes.items()} == {"/runs": "metis-runs"}
    assert closure(spec.volumes["/runs"])["create_if_missing"] is True
    assert spec.secrets == [] and spec.gpus is None  # secrets attached per run; a CPU container
    cells = closure(app_module.run)
    assert (cells["cpu"], cells["timeout"]) == (2.0, 6 * 60 * 60)
    steps = layers(app_module.image)
    commands = [c for cmds, _ in steps for c in cmds]
    assert commands[0].startswith("FROM python:3.12") and "slim" in commands[0]
    assert "RUN pip install --no-cache-dir '/opt/metis[hf]'" in commands
    assert {"ENV EP_NO_UPLOAD=1", "ENV LITELLM_LOCAL_MODEL_COST_MAP=True"} <= set(commands)
    copied = {remote for _, files in steps for _, remote in files}
    assert {"/opt/metis/pyproject.toml", "/opt/metis/conftest.py", "/opt/metis/evals/gsm8k/test_gsm8k.py",
            "/opt/metis/datasets/gsm8k_smoke.jsonl", "/opt/metis/metis_pytest/backends/modal_run.py",
            "/opt/metis/baselines/README.md"} <= copied
    assert not any(part in r for r in copied for part in ("/.venv/", "/runs/", "__pycache__", "/tests/", "/.env"))
    assert mr.CHECKOUT == REMOTE_PROJECT and mr.MAX_TIMEOUT_S == TIMEOUT_S


def test_a_run_gets_its_cpus_timeout_and_secrets_by_name(app_module: Any) -> None:
    launch = mr.RunLaunch(name="r", pytest_args=("evals/gsm8k",), secrets=("openai-secret", "searchapi-secret"),
                          cpu=8, timeout=3600)
    options = raw(app_module.configured(launch))._options
    assert [raw(s)._name for s in options.secrets] == ["openai-secret", "searchapi-secret"]
    assert (options.resources.milli_cpu, options.timeout_secs) == (8000, 3600)


def test_with_an_empty_modal_config_nothing_connects_and_both_commands_say_how_to_log_in(tmp_path: Path) -> None:
    pytest.importorskip("modal")
    out = run_offline("""
        import contextlib, io, json
        import metis_pytest.backends.modal_run_app
        from metis_pytest.cli import main
        codes, err = [], io.StringIO()
        with contextlib.redirect_stderr(err):
            codes.append(main(["run", "modal", "--secret", "openai-secret", "--", "evals/gsm8k"]))
            codes.append(main(["fetch", "modal", "some-run"]))
        print(json.dumps({"codes": codes, "err": err.getvalue(), "attempts": len(attempts)}))
    """, tmp_path, cwd=tmp_path)
    assert out["codes"] == [2, 2] and out["attempts"] == 0
    assert out["err"].count("no Modal token: run `modal setup`") == 2 and "MODAL_TOKEN_ID" in out["err"]
    assert not (tmp_path / "some-run").exists()


# ----------------------------------------------------------------------------- the container's body, here


GOLDS = smoke_golds()


def half_right(body: dict[str, Any]) -> str:
    """Right for even answers, wrong for odd ones: per-row scores that differ."""
    gold = GOLDS[last_user(body)]
    return f"<answer>{gold if int(float(gold)) % 2 == 0 else '-1'}</answer>"


def image_checkout(dest: Path) -> Path:
    """The files the run image copies to /opt/metis, copied to ``dest`` instead (read from the image)."""
    pytest.importorskip("modal")
    from metis_pytest.backends.modal_run_app import build_image

    for _, files in layers(build_image(REPO)):
        for local, remote in files:
            target = dest / Path(remote).relative_to(mr.CHECKOUT)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(local.read_bytes())
    return dest


@pytest.fixture(scope="module")
def gsm8k_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The same pytest arguments run at once by the container's body (in a copy of what the image holds,
    not a git checkout; a tmp folder as the volume) and locally in this checkout into ``--output-dir``."""
    base = tmp_path_factory.mktemp("modal-run")
    checkout = image_checkout(base / "opt-metis")
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "EP_NO_UPLOAD": "1"}
    with ScriptedServer(default=half_right) as server:
        args = ("evals/gsm8k", "-p", "no:cacheprovider", "--backend", "openai", "--api-base", server.base_url,
                "--model", "scripted", "--dataset", str(SMOKE.relative_to(REPO)), "--max-rows", str(ROWS))
        (base / "home-local").mkdir()
        local = subprocess.Popen(
            [sys.executable, "-m", "pytest", *args, "--output-dir", str(base / "local")], cwd=REPO,
            env={**env, "HOME": str(base / "home-local")}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        commits: list[int] = []
        result: dict[str, Any] = {}

        def remote() -> None:
            result.update(mr.run_in_container(
                base / "volume", mr.RunLaunch(name="gsm8k-smoke", pytest_args=args, git_commit="0123abcd"),
                commit=lambda: commits.append(1), scratch=base / "scratch", cwd=checkout,
                environ={**env, "HOME": str(base / "home-container")}))

        thread = threading.Thread(target=remote)
        thread.start()
        local_out, _ = local.communicate(timeout=240)
        thread.join(240)
    assert local.returncode == 0, local_out
    yield {"result": result, "commits": commits, "run": base / "volume" / "gsm8k-smoke", "local": base / "local",
           "home": base / "home-container", "requests": server.request_count}


def shape(folder: Path, skip: tuple[str, ...] = ()) -> set[str]:
    """The run folder's files, with the parts that name a session or a time replaced."""
    names = set()
    for path in folder.rglob("*"):
        rel = path.relative_to(folder).as_posix()
        if path.is_file() and not rel.startswith(skip):
            rel = re.sub(r"/records/[^/]+\.jsonl$", "/records/<session>.jsonl", rel)
            names.add(re.sub(r"/history/(\d+)_[^/]+\.json$", r"/history/\1_<commit>_<date>.json", rel))
    return names


SESSION_KEYS = ("session", "sessions", "created", "run_id", "t", "rollout_seconds")  # which process, when, how fast
SOURCE_KEYS = ("git_commit", "git_dirty")  # the container has no git checkout


def record(folder: Path) -> dict[str, Any]:
    """The summary and the rows of a run folder, without what names the session or times it."""
    summary = json.loads((folder / "gsm8k" / "scripted" / "summary.json").read_text())
    rows = read_jsonl(folder / "gsm8k" / "scripted" / "rows.jsonl")
    return {"summary": {k: v for k, v in summary.items() if k not in SESSION_KEYS + SOURCE_KEYS},
            "rows": sorted(({k: v for k, v in r.items() if k not in SESSION_KEYS} for r in rows),
                           key=lambda r: (r["row_id"], r["run_index"]))}


def test_the_container_body_writes_the_artifacts_and_summary_of_a_local_run(gsm8k_runs: dict[str, Any]) -> None:
    run, local = gsm8k_runs["run"], gsm8k_runs["local"]
    assert gsm8k_runs["result"]["exit_code"] == 0 and gsm8k_runs["commits"] == [1]
    assert gsm8k_runs["requests"] == 2 * ROWS
    assert shape(run, skip=(".eval_protocol/", "modal_run/")) == shape(local)
    assert {"gsm8k/summary.png", "gsm8k/scripted/summary.json", "gsm8k/scripted/rows.jsonl"} <= shape(local)
    assert record(run) == record(local)
    summary = json.loads((run / "gsm8k" / "scripted" / "summary.json").read_text())
    assert (summary["git_commit"], summary["git_dirty"]) == (None, None)  # the launch's commit is in modal_run/
    assert record(run)["summary"]["score"] == 0.5 and record(run)["summary"]["n"] == ROWS
    assert sorted(r["score"] for r in record(run)["rows"]) == [0.0, 0.0, 1.0, 1.0]
    # Eval Protocol's store is in the run folder (HOME was the run folder), the container's home has none.
    store = ep_store_text(run)
    assert "gsm8k-gsm8k_smoke-00000" in store and "gsm8k-gsm8k_smoke-00003" in store
    assert not (gsm8k_runs["home"] / ".eval_protocol").exists()
    assert {p.relative_to(run).as_posix() for p in (run / ".eval_protocol").rglob("*") if p.is_file()} <= {
        ".eval_protocol/logs.db", ".eval_protocol/logs.db-wal", ".eval_protocol/logs.db-shm"}
    # The record of the run: the command as run, pytest's exit code and its output.
    record_file, = (run / "modal_run").glob("*.json")
    made = json.loads(record_file.read_text())
    assert made["command"] == gsm8k_runs["result"]["command"]
    assert made["command"][-2:] == ["--output-dir", str(run.parent.parent / "scratch" / "gsm8k-smoke")]
    assert (made["exit_code"], made["stopped_at_deadline"], made["git_commit"]) == (0, False, "0123abcd")
    assert "1 passed" in record_file.with_suffix(".log").read_text()


FAKE_PYTEST = """#!{python}
import json, os, signal, subprocess, sys, time
args = sys.argv[sys.argv.index("pytest") + 1:]
out = args[args.index("--output-dir") + 1]
os.makedirs(out, exist_ok=True)
with open(os.path.join(out, "env.json"), "w") as f:
    json.dump({{k: os.environ.get(k) for k in ("HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "EP_NO_UPLOAD",
              "LITELLM_LOCAL_MODEL_COST_MAP", "OPENAI_API_KEY")}}, f)
print("seeded" if os.path.exists(os.path.join(out, "old.txt")) else "fresh", flush=True)
if args[0] == "hang":
    def stop(*_):
        open(os.path.join(out, "interrupted.txt"), "w").write("summary of the rows done")
        sys.exit(2)
    signal.signal(signal.SIGINT, stop)
    time.sleep(60)
if args[0] == "stubborn":  # ignores SIGINT, and so does a child that holds the output pipe
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); "
                      "time.sleep(60)"])
    time.sleep(60)
sys.exit(int(args[0]) if args[0].isdigit() else 0)
"""


@pytest.fixture
def fake_python(tmp_path: Path) -> str:
    """An executable that stands in for ``python -m pytest``: records its environment, exits with its
    first argument (or, for ``hang``, waits for SIGINT)."""
    path = tmp_path / "fake-python"
    path.write_text(FAKE_PYTEST.format(python=sys.executable))
    path.chmod(0o755)
    return str(path)


def body(tmp_path: Path, python: str, *args: str, commits: list[int] | None = None,
         **kwargs: Any) -> tuple[dict[str, Any], list[int]]:
    commits = [] if commits is None else commits
    result = mr.run_in_container(tmp_path / "vol", mr.RunLaunch(name="r1", pytest_args=args),
                                 commit=lambda: commits.append(1), scratch=tmp_path / "scratch", cwd=tmp_path,
                                 python=python, environ={"HOME": str(tmp_path / "home"), "PATH": os.environ["PATH"],
                                                         "OPENAI_API_KEY": "sk-from-a-modal-secret"},
                                 **kwargs)
    return result, commits


def test_the_volume_is_committed_even_when_pytest_fails_and_pytest_gets_the_container_env(
        tmp_path: Path, fake_python: str) -> None:
    result, commits = body(tmp_path, fake_python, "3")
    assert result["exit_code"] == 3 and commits == [1]
    run = tmp_path / "vol" / "r1"
    record, = (json.loads(p.read_text()) for p in (run / "modal_run").glob("*.json"))
    assert record["exit_code"] == 3
    assert json.loads((run / "env.json").read_text()) == {
        "HOME": str(tmp_path / "scratch" / "r1"), "XDG_CACHE_HOME": f"{tmp_path}/home/.cache",
        "XDG_CONFIG_HOME": f"{tmp_path}/home/.config", "EP_NO_UPLOAD": "1", "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "OPENAI_API_KEY": "sk-from-a-modal-secret"}  # a secret's variables reach pytest as they are
    assert "sk-from-a-modal-secret" not in json.dumps(record)
    commits = []
    with pytest.raises(FileNotFoundError):  # pytest cannot even start: still recorded, copied and committed
        body(tmp_path, str(tmp_path / "no-such-python"), "0", commits=commits)
    assert commits == [1]
    assert any(json.loads(p.read_text())["exit_code"] is None for p in (run / "modal_run").glob("*.json"))


def test_a_second_run_under_a_name_starts_from_what_the_volume_holds(tmp_path: Path, fake_python: str) -> None:
    (tmp_path / "vol" / "r1").mkdir(parents=True)
    (tmp_path / "vol" / "r1" / "old.txt").write_text("from the first run")
    result, commits = body(tmp_path, fake_python, "0")
    run = tmp_path / "vol" / "r1"
    assert result["exit_code"] == 0 and commits == [1]
    assert (run / "old.txt").read_text() == "from the first run" and (run / "env.json").is_file()
    log, = (run / "modal_run").glob("*.log")
    assert log.read_text() == "seeded\n"


def test_at_the_deadline_pytest_is_interrupted_and_what_it_wrote_is_kept(tmp_path: Path, fake_python: str) -> None:
    result, commits = body(tmp_path, fake_python, "hang", deadline_s=1.0, grace_s=10.0)
    run = tmp_path / "vol" / "r1"
    assert result["exit_code"] == 2 and commits == [1]
    assert (run / "interrupted.txt").read_text() == "summary of the rows done"
    record, = (json.loads(p.read_text()) for p in (run / "modal_run").glob("*.json"))
    assert record["stopped_at_deadline"] is True
    start = time.monotonic()
    result, commits = body(tmp_path, fake_python, "stubborn", deadline_s=0.5, grace_s=0.5)
    assert result["exit_code"] == -9 and commits == [1] and time.monotonic() - start < 20  # the group was killed


def test_pytest_is_interrupted_two_minutes_before_modals_timeout(tmp_path: Path, monkeypatch) -> None:
    seen: dict[str, Any] = {}
    monkeypatch.setattr(mr, "_run_logged", lambda command, **kwargs: seen.update(kwargs) or (0, False))
    mr.run_in_container(tmp_path / "vol", mr.RunLaunch(name="r1", pytest_args=("x",), timeout=3600),
                        commit=lambda: None, scratch=tmp_path / "scratch", cwd=tmp_path)
    assert (seen["deadline_s"], seen["grace_s"]) == (3600 - 120, 30)


@pytest.mark.parametrize("args, message", [
    (("evals/gsm8k", "--output-dir", "x"), "'--output-dir': the run folder on the volume is the output dir"),
    (("evals/gsm8k", "--output-dir=x"), "'--output-dir=x': the run folder"),
    (("evals/gsm8k", "-o", "metis_output_dir=x"), "'metis_output_dir=x': the run folder"),
    ((), "give pytest's arguments after --"),
])
def test_arguments_that_set_the_output_dir_are_refused(args: tuple[str, ...], message: str, capsys) -> None:
    assert metis_main(["run", "modal", "--dry-run", "--", *args]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("option, message", [
    (["--name", "../x"], "run name '../x': letters, digits"),
    (["--cpu", "0"], "--cpu 0: must be above 0"),
    (["--timeout", "60"], "--timeout 60: between 300 and 86400 seconds"),
])
def test_bad_settings_are_refused(option: list[str], message: str, capsys) -> None:
    assert metis_main(["run", "modal", "--dry-run", *option, "--", "evals/gsm8k"]) == 2
    assert message in capsys.readouterr().err


# ----------------------------------------------------------------------------- the command here


@pytest.fixture
def no_modal(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Launching records the command instead; the token check passes; secrets exist unless named ``missing-*``."""
    modal = pytest.importorskip("modal")
    from modal.exception import NotFoundError

    from metis_pytest.backends import modal_vllm

    class Secret:
        def __init__(self, name: str) -> None:
            self.name = name

        def hydrate(self) -> None:
            if self.name.startswith("missing-"):
                raise NotFoundError(f"Secret '{self.name}' not found in environment 'main'")

    launched: list[list[str]] = []
    monkeypatch.setattr(modal_vllm, "require_modal_token", lambda: None)
    monkeypatch.setattr(modal.Secret, "from_name", Secret)
    monkeypatch.setattr(subprocess, "call", lambda cmd: launched.append(cmd) or 0)
    return launched


def test_a_dry_run_prints_the_modal_command_and_spec_and_touches_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from metis_pytest.backends import modal_vllm

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a dry run launched something")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(subprocess, "call", refuse)
    monkeypatch.setattr(modal_vllm, "require_modal_token", refuse)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-for-the-spec")
    with no_network(monkeypatch) as attempts:
        code = metis_main(["run", "modal", "--dry-run", "--name", "mini", "--secret", "openai-secret", "--cpu", "4",
                           "--detach", "--", "evals/gsm8k", "--model", "openai/gpt-4o-mini", "-n", "4"])
    assert code == 0 and attempts == [] and list(tmp_path.iterdir()) == []
    out = capsys.readouterr().out
    source = git_info(REPO)
    launch = mr.RunLaunch(name="mini", pytest_args=("evals/gsm8k", "--model", "openai/gpt-4o-mini", "-n", "4"),
                          secrets=("openai-secret",), cpu=4, detach=True, git_commit=source["commit"],
                          git_dirty=source["dirty"])
    assert shlex.join(mr.modal_command(launch, modal=(sys.executable, "-m", "modal"))) in out
    assert "run --detach -m metis_pytest.backends.modal_run_app::main --spec" in out
    assert ("python -m pytest evals/gsm8k --model openai/gpt-4o-mini -n 4 --output-dir /tmp/metis-run/mini"
            in out)
    assert "/mini in volume metis-runs" in out and "secrets (Modal secret names): openai-secret" in out
    assert "metis fetch modal mini" in out and "modal volume get metis-runs mini ." in out
    assert "sk-not-for-the-spec" not in out and "sk-not-for-the-spec" not in launch.to_json()


def test_a_run_checks_its_secrets_then_launches_modal(no_modal: list[list[str]], monkeypatch, capsys) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-for-the-spec")
    assert metis_main(["run", "modal", "--name", "n1", "--secret", "openai-secret", "--", "evals/gsm8k"]) == 0
    launched, = no_modal
    assert launched[:5] == [sys.executable, "-m", "modal", "run", "-m"]
    sent = mr.RunLaunch.from_json(launched[-1])
    assert (sent.name, sent.pytest_args, sent.secrets, sent.cpu, sent.timeout, sent.detach) == (
        "n1", ("evals/gsm8k",), ("openai-secret",), 2.0, 6 * 60 * 60, False)
    assert sent.git_commit == git_info(REPO)["commit"]
    assert not any("sk-not-for-the-spec" in part for part in launched)
    assert metis_main(["run", "modal", "--secret", "missing-openai", "--", "evals/gsm8k"]) == 2
    err = capsys.readouterr().err
    assert "Modal secret 'missing-openai' not found: create it with `modal secret create missing-openai" in err
    assert len(no_modal) == 1


def test_the_local_entrypoint_waits_prints_the_fetch_command_and_exits_with_pytests_code(
        app_module: Any, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import modal

    outcomes: list[Any] = [{"exit_code": 0}, {"exit_code": 1},
                           modal.exception.NotFoundError("Secret 'openai-secret' not found in environment 'main'")]
    sent: list[str] = []

    class Remote:
        def remote(self, spec: str) -> dict[str, Any]:
            sent.append(spec)
            outcome = outcomes.pop(0)
            if isinstance(outcome, Exception):
                raise outcome
            return outcome

    monkeypatch.setattr(app_module, "configured", lambda launch: Remote())
    spec = mr.RunLaunch(name="n1", pytest_args=("evals/gsm8k",), secrets=("openai-secret",)).to_json()
    app_module.main(spec)
    out = capsys.readouterr().out
    assert "pytest exited 0; run folder: /n1 in volume metis-runs" in out
    assert "metis fetch modal n1" in out and "modal volume get metis-runs n1 ." in out
    with pytest.raises(SystemExit) as failed:
        app_module.main(spec)
    assert failed.value.code == 1
    with pytest.raises(SystemExit, match="Modal secret 'openai-secret' not found: create it with"):
        app_module.main(spec)
    assert sent == [spec] * 3


# ----------------------------------------------------------------------------- fetch


class FakeVolume:
    """modal 1.6.4's ``Volume.listdir``/``read_file`` over a local folder (paths relative to the volume's
    root, no leading slash, as the Modal CLI's download expects), chunks of 7 bytes."""

    def __init__(self, root: Path, exists: bool = True) -> None:
        self.root, self.exists = root, exists
        self.reads: list[str] = []

    def _check(self) -> None:
        from modal.exception import NotFoundError

        if not self.exists:
            raise NotFoundError("Volume 'metis-runs' not found in environment 'main'")

    def listdir(self, path: str, *, recursive: bool = False) -> list[Any]:
        from modal.exception import NotFoundError
        from modal.types import FileEntry, FileEntryType

        self._check()
        top = self.root / path.strip("/")
        if not top.exists():
            raise NotFoundError(f"No such file or directory: {path}")
        found = sorted(top.rglob("*") if recursive else top.iterdir())
        return [FileEntry(path=p.relative_to(self.root).as_posix(),
                          type=FileEntryType.DIRECTORY if p.is_dir() else FileEntryType.FILE,
                          mtime=int(p.stat().st_mtime), size=0 if p.is_dir() else p.stat().st_size) for p in found]

    def read_file(self, path: str) -> Iterator[bytes]:
        self._check()
        self.reads.append(path)
        data = (self.root / path).read_bytes()
        for start in range(0, len(data), 7):
            yield data[start:start + 7]


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_fetch_round_trips_a_run_folder_and_metis_show_reads_it(
        gsm8k_runs: dict[str, Any], tmp_path: Path, capsys) -> None:
    pytest.importorskip("modal")
    run = gsm8k_runs["run"]
    volume = FakeVolume(run.parent)
    dest = tmp_path / "fetched"
    count = mr.fetch_run(volume, "gsm8k-smoke", dest)
    assert tree(dest) == tree(run) and count == len(tree(run))
    assert ".eval_protocol/logs.db" in tree(dest) and [p.name for p in tmp_path.iterdir()] == ["fetched"]
    assert metis_main(["show", str(dest)]) == 0
    assert "gsm8k [scripted] answer_tag=0.500" in capsys.readouterr().out
    assert metis_main(["report", str(dest), "--out", str(tmp_path / "report")]) == 0
    assert metis_main(["plot", str(dest)]) == 0


def test_a_non_empty_dest_is_refused_unless_forced(tmp_path: Path) -> None:
    pytest.importorskip("modal")
    (tmp_path / "vol" / "r1" / "gsm8k").mkdir(parents=True)
    (tmp_path / "vol" / "r1" / "gsm8k" / "summary.png").write_bytes(bytes(range(256)) * 3)
    dest = tmp_path / "dest"
    (dest / "gsm8k").mkdir(parents=True)
    (dest / "mine.txt").write_text("keep")
    (dest / "gsm8k" / "summary.png").write_bytes(b"an older plot")
    with pytest.raises(mr.FetchError, match="dest exists and is not empty: pass --force"):
        mr.fetch_run(FakeVolume(tmp_path / "vol"), "r1", dest)
    assert mr.fetch_run(FakeVolume(tmp_path / "vol"), "r1", dest, force=True) == 1
    assert tree(dest) == {"mine.txt": b"keep", "gsm8k/summary.png": bytes(range(256)) * 3}
    (tmp_path / "empty").mkdir()
    assert mr.fetch_run(FakeVolume(tmp_path / "vol"), "r1", tmp_path / "empty") == 1


def test_a_missing_run_or_volume_is_named_and_a_failed_download_leaves_nothing(tmp_path: Path) -> None:
    pytest.importorskip("modal")
    (tmp_path / "vol" / "run-a").mkdir(parents=True)
    (tmp_path / "vol" / "run-a" / "rows.jsonl").write_text("{}\n")
    with pytest.raises(mr.FetchError, match=r"no run 'run-b' in Modal volume metis-runs; runs there: run-a "
                                            r"\(`modal volume ls metis-runs`\)"):
        mr.fetch_run(FakeVolume(tmp_path / "vol"), "run-b", tmp_path / "dest")
    with pytest.raises(mr.FetchError, match="no Modal volume 'metis-runs'"):
        mr.fetch_run(FakeVolume(tmp_path / "vol", exists=False), "run-a", tmp_path / "dest")

    class Broken(FakeVolume):
        def read_file(self, path: str) -> Iterator[bytes]:
            yield b"half"
            raise ConnectionError("dropped")

    with pytest.raises(ConnectionError):
        mr.fetch_run(Broken(tmp_path / "vol"), "run-a", tmp_path / "dest")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vol"]  # no DEST, no staging folder


def test_metis_fetch_modal_reads_the_runs_volume(no_modal: list[list[str]], tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import modal

    (tmp_path / "vol" / "r1").mkdir(parents=True)
    (tmp_path / "vol" / "r1" / "rows.jsonl").write_text("{}\n")
    asked: list[str] = []
    monkeypatch.setattr(modal.Volume, "from_name", lambda name: asked.append(name) or FakeVolume(tmp_path / "vol"))
    monkeypatch.chdir(tmp_path)
    assert metis_main(["fetch", "modal", "r1"]) == 0
    assert asked == ["metis-runs"] and (tmp_path / "r1" / "rows.jsonl").read_text() == "{}\n"
    out = capsys.readouterr().out
    assert "1 files of /r1 (volume metis-runs) -> r1" in out and "HOME=r1 ep logs" in out
    assert metis_main(["fetch", "modal", "r1"]) == 1
    assert "r1 exists and is not empty: pass --force" in capsys.readouterr().err
    assert metis_main(["fetch", "modal", "r2", "elsewhere"]) == 1
    assert "no run 'r2' in Modal volume metis-runs; runs there: r1" in capsys.readouterr().err


def test_ep_logs_reads_the_store_of_a_fetched_folder_given_home(tmp_path: Path, monkeypatch) -> None:
    from eval_protocol.directory_utils import find_eval_protocol_dir

    monkeypatch.setenv("HOME", str(tmp_path / "fetched"))
    assert Path(find_eval_protocol_dir()) == tmp_path / "fetched" / ".eval_protocol"

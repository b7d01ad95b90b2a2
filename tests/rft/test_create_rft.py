"""``eval-protocol create rft``, the real command, against a loopback fake of the Fireworks API.

Each benchmark folder (``evals/gsm8k``, ``evals/ace``) is its own RFT project: the command runs in it, in
a copy of the repository's files (``git ls-files``) under a temporary folder (the command writes into
the folder it runs in), with that copy first on ``PYTHONPATH`` (as an editable install puts the
checkout), ``HOME`` and ``TMPDIR`` in the temporary folder, ``FIREWORKS_API_BASE`` pointed at
:class:`~metis_pytest.testing.fake_fireworks.FakeFireworks` and a dummy ``FIREWORKS_API_KEY``. Planted
before it runs: an ``OPENAI_API_KEY`` in its environment, a ``.env`` and an ``.envrc`` holding another
key in the folder, and run output (``runs/``, ``records/``, ``.eval_protocol/``, ``.judge-cache/``). A
``sitecustomize`` in the child refuses every connection that is not to loopback (and, for the import
check, every connection at all).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import textwrap
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from eval_protocol.models import EvaluationRow

from metis_pytest.testing.fake_fireworks import DEFAULT_ACCOUNT, FakeFireworks, FireworksRequest

REPO = Path(__file__).resolve().parents[2]
EP_CLI = Path(sys.executable).parent / "eval-protocol"
COPIED = ("evals", "metis_pytest", "datasets", "conftest.py", "pyproject.toml")
FIREWORKS_KEY = "fw-dummy-key-for-the-fake"
ENV_KEY = "sk-planted-in-the-environment-4b1d"
DOTENV_KEY = "sk-planted-in-dot-env-9e7c"
JUDGE_KEY = "sk-judge-key-meant-for-fireworks-51d0"  # ACE's judge key, in the env file ACE's command names
RUN_OUTPUT = "planted-run-output-2c5a"
PLANTED = {".env": f"OPENAI_API_KEY={DOTENV_KEY}\n", ".envrc": f"export OPENAI_API_KEY={DOTENV_KEY}\n",
           "runs/gsm8k/local/records/w0.jsonl": RUN_OUTPUT, "records/w0.jsonl": RUN_OUTPUT,
           ".eval_protocol/logs.json": RUN_OUTPUT, ".judge-cache/entry.json": RUN_OUTPUT,
           ".metis-cache/model.gguf": RUN_OUTPUT}
BASE_MODEL = "accounts/fireworks/models/qwen3-0p6b"
ROWS = {"gsm8k": 12, "ace": 3}
ACCOUNT = f"accounts/{DEFAULT_ACCOUNT}"

GUARD = textwrap.dedent('''
    """Test guard: refuse (and log) connections that are not to loopback (none at all: METIS_SOCKETS=none)."""
    import os
    import socket

    _ALLOWED = () if os.environ.get("METIS_SOCKETS") == "none" else ("127.0.0.1", "::1", "localhost")
    _LOG = os.environ.get("METIS_SOCKET_LOG")


    def _refuse(what):
        if _LOG:
            with open(_LOG, "a") as log:
                log.write(what + "\\n")
        raise OSError(f"refused in this test: {what}")


    _connect = socket.socket.connect


    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in _ALLOWED:
            _refuse(f"connect {address[0]}")
        return _connect(self, address)


    _getaddrinfo = socket.getaddrinfo


    def getaddrinfo(host, *args, **kwargs):
        if host is not None and host not in _ALLOWED:
            _refuse(f"resolve {host}")
        return _getaddrinfo(host, *args, **kwargs)


    socket.socket.connect = connect
    socket.getaddrinfo = getaddrinfo
''')

# What ``create rft`` does with a benchmark folder's test file, with Eval Protocol's own functions.
IMPORT_CHECK = textwrap.dedent('''
    import json, os, sys
    from eval_protocol.cli_commands.utils import _discover_tests, _is_eval_protocol_test, load_module_from_file_path
    from eval_protocol.fireworks_rft import detect_dataset_builder
    found = {}
    for folder in sys.argv[1:]:
        name = os.path.basename(folder)
        module = load_module_from_file_path(os.path.join(folder, f"test_{name}.py"))
        found[name] = {"is_test": _is_eval_protocol_test(getattr(module, f"test_{name}")),
                       "discovered": [[t.file_path, t.qualname] for t in _discover_tests(folder)],
                       "builder": detect_dataset_builder(folder)}
    print(json.dumps(found))
''')


@dataclass
class RftRun:
    """One run of ``eval-protocol create rft`` in a copy of a benchmark folder."""

    bench: str
    folder: Path
    expected_files: set[str]  # archive names of the folder's project files ("gsm8k/test_gsm8k.py", ...)
    returncode: int
    output: str
    fake: FakeFireworks
    refused: list[str]

    def only(self, method: str, pattern: str) -> FireworksRequest:
        found = self.fake.calls(method, pattern)
        assert len(found) == 1, f"expected one {method} {pattern}, got {[r.path for r in found]}\n{self.output}"
        return found[0]

    def archive(self) -> dict[str, bytes]:
        """The evaluator archive the command uploaded: member name -> content."""
        (blob,) = [v for k, v in self.fake.uploads.items() if k.startswith(f"evaluators/metis-{self.bench}/")]
        members: dict[str, bytes] = {}
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
            for member in tar.getmembers():
                content = tar.extractfile(member) if member.isfile() else None
                if content is not None:
                    members[member.name] = content.read()
        return members


def copy_project(dest: Path) -> Path:
    """The repository's files the command needs (tracked, or new and not ignored), copied under ``dest``."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", *COPIED],
                            cwd=REPO, capture_output=True, check=True).stdout.decode()
    for rel in filter(None, listed.split("\0")):
        if (REPO / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dest / rel)
    return dest


def child_env(tmp: Path, project: Path, **extra: str) -> dict[str, str]:
    guard = tmp / "guard"
    guard.mkdir(exist_ok=True)
    (guard / "sitecustomize.py").write_text(GUARD)
    for name in ("home", "tmp"):
        (tmp / name).mkdir(exist_ok=True)
    return {"PATH": os.environ["PATH"], "HOME": str(tmp / "home"), "TMPDIR": str(tmp / "tmp"),
            "PYTHONPATH": os.pathsep.join([str(guard), str(project)]), "PYTHONIOENCODING": "utf-8",
            "METIS_SOCKET_LOG": str(tmp / "refused.log"), "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "EP_NO_UPLOAD": "1", **extra}


def run_create_rft(tmp: Path, bench: str, args: list[str]) -> RftRun:
    project = copy_project(tmp / "project")
    folder = project / "evals" / bench
    expected = {f"{bench}/{p.relative_to(folder).as_posix()}" for p in folder.rglob("*") if p.is_file()}
    for rel, text in PLANTED.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
    with FakeFireworks() as fake:
        env = child_env(tmp, project, FIREWORKS_API_KEY=FIREWORKS_KEY, FIREWORKS_API_BASE=fake.base_url,
                        OPENAI_API_KEY=ENV_KEY)
        proc = subprocess.run([str(EP_CLI), "create", "rft", *args], cwd=folder, env=env, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=300)
    log = tmp / "refused.log"
    return RftRun(bench=bench, folder=folder, expected_files=expected, returncode=proc.returncode,
                  output=proc.stdout + proc.stderr, fake=fake,
                  refused=log.read_text().splitlines() if log.exists() else [])


def job_args(bench: str, env_file: str) -> list[str]:
    """The README's command line for ``bench``."""
    return ["--yes", "--skip-validation", "--env-file", env_file, "--evaluator", f"metis-{bench}",
            "--base-model", BASE_MODEL, "--output-model", f"metis-{bench}-grpo", "--epochs", "1",
            "--max-output-tokens", "1024", "--job-id", f"metis-{bench}-test"]


def expected_secrets(bench: str) -> dict[str, str]:
    """The secrets each run must register: the Fireworks key always; for ACE, its env file's judge key."""
    return {"FIREWORKS_API_KEY": FIREWORKS_KEY, **({"OPENAI_API_KEY": JUDGE_KEY} if bench == "ace" else {})}


def full_run(tmp: Path, bench: str) -> RftRun:
    """The README's command: GSM8K with ``--env-file /dev/null``; ACE with an env file outside the folder
    holding its judge key."""
    env_file = os.devnull
    if bench == "ace":
        env_file = str(tmp / "ace-judge.env")
        Path(env_file).write_text(f"OPENAI_API_KEY={JUDGE_KEY}\n")
    return run_create_rft(tmp, bench, job_args(bench, env_file))


def all_bytes(run: RftRun) -> Iterator[tuple[str, bytes]]:
    """Every byte that left the command: each request's body, query and headers, and each archive member."""
    for r in run.fake.requests:
        yield f"{r.method} {r.path} body", r.body
        yield f"{r.method} {r.path} query", json.dumps(r.query).encode()
        yield f"{r.method} {r.path} headers", json.dumps({k: v for k, v in r.headers.items()
                                                          if k != "authorization"}).encode()
    for name, content in run.archive().items():
        yield f"archive {name}", content


def check_it_runs_against_the_fake_only_dataset_then_evaluator_then_job(rft: RftRun) -> None:
    assert rft.fake.unanswered() == [], [f"{r.method} {r.path}" for r in rft.fake.unanswered()]
    assert not [line for line in rft.refused if "fireworks" in line], rft.refused
    assert all(r.headers.get("authorization") == f"Bearer {FIREWORKS_KEY}"
               for r in rft.fake.requests if not r.path.startswith("/signed-upload/"))
    evaluator = rf"/v1/{ACCOUNT}/evaluators/metis-{rft.bench}"
    order = [rft.only("POST", rf"/v1/{ACCOUNT}/datasets").index,
             rft.only("POST", rf"/v1/{ACCOUNT}/datasets/[^/]+:upload").index,
             max(r.index for r in rft.fake.calls("POST", rf"/v1/{ACCOUNT}/secrets")),
             rft.only("POST", rf"/v1/{ACCOUNT}/evaluatorsV2").index,
             rft.only("POST", evaluator + ":getUploadEndpoint").index,
             rft.only("PUT", rf"/signed-upload/evaluators/metis-{rft.bench}/.+").index,
             rft.only("POST", evaluator + ":validateUpload").index,
             rft.fake.calls("GET", evaluator)[-1].index,  # the poll that saw it ACTIVE
             rft.only("POST", rf"/v1/{ACCOUNT}/reinforcementFineTuningJobs").index]
    assert order == sorted(order), order


def check_the_evaluator_is_the_benchmarks_test_file(rft: RftRun) -> None:
    created = rft.only("POST", rf"/v1/{ACCOUNT}/evaluatorsV2").json()
    assert created["evaluatorId"] == f"metis-{rft.bench}"
    assert created["evaluator"]["entryPoint"] == f"test_{rft.bench}.py::test_{rft.bench}"
    archive = rft.archive()
    for name in (f"test_{rft.bench}.py", "requirements.txt", "rft_dataset.py"):
        assert archive[f"{rft.bench}/{name}"] == (REPO / "evals" / rft.bench / name).read_bytes()
    assert rft.fake.evaluators[f"metis-{rft.bench}"]["state"] == "ACTIVE"  # validated after the upload


def check_the_archive_holds_the_folder_and_nothing_else(rft: RftRun) -> None:
    endpoint = rft.only("POST", rf"/v1/{ACCOUNT}/evaluators/metis-{rft.bench}:getUploadEndpoint")
    put = rft.only("PUT", rf"/signed-upload/evaluators/metis-{rft.bench}/{rft.bench}\.tar\.gz")
    assert endpoint.json() == {"filenameToSize": {f"{rft.bench}.tar.gz": str(len(put.body))}}
    assert set(rft.archive()) == rft.expected_files
    # What was in the folder when it was packed and is not in the archive: the planted files, eval-protocol's
    # own copy of the dataset (.ep_tmp/, left behind) and the run's byte code.
    assert (rft.folder / ".ep_tmp").is_dir() and (rft.folder / "__pycache__").is_dir()
    for name in rft.archive():
        assert not any(part in {".env", ".envrc", "runs", "records", ".eval_protocol", ".judge-cache", ".metis-cache",
                                ".ep_tmp", "__pycache__"} for part in name.split("/")), name


def check_no_key_and_no_run_output_in_any_uploaded_byte(rft: RftRun) -> None:
    for where, blob in all_bytes(rft):
        for planted in (ENV_KEY, DOTENV_KEY, RUN_OUTPUT):
            assert planted.encode() not in blob, f"{planted} in {where}"
    # The Fireworks key goes to Fireworks in the Authorization headers (left out of all_bytes) and, as
    # eval-protocol always does, as the account secret FIREWORKS_API_KEY; ACE's judge key as the secret its
    # env file names. Each secret's value is in its own secret request and nowhere else.
    secrets = rft.fake.calls("POST", rf"/v1/{ACCOUNT}/secrets")
    assert {r.json()["keyName"]: r.json()["value"] for r in secrets} == expected_secrets(rft.bench)
    assert len(secrets) == len(expected_secrets(rft.bench))
    for request in secrets:
        value = request.json()["value"].encode()
        holders = [where for where, blob in all_bytes(rft) if value in blob]
        assert holders == [f"POST /v1/{ACCOUNT}/secrets body"], holders
        assert request.body.count(value) == 1


def check_the_dataset_is_the_benchmarks_rft_rows(rft: RftRun) -> None:
    import importlib

    built = importlib.import_module(f"evals.{rft.bench}.rft_dataset").build_training_dataset()
    assert len(built) == ROWS[rft.bench]
    created = rft.only("POST", rf"/v1/{ACCOUNT}/datasets").json()
    assert created["datasetId"].startswith(f"metis-{rft.bench}-dataset-")
    assert created["dataset"]["exampleCount"] == str(len(built))
    rft.only("POST", rf"/v1/{ACCOUNT}/datasets/{created['datasetId']}:upload")
    (text,) = [v.decode() for k, v in rft.fake.uploads.items() if k.startswith(f"datasets/{created['datasetId']}/")]
    rows = [EvaluationRow.model_validate_json(line) for line in text.splitlines()]
    assert [r.model_dump(mode="json", include={"messages", "ground_truth", "input_metadata"}, exclude_none=True)
            for r in rows] == built
    assert all(r.input_metadata.completion_params == {} for r in rows)
    assert all(r.execution_metadata.rollout_id for r in rows)  # added by eval-protocol's rewrite
    assert "api_key" not in text and str(rft.folder.parents[1]) not in text and str(REPO) not in text


def check_the_job_names_the_evaluator_and_the_dataset_and_carries_the_flags(rft: RftRun) -> None:
    job = rft.only("POST", rf"/v1/{ACCOUNT}/reinforcementFineTuningJobs")
    dataset_id = rft.only("POST", rf"/v1/{ACCOUNT}/datasets").json()["datasetId"]
    assert job.query == {"reinforcementFineTuningJobId": f"metis-{rft.bench}-test"}
    body = job.json()
    assert body["evaluator"] == f"{ACCOUNT}/evaluators/metis-{rft.bench}"
    assert body["dataset"] == f"{ACCOUNT}/datasets/{dataset_id}"
    assert body["trainingConfig"] == {"baseModel": BASE_MODEL, "outputModel": f"metis-{rft.bench}-grpo", "epochs": 1}
    assert body["inferenceParameters"] == {"maxOutputTokens": 1024}
    assert "api_key" not in job.body.decode().lower() and "apikey" not in job.body.decode().lower()


@pytest.mark.parametrize("bench", sorted(ROWS))
def test_create_rft_uploads_the_folder_as_evaluator_its_rows_and_the_job(bench: str, tmp_path: Path) -> None:
    """One run per benchmark (the command takes seconds to import), every check on it."""
    run = full_run(tmp_path, bench)
    assert run.returncode == 0, run.output
    check_it_runs_against_the_fake_only_dataset_then_evaluator_then_job(run)
    check_the_evaluator_is_the_benchmarks_test_file(run)
    check_the_archive_holds_the_folder_and_nothing_else(run)
    check_no_key_and_no_run_output_in_any_uploaded_byte(run)
    check_the_dataset_is_the_benchmarks_rft_rows(run)
    check_the_job_names_the_evaluator_and_the_dataset_and_carries_the_flags(run)


def test_dry_run_still_uploads_the_evaluator_and_registers_the_dotenv_as_secrets(tmp_path: Path) -> None:
    """GSM8K with ``--dry-run`` and without ``--env-file``: what still goes up."""
    args = [a for a in job_args("gsm8k", os.devnull) if a not in ("--env-file", os.devnull)] + ["--dry-run"]
    dry_run = run_create_rft(tmp_path, "gsm8k", args)
    assert dry_run.returncode == 0, dry_run.output
    assert "--dry-run: would call Fireworks().reinforcement_fine_tuning_jobs.create" in dry_run.output
    assert dry_run.fake.calls("POST", rf"/v1/{ACCOUNT}/datasets.*") == []
    assert dry_run.fake.calls("POST", rf"/v1/{ACCOUNT}/reinforcementFineTuningJobs") == []
    dry_run.only("POST", rf"/v1/{ACCOUNT}/evaluatorsV2")
    assert set(dry_run.archive()) == dry_run.expected_files
    # Without --env-file, every line of the folder's .env becomes a Fireworks secret, dry run or not.
    sent = {s["keyName"]: s["value"] for s in (r.json() for r in dry_run.fake.calls("POST", rf"/v1/{ACCOUNT}/secrets"))}
    assert sent == {"OPENAI_API_KEY": DOTENV_KEY, "FIREWORKS_API_KEY": FIREWORKS_KEY}


def test_the_evaluations_import_as_evaluators_with_no_keys_and_no_network(tmp_path: Path) -> None:
    project = copy_project(tmp_path / "project")
    folders = [project / "evals" / bench for bench in sorted(ROWS)]
    proc = subprocess.run([sys.executable, "-c", IMPORT_CHECK, *map(str, folders)], cwd=project,
                          stdin=subprocess.DEVNULL, env=child_env(tmp_path, project, METIS_SOCKETS="none"),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    for folder in folders:
        bench = folder.name
        assert found[bench]["is_test"]
        # Eval Protocol takes the evaluation's file (the evaluator's entry point, where it looks for the
        # dataset builder) from the source file of the wrapper's ``_origin_func``.
        assert found[bench]["discovered"] == [[str(folder / f"test_{bench}.py"), f"evals.{bench}.test_{bench}.test_{bench}"]], (
            "eval-protocol must find the test file, not metis_pytest/ep.py: metis_pytest.ep.evaluation_test sets "
            "wrapped._origin_func to the decorated function")
        assert found[bench]["builder"] == f"{folder / 'rft_dataset.py'}::build_training_dataset"


@pytest.mark.parametrize("bench", sorted(ROWS))
def test_only_the_folders_own_gitignore_keeps_run_output_and_envrc_out(bench: str, tmp_path: Path) -> None:
    """Eval Protocol's packer (the function ``create rft`` calls) on a folder inside a checkout."""
    from eval_protocol.evaluation import Evaluator

    checkout = tmp_path / "checkout"
    folder = checkout / "evals" / bench
    folder.mkdir(parents=True)
    shutil.copy2(REPO / ".gitignore", checkout / ".gitignore")  # ignores runs/, ...: not read by the packer
    (folder / f"test_{bench}.py").write_text("")
    for rel in [*PLANTED, ".ep_tmp/ep_rft_dataset_x.jsonl"]:
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(RUN_OUTPUT)

    def packed() -> set[str]:
        out = tmp_path / f"{bench}.tar.gz"
        Evaluator._create_tar_gz_with_ignores(str(out), str(folder))
        with tarfile.open(out) as tar:
            return {m.name.split("/", 1)[1] for m in tar.getmembers() if m.isfile()}

    # Its defaults alone keep out .env (and .env.*), and nothing else we planted.
    assert packed() == {f"test_{bench}.py", *(rel for rel in PLANTED if rel != ".env"), ".ep_tmp/ep_rft_dataset_x.jsonl"}
    shutil.copy2(REPO / "evals" / bench / ".gitignore", folder / ".gitignore")
    assert packed() == {f"test_{bench}.py", ".gitignore"}


def test_the_fake_answers_like_fireworks(fake_fireworks: FakeFireworks) -> None:
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no proxy, whatever the env says

    def call(path: str, token: str | None = None) -> tuple[int, Any, dict[str, str]]:
        request = urllib.request.Request(fake_fireworks.base_url + path,
                                         headers={"Authorization": f"Bearer {token}"} if token else {})
        try:
            with direct.open(request) as response:
                return response.status, json.load(response), dict(response.headers)
        except urllib.error.HTTPError as exc:
            return exc.code, json.load(exc), dict(exc.headers)

    assert call("/verifyApiKey")[0] == 401
    status, _, headers = call("/verifyApiKey", "k")
    assert status == 200 and headers["x-fireworks-account-id"] == DEFAULT_ACCOUNT
    status, body, _ = call(f"/v1/{ACCOUNT}/evaluators/nope", "k")
    assert status == 404 and body["error"]["status"] == "NOT_FOUND"
    assert fake_fireworks.unanswered() == []
    assert call("/v1/unknown", "k")[0] == 404
    assert [r.path for r in fake_fireworks.unanswered()] == ["/v1/unknown"]

"""vLLM on Modal (``--backend modal``), offline: the app, image, volumes, secret and web functions
built with every socket blocked; GPU sizing and tool parsers; the exact vLLM command; the health
wait; and the client path end to end with scripted servers standing in for the Modal URLs (a fake
launcher), several models and ``--shards 2``."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from metis_pytest.backends import modal_vllm as mv
from metis_pytest.backends.base import PrepareContext
from metis_pytest.cli import main as metis_main
from metis_pytest.options import MetisConfig
from metis_pytest.store.runs import slug
from metis_pytest.testing import ScriptedServer
from tests.offline import closure, no_network, raw, run_offline

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "datasets" / "gsm8k_smoke.jsonl"
TOKEN_ID, TOKEN_SECRET = "wk-test-id", "ws-test-secret-do-not-record"
QWEN3_8B_CONFIG = {"model_type": "qwen3", "hidden_size": 4096, "num_hidden_layers": 36, "vocab_size": 151936,
                   "intermediate_size": 12288, "num_attention_heads": 32, "num_key_value_heads": 8,
                   "head_dim": 128, "tie_word_embeddings": False}


# ----------------------------------------------------------------------------- tables


@pytest.mark.parametrize("model, billions", [
    ("Qwen/Qwen3-8B", 8.0),
    ("meta-llama/Llama-3.1-70B-Instruct", 70.0),
    ("Qwen/Qwen2.5-0.5B-Instruct", 0.5),
    ("mistralai/Mixtral-8x7B-Instruct-v0.1", 46.7),
    ("Qwen/Qwen3-30B-A3B", 30.5),
    ("mistralai/Mistral-Nemo-Instruct-2407", 12.2),
    ("openai-community/gpt2", None),
])
def test_parameter_count_from_the_name_and_the_known_families(model: str, billions: float | None) -> None:
    assert mv.params_from_name(model) == billions


def test_parameter_count_from_config_json() -> None:
    assert mv.params_from_config(QWEN3_8B_CONFIG) == pytest.approx(8.19, abs=0.01)  # Qwen3-8B: 8.2B
    assert mv.params_from_config({"hidden_size": 8}) is None


@pytest.mark.parametrize("billions, gpu", [(0.5, "H100"), (8.0, "H100"), (16.0, "H100"), (16.5, "H100:2"),
                                           (70.0, "H100:2")])
def test_gpus_by_parameter_count(billions: float, gpu: str) -> None:
    sizing = mv.size_gpus("org/some-model", override=None, billions=billions, config=None)
    assert (sizing.gpu, sizing.source) == (gpu, "safetensors")
    assert mv.gpu_count(gpu) == (2 if gpu.endswith(":2") else 1)


def test_sizing_prefers_metadata_then_config_then_name_and_the_override_wins() -> None:
    assert mv.size_gpus("Qwen/Qwen3-8B", override=None, billions=None, config=QWEN3_8B_CONFIG).source == "config.json"
    by_name = mv.size_gpus("meta-llama/Llama-3.1-70B-Instruct", override=None, billions=None, config=None)
    assert (by_name.gpu, by_name.source) == ("H100:2", "name")
    forced = mv.size_gpus("Qwen/Qwen3-8B", override="H100:4", billions=8.0, config=None)
    assert (forced.gpu, forced.source) == ("H100:4", "--modal-gpu")


@pytest.mark.parametrize("model, override, billions, message", [
    ("meta-llama/Llama-3.1-70B-Instruct", "H100", None, "pass --modal-gpu H100:2"),
    ("org/big-100b", None, 100.0, "200 GB in bf16, more than 90% of H100:2's 160 GB: pass --modal-gpu H100:4"),
    ("meta-llama/Llama-3.1-405B-Instruct", None, None, "does not fit on 8 x H100"),
    ("openai-community/gpt2", None, None, "cannot tell its parameter count"),
])
def test_a_model_too_large_or_of_unknown_size_is_refused_saying_what_to_pass(
        model: str, override: str | None, billions: float | None, message: str) -> None:
    with pytest.raises(mv.ModalServeError, match="--modal-gpu|does not fit") as err:
        mv.size_gpus(model, override=override, billions=billions, config=None)
    assert message in str(err.value)


@pytest.mark.parametrize("model, hint, override, parser", [
    ("Qwen/Qwen3-8B", None, None, "hermes"),
    ("Qwen/Qwen2.5-7B-Instruct", None, None, "hermes"),
    ("meta-llama/Llama-3.1-8B-Instruct", None, None, "llama3_json"),
    ("mistralai/Mistral-7B-Instruct-v0.3", None, None, "mistral"),
    ("mistralai/Mixtral-8x7B-Instruct-v0.1", None, None, "mistral"),
    ("NousResearch/Hermes-3-Llama-3.1-8B", None, None, "hermes"),
    ("volume:metis-grpo-checkpoints/p/e/global_step_2", "qwen2", None, "hermes"),
    ("openai-community/gpt2", None, None, None),
    ("Qwen/Qwen3-8B", None, "none", None),
    ("Qwen/Qwen3-8B", None, "pythonic", "pythonic"),
])
def test_tool_parser_by_family_and_override(model: str, hint: str | None, override: str | None,
                                            parser: str | None) -> None:
    assert mv.tool_parser_for(model, hint, override) == parser


def test_checkpoints_on_a_volume_and_app_names() -> None:
    assert mv.parse_checkpoint("volume:metis-grpo-checkpoints/metis-grpo/gsm8k-q/global_step_20") == (
        "metis-grpo-checkpoints", "metis-grpo/gsm8k-q/global_step_20/actor/huggingface")
    assert mv.parse_checkpoint("volume:vol/any/folder/") == ("vol", "any/folder")
    assert mv.parse_checkpoint("Qwen/Qwen3-8B") is None
    with pytest.raises(mv.ModalServeError, match="volume:<volume>/<path>"):
        mv.parse_checkpoint("volume:only-a-volume")
    assert mv.app_name("Qwen/Qwen3-8B") == "metis-vllm-qwen-qwen3-8b"
    long = mv.app_name("volume:metis-grpo-checkpoints/metis-grpo/a-very-long-experiment-name/global_step_1000")
    assert len(long) <= 64 and long.startswith("metis-vllm-metis-grpo-checkpoints")
    assert long != mv.app_name("volume:metis-grpo-checkpoints/metis-grpo/a-very-long-experiment-name/global_step_999")


def test_the_exact_vllm_command() -> None:
    spec = mv.ServeSpec(model="Qwen/Qwen3-8B", gpu="H100", max_model_len=4096, tool_parser="hermes")
    assert mv.vllm_command(spec) == [
        "vllm", "serve", "Qwen/Qwen3-8B", "--served-model-name", "Qwen/Qwen3-8B", "--host", "0.0.0.0",
        "--port", "8000", "--tensor-parallel-size", "1", "--max-model-len", "4096",
        "--enable-auto-tool-choice", "--tool-call-parser", "hermes"]
    ckpt = mv.ServeSpec(model="volume:metis-grpo-checkpoints/p/e/global_step_3", gpu="H100:2", tool_parser=None)
    assert mv.vllm_command(ckpt) == [
        "vllm", "serve", "/checkpoints/p/e/global_step_3/actor/huggingface",
        "--served-model-name", "metis-grpo-checkpoints/p/e/global_step_3/actor/huggingface",
        "--host", "0.0.0.0", "--port", "8000", "--tensor-parallel-size", "2", "--max-model-len", "8192"]
    assert mv.ServeSpec.from_json(spec.to_json()) == spec


# ----------------------------------------------------------------------------- the Modal objects, offline


def image_commands(image: Any, version: str = "2025.06") -> list[str]:
    """An image's Dockerfile commands, base first (modal 1.6.4's lazy image definition; no network)."""
    cells = closure(image)
    if "mount" in cells:  # a layer of local files added at start-up (add_local_python_source)
        return image_commands(cells["base_image"], version)
    out: list[str] = []
    for base in cells["base_images"].values():
        out += image_commands(base, version)
    dockerfile = cells["dockerfile_function"]
    return out + (list(dockerfile(version).commands) if dockerfile else [])


def test_the_app_image_volumes_secret_and_replicas_are_built_without_a_network(monkeypatch) -> None:
    pytest.importorskip("modal")
    from metis_pytest.backends import modal_app

    spec = mv.ServeSpec(model="volume:metis-grpo-checkpoints/p/e/global_step_3", gpu="H100:2",
                        tool_parser="hermes", replicas=2, startup_timeout=900)
    with no_network(monkeypatch) as attempts:
        app, functions = modal_app.build_app(spec)
        public_app, public_functions = modal_app.build_app(dataclasses.replace(
            spec, model="Qwen/Qwen3-8B", proxy_auth=False, hf_secret=None, replicas=1, min_containers=0))
    assert attempts == []
    assert app.name == spec.app_name and [raw(f)._tag for f in functions] == ["replica_0", "replica_1"]
    for function in functions:
        fn_spec = raw(function)._spec
        assert fn_spec.gpus == "H100:2"
        assert {p: (raw(v)._name, raw(v)._read_only) for p, v in fn_spec.volumes.items()} == {
            "/hf-cache": ("metis-hf-cache", False), "/checkpoints": ("metis-grpo-checkpoints", True)}
        assert [raw(s)._name for s in fn_spec.secrets if getattr(raw(s), "_name", None)] == ["huggingface-secret"]
        cells = closure(function)
        hook = cells["webhook_config"]
        assert (hook.web_server_port, hook.web_server_startup_timeout, hook.requires_proxy_auth) == (8000, 900, True)
        assert (cells["min_containers"], cells["max_containers"], cells["scaledown_window"]) == (1, 1, 300)
        assert (cells["max_concurrent_inputs"], cells["timeout"], cells["startup_timeout"]) == (512, 3600, 900)
    public = closure(public_functions[0])
    assert public["webhook_config"].requires_proxy_auth is False and public["min_containers"] == 0
    assert [s for s in raw(public_functions[0])._spec.secrets if getattr(raw(s), "_name", None)] == []
    assert "/checkpoints" not in raw(public_functions[0])._spec.volumes
    commands = image_commands(modal_app.build_image())
    assert any("uv pip install" in c and "vllm==0.11.0" in c for c in commands)
    assert "ENV HF_HOME=/hf-cache" in commands and "ENV VLLM_CACHE_ROOT=/hf-cache/vllm" in commands
    mount = closure(modal_app.build_image())["mount"]
    added = {str(remote) for entry in mount.entries for _, remote in entry.get_files_to_upload()}
    assert "/root/metis_pytest/backends/modal_app.py" in added  # what the container imports serve() from
    assert all(name.endswith(".py") for name in added)  # Python files only: no .env, no caches


def test_the_container_starts_vllm_with_the_spec_it_was_given(monkeypatch) -> None:
    pytest.importorskip("modal")
    from metis_pytest.backends import modal_app

    spec = mv.ServeSpec(model="Qwen/Qwen3-8B", tool_parser="hermes")
    started: list[list[str]] = []
    monkeypatch.setenv(modal_app.SPEC_ENV, spec.to_json())
    monkeypatch.setattr(modal_app.subprocess, "Popen", lambda cmd: started.append(cmd))
    modal_app.serve()
    assert started == [mv.vllm_command(spec)]


def test_with_an_empty_modal_config_nothing_connects_and_the_error_says_how_to_log_in(tmp_path: Path) -> None:
    """A fresh interpreter, HOME and MODAL_CONFIG_PATH in tmp, every socket blocked: the app builds, and
    launching stops at the missing token before any connection."""
    pytest.importorskip("modal")
    out = run_offline("""
        import json
        from metis_pytest.backends.modal_app import build_app
        from metis_pytest.backends.modal_vllm import ModalLauncher, ModalServeError, ServeSpec
        spec = ServeSpec(model="Qwen/Qwen3-8B", replicas=2)
        app, functions = build_app(spec)
        try:
            ModalLauncher().launch(spec)
        except ModalServeError as exc:
            error = str(exc)
        print(json.dumps({"app": app.name, "n": len(functions), "error": error, "attempts": len(attempts)}))
    """, tmp_path, cwd=REPO)
    assert out["app"] == "metis-vllm-qwen-qwen3-8b" and out["n"] == 2 and out["attempts"] == 0
    assert "no Modal token: run `modal setup`" in out["error"] and "MODAL_TOKEN_ID" in out["error"]


def test_a_deployed_app_is_found_by_name_and_too_few_replicas_is_an_error(monkeypatch) -> None:
    modal = pytest.importorskip("modal")
    from modal.exception import NotFoundError

    deployed = {("metis-vllm-qwen-qwen3-8b", "replica_0"): "https://ws--replica-0.modal.run"}

    class Deployed:
        def __init__(self, app: str, name: str) -> None:
            self.key = (app, name)

        def hydrate(self) -> None:
            if self.key not in deployed:
                raise NotFoundError(f"{self.key} not found")

        def get_web_url(self) -> str:
            return deployed[self.key]

    monkeypatch.setattr(modal.Function, "from_name", Deployed)
    found = mv.ModalLauncher.lookup(mv.ServeSpec(model="Qwen/Qwen3-8B"))
    assert found is not None and found.deployed and found.urls == ("https://ws--replica-0.modal.run",)
    assert mv.ModalLauncher.lookup(mv.ServeSpec(model="Qwen/Qwen2.5-7B-Instruct")) is None  # not deployed
    with pytest.raises(mv.ModalServeError, match="deployed with 1 replica.*--shards 2"):
        mv.ModalLauncher.lookup(mv.ServeSpec(model="Qwen/Qwen3-8B", replicas=2))


def test_a_missing_secret_is_explained() -> None:
    spec = mv.ServeSpec(model="Qwen/Qwen3-8B")
    exc = mv.explain_modal_error(Exception("Secret 'huggingface-secret' not found in environment 'main'"), spec)
    assert "modal secret create huggingface-secret HF_TOKEN=" in str(exc) and "--modal-hf-secret none" in str(exc)


# ----------------------------------------------------------------------------- health


class StartingServer(ScriptedServer):
    """A scripted server whose ``/health`` answers 503 ``unready`` times first (vLLM loading), or always."""

    def __init__(self, unready: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.unready = unready
        self.health_headers: list[dict[str, str]] = []

    async def _handle_health(self, request: web.Request) -> web.Response:
        self.health_headers.append(dict(request.headers))
        if self.unready < 0 or len(self.health_headers) <= self.unready:
            return web.json_response({"error": "loading"}, status=503)
        return web.json_response({"status": "ok"})


def root(server: ScriptedServer) -> str:
    return server.base_url.removesuffix("/v1")


def test_the_health_wait_retries_503_until_healthy_with_proxy_auth_headers() -> None:
    with StartingServer(unready=2) as server:
        mv.wait_healthy((root(server),), {"Modal-Key": TOKEN_ID}, timeout=10, log_tail=lambda: "", interval=0.02)
    assert len(server.health_headers) == 3 and server.health_headers[-1]["Modal-Key"] == TOKEN_ID


def test_a_server_that_never_becomes_healthy_fails_with_its_log_tail() -> None:
    with StartingServer(unready=-1) as server:
        with pytest.raises(mv.ModalServeError) as err:
            mv.wait_healthy((root(server),), {}, timeout=0.3, interval=0.05,
                            log_tail=lambda: "[replica 0] torch.OutOfMemoryError: CUDA out of memory")
    text = str(err.value)
    assert "never became healthy within 0.3s" in text and "HTTP 503" in text and "--modal-startup-timeout" in text
    assert text.endswith("[replica 0] torch.OutOfMemoryError: CUDA out of memory")


def test_refused_connections_are_retried_until_the_timeout() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        with pytest.raises(mv.ModalServeError, match="never became healthy.*Connection refused"):
            mv.wait_healthy((f"http://127.0.0.1:{port}",), {}, timeout=0.3, interval=0.05, log_tail=lambda: "")


def test_refused_proxy_auth_fails_at_once() -> None:
    class Refusing(StartingServer):
        async def _handle_health(self, request: web.Request) -> web.Response:
            return web.Response(status=401, text="modal-http: missing credentials for proxy authorization")

    with Refusing(unready=0) as server:
        with pytest.raises(mv.ModalServeError, match="MODAL_PROXY_TOKEN_ID"):
            mv.wait_healthy((root(server),), {}, timeout=30, log_tail=lambda: "")


# ----------------------------------------------------------------------------- the backend, fake launcher


class FakeLauncher:
    """Stands in for Modal: hands out the URLs of started servers and records launches and stops."""

    def __init__(self, urls: dict[str, list[str]], *, deployed: bool = False, log: str = "") -> None:
        self.urls, self.deployed, self.log = urls, deployed, log
        self.launched: list[mv.ServeSpec] = []
        self.stopped: list[str] = []

    def checkpoint_config(self, volume: str, path: str) -> dict[str, Any] | None:
        return QWEN3_8B_CONFIG

    def launch(self, spec: mv.ServeSpec) -> mv.Launched:
        self.launched.append(spec)
        return mv.Launched(urls=tuple(self.urls[spec.model]), deployed=self.deployed,
                           stop=lambda: self.stopped.append(spec.model), log_tail=lambda: self.log)

    deploy = launch


@pytest.fixture
def fake_launcher(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("MODAL_PROXY_TOKEN_ID", TOKEN_ID)
    monkeypatch.setenv("MODAL_PROXY_TOKEN_SECRET", TOKEN_SECRET)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    previous = mv.current_launcher()

    def use(launcher: FakeLauncher) -> FakeLauncher:
        mv.use_launcher(launcher)
        return launcher

    yield use
    mv.use_launcher(previous)


def prepare(model: str, tmp_path: Path, **options: Any) -> tuple[Any, Any]:
    cfg = dataclasses.replace(MetisConfig(output_dir=tmp_path), backend="modal", models=(model,), **options)
    backend = mv.ModalVllmBackend()
    target = backend.resolve(model, cfg)
    return backend, (target, backend.prepare(target, PrepareContext(cfg, tmp_path / "state")))


def test_prepare_sizes_launches_waits_and_close_stops_the_ephemeral_app(fake_launcher, tmp_path: Path) -> None:
    with ScriptedServer() as a, ScriptedServer() as b:
        launcher = fake_launcher(FakeLauncher({"Qwen/Qwen3-8B": [root(a), root(b)]}))
        backend, (target, runtime) = prepare("Qwen/Qwen3-8B", tmp_path, shards=2)
        bases = (a.base_url, b.base_url)
    assert target.served_model == "Qwen/Qwen3-8B" and target.header_env == mv.PROXY_HEADERS
    assert runtime.api_base == bases[0] and runtime.api_bases == bases
    spec = launcher.launched[0]
    assert (spec.gpu, spec.tool_parser, spec.replicas, spec.proxy_auth, spec.hf_secret) == (
        "H100", "hermes", 2, True, "huggingface-secret")
    assert json.dumps(runtime.public()).count("wk-") == 0  # no credential in what workers are handed
    backend.close(runtime)
    backend.close(runtime)
    assert launcher.stopped == ["Qwen/Qwen3-8B"]


def test_a_deployed_app_is_used_and_left_running(fake_launcher, tmp_path: Path) -> None:
    with ScriptedServer() as a:
        launcher = fake_launcher(FakeLauncher({"Qwen/Qwen3-8B": [root(a)]}, deployed=True))
        backend, (_, runtime) = prepare("Qwen/Qwen3-8B", tmp_path)
    backend.close(runtime)
    assert runtime.api_bases == () and launcher.stopped == []


def test_a_checkpoint_is_sized_from_its_config_on_the_volume(fake_launcher, tmp_path: Path) -> None:
    model = "volume:metis-grpo-checkpoints/metis-grpo/gsm8k-q/global_step_5"
    with ScriptedServer() as a:
        launcher = fake_launcher(FakeLauncher({model: [root(a)]}))
        _, (target, _) = prepare(model, tmp_path)
    spec = launcher.launched[0]
    assert (spec.gpu, spec.tool_parser) == ("H100", "hermes")  # 8.2B from config.json; model_type qwen3
    assert target.served_model == "metis-grpo-checkpoints/metis-grpo/gsm8k-q/global_step_5/actor/huggingface"


def test_a_never_healthy_ephemeral_app_is_stopped_and_the_error_has_its_log(fake_launcher, tmp_path: Path) -> None:
    with StartingServer(unready=-1) as server:
        launcher = fake_launcher(FakeLauncher({"Qwen/Qwen3-8B": [root(server)]}, log="ValueError: bad config"))
        with pytest.raises(mv.ModalServeError, match="never became healthy(.|\n)*ValueError: bad config"):
            prepare("Qwen/Qwen3-8B", tmp_path, modal_startup_timeout=0.2)
    assert launcher.stopped == ["Qwen/Qwen3-8B"]
    assert server.health_headers[0]["Modal-Secret"] == TOKEN_SECRET


def test_without_a_proxy_token_nothing_is_launched(fake_launcher, monkeypatch, tmp_path: Path) -> None:
    launcher = fake_launcher(FakeLauncher({}))
    monkeypatch.delenv("MODAL_PROXY_TOKEN_SECRET")
    cfg = dataclasses.replace(MetisConfig(), backend="modal")
    assert mv.ModalVllmBackend().resolve("Qwen/Qwen3-8B", cfg).missing_env() == ["MODAL_PROXY_TOKEN_SECRET"]
    with pytest.raises(mv.ModalServeError, match="set MODAL_PROXY_TOKEN_SECRET .*--modal-public"):
        prepare("Qwen/Qwen3-8B", tmp_path)
    assert launcher.launched == []
    public = mv.ModalVllmBackend().resolve("Qwen/Qwen3-8B", dataclasses.replace(cfg, modal_public=True))
    assert public.header_env == () and public.missing_env() == []


def test_metis_serve_modal_deploys_and_prints_urls_and_a_dry_run_touches_nothing(fake_launcher, capsys) -> None:
    with ScriptedServer() as a:
        launcher = fake_launcher(FakeLauncher({"Qwen/Qwen3-8B": [root(a)]}, deployed=True))
        assert metis_main(["serve", "modal", "Qwen/Qwen3-8B", "--dry-run"]) == 0
        assert launcher.launched == []
        assert metis_main(["serve", "modal", "Qwen/Qwen3-8B", "--min-containers", "1", "--wait"]) == 0
        url = a.base_url
    out = capsys.readouterr().out
    assert "app metis-vllm-qwen-qwen3-8b: 1 x H100, tool parser hermes, proxy auth on" in out
    assert f"replica 0: {url}" in out and "healthy" in out and "modal app stop metis-vllm-qwen-qwen3-8b" in out
    assert "use it: pytest evals/gsm8k --backend modal --model Qwen/Qwen3-8B\n" in out
    spec = launcher.launched[0]
    assert (spec.min_containers, spec.scaledown_window) == (1, 900)


def test_metis_serve_modal_reports_a_model_too_large(fake_launcher, capsys) -> None:
    fake_launcher(FakeLauncher({}))
    assert metis_main(["serve", "modal", "meta-llama/Llama-3.1-405B-Instruct"]) == 1
    assert "does not fit on 8 x H100" in capsys.readouterr().err


# ----------------------------------------------------------------------------- end to end, scripted servers


FAKE_CONFTEST = '''
import json, os
from pathlib import Path
from metis_pytest.backends import modal_vllm

class FakeLauncher:
    def checkpoint_config(self, volume, path):
        return None
    def _log(self, **event):
        with Path(os.environ["FAKE_MODAL_LOG"]).open("a") as fh:
            fh.write(json.dumps(event) + "\\n")
    def launch(self, spec):
        self._log(event="launch", spec=json.loads(spec.to_json()))
        urls = json.loads(os.environ["FAKE_MODAL_URLS"])[spec.model]
        return modal_vllm.Launched(urls=tuple(urls), deployed=False,
                                   stop=lambda: self._log(event="stop", model=spec.model))
    deploy = launch

modal_vllm.use_launcher(FakeLauncher())
'''


def correct(body: dict[str, Any]) -> str:
    from evals.gsm8k.dataset import load

    golds = {row.messages[-1].content: str(row.ground_truth) for row in load(str(SMOKE))}
    question = next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user")
    return f"<answer>{golds[question]}</answer>"


@pytest.fixture
def run_modal(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch):
    """Run GSM8K in a child pytest with ``--backend modal``, the fake launcher handing out ``urls``."""
    home = pytester.path / "home"
    home.mkdir()
    log = pytester.path / "modal-events.jsonl"
    for name, value in (("HOME", str(home)), ("LITELLM_LOCAL_MODEL_COST_MAP", "True"), ("HF_HUB_OFFLINE", "1"),
                        ("FAKE_MODAL_LOG", str(log)), ("MODAL_PROXY_TOKEN_ID", TOKEN_ID),
                        ("MODAL_PROXY_TOKEN_SECRET", TOKEN_SECRET)):
        monkeypatch.setenv(name, value)
    pytester.makeconftest(FAKE_CONFTEST)
    pytester.makepyfile(test_eval="from evals.gsm8k.test_gsm8k import test_gsm8k  # noqa: F401\n")

    def run(urls: dict[str, list[str]], *args: str) -> tuple[pytest.RunResult, list[dict[str, Any]]]:
        monkeypatch.setenv("FAKE_MODAL_URLS", json.dumps(urls))
        result = pytester.runpytest_subprocess(
            "-p", "metis_pytest.lazy_imports", "-p", "no:cacheprovider", "--output-dir", "out",
            "--dataset", str(SMOKE), "--backend", "modal", *args, timeout=300)
        events = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        return result, events

    run.out = pytester.path / "out"  # type: ignore[attr-defined]
    return run


def test_two_models_each_on_two_replicas_spread_rows_and_stop_at_session_end(run_modal) -> None:
    qwen, llama = "Qwen/Qwen3-8B", "meta-llama/Llama-3.1-8B-Instruct"
    servers = [ScriptedServer(default=correct).start() for _ in range(4)]
    try:
        urls = {qwen: [root(s) for s in servers[:2]], llama: [root(s) for s in servers[2:]]}
        result, events = run_modal(urls, "--model", qwen, "--model", llama, "--shards", "2")
        result.assert_outcomes(passed=2)
        counts = [s.request_count for s in servers]
        bodies = [r.body for s in servers for r in s.requests]
        headers = [r.headers for s in servers for r in s.requests]
    finally:
        for server in servers:
            server.stop()
    assert counts == [6, 6, 6, 6]  # 12 rows per model, round-robin over its two replicas
    assert {b["model"] for b in bodies[:12]} == {qwen} and {b["model"] for b in bodies[12:]} == {llama}
    assert all(h["Modal-Key"] == TOKEN_ID and h["Modal-Secret"] == TOKEN_SECRET for h in headers)
    launches = {e["spec"]["model"]: e["spec"] for e in events if e["event"] == "launch"}
    assert {m: (s["gpu"], s["tool_parser"], s["replicas"]) for m, s in launches.items()} == {
        qwen: ("H100", "hermes", 2), llama: ("H100", "llama3_json", 2)}
    assert sorted(e["model"] for e in events if e["event"] == "stop") == sorted([qwen, llama])
    for model in (qwen, llama):  # the same record a run on any other backend writes
        summary = json.loads((run_modal.out / "gsm8k" / slug(model) / "summary.json").read_text())
        assert (summary["score"], summary["n"], summary["n_errored"]) == (1.0, 12, 0)
    written = "".join(p.read_text(errors="ignore") for p in run_modal.out.rglob("*") if p.is_file()
                      and p.suffix in (".json", ".jsonl"))
    assert TOKEN_SECRET not in written and TOKEN_ID not in written


def test_under_xdist_the_workers_get_every_replica_from_the_controller(fake_launcher, tmp_path: Path) -> None:
    """The controller prepares and writes the hand-over file; a worker reads every replica's URL from it."""
    from metis_pytest.session import MetisSession

    cfg = dataclasses.replace(MetisConfig(output_dir=tmp_path), backend="modal", models=("Qwen/Qwen3-8B",), shards=2)
    with ScriptedServer() as a, ScriptedServer() as b:
        launcher = fake_launcher(FakeLauncher({"Qwen/Qwen3-8B": [root(a), root(b)]}))
        controller = MetisSession(cfg, repo_dir=tmp_path)
        controller.hand_over(["Qwen/Qwen3-8B"])
        bases = (a.base_url, b.base_url)
    worker = MetisSession(cfg, session_id=controller.session_id, worker="gw0", repo_dir=tmp_path, shared_runtimes=True)
    target = worker.runtime_target_for("Qwen/Qwen3-8B")
    assert (target.api_base, target.api_bases) == (bases[0], bases)
    assert [target.replica(i).api_base for i in range(3)] == [bases[0], bases[1], bases[0]]
    assert TOKEN_SECRET not in (controller.state_dir / "runtimes.json").read_text()
    worker.close_runtimes()
    assert launcher.stopped == []  # a worker stops nothing: the controller owns the app
    controller.close_runtimes()
    assert launcher.stopped == ["Qwen/Qwen3-8B"]


# ----------------------------------------------------------------------------- the benchmark script


BENCH = REPO / "benchmarks" / "bench_modal_vllm.py"


def test_the_benchmark_says_plainly_when_there_is_no_gpu_and_exits_cleanly(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODAL_")}
    env.update(HOME=str(tmp_path), MODAL_CONFIG_PATH=str(tmp_path / "modal.toml"), PATH=str(Path(sys.executable).parent))
    done = subprocess.run([sys.executable, str(BENCH), "--out", str(tmp_path / "out")], capture_output=True,
                          text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("bench_modal_vllm: nothing measured: no local GPU server")
    assert "no Modal token" in done.stdout and not (tmp_path / "out").exists()


def test_the_benchmark_measures_the_harness_side_against_a_running_server(tmp_path: Path, monkeypatch) -> None:
    import importlib.util

    monkeypatch.syspath_prepend(str(BENCH.parent))
    module_spec = importlib.util.spec_from_file_location("bench_modal_vllm", BENCH)
    assert module_spec is not None and module_spec.loader is not None
    bench = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(bench)
    monkeypatch.setattr(bench.shutil, "which", lambda name: None)  # no vllm here: that side is skipped
    with ScriptedServer(default="<answer>1</answer> and some more words") as server:
        assert bench.main(["--api-base", root(server), "--rows", "8", "--concurrency", "4",
                           "--out", str(tmp_path)]) == 0
        sent = server.request_count
    result = json.loads((tmp_path / "modal_vllm.json").read_text())
    assert sent == 8 and result["where"] == "url" and result["harness"]["errored"] == 0
    assert result["harness"]["completion_tokens"] > 0 and result["harness"]["tokens_per_s"] > 0
    assert "cannot run" in result["vllm_bench_serve"]["skipped"]

"""The `metis` console script."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from metis_pytest import cli
from metis_pytest.backends import local_model, local_server
from metis_pytest.cli import build_parser, main


def test_fetch_model_prints_the_path_of_a_given_gguf(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF")
    assert main(["fetch-model", "--local-model", str(gguf)]) == 0
    assert capsys.readouterr().out.strip() == str(gguf)


def test_fetch_model_cache_dir_is_where_the_default_model_goes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    asked: list[object] = []

    def fake_fetch(cache_dir: object = None) -> Path:
        asked.append(cache_dir)
        return Path(str(cache_dir)) / "models" / "m.gguf"

    monkeypatch.setattr(local_model, "fetch_default_model", fake_fetch)
    assert main(["fetch-model", "--cache-dir", str(tmp_path / "weights")]) == 0
    assert asked == [tmp_path / "weights"]
    assert capsys.readouterr().out.strip() == str(tmp_path / "weights" / "models" / "m.gguf")
    assert main(["fetch-model"]) == 0
    assert asked[1] is None  # the default: local_model.default_cache_dir()


def test_serve_local_serves_the_model_from_cache_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    events: list[object] = []

    class FakeServer:
        base_url = "http://127.0.0.1:1234/v1"

        def __init__(self, gguf: Path, **kwargs: object) -> None:
            events.append(("init", gguf, kwargs["port"]))

        def start(self) -> None:
            events.append("start")

        def stop(self) -> None:
            events.append("stop")

    def interrupt(_: float) -> None:
        raise KeyboardInterrupt  # what Ctrl-C or SIGTERM does to the foreground loop

    monkeypatch.setattr(local_model, "fetch_default_model", lambda c=None: Path(str(c)) / "m.gguf")
    monkeypatch.setattr(local_server, "LocalServer", FakeServer)
    monkeypatch.setattr(cli.signal, "signal", lambda *args: None)  # leave pytest's own handlers alone
    monkeypatch.setattr(cli.time, "sleep", interrupt)
    argv = ["serve-local", "--cache-dir", str(tmp_path), "--port", "1234", "--log", str(tmp_path / "s.log")]
    assert main(argv) == 0
    assert events == [("init", tmp_path / "m.gguf", 1234), "start", "stop"]
    assert "serving smollm2" in capsys.readouterr().out


def test_show_prints_one_line_per_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "gsm8k" / "local"
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps({
        "benchmark": "gsm8k", "model": "local", "score": 0.25, "stderr": 0.1, "n": 20, "n_errored": 1,
        "primary_metric": "answer_tag", "metrics": {"answer_tag": {"mean": 0.25}, "strict_match": {"mean": 0.0}}}))
    assert main(["show", str(tmp_path)]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("gsm8k [local] answer_tag=0.250 ± 0.100 (n=20, errored=1) strict_match=0.000")


def test_plot_draws_one_png_per_benchmark(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for model, score in (("local", 0.1), ("openai--gpt-4o", 0.9)):
        folder = tmp_path / "gsm8k" / model
        folder.mkdir(parents=True)
        (folder / "summary.json").write_text(json.dumps({
            "benchmark": "gsm8k", "benchmark_version": "1.0.0", "model": model, "n": 10, "n_errored": 0,
            "primary_metric": "answer_tag",
            "metrics": {"answer_tag": {"mean": score, "stderr": 0.05}, "strict_match": {"mean": 0.0, "stderr": 0.0}}}))
    assert main(["plot", str(tmp_path)]) == 0
    png = tmp_path / "gsm8k" / "summary.png"
    assert capsys.readouterr().out.strip() == str(png)
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_show_without_runs_fails(tmp_path: Path) -> None:
    assert main(["show", str(tmp_path)]) == 1


def test_every_command_has_help() -> None:
    parser = build_parser()
    for command in ("fetch-model", "serve-local", "show", "plot"):
        with pytest.raises(SystemExit) as info:
            parser.parse_args([command, "--help"])
        assert info.value.code == 0


def test_model_commands_take_a_cache_dir(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    for command in ("fetch-model", "serve-local"):
        assert parser.parse_args([command, "--cache-dir", "w"]).cache_dir == Path("w")
        assert parser.parse_args([command]).cache_dir is None
        with pytest.raises(SystemExit):
            parser.parse_args([command, "--help"])
        assert "--cache-dir DIR" in capsys.readouterr().out

"""`metis rescore`: a recorded run scored again with no model, into a new run folder; the recording untouched."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from metis_pytest.cli import build_parser, main
from metis_pytest.registry import Benchmark, get_benchmark
from metis_pytest.rescore import (
    Recorded,
    RescoreError,
    commands,
    differences,
    evaluation_dir,
    recorded,
    replay_args,
)
from tests.e2e.conftest import SMOKE, last_user, read_jsonl, smoke_golds
from tests.e2e.test_gsm8k_scripted import openai_args

REPO = Path(__file__).resolve().parents[1]
GOLDS = smoke_golds()


def odd_wrong(body: dict[str, Any]) -> str:
    """The gold answer when its last digit is even, a wrong one when odd: a score strictly between 0 and 1."""
    gold = GOLDS[last_user(body)]
    return f"<answer>{gold if gold[-1] in '02468' else gold + '1'}</answer>"


def tree_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        digest.update(str(path.relative_to(folder)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def scores(model_dir: Path) -> dict[tuple[str, int], tuple[float, dict[str, float]]]:
    return {(r["row_id"], r["run_index"]): (r["score"], r["metrics"]) for r in read_jsonl(model_dir / "rows.jsonl")}


def test_rescore_replays_a_recorded_run_into_a_new_folder_with_no_model(
        scripted_llm_factory, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
        capfd: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("HOME", str(pytester.path))  # Eval Protocol's store stays in the test's folder
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    pytester.makepyfile(test_eval="from evals.gsm8k.test_gsm8k import test_gsm8k  # noqa: F401\n")
    server = scripted_llm_factory(default=odd_wrong)
    first = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--output-dir", "rec", "--dataset", str(SMOKE),
                                          *openai_args(server), "--max-rows", "5", "--runs", "2", timeout=300)
    first.assert_outcomes(passed=1)
    recorded_dir = pytester.path / "rec" / "gsm8k" / "scripted"
    old = json.loads((recorded_dir / "summary.json").read_text())
    assert old["n"] == 5 and 0.0 < old["score"] < 1.0
    sent = server.request_count
    assert sent == 10
    server.stop()  # nothing to talk to: every request would fail and error its row
    before = tree_digest(pytester.path / "rec")
    capfd.readouterr()

    code = main(["rescore", "rec", "--out", "new", "--", "-p", "no:cacheprovider", "--dataset", str(SMOKE)])
    printed = capfd.readouterr().out
    assert code == 0, printed
    assert tree_digest(pytester.path / "rec") == before  # the recording is only read
    assert server.request_count == sent
    new_dir = pytester.path / "new" / "gsm8k" / "scripted"
    new = json.loads((new_dir / "summary.json").read_text())
    assert (new["score"], new["stderr"], new["n"], new["n_errored"]) == (old["score"], old["stderr"], 5, 0)
    assert new["metrics"] == old["metrics"] and new["runs"]["means"] == old["runs"]["means"]
    assert scores(new_dir) == scores(recorded_dir) and len(scores(new_dir)) == 10
    assert new["selection"]["replay"] == str(pytester.path / "rec")
    assert all(r["metadata"]["replayed_from"] for r in read_jsonl(new_dir / "rows.jsonl"))
    assert f"gsm8k [scripted] answer_tag={old['score']:.3f}" in printed  # the summary line, new and recorded
    assert f"-> {new_dir / 'summary.json'}" in printed and "  recorded: gsm8k [scripted]" in printed
    assert "--max-rows 5" in printed and "--runs 2" in printed  # the recorded selection, replayed
    assert "changed since the recording" not in printed


def test_the_evaluation_folder_comes_from_the_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert evaluation_dir(get_benchmark("gsm8k")) == REPO / "evals" / "gsm8k"
    assert evaluation_dir(get_benchmark("ace")) == REPO / "evals" / "ace"
    folder = tmp_path / "mybench"
    folder.mkdir()
    (folder / "spec.py").write_text("def load(spec):\n    return []\n")
    spec = importlib.util.spec_from_file_location("mybench_spec", folder / "spec.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setitem(sys.modules, "mybench_spec", module)
    bench = Benchmark(name="mine", version="1", primary_metric="score", default_source="x", load=module.load,
                      dataset_id=str, dataset_revision=str, score=str)
    with pytest.raises(RescoreError, match="no test_.*py beside its module mybench_spec"):
        evaluation_dir(bench)
    (folder / "test_mine.py").write_text("")
    assert evaluation_dir(bench) == folder  # a new benchmark: nothing to edit


def summary(model: str, *, indexes: list[int], sessions: list[str], max_rows: int | None = None) -> dict[str, Any]:
    return {"benchmark": "gsm8k", "model": model, "runs": {"indexes": indexes}, "session": "s1",
            "sessions": sessions, "dataset": {"id": "file:x", "revision": "r", "split": None},
            "selection": {"max_rows": max_rows, "keyword": None, "markexpr": None}}


def test_replay_options_follow_the_recording() -> None:
    assert replay_args(summary("m", indexes=[0, 1, 2], sessions=["s1"], max_rows=5)) == ("--runs", "3", "--max-rows", "5")
    picked = summary("m", indexes=[0], sessions=["s1"])
    picked["selection"].update(keyword="food", markexpr="not slow")
    assert replay_args(picked) == ("--runs", "1", "-k", "food", "-m", "not slow")
    # Rows from several sessions: the last one's selection is not the summary's rows.
    assert replay_args(summary("m", indexes=[0], sessions=["s0", "s1"], max_rows=5)) == ("--runs", "1")
    split = {**summary("m", indexes=[0], sessions=["s1"]), "dataset": {"split": "train"}}
    assert replay_args(split) == ("--runs", "1", "--dataset-split", "train")


def test_models_that_replay_alike_share_one_pytest_run(tmp_path: Path) -> None:
    chosen = [Recorded(tmp_path / "a", summary("a", indexes=[0], sessions=["s1"])),
              Recorded(tmp_path / "b", summary("b", indexes=[0], sessions=["s1"])),
              Recorded(tmp_path / "c", summary("c", indexes=[0, 1], sessions=["s1"]))]
    plan = commands(tmp_path / "rec", tmp_path / "new", chosen, ["-x"], python="py")
    assert [[r.model for r in members] for _, members in plan] == [["a", "b"], ["c"]]
    cmd = plan[0][0]
    assert cmd[:4] == ["py", "-m", "pytest", str(REPO / "evals" / "gsm8k")]
    assert cmd[4:] == ["--replay", str((tmp_path / "rec").resolve()), "--output-dir", str((tmp_path / "new").resolve()),
                       "--model", "a", "--model", "b", "--runs", "1", "-x"]  # what follows -- comes last


def test_what_differs_from_the_recording_is_named() -> None:
    old = {"benchmark_version": "1.0", "dataset": {"id": "file:a", "revision": "r1", "split": None}, "prompt_hash": "p"}
    new = {**old, "benchmark_version": "1.1", "dataset": {"id": "file:a", "revision": "r2", "split": None}}
    assert differences(old, new) == ["benchmark_version: '1.0' -> '1.1'", "dataset.revision: 'r1' -> 'r2'"]
    assert differences(old, old) == []


def test_each_new_summary_is_printed_with_the_recorded_one_and_what_changed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    rec = tmp_path / "rec" / "gsm8k" / "m"
    rec.mkdir(parents=True)
    (rec / "rows.jsonl").write_text("")
    old = {**summary("m", indexes=[0], sessions=["s1"]), "score": 0.5, "stderr": 0.1, "n": 4, "n_errored": 0,
           "primary_metric": "answer_tag", "prompt_hash": "p"}
    (rec / "summary.json").write_text(json.dumps(old))
    outs: list[Path] = []

    def fake_pytest(cmd: list[str], check: bool) -> Any:  # what the evaluation under --replay writes
        outs.append(Path(cmd[cmd.index("--output-dir") + 1]))
        folder = outs[0] / "gsm8k" / "m"
        folder.mkdir(parents=True)
        new = {**old, "score": 0.25, "dataset": {**old["dataset"], "revision": "r2"}}
        (folder / "summary.json").write_text(json.dumps(new))
        return type("Done", (), {"returncode": 1})()

    monkeypatch.setattr("metis_pytest.rescore.subprocess.run", fake_pytest)
    assert main(["rescore", str(tmp_path / "rec")]) == 1  # pytest's exit code
    assert outs[0].parent == tmp_path and outs[0].name.startswith("rec-rescored-")  # the default --out
    lines = capsys.readouterr().out.splitlines()
    assert lines[-3].startswith("gsm8k [m] answer_tag=0.250 ± 0.100 (n=4, errored=0)")
    assert lines[-2].startswith("  recorded: gsm8k [m] answer_tag=0.500 ± 0.100 (n=4, errored=0)")
    assert lines[-1] == "  changed since the recording: dataset.revision: 'r' -> 'r2'"


def test_rescore_refuses_what_it_cannot_do(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rec = tmp_path / "rec" / "gsm8k" / "m"
    rec.mkdir(parents=True)
    (rec / "rows.jsonl").write_text("")
    (rec / "summary.json").write_text(json.dumps(summary("m", indexes=[0], sessions=["s1"])))
    cases = [
        (["rescore", str(tmp_path / "nothing-here")], "no recorded run in it"),
        (["rescore", str(tmp_path / "rec"), "--out", str(rec / "new")], "inside"),
        (["rescore", str(tmp_path / "rec"), "--out", str(tmp_path)], "exists and is not an empty folder"),
        (["rescore", str(tmp_path / "rec"), "--out", str(tmp_path / "o"), "--bench", "ace"],
         "--bench ace: not in"),
        (["rescore", str(tmp_path / "rec"), "--out", str(tmp_path / "o"), "--model", "x"], "it holds m"),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    # An output folder, or one <benchmark>/<model> folder of it.
    assert [r.folder for r in recorded(tmp_path / "rec")] == [r.folder for r in recorded(rec)] == [rec]


def test_arguments_after_the_double_dash_go_to_pytest() -> None:
    args = build_parser().parse_args(["rescore", "runs", "--out", "new", "--model", "m", "--", "-k", "x", "--out", "y"])
    assert (args.run_dir, args.out, args.model, args.pytest_args) == ("runs", Path("new"), ["m"], ["-k", "x", "--out", "y"])
    assert build_parser().parse_args(["rescore", "runs"]).pytest_args == []
    for command in ("rescore", "report"):
        with pytest.raises(SystemExit) as info:
            build_parser().parse_args([command, "--help"])
        assert info.value.code == 0

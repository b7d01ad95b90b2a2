"""`metis data export`: benchmark rows as verl RL parquet (schema, split, manifest, errors)."""

from __future__ import annotations

import dataclasses
import json
import math
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from eval_protocol.models import EvaluationRow, InputMetadata, Message

from metis_pytest import registry
from metis_pytest.cli import main
from metis_pytest.export import (
    PYARROW_HINT,
    ExportError,
    export,
    metadata_fields,
    metadata_of,
    split_key,
    split_rows,
)
from metis_pytest.registry import Benchmark, DataSpec, get_benchmark
from tests.conftest import REPO, shared_file

SMOKE = REPO / "datasets" / "gsm8k_smoke.jsonl"
ACE_DEMO = REPO / "datasets" / "ace_demo"

PROMPT_TYPE = pa.list_(pa.struct([pa.field("role", pa.string()), pa.field("content", pa.string())]))
REWARD_TYPE = pa.struct([pa.field("style", pa.string()), pa.field("ground_truth", pa.string())])


def _cli(*argv: str) -> int:
    return main(["data", "export", *argv])


def _read(out: Path) -> dict[str, pa.Table]:
    return {side: pq.read_table(out / f"{side}.parquet") for side in ("train", "test")}


def _records(out: Path) -> dict[str, list[dict[str, Any]]]:
    return {side: table.to_pylist() for side, table in _read(out).items()}


def _manifest(out: Path) -> dict[str, Any]:
    return json.loads((out / "manifest.json").read_text())


def _empty_structs(dtype: pa.DataType, path: str = "") -> list[str]:
    """Paths of structs without fields anywhere in ``dtype`` (Parquet cannot store them)."""
    if pa.types.is_struct(dtype):
        if dtype.num_fields == 0:
            return [path or "<root>"]
        return [p for f in dtype for p in _empty_structs(f.type, f"{path}.{f.name}")]
    if pa.types.is_list(dtype) or pa.types.is_large_list(dtype):
        return _empty_structs(dtype.value_type, f"{path}[]")
    return []


def _check_no_empty_structs(schema: pa.Schema) -> None:
    assert [p for f in schema for p in _empty_structs(f.type, f.name)] == []


def _fake_row(row_id: str, info: dict[str, Any], gold: str = "1") -> EvaluationRow:
    return EvaluationRow(messages=[Message(role="user", content=f"question {row_id}")], ground_truth=gold,
                         input_metadata=InputMetadata(row_id=row_id, dataset_info=info))


def _fake_benchmark(rows: list[EvaluationRow], name: str = "fake") -> Benchmark:
    return Benchmark(name=name, version="0.0.1", primary_metric="score", default_source="memory",
                     load=lambda spec: list(rows), dataset_id=lambda spec: "memory",
                     dataset_revision=lambda spec: "r0", score=lambda *args: None)


# ----------------------------------------------------------------------------- GSM8K


def test_gsm8k_smoke_export_has_verls_schema_chat_and_ground_truth(tmp_path: Path) -> None:
    out = tmp_path / "gsm8k"
    assert _cli("gsm8k", "--format", "verl", "--out", str(out), "--dataset", str(SMOKE)) == 0
    tables = _read(out)
    schema = tables["train"].schema
    assert tables["test"].schema == schema
    assert schema.names == ["data_source", "prompt", "ability", "reward_model", "extra_info"]  # no agent_name
    assert schema.field("data_source").type == pa.string()
    assert schema.field("prompt").type == PROMPT_TYPE
    assert schema.field("ability").type == pa.string()
    assert schema.field("reward_model").type == REWARD_TYPE
    extra = schema.field("extra_info").type
    assert [f.name for f in extra][:4] == ["split", "index", "row_id", "dataset_info"]
    assert extra.field("index").type == pa.int64()
    assert extra.field("line").type == pa.int64()  # a scalar metadata key, typed
    assert extra.field("reference").type == pa.string()
    assert "tools_kwargs" not in [f.name for f in extra]
    _check_no_empty_structs(schema)

    from evals.gsm8k import prompts

    loaded = {r.input_metadata.row_id: r for r in get_benchmark("gsm8k").load(DataSpec(str(SMOKE)))}
    records = _records(out)
    assert (len(records["train"]), len(records["test"])) == (9, 3)  # 0.75 * 12
    seen = []
    for side, rows in records.items():
        assert [r["extra_info"]["index"] for r in rows] == list(range(len(rows)))
        for record in rows:
            info = record["extra_info"]
            row = loaded[info["row_id"]]
            seen.append(info["row_id"])
            assert record["data_source"] == "gsm8k"
            assert record["ability"] == "math"
            assert record["prompt"] == [{"role": "system", "content": prompts.SYSTEM_PROMPT},
                                        {"role": "user", "content": row.messages[1].content}]
            assert record["reward_model"] == {"style": "rule", "ground_truth": row.ground_truth}
            assert info["split"] == side
            assert metadata_of(info) == row.input_metadata.dataset_info  # lossless
            assert info["reference"] == row.input_metadata.dataset_info["reference"]
    assert sorted(seen) == sorted(loaded)
    assert {r["reward_model"]["ground_truth"] for r in records["train"] + records["test"]} >= {"1080", "-7", "8.75"}

    manifest = _manifest(out)
    assert manifest["benchmark"] == "gsm8k"
    assert manifest["benchmark_version"] == get_benchmark("gsm8k").version
    assert manifest["dataset"]["id"] == "file:gsm8k_smoke.jsonl"
    assert manifest["dataset"]["revision"] == get_benchmark("gsm8k").dataset_revision(DataSpec(str(SMOKE)))
    assert manifest["rows"] == {"loaded": 12, "exported": 12, "train": 9, "test": 3}
    assert manifest["files"]["train.parquet"]["rows"] == 9
    assert manifest["command"][:4] == ["metis", "data", "export", "gsm8k"]
    assert manifest["command"][manifest["command"].index("--dataset") + 1] == str(SMOKE)
    assert manifest["verl"]["reward_style"] == "rule" and manifest["verl"]["agent_name"] is None


def test_shared_gsm8k_train_export_sizes_match_the_ratio(tmp_path: Path) -> None:
    train_jsonl = shared_file("gsm8k", "train.jsonl")
    out = tmp_path / "gsm8k-train"
    assert _cli("gsm8k", "--format", "verl", "--out", str(out), "--dataset", str(train_jsonl),
                "--split-ratio", "0.9", "--seed", "7") == 0
    tables = _read(out)
    n = tables["train"].num_rows + tables["test"].num_rows
    assert n == 7473  # GSM8K's train split
    assert tables["train"].num_rows == math.floor(0.9 * n + 0.5)
    assert abs(tables["train"].num_rows / n - 0.9) <= 1 / n
    ids = {side: t.column("extra_info").combine_chunks().field("row_id").to_pylist() for side, t in tables.items()}
    assert not set(ids["train"]) & set(ids["test"])
    # the same rows land on the same side whatever order they come in
    shuffled = ids["train"] + ids["test"]
    random.Random(3).shuffle(shuffled)
    again = split_rows(shuffled, 0.9, seed=7)
    assert again == ids  # same membership and the same (hash) order inside each file
    first = tables["train"].slice(0, 1).to_pylist()[0]
    assert first["reward_model"]["ground_truth"] == json.loads(first["extra_info"]["dataset_info"])["reference"] \
        .rsplit("####", 1)[1].strip().replace(",", "")
    assert _manifest(out)["split"] == {"ratio": 0.9, "seed": 7, "rule": _manifest(out)["split"]["rule"]}


@pytest.mark.parametrize("ratio", [0.0, 0.5, 0.75, 0.8, 1.0])
def test_split_sizes_follow_the_ratio_and_empty_sides_keep_the_schema(tmp_path: Path, ratio: float) -> None:
    manifest = export("gsm8k", tmp_path, source=str(SMOKE), ratio=ratio)
    tables = _read(tmp_path)
    assert tables["train"].num_rows == math.floor(ratio * 12 + 0.5) == manifest["rows"]["train"]
    assert tables["test"].num_rows == 12 - tables["train"].num_rows
    assert tables["train"].schema == tables["test"].schema


def test_two_exports_are_byte_identical_and_seed_changes_the_split(tmp_path: Path) -> None:
    for name in ("a", "b"):
        assert _cli("gsm8k", "--format", "verl", "--out", str(tmp_path / name), "--dataset", str(SMOKE)) == 0
    for file in ("train.parquet", "test.parquet"):
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes()
    first, second = _manifest(tmp_path / "a"), _manifest(tmp_path / "b")
    first.pop("command"), second.pop("command")
    assert first == second
    assert _cli("gsm8k", "--format", "verl", "--out", str(tmp_path / "s1"), "--dataset", str(SMOKE), "--seed", "1") == 0
    train = {side: {r["extra_info"]["row_id"] for r in rows} for side, rows in _records(tmp_path / "a").items()}
    seeded = {side: {r["extra_info"]["row_id"] for r in rows} for side, rows in _records(tmp_path / "s1").items()}
    assert len(seeded["train"]) == 9 and seeded != train


def test_rows_in_another_order_give_the_same_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bench = get_benchmark("gsm8k")
    export("gsm8k", tmp_path / "plain", source=str(SMOKE))

    def shuffled(spec: DataSpec) -> list[Any]:
        rows = bench.load(spec)
        random.Random(11).shuffle(rows)
        return rows

    monkeypatch.setitem(registry._REGISTRY, "gsm8k", dataclasses.replace(bench, load=shuffled))
    export("gsm8k", tmp_path / "shuffled", source=str(SMOKE))
    for file in ("train.parquet", "test.parquet"):
        assert (tmp_path / "plain" / file).read_bytes() == (tmp_path / "shuffled" / file).read_bytes()


def test_split_rows_is_a_function_of_the_ids_and_refuses_duplicates() -> None:
    ids = [f"row-{i}" for i in range(40)]
    sides = split_rows(ids, 0.25, seed=5)
    assert len(sides["train"]) == 10 and sorted(sides["train"] + sides["test"]) == sorted(ids)
    assert sides == split_rows(list(reversed(ids)), 0.25, seed=5)
    assert sides["train"] == sorted(sides["train"], key=lambda i: split_key(i, 5))
    with pytest.raises(ExportError, match="repeated: 'row-1'"):
        split_rows(["row-1", "row-2", "row-1"], 0.5)


def test_max_rows_keeps_the_first_rows(tmp_path: Path) -> None:
    assert _cli("gsm8k", "--format", "verl", "--out", str(tmp_path), "--dataset", str(SMOKE), "--max-rows", "5") == 0
    manifest = _manifest(tmp_path)
    assert manifest["rows"] == {"loaded": 12, "exported": 5, "train": 4, "test": 1}
    ids = {r["extra_info"]["row_id"] for rows in _records(tmp_path).values() for r in rows}
    assert ids == {f"gsm8k-gsm8k_smoke-{i:05d}" for i in range(5)}


def test_progress_bar_goes_to_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    export("gsm8k", tmp_path, source=str(SMOKE), progress=True)
    captured = capsys.readouterr()
    assert "export gsm8k" in captured.err and "12/12" in captured.err
    assert captured.out == ""


# ----------------------------------------------------------------------------- ACE


def test_ace_demo_export_carries_criteria_tools_and_the_tool_agent(tmp_path: Path) -> None:
    from evals.ace.dataset import criteria_from_json, task_from_info, task_from_row

    out = tmp_path / "ace"
    assert _cli("ace", "--format", "verl", "--out", str(out), "--dataset", str(ACE_DEMO), "--split-ratio", "0.5") == 0
    tables = _read(out)
    schema = tables["train"].schema
    assert schema.names == ["data_source", "prompt", "ability", "reward_model", "extra_info", "agent_name"]
    _check_no_empty_structs(schema)
    extra = schema.field("extra_info").type
    assert extra.field("need_tools_kwargs").type == pa.bool_()
    criterion = extra.field("criteria").type.value_type  # one shape in every row: a list of structs
    assert [f.name for f in criterion] == ["criteria_type", "description", "grounded", "hurdle", "id", "is_link",
                                           "shop_vs_product"]
    assert criterion.field("hurdle").type == pa.bool_() and criterion.field("shop_vs_product").type == pa.string()
    tools = extra.field("tools_kwargs").type
    assert [f.name for f in tools] == ["web_search", "browse_page"]

    loaded = {r.input_metadata.row_id: r for r in get_benchmark("ace").load(
        DataSpec(str(ACE_DEMO), options=(("ace_domains", ()), ("ace_task_ids", ()))))}
    records = _records(out)
    assert (len(records["train"]), len(records["test"])) == (2, 1)
    for record in records["train"] + records["test"]:
        info = record["extra_info"]
        row = loaded[info["row_id"]]
        assert record["data_source"] == "ace" and record["ability"] == "web_agent"
        assert record["agent_name"] == "tool_agent"
        assert record["prompt"] == [{"role": "user", "content": row.messages[0].content}]
        assert record["reward_model"]["style"] == "model"
        assert record["reward_model"]["ground_truth"] == row.ground_truth
        assert criteria_from_json(record["reward_model"]["ground_truth"]) == task_from_row(row).criteria
        assert info["need_tools_kwargs"] is True
        assert info["tools_kwargs"] == {tool: {"create_kwargs": {"row_id": info["row_id"]}}
                                        for tool in ("web_search", "browse_page")}
        assert info["domain"] == row.input_metadata.dataset_info["domain"]
        assert task_from_info(metadata_of(info)) == task_from_row(row)  # the exact record survives
        assert task_from_info(info) == task_from_row(row)  # and extra_info itself is the scorer's metadata
    manifest = _manifest(out)
    assert manifest["dataset"]["id"] == "dir:ace_demo"
    assert manifest["verl"]["tools"] == ["web_search", "browse_page"]
    assert manifest["judge_prompt_version"] == get_benchmark("ace").judge_prompt_version


def test_ace_domains_and_task_ids_filter_the_rows(tmp_path: Path) -> None:
    assert _cli("ace", "--format", "verl", "--out", str(tmp_path / "d"), "--dataset", str(ACE_DEMO),
                "--domains", "shopping,Food") == 0
    ids = {r["extra_info"]["row_id"] for rows in _records(tmp_path / "d").values() for r in rows}
    assert ids == {"ace-shopping-9001", "ace-food-9101"}
    manifest = _manifest(tmp_path / "d")
    assert manifest["dataset"]["options"] == {"ace_domains": ["shopping", "Food"], "ace_task_ids": []}
    assert "--domains" in manifest["command"]
    assert _cli("ace", "--format", "verl", "--out", str(tmp_path / "t"), "--dataset", str(ACE_DEMO),
                "--domains", "gaming", "--domains", "food", "--task-ids", "9201") == 0
    ids = {r["extra_info"]["row_id"] for rows in _records(tmp_path / "t").values() for r in rows}
    assert ids == {"ace-gaming-9201"}


def test_ace_food_only_export_keeps_criteria_native(tmp_path: Path) -> None:
    from evals.ace.dataset import task_from_info

    assert _cli("ace", "--format", "verl", "--out", str(tmp_path), "--dataset", str(ACE_DEMO), "--domains", "food") == 0
    [record] = _records(tmp_path)["train"] + _records(tmp_path)["test"]
    criteria = record["extra_info"]["criteria"]
    assert criteria and all(c["shop_vs_product"] is None for c in criteria)  # null in every row: a null field
    assert task_from_info(record["extra_info"]).task_id == "9101"


def test_ace_without_dataset_reads_the_benchmarks_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SEARCHAPI_IO_KEY", raising=False)
    manifest = export("ace", tmp_path)
    assert Path(manifest["dataset"]["source"]) == ACE_DEMO.resolve()  # the offline demo, as `pytest evals/ace`


def test_ace_domain_unknown_is_a_data_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli("ace", "--format", "verl", "--out", str(tmp_path), "--dataset", str(ACE_DEMO),
                "--domains", "cars") == 1
    assert "cars" in capsys.readouterr().err
    assert not (tmp_path / "train.parquet").exists()


# ----------------------------------------------------------------------------- metadata shapes


def test_metadata_that_varies_in_shape_is_json_text_and_the_rest_stays_native(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    infos = [
        {"nested": {"a": 1}, "empty": {}, "items": [], "same": {"k": [1], "s": None}, "n": 1, "x": 1, "mixed": "s",
         "none": None, "split": "dev", "flag": True, "deep": [{"e": {}}]},
        {"nested": {"b": [1, 2]}, "empty": {}, "items": [{"k": "v"}], "same": {"k": [], "s": "t"}, "n": 2, "x": 2.5,
         "mixed": 3, "none": None, "deep": []},
        {"nested": {"a": 2}, "n": None, "x": 3, "flag": False, "only_here": "z", "same": {"k": [2.5], "s": None}},
    ]
    rows = [_fake_row(f"fake-{i}", info) for i, info in enumerate(infos)]
    monkeypatch.setitem(registry._REGISTRY, "fake", _fake_benchmark(rows))
    assert _cli("fake", "--format", "verl", "--out", str(tmp_path), "--split-ratio", "0.67") == 0
    tables = _read(tmp_path)
    _check_no_empty_structs(tables["train"].schema)
    fields = {f.name: f.type for f in tables["train"].schema.field("extra_info").type}
    same = pa.struct([pa.field("k", pa.list_(pa.float64())), pa.field("s", pa.string())])
    assert fields == {"split": pa.string(), "index": pa.int64(), "row_id": pa.string(), "dataset_info": pa.string(),
                      "deep": pa.string(), "empty": pa.string(), "flag": pa.bool_(),
                      "items": pa.list_(pa.struct([pa.field("k", pa.string())])), "mixed": pa.string(),
                      "n": pa.int64(), "nested": pa.string(), "none": pa.null(), "only_here": pa.string(),
                      "same": same, "x": pa.float64()}
    got = {r["extra_info"]["row_id"]: r["extra_info"] for rows_ in _records(tmp_path).values() for r in rows_}
    assert [metadata_of(got[f"fake-{i}"]) for i in range(3)] == infos  # the exact record
    assert [got[f"fake-{i}"]["nested"] for i in range(3)] == ['{"a":1}', '{"b":[1,2]}', '{"a":2}']
    assert [got[f"fake-{i}"]["mixed"] for i in range(3)] == ['"s"', "3", None]
    assert [got[f"fake-{i}"]["empty"] for i in range(3)] == ["{}", "{}", None]
    assert got["fake-1"]["same"] == {"k": [], "s": "t"} and got["fake-2"]["same"] == {"k": [2.5], "s": None}
    assert got["fake-2"]["n"] is None and got["fake-0"]["only_here"] is None and got["fake-0"]["x"] == 1.0
    assert {info["split"] for info in got.values()} <= {"train", "test"}  # never the source's "dev"
    record = tables["train"].slice(0, 1).to_pylist()[0]
    assert record["ability"] == "general" and record["reward_model"]["style"] == "rule"


def test_metadata_fields_rule() -> None:
    assert metadata_fields([{"a": 1, "b": "x", "c": [1], "d": None, "index": 3, "f": {"k": 1}},
                            {"a": 2.0, "b": 5, "e": 2**70, "f": {"k": None}}]) == [
        ("a", "float", False), ("b", "str", True), ("c", ("list", "int"), False), ("d", "null", False),
        ("e", "str", True), ("f", ("struct", (("k", "int"),)), False)]


def test_gsm8k_rows_score_through_the_verl_reward(tmp_path: Path) -> None:
    verl_reward = pytest.importorskip("metis_pytest.rewards.verl")
    export("gsm8k", tmp_path, source=str(SMOKE))
    for record in _records(tmp_path)["train"][:3]:
        gold = record["reward_model"]["ground_truth"]
        args = (record["data_source"], f"<answer>{gold}</answer>", gold, record["extra_info"])
        assert verl_reward.compute_score(*args)["score"] == 1.0
        wrong = (record["data_source"], "<answer>123456789</answer>", gold, record["extra_info"])
        assert verl_reward.compute_score(*wrong)["score"] == 0.0


# ----------------------------------------------------------------------------- errors


def test_unknown_benchmark_names_the_known_ones(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli("nope", "--format", "verl", "--out", str(tmp_path)) == 2
    err = capsys.readouterr().err
    assert "unknown benchmark 'nope'" in err and "ace" in err and "gsm8k" in err
    assert not any(tmp_path.iterdir())


def test_a_flag_the_benchmark_does_not_declare_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli("gsm8k", "--format", "verl", "--out", str(tmp_path), "--dataset", str(SMOKE),
                "--domains", "shopping") == 2
    err = capsys.readouterr().err
    assert "--domains is not an option of benchmark 'gsm8k'" in err and "belongs to: ace" in err
    with pytest.raises(ExportError, match="declares no data option 'ace_domains'"):
        export("gsm8k", tmp_path, source=str(SMOKE), options={"ace_domains": ("shopping",)})


@pytest.mark.parametrize("argv, message", [
    (["--split-ratio", "1.5"], "--split-ratio must be between 0 and 1"),
    (["--split-ratio", "nan"], "--split-ratio must be between 0 and 1"),
    (["--max-rows", "0"], "--max-rows must be at least 1"),
])
def test_bad_numbers_are_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str],
                                      message: str) -> None:
    assert _cli("gsm8k", "--format", "verl", "--out", str(tmp_path), "--dataset", str(SMOKE), *argv) == 2
    assert message in capsys.readouterr().err


def test_format_and_out_are_required() -> None:
    with pytest.raises(SystemExit):
        _cli("gsm8k", "--out", "x")
    with pytest.raises(SystemExit):
        _cli("gsm8k", "--format", "csv", "--out", "x")


def test_a_missing_dataset_is_a_data_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli("gsm8k", "--format", "verl", "--out", str(tmp_path / "o"), "--dataset", str(tmp_path / "no.jsonl")) == 1
    assert "no.jsonl" in capsys.readouterr().err


def test_without_pyarrow_the_error_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    assert _cli("gsm8k", "--format", "verl", "--out", str(tmp_path), "--dataset", str(SMOKE)) == 2
    assert PYARROW_HINT in capsys.readouterr().err


def test_the_console_command_runs_in_a_subprocess(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "metis_pytest.cli", "data", "export", "gsm8k", "--format", "verl",
                           "--out", str(tmp_path), "--dataset", str(SMOKE)],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert "12 rows" in done.stdout and str(tmp_path / "train.parquet") in done.stdout
    assert pq.read_metadata(tmp_path / "train.parquet").num_rows == 9

"""Tests for the ACE loaders (``evals/ace/dataset.py``).

ACE: Mercor's AI Consumer Index, arXiv:2512.04921; GitHub Mercor-Intelligence/apex-evals (``ace/``);
Hugging Face ``mercor/ACE``. Small CSV snippets are written to ``tmp_path``; the real-data tests read
the shared dataset folder (``<repo>/../shared/datasets/ace``, or ``--shared-datasets DIR``) and skip
if it is absent. The Hugging Face loader is tested offline with a fake ``datasets.load_dataset``.

Run: ``pytest tests/evals/test_ace_dataset.py``.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import json
import sys
import types
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from eval_protocol.models import EvaluationRow

from evals.ace import dataset
from evals.ace.dataset import (
    DATASET_ID,
    DEFAULT_SOURCE,
    DISPLAY_NAMES,
    DOMAINS,
    HF_SOURCE,
    Criterion,
    DatasetError,
    Task,
    canonical_domain,
    criteria_from_json,
    criterion_key,
    dataset_id,
    dataset_revision,
    load,
    load_csv,
    load_dir,
    load_hf,
    task_from_info,
    task_from_row,
    task_to_row,
)
from metis_pytest.errors import DatasetError as HarnessDatasetError
from metis_pytest.registry import DataSpec
from tests.conftest import shared_datasets, shared_file

HEADER = ("Criterion ID,Task ID,Prompt,Specified Prompt,Workflow,Hurdle Tag,Criteria type,"
          "Criterion Grounding Check,Description")
SHOP_HEADER = HEADER + ",Shop vs. Product"

# Lines 2-3 and 4-5: two records of task 10, each with a line break inside the quoted prompt.
FOOD_GOOD = (
    HEADER + "\n"
    '1,10,Raw prompt,"Plan my meals.\nNo nuts.",Meal Plan,Hurdle,Meets dietary requirements,Not Grounded,Is nut free\n'
    '2,10,Raw prompt,"Plan my meals.\nNo nuts.",Meal Plan,Not,Other,Not Grounded,Gives a shopping list\n'
)
# Starts on line 6, right after FOOD_GOOD.
NEXT_LINE = 6


def _write(folder: Path, name: str, text: str | bytes) -> Path:
    path = folder / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_bytes(text.encode("utf-8"))
    return path


def _error(call: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(DatasetError) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message and "\r" not in message
    return message


# --- real data ----------------------------------------------------------------------------------

# (tasks, criteria, hurdle, grounded, link) per domain. DIY is not in the shared folder; its numbers
# are upstream's (apex-evals 6cbf3f4: 210 criteria, 20 tasks, 20 hurdles, nothing grounded, no links).
EXPECTED = {
    "shopping": (20, 125, 28, 98, 23),
    "food": (20, 150, 34, 0, 0),
    "gaming": (20, 107, 23, 28, 7),
    "diy": (20, 210, 20, 0, 0),
}


def _independent_counts(path: Path) -> tuple[int, int, int, int, int]:
    """Counts straight from the csv module, without the loader."""
    with path.open(encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return (
        len({row["Task ID"] for row in rows}),
        len(rows),
        sum(row["Hurdle Tag"] == "Hurdle" for row in rows),
        sum(row["Criterion Grounding Check"] == "Grounded" for row in rows),
        sum(row["Criteria type"] == "Provides link(s)" for row in rows),
    )


def _real_files() -> list[Path]:
    for name in ("ACE-Shopping.csv", "ACE-Food.csv", "ACE-Gaming.csv"):
        shared_file("ace", name)  # skips when the shared data is absent
    return sorted(shared_datasets().joinpath("ace").glob("ACE-*.csv"))


def test_real_files_task_and_criterion_counts() -> None:
    files = _real_files()
    seen = set()
    for path in files:
        tasks = load_csv(path)
        domain = tasks[0].domain
        seen.add(domain)
        criteria = [c for task in tasks for c in task.criteria]
        counts = (
            len(tasks),
            len(criteria),
            sum(c.hurdle for c in criteria),
            sum(c.grounded for c in criteria),
            sum(c.is_link for c in criteria),
        )
        assert counts == _independent_counts(path), path.name
        assert counts == EXPECTED[domain], path.name
        assert all(task.domain == domain for task in tasks)
        assert len({task.task_id for task in tasks}) == len(tasks)
    assert {"shopping", "food", "gaming"} <= seen


def test_real_files_exact_per_domain_numbers() -> None:
    _real_files()
    tasks = load_dir(shared_datasets() / "ace")
    per_domain = Counter(task.domain for task in tasks)
    criteria = Counter(task.domain for task in tasks for _ in task.criteria)
    assert per_domain["shopping"] == 20 and criteria["shopping"] == 125
    assert per_domain["food"] == 20 and criteria["food"] == 150
    assert per_domain["gaming"] == 20 and criteria["gaming"] == 107
    # Domains in upstream's order, whatever files the folder holds.
    order = [task.domain for task in tasks]
    assert order == sorted(order, key=DOMAINS.index)


def test_real_files_match_the_csv_rows() -> None:
    """Prompt = Specified Prompt, criteria in file order, every field carried over."""
    for path in _real_files():
        with path.open(encoding="utf-8-sig", newline="") as handle:
            rows = list(csv.DictReader(handle))
        tasks = {task.task_id: task for task in load_csv(path)}
        by_task: dict[str, list[dict[str, str]]] = {}
        for row in rows:
            by_task.setdefault(row["Task ID"], []).append(row)
        assert list(tasks) == list(by_task)  # first-seen order
        for task_id, task_rows in by_task.items():
            task = tasks[task_id]
            assert task.prompt == task_rows[0]["Specified Prompt"]
            assert task.workflow == task_rows[0]["Workflow"]
            assert [c.id for c in task.criteria] == [row["Criterion ID"] for row in task_rows]
            for criterion, row in zip(task.criteria, task_rows):
                assert criterion.description == row["Description"].strip()
                assert criterion.criteria_type == row["Criteria type"]
                assert criterion.hurdle == (row["Hurdle Tag"] == "Hurdle")
                assert criterion.grounded == (row["Criterion Grounding Check"] == "Grounded")
                assert criterion.is_link == (row["Criteria type"] == "Provides link(s)")
                assert criterion.shop_vs_product == (row.get("Shop vs. Product") or None)


def test_real_criterion_ids_collide_across_domains_but_keys_do_not() -> None:
    _real_files()
    tasks = load_dir(shared_datasets() / "ace")
    ids: dict[str, set[str]] = {}
    for task in tasks:
        ids.setdefault(task.domain, set()).update(c.id for c in task.criteria)
    assert len(ids["food"] & ids["gaming"]) == 11  # the real data reuses ids across domains
    keys = [criterion_key(task, c) for task in tasks for c in task.criteria]
    assert len(keys) == len(set(keys)) == sum(len(task.criteria) for task in tasks)
    assert len({task.key for task in tasks}) == len(tasks)
    rows = load(DataSpec(str(shared_datasets() / "ace")))
    assert len({row.input_metadata.row_id for row in rows}) == len(rows) == len(tasks)


def test_real_rows_round_trip() -> None:
    _real_files()
    folder = shared_datasets() / "ace"
    tasks = load_dir(folder)
    rows = load(DataSpec(str(folder)))
    assert [task_from_row(row) for row in rows] == tasks
    again = [EvaluationRow.model_validate_json(row.model_dump_json()) for row in rows]
    assert [task_from_row(row) for row in again] == tasks
    revision = dataset_revision(DataSpec(str(folder)))
    assert {row.input_metadata.dataset_info["revision"] for row in rows} == {revision}


# --- grouping, rows ---------------------------------------------------------------------------


def test_groups_by_task_id_in_first_seen_order(tmp_path: Path) -> None:
    text = (
        HEADER + "\n"
        "7,20,P20,S20,Potluck,Not,Other,Not Grounded,First of 20\n"
        "3,5,P5,S5,Meal Plan,Hurdle,Other,Not Grounded,First of 5\n"
        "9,20,P20,S20,Potluck,Not,Provides link(s),Grounded,Second of 20\n"
    )
    tasks = load_csv(_write(tmp_path, "ACE-Food.csv", text))
    assert [task.task_id for task in tasks] == ["20", "5"]
    assert [c.id for c in tasks[0].criteria] == ["7", "9"]
    assert tasks[0] == Task(
        domain="food",
        task_id="20",
        prompt="S20",
        workflow="Potluck",
        criteria=(
            Criterion("7", "First of 20", False, False, "Other", False, None),
            Criterion("9", "Second of 20", False, True, "Provides link(s)", True, None),
        ),
    )
    assert tasks[0].key == ("food", "20")
    assert criterion_key(tasks[0], tasks[0].criteria[1]) == ("food", "20", "9")


def test_multiline_prompts_and_values(tmp_path: Path) -> None:
    tasks = load_csv(_write(tmp_path, "ACE-Food.csv", FOOD_GOOD))
    assert len(tasks) == 1
    assert tasks[0].prompt == "Plan my meals.\nNo nuts."
    assert [c.hurdle for c in tasks[0].criteria] == [True, False]


def test_task_to_row_shape(tmp_path: Path) -> None:
    (task,) = load_csv(_write(tmp_path, "ACE-Food.csv", FOOD_GOOD))
    row = task_to_row(task, source="somewhere", revision="abc")
    assert [(m.role, m.content) for m in row.messages] == [("user", "Plan my meals.\nNo nuts.")]
    assert row.input_metadata.row_id == "ace-food-10"
    info = row.input_metadata.dataset_info
    assert info["domain"] == "food" and info["task_id"] == "10" and info["workflow"] == "Meal Plan"
    assert info["source"] == "somewhere" and info["revision"] == "abc"
    assert info["criteria"][0] == {
        "id": "1",
        "description": "Is nut free",
        "hurdle": True,
        "grounded": False,
        "criteria_type": "Meets dietary requirements",
        "is_link": False,
        "shop_vs_product": None,
    }
    assert json.loads(row.ground_truth) == info["criteria"]
    assert criteria_from_json(row.ground_truth) == task.criteria
    assert task_from_row(row) == task
    assert task_from_info(info) == task


def test_task_from_row_falls_back_to_the_user_message(tmp_path: Path) -> None:
    (task,) = load_csv(_write(tmp_path, "ACE-Food.csv", FOOD_GOOD))
    row = task_to_row(task, source="s", revision="r")
    del row.input_metadata.dataset_info["prompt"]
    assert task_from_row(row) == task


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda info: info.pop("task_id"), "ACE dataset_info: field 'task_id' must be a string"),
        (lambda info: info.update(criteria=[]), "ACE dataset_info: field 'criteria' must be a non-empty list"),
        (lambda info: info.update(domain="travel"),
         "ACE dataset_info: unknown ACE domain 'travel'; known: shopping, food, gaming, diy"),
        (lambda info: info["criteria"][1].pop("hurdle"), "ACE dataset_info criteria item 1: missing field 'hurdle'"),
        (lambda info: info["criteria"][0].update(grounded="yes"),
         "ACE dataset_info criteria item 0: field 'grounded' has type str"),
    ],
)
def test_task_from_info_errors(tmp_path: Path, mutate: Any, expected: str) -> None:
    (task,) = load_csv(_write(tmp_path, "ACE-Food.csv", FOOD_GOOD))
    info = task_to_row(task, source="s", revision="r").input_metadata.dataset_info
    mutate(info)
    assert _error(task_from_info, info) == expected


def test_criteria_from_json_errors() -> None:
    assert _error(criteria_from_json, '{"id": 1}') == "ACE ground_truth: expected a JSON list of criteria, got dict"
    assert _error(criteria_from_json, "[1]") == "ACE ground_truth item 0: expected an object, got int"


# --- malformed rows: one-line messages with the record's first physical line ---------------------

MALFORMED = [
    ('3,11,P,S,Potluck,Hurdel,Other,Not Grounded,Desc',
     "column 'Hurdle Tag': expected 'Hurdle' or 'Not', got 'Hurdel'"),
    ('3,11,P,"S\nmore",Potluck,,Other,Not Grounded,Desc',
     "column 'Hurdle Tag': expected 'Hurdle' or 'Not', got ''"),
    ('3,11,P,S,Potluck,Not,Other,grounded,Desc',
     "column 'Criterion Grounding Check': expected 'Grounded' or 'Not Grounded', got 'grounded'"),
    ('3,11,P,S,Potluck,Not,Other,"Not\nGrounded",Desc',
     "column 'Criterion Grounding Check': expected 'Grounded' or 'Not Grounded', got 'Not\\nGrounded'"),
    (' ,11,P,S,Potluck,Not,Other,Grounded,Desc', "column 'Criterion ID': is empty"),
    ('3,,P,S,Potluck,Not,Other,Grounded,Desc', "column 'Task ID': is empty"),
    ('3,11,P,S,Potluck,Not,Other,Grounded,"  "', "column 'Description': is empty"),
    ('3,11,P,S,Potluck,Not,,Grounded,Desc', "column 'Criteria type': is empty"),
    ('3,11,""," ",Potluck,Not,Other,Grounded,Desc',
     "column 'Specified Prompt': is empty (and so is 'Prompt')"),
    ('3,10,Raw prompt,"Plan my meals.\nNo nuts!",Meal Plan,Not,Other,Not Grounded,Desc',
     "column 'Specified Prompt': differs from line 2, the first row of Task ID '10'"),
    ('3,10,Raw prompt,"Plan my meals.\nNo nuts.",Potluck,Not,Other,Not Grounded,Desc',
     "column 'Workflow': 'Potluck' differs from 'Meal Plan' on line 2, the first row of Task ID '10'"),
    ('2,11,P,S,Potluck,Not,Other,Grounded,Desc', "column 'Criterion ID': duplicate criterion id '2' (first on line 4)"),
]


@pytest.mark.parametrize(("record", "problem"), MALFORMED)
def test_malformed_record_after_multiline_records(tmp_path: Path, record: str, problem: str) -> None:
    path = _write(tmp_path, "ACE-Food.csv", FOOD_GOOD + record + "\n")
    assert _error(load_csv, path) == f"{path} line {NEXT_LINE}, {problem}"


@pytest.mark.parametrize(("record", "problem"), MALFORMED[:3])
def test_malformed_record_line_numbers_with_crlf_and_blank_lines(tmp_path: Path, record: str, problem: str) -> None:
    # CRLF line ends (also inside the quoted prompts) and a blank line before the bad record.
    text = (FOOD_GOOD + "\n" + record + "\n").replace("\n", "\r\n")
    path = _write(tmp_path, "ACE-Food.csv", text)
    assert _error(load_csv, path) == f"{path} line {NEXT_LINE + 1}, {problem}"


def test_bad_record_after_a_record_with_many_embedded_lines(tmp_path: Path) -> None:
    long_prompt = '"Line one\nline two\n\nline four, with ""quotes""\nline five"'
    text = (
        HEADER + "\n"                                                             # line 1
        f"1,10,Raw,{long_prompt},Meal Plan,Not,Other,Not Grounded,Desc\n"         # lines 2-6
        f"2,10,Raw,{long_prompt},Meal Plan,Not,Other,Not Grounded,Desc\n"         # lines 7-11
        '3,12,Raw,"Another\nprompt",Potluck,Not,Other,Maybe,Desc\n'               # lines 12-13
    )
    path = _write(tmp_path, "ACE-Food.csv", text)
    assert _error(load_csv, path) == (
        f"{path} line 12, column 'Criterion Grounding Check': expected 'Grounded' or 'Not Grounded', got 'Maybe'"
    )
    ok = load_csv(_write(tmp_path, "ACE-Gaming.csv", text.replace("Maybe", "Grounded")))
    assert ok[0].prompt == 'Line one\nline two\n\nline four, with "quotes"\nline five'


def test_record_with_wrong_field_count(tmp_path: Path) -> None:
    path = _write(tmp_path, "ACE-Food.csv", FOOD_GOOD + "3,11,P\n")
    assert _error(load_csv, path) == f"{path} line {NEXT_LINE}: record has 3 field(s); the header has 9"
    path = _write(tmp_path, "ACE-Gaming.csv", FOOD_GOOD + "3,11,P,S,Potluck,Not,Other,Grounded,Desc,extra\n")
    assert _error(load_csv, path) == f"{path} line {NEXT_LINE}: record has 10 field(s); the header has 9"


def test_csv_syntax_errors(tmp_path: Path) -> None:
    path = _write(tmp_path, "ACE-Food.csv", FOOD_GOOD + '3,11,P,"never closed,Potluck\nmore\n')
    assert _error(load_csv, path) == f"{path} line {NEXT_LINE}: CSV syntax error (unexpected end of data)"
    path = _write(tmp_path, "ACE-Gaming.csv", FOOD_GOOD + '3,11,P,"S"x,Potluck,Not,Other,Grounded,Desc\n')
    assert _error(load_csv, path) == f"{path} line {NEXT_LINE}: CSV syntax error (',' expected after '\"')"


def test_invalid_utf8_names_the_line_of_the_bad_byte(tmp_path: Path) -> None:
    data = (FOOD_GOOD + '3,11,P,"S\nbad ').encode() + b"\xff" + b'",Potluck,Not,Other,Grounded,Desc\n'
    path = _write(tmp_path, "ACE-Food.csv", data)
    assert _error(load_csv, path) == f"{path} line 7: not valid UTF-8 (invalid start byte, byte 0xff)"


def test_missing_columns_are_named(tmp_path: Path) -> None:
    header = "Criterion ID,Task ID,Prompt,Specified Prompt,Criteria type,Criterion Grounding Check,Description"
    path = _write(tmp_path, "ACE-Food.csv", header + "\n1,2,P,S,Other,Grounded,D\n")
    assert _error(load_csv, path) == (
        f"{path} line 1: missing required column(s) 'Workflow', 'Hurdle Tag' (the header has 'Criterion ID', "
        "'Task ID', 'Prompt', 'Specified Prompt', 'Criteria type', 'Criterion Grounding Check', 'Description')"
    )


def test_duplicate_column(tmp_path: Path) -> None:
    path = _write(tmp_path, "ACE-Food.csv", HEADER + ",Description\n")
    assert _error(load_csv, path) == f"{path} line 1: duplicate column 'Description'"


def test_empty_file_and_header_only(tmp_path: Path) -> None:
    path = _write(tmp_path, "ACE-Food.csv", "")
    assert _error(load_csv, path) == f"{path}: empty file (no header row)"
    path = _write(tmp_path, "ACE-Gaming.csv", HEADER + "\n\n")
    assert _error(load_csv, path) == f"{path}: contains no criteria rows"
    assert _error(load_csv, tmp_path / "ACE-DIY.csv") == f"{tmp_path / 'ACE-DIY.csv'}: no such file"


def test_byte_order_mark_is_handled(tmp_path: Path) -> None:
    path = _write(tmp_path, "ACE-Food.csv", codecs.BOM_UTF8 + FOOD_GOOD.encode())
    tasks = load_csv(path)
    assert tasks == load_csv(_write(tmp_path, "ACE-Gaming.csv", FOOD_GOOD), domain="food")
    bad = _write(tmp_path, "ACE-DIY.csv", codecs.BOM_UTF8 + (FOOD_GOOD + "3,11,P,S,Crafts,No,Other,Grounded,D\n").encode())
    assert _error(load_csv, bad) == f"{bad} line {NEXT_LINE}, column 'Hurdle Tag': expected 'Hurdle' or 'Not', got 'No'"


def test_blank_lines_are_skipped(tmp_path: Path) -> None:
    text = HEADER + "\n\n" + FOOD_GOOD.split("\n", 1)[1] + "\n,,,,,,,,\n"
    assert load_csv(_write(tmp_path, "ACE-Food.csv", text)) == load_csv(_write(tmp_path, "ACE-Gaming.csv", FOOD_GOOD),
                                                                       domain="Food")


def test_specified_prompt_falls_back_to_prompt_and_old_column_name(tmp_path: Path) -> None:
    header = HEADER.replace("Specified Prompt", "Specified Prompt (where available)")
    text = header + "\n1,4,The raw prompt,,Repairs,Hurdle,Describes specific procedural steps,Not Grounded,Checks\n"
    (task,) = load_csv(_write(tmp_path, "ACE-DIY.csv", text))
    assert task.domain == "diy" and task.prompt == "The raw prompt" and task.workflow == "Repairs"


# --- Shopping's Shop vs. Product --------------------------------------------------------------


def test_shop_vs_product(tmp_path: Path) -> None:
    good = (SHOP_HEADER + "\n"
            "1,312,P,S,Gifting,Hurdle,Provides link(s),Grounded,Links to a shop,Shop\n"
            "2,312,P,S,Gifting,Not,Other,Not Grounded,Under $50,Shop\n")
    (task,) = load_csv(_write(tmp_path, "ACE-Shopping.csv", good))
    assert [c.shop_vs_product for c in task.criteria] == ["Shop", "Shop"]
    assert task.criteria[0].is_link and task.criteria[0].grounded and task.criteria[0].hurdle

    (tmp_path / "a").mkdir()
    bad = _write(tmp_path / "a", "ACE-Shopping.csv", good + "3,312,P,S,Gifting,Not,Other,Grounded,D,Store\n")
    assert _error(load_csv, bad) == f"{bad} line 4, column 'Shop vs. Product': expected 'Product' or 'Shop', got 'Store'"
    bad.write_text(good + "3,312,P,S,Gifting,Not,Other,Grounded,D,\n", encoding="utf-8")
    assert _error(load_csv, bad) == f"{bad} line 4, column 'Shop vs. Product': expected 'Product' or 'Shop', got ''"

    no_column = _write(tmp_path / "a", "ACE-Gaming.csv", FOOD_GOOD)
    assert _error(load_csv, no_column, domain="shopping").startswith(
        f"{no_column} line 1: missing required column(s) 'Shop vs. Product' (the header has"
    )
    # Outside Shopping the column may be absent, empty, or one of the two values.
    other = _write(tmp_path / "a", "ACE-Food.csv", good.replace(",Shop\n", ",\n", 1))
    assert [c.shop_vs_product for c in load_csv(other)[0].criteria] == [None, "Shop"]


# --- domains, files, folders --------------------------------------------------------------------


def test_domain_from_file_name_or_argument(tmp_path: Path) -> None:
    assert load_csv(_write(tmp_path, "ACE-DIY.csv", FOOD_GOOD))[0].domain == "diy"
    assert load_csv(_write(tmp_path, "ace-gaming.csv", FOOD_GOOD))[0].domain == "gaming"
    other = _write(tmp_path, "food.csv", FOOD_GOOD)
    assert load_csv(other, domain="FOOD")[0].domain == "food"
    assert _error(load_csv, other) == (
        f"{other}: cannot tell the ACE domain from the file name (expected ACE-<Domain>.csv, e.g. ACE-Food.csv); "
        "pass the domain"
    )
    travel = _write(tmp_path, "ACE-Travel.csv", FOOD_GOOD)
    assert _error(load_csv, travel) == (
        f"{travel} (from the file name): unknown ACE domain 'Travel'; known: shopping, food, gaming, diy"
    )
    assert _error(load_csv, other, domain="cars") == f"{other}: unknown ACE domain 'cars'; known: shopping, food, gaming, diy"


def test_domain_names() -> None:
    assert DOMAINS == ("shopping", "food", "gaming", "diy")
    assert DISPLAY_NAMES == {"shopping": "Shopping", "food": "Food", "gaming": "Gaming", "diy": "DIY"}
    assert [canonical_domain(DISPLAY_NAMES[d]) for d in DOMAINS] == list(DOMAINS)
    assert canonical_domain(" Diy ") == "diy"
    assert issubclass(DatasetError, HarnessDatasetError)


def test_load_dir_reads_whatever_domains_are_there(tmp_path: Path) -> None:
    gaming = FOOD_GOOD.replace("1,10,", "1,77,").replace("2,10,", "2,77,")
    _write(tmp_path, "ACE-Gaming.csv", gaming)
    _write(tmp_path, "ACE-Food.csv", FOOD_GOOD)  # same criterion ids, another domain
    _write(tmp_path, "notes.csv", "not,an,ace,file\n")
    tasks = load_dir(tmp_path)
    assert [task.key for task in tasks] == [("food", "10"), ("gaming", "77")]
    keys = {criterion_key(task, c) for task in tasks for c in task.criteria}
    assert keys == {("food", "10", "1"), ("food", "10", "2"), ("gaming", "77", "1"), ("gaming", "77", "2")}
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _error(load_dir, empty) == f"{empty}: no ACE-*.csv files in this folder"
    assert _error(load_dir, tmp_path / "nope") == f"{tmp_path / 'nope'}: not a folder"


def test_load_dir_errors_name_the_file(tmp_path: Path) -> None:
    _write(tmp_path, "ACE-Food.csv", FOOD_GOOD)
    bad = _write(tmp_path, "ACE-DIY.csv", FOOD_GOOD + "3,11,P,S,Crafts,Not,Other,Grounded?,D\n")
    assert _error(load_dir, tmp_path) == (
        f"{bad} line {NEXT_LINE}, column 'Criterion Grounding Check': expected 'Grounded' or 'Not Grounded', "
        "got 'Grounded?'"
    )


# --- load(): sources and filters ----------------------------------------------------------------


def _two_domain_folder(tmp_path: Path) -> Path:
    _write(tmp_path, "ACE-Food.csv", FOOD_GOOD + "3,11,P,S11,Potluck,Not,Other,Not Grounded,D\n")
    _write(tmp_path, "ACE-Gaming.csv", FOOD_GOOD.replace(",10,", ",276,"))
    return tmp_path


def test_load_folder_and_file(tmp_path: Path) -> None:
    folder = _two_domain_folder(tmp_path)
    rows = load(DataSpec(str(folder)))
    assert [row.input_metadata.row_id for row in rows] == ["ace-food-10", "ace-food-11", "ace-gaming-276"]
    assert {row.input_metadata.dataset_info["source"] for row in rows} == {str(folder)}
    assert {row.input_metadata.dataset_info["revision"] for row in rows} == {dataset_revision(DataSpec(str(folder)))}
    file_rows = load(DataSpec(str(folder / "ACE-Gaming.csv"), split="test"))  # split is ignored for files
    assert [row.input_metadata.row_id for row in file_rows] == ["ace-gaming-276"]
    info = file_rows[0].input_metadata.dataset_info
    assert info["revision"] == hashlib.sha256((folder / "ACE-Gaming.csv").read_bytes()).hexdigest()[:12]


def test_load_filters(tmp_path: Path) -> None:
    spec = DataSpec(str(_two_domain_folder(tmp_path)))
    ids = [r.input_metadata.row_id for r in load(spec, domains=["GAMING"])]
    assert ids == ["ace-gaming-276"]
    ids = [r.input_metadata.row_id for r in load(spec, domains=["Food", "gaming"], task_ids=["276", "11"])]
    assert ids == ["ace-food-11", "ace-gaming-276"]
    assert [r.input_metadata.row_id for r in load(spec, task_ids=["10"])] == ["ace-food-10"]
    assert _error(load, spec, domains=["food", "travel"]) == (
        "domains filter: unknown ACE domain 'travel'; known: shopping, food, gaming, diy"
    )
    assert _error(load, spec, domains=["food"], task_ids=["276"]) == f"{spec.source}: task id(s) '276' not found in domain(s) food"
    assert _error(load, spec, domains=["diy"]) == (
        f"{spec.source}: no ACE tasks left after the filters (it has domain(s) food, gaming; asked for diy)"
    )


def test_load_unknown_source(tmp_path: Path) -> None:
    missing = str(tmp_path / "nothing")
    expected = (f"{missing!r} is neither an existing ACE-*.csv file or folder of them nor a known HF id "
                "(one of ['hf', 'hf:mercor/ACE', 'mercor/ACE'])")
    assert _error(load, DataSpec(missing)) == expected
    assert _error(dataset_id, DataSpec(missing)) == expected
    assert _error(dataset_revision, DataSpec(missing)) == expected


def test_dataset_id_and_revision(tmp_path: Path) -> None:
    (tmp_path / "ace").mkdir()
    folder = _two_domain_folder(tmp_path / "ace")
    assert DEFAULT_SOURCE == "hf"
    assert dataset_id(DataSpec("hf")) == dataset_id(DataSpec(HF_SOURCE)) == DATASET_ID == "mercor/ACE"
    assert dataset_revision(DataSpec("hf")) == "main"
    assert dataset_revision(DataSpec("hf", revision="abc123")) == "abc123"
    food = folder / "ACE-Food.csv"
    assert dataset_id(DataSpec(str(food))) == "file:ACE-Food.csv"
    assert dataset_revision(DataSpec(str(food))) == hashlib.sha256(food.read_bytes()).hexdigest()[:12]
    assert dataset_id(DataSpec(str(folder))) == "dir:ace"
    both = (folder / "ACE-Food.csv").read_bytes() + (folder / "ACE-Gaming.csv").read_bytes()
    assert dataset_revision(DataSpec(str(folder))) == hashlib.sha256(both).hexdigest()[:12]
    before = dataset_revision(DataSpec(str(folder)))
    _write(folder, "notes.txt", "not part of the data")
    assert dataset_revision(DataSpec(str(folder))) == before
    _write(folder, "ACE-DIY.csv", FOOD_GOOD)
    assert dataset_revision(DataSpec(str(folder))) != before


# --- Hugging Face (offline: a fake datasets.load_dataset) ---------------------------------------


def _hf_record(cid: int, tid: int, hurdle: str = "Not", **extra: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "Criterion ID": cid,  # datasets' CSV builder parses the id columns as integers
        "Task ID": tid,
        "Prompt": "raw",
        "Specified Prompt": f"Prompt of task {tid}\nsecond line",
        "Workflow": "Gifting",
        "Hurdle Tag": hurdle,
        "Criteria type": "Provides link(s)",
        "Criterion Grounding Check": "Grounded",
        "Description": f"criterion {cid}",
    }
    record.update(extra)
    return record


HF_RECORDS: dict[str, list[dict[str, Any]]] = {
    "shopping": [_hf_record(1, 312, "Hurdle", **{"Shop vs. Product": "Product"}),
                 _hf_record(2, 312, **{"Shop vs. Product": "Product"})],
    "food": [_hf_record(1, 161), _hf_record(5, 162)],
    "gaming": [_hf_record(1, 276)],
    "diy": [_hf_record(872, 4)],
}


class _FakeDatasets:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.records = {name: [dict(r) for r in rows] for name, rows in HF_RECORDS.items()}

    def load_dataset(self, path: str, name: str | None = None, *, split: str | None = None,
                     revision: str | None = None) -> list[dict[str, Any]]:
        self.calls.append((path, name, split, revision))
        if name not in self.records:
            raise ValueError(f"BuilderConfig '{name}' not found.\nAvailable: {sorted(self.records)}")
        return self.records[name]


@pytest.fixture
def fake_datasets(monkeypatch: pytest.MonkeyPatch) -> _FakeDatasets:
    fake = _FakeDatasets()
    module = types.ModuleType("datasets")
    module.load_dataset = fake.load_dataset  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "datasets", module)
    return fake


def test_load_hf_calls_load_dataset_per_domain(fake_datasets: _FakeDatasets) -> None:
    tasks = load_hf()
    assert fake_datasets.calls == [("mercor/ACE", d, "train", "main") for d in ("shopping", "food", "gaming", "diy")]
    assert [task.key for task in tasks] == [("shopping", "312"), ("food", "161"), ("food", "162"),
                                            ("gaming", "276"), ("diy", "4")]
    shopping = tasks[0]
    assert shopping.prompt == "Prompt of task 312\nsecond line"
    assert [c.id for c in shopping.criteria] == ["1", "2"]
    assert shopping.criteria[0] == Criterion("1", "criterion 1", True, True, "Provides link(s)", True, "Product")
    assert tasks[1].criteria[0].shop_vs_product is None


def test_load_hf_domains_and_revision(fake_datasets: _FakeDatasets) -> None:
    rows = load(DataSpec("hf", revision="abc123"), domains=["DIY", "Food"], task_ids=["4"])
    assert fake_datasets.calls == [("mercor/ACE", "food", "train", "abc123"), ("mercor/ACE", "diy", "train", "abc123")]
    assert [row.input_metadata.row_id for row in rows] == ["ace-diy-4"]
    info = rows[0].input_metadata.dataset_info
    assert info["source"] == HF_SOURCE and info["revision"] == "abc123"
    assert task_from_row(rows[0]) == load_hf(["diy"])[0]
    for source in ("mercor/ACE", "hf:mercor/ACE"):
        assert len(load(DataSpec(source, split="train"), domains=["gaming"])) == 1
    assert _error(load, DataSpec("hf", split="test")) == "mercor/ACE: unknown split 'test'; ACE has one split, 'train'"


def test_load_hf_validates_rows(fake_datasets: _FakeDatasets) -> None:
    fake_datasets.records["food"][1]["Hurdle Tag"] = "hurdle"
    assert _error(load_hf, ["food"]) == (
        "mercor/ACE (food, train) row 1, column 'Hurdle Tag': expected 'Hurdle' or 'Not', got 'hurdle'"
    )
    fake_datasets.records["food"][1]["Hurdle Tag"] = "Hurdle"
    fake_datasets.records["food"][1]["Criterion ID"] = 1
    assert _error(load_hf, ["food"]) == (
        "mercor/ACE (food, train) row 1, column 'Criterion ID': duplicate criterion id '1' (first on row 0)"
    )
    del fake_datasets.records["shopping"][0]["Shop vs. Product"]
    assert _error(load_hf, ["shopping"]).startswith(
        "mercor/ACE (shopping, train): missing required column(s) 'Shop vs. Product'"
    )
    fake_datasets.records["gaming"][0]["Criterion ID"] = 6072.0  # a float id column (pandas, with gaps)
    fake_datasets.records["gaming"][0]["Workflow"] = None
    (task,) = load_hf(["gaming"])
    assert task.criteria[0].id == "6072" and task.workflow == ""


def test_load_hf_failure_is_one_line(fake_datasets: _FakeDatasets, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(dataset.HF_CONFIGS, "food", "Food")  # a config the (fake) Hub does not have
    assert _error(load_hf, ["food"], "v1") == (
        "mercor/ACE (Food, train) at revision 'v1': cannot load (ValueError: BuilderConfig 'Food' not found.); "
        "offline, pass a folder of ACE-*.csv files (--dataset path/to/ace)"
    )


def test_load_hf_without_datasets_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` raise ImportError
    message = _error(load, DataSpec("hf"))
    assert message == ("Loading mercor/ACE from the Hugging Face Hub needs the `datasets` library: "
                       "pip install 'metis-pytest[hf]'")


def test_load_hf_with_namespace_shadow(monkeypatch: pytest.MonkeyPatch) -> None:
    """The repo's datasets/ data folder imports as a namespace package without ``load_dataset``."""
    monkeypatch.setitem(sys.modules, "datasets", types.ModuleType("datasets"))
    assert "pip install 'metis-pytest[hf]'" in _error(load_hf, ["food"])

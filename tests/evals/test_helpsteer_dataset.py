"""HelpSteer loader and MODPO's pairs: the shared HelpSteer2 sample, constructed groups, malformed rows, the Hub."""

from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path

import pytest

from evals.helpsteer import dataset
from evals.helpsteer.dataset import ATTRIBUTES, OBJECTIVES, DatasetError, Record, build_pairs, load, objective
from tests.conftest import shared_file


def rec(prompt: str, index: int, **ratings: int) -> Record:
    values = {name: 2 for name in ATTRIBUTES} | ratings
    return Record(prompt=prompt, response=f"r{index}", index=index, **values)


def test_pair_counts_on_the_shared_sample() -> None:
    records = load(shared_file("helpsteer", "helpsteer2_sample70.jsonl"))
    assert len(records) == 70 and len(dataset.unique_prompts(records)) == 35
    groups: dict[str, list[Record]] = {}
    for r in records:
        groups.setdefault(r.prompt, []).append(r)
    for attribute in OBJECTIVES:
        expected = sum(a.rating(attribute) != b.rating(attribute)
                       for g in groups.values() for a, b in combinations(g, 2))
        pairs = build_pairs(records, attribute)
        assert len(pairs) == expected  # ties dropped
        assert all(p.chosen_score > p.rejected_score for p in pairs)
    assert [len(build_pairs(records, a)) for a in OBJECTIVES] == [20, 18, 9, 12, 16, 29]


def test_every_unordered_pair_of_consecutive_rows_higher_chosen_ties_dropped() -> None:
    records = [rec("p", 0, helpfulness=1), rec("p", 1, helpfulness=3), rec("p", 2, helpfulness=3),
               rec("q", 3, helpfulness=0), rec("p", 4, helpfulness=4)]  # "p" again later: a new group
    pairs = build_pairs(records, "helpfulness")
    assert [(p.chosen, p.rejected) for p in pairs] == [("r1", "r0"), ("r2", "r0")]
    assert pairs[0].to_dpo() == {"prompt": "p", "chosen": "r1", "rejected": "r0"}
    assert pairs[0].pair_id == f"{dataset.prompt_id('p')}-0-1"


def test_overall_is_the_sum_of_the_five() -> None:
    a = rec("p", 0, helpfulness=4, verbosity=0)  # 4 + 2 + 2 + 2 + 0 = 10
    b = rec("p", 1, correctness=3)  # 2 + 3 + 2 + 2 + 2 = 11
    assert a.rating("overall") == 10 and b.rating("overall") == 11
    [pair] = build_pairs([a, b], "overall")  # a wins on helpfulness, b overall
    assert (pair.chosen, pair.chosen_score, pair.rejected_score) == ("r1", 11, 10)


def test_concise_direction_flips_complexity_and_verbosity_only() -> None:
    terse, wordy = rec("p", 0, verbosity=1, complexity=1), rec("p", 1, verbosity=4, complexity=3)
    assert build_pairs([terse, wordy], "verbosity")[0].chosen == "r1"  # HelpSteer: higher is better
    assert build_pairs([terse, wordy], "verbosity", direction="concise")[0].chosen == "r0"
    assert build_pairs([terse, wordy], "complexity", direction="concise")[0].chosen == "r0"
    assert objective(terse, "helpfulness", "concise") == objective(terse, "helpfulness") == 2
    assert objective(wordy, "overall", "concise") == 2 + 2 + 2 - 3 - 4
    with pytest.raises(ValueError, match="direction"):
        build_pairs([terse], "verbosity", direction="shorter")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="attribute"):
        build_pairs([terse], "length")


GOOD = {"prompt": "p", "response": "r", "helpfulness": 3, "correctness": 3, "coherence": 4, "complexity": 1,
        "verbosity": 2}


@pytest.mark.parametrize(("change", "field", "problem"), [
    ({"verbosity": 5}, "verbosity", "between 0 and 4"),
    ({"coherence": "4"}, "coherence", "integer"),
    ({"coherence": 2.5}, "coherence", "integer"),
    ({"prompt": ""}, "prompt", "non-empty"),
    ({"response": None}, "response", "string"),
])
def test_a_malformed_row_names_file_line_and_field(tmp_path: Path, change, field, problem) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(GOOD) + "\n\n" + json.dumps({**GOOD, **change}) + "\n")
    with pytest.raises(DatasetError, match=rf"bad\.jsonl line 3: field '{field}' .*{problem}"):
        load(path)


def test_missing_field_and_bad_json(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({k: v for k, v in GOOD.items() if k != "complexity"}) + "\n")
    with pytest.raises(DatasetError, match="line 1: field 'complexity' is missing"):
        load(path)
    path.write_text('{"prompt": \n')
    with pytest.raises(DatasetError, match="line 1: invalid JSON"):
        load(path)


@pytest.mark.parametrize(("source", "name"), [("hf", "nvidia/HelpSteer"), ("hf:nvidia/HelpSteer2", "nvidia/HelpSteer2"),
                                              ("nvidia/HelpSteer", "nvidia/HelpSteer")])
def test_hub_sources_go_through_load_dataset_at_the_pinned_sha(monkeypatch, source, name) -> None:
    calls = []

    def fake_load_dataset(dataset_id, split, revision):
        calls.append((dataset_id, split, revision))
        return [GOOD, {**GOOD, "response": "r2", "verbosity": 4}]

    monkeypatch.setattr(dataset, "hf_load_dataset", lambda name, error: fake_load_dataset)
    sha = "a" * 40
    records = load(source, split="validation", revision=sha)
    assert calls == [(name, "validation", sha)]
    assert [r.where for r in records] == [f"{name} (validation) row 0", f"{name} (validation) row 1"]
    assert dataset.dataset_id(source) == name and dataset.dataset_revision(source, sha) == sha
    with pytest.raises(DatasetError, match="unknown split 'test'"):
        load(source, split="test", revision=sha)

"""Rules, pairing, refusal and the baseline file, in process (no child pytest)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from metis_pytest.gates import baseline as baselines
from metis_pytest.gates.baseline import BaselineRow
from metis_pytest.gates.compare import compare
from metis_pytest.gates.rules import parse_rule
from metis_pytest.gates.stats import mcnemar, paired_bootstrap
from tests.gates.fixture import RECORDED


def row(i: int, score: float | None, run: int = 0, **metrics: float) -> BaselineRow:
    return BaselineRow(f"r{i}", run, "scored" if score is not None else "errored", score, dict(metrics))


def base_of(rows: list[BaselineRow], **overrides) -> baselines.Baseline:
    fields = dict(benchmark="b", model="m", benchmark_version="1", dataset={"id": "d", "revision": "r1", "split": None},
                  prompt_hash="h", primary_metric="acc", judge=None, sampling={"temperature": 0.0}, score_key="k",
                  completion_key="c", git_commit=None, summary={}, rows=tuple(rows))
    return baselines.Baseline(**{**fields, **overrides})


IDENTITY = {"benchmark": "b", "benchmark_version": "1", "dataset.id": "d", "dataset.revision": "r1",
            "dataset.split": None, "prompt_hash": "h"}
CONTEXT = {"model": "m", "judge": None, "sampling.temperature": 0.0}


def run(base, rows, rules=(), **kw):
    return compare(base, rows, where="baselines/b/m.json", identity=kw.pop("identity", IDENTITY),
                   context=kw.pop("context", CONTEXT), rules=[parse_rule(r) for r in rules], **kw)


@pytest.mark.parametrize(("text", "metric", "kind", "threshold", "bench"), [
    ("score:-2pp", "score", "pp", -2.0, None),
    ("score:0pp", "score", "pp", 0.0, None),
    ("flexible_extract:-1.5pp", "flexible_extract", "pp", -1.5, None),
    ("score:p<0.05", "score", "p", 0.05, None),
    ("gsm8k/flexible_extract:p<.01", "flexible_extract", "p", 0.01, "gsm8k"),
])
def test_rules_parse(text, metric, kind, threshold, bench) -> None:
    rule = parse_rule(text)
    assert (rule.metric, rule.kind, rule.threshold, rule.benchmark) == (metric, kind, threshold, bench)


@pytest.mark.parametrize(("text", "message"), [
    ("score", "expected METRIC:RULE"),
    ("score:-2%", "unknown rule '-2%'"),
    ("score:p<0", "must be in (0, 1]"),
    ("score:p<1.5", "must be in (0, 1]"),
])
def test_bad_rules_say_what_is_wrong(text, message) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("%", "%")):
        parse_rule(text)


def test_pp_is_strictly_below_and_p_needs_a_negative_delta() -> None:
    down2 = mcnemar([1.0] * 50 + [0.0] * 50, [1.0] * 48 + [0.0] * 52)  # exactly -2pp
    assert parse_rule("score:-2pp").violation(down2) is None
    assert parse_rule("score:-1.9pp").violation(down2) == "score:-1.9pp: delta -2.00pp is below -1.9pp"
    up = mcnemar([0.0] * 10, [1.0] * 10)  # significant improvement
    assert up.p_value is not None and up.p_value < 0.05
    assert parse_rule("score:p<0.05").violation(up) is None
    down = mcnemar([1.0] * 10, [0.0] * 10)
    assert parse_rule("score:p<0.05").violation(down) == "score:p<0.05: p=0.001953 < 0.05 with delta -100.00pp"
    one = paired_bootstrap([0.5], [-0.5])  # no p with one row: the p rule cannot fire, the pp rule can
    assert parse_rule("score:p<0.05").violation(one) is None and parse_rule("score:-1pp").violation(one)
    none = mcnemar([], [])
    assert "nothing to judge" in parse_rule("score:-2pp").violation(none)


def test_missing_and_unscored_rows_are_counted_never_dropped() -> None:
    base = base_of([row(0, 1.0), row(1, 1.0), row(2, 0.0), row(3, None), row(4, 1.0)])
    new = [row(0, 1.0), row(1, 0.0), row(2, None), row(3, 1.0), row(5, 1.0)]  # r4 not run, r5 new
    c = run(base, new, ["score:-100pp"])
    [m] = c.metrics
    assert (m.result.n, m.only_baseline, m.only_new, m.unscored_baseline, m.unscored_new) == (2, 1, 1, 1, 1)
    assert "rows: 2 paired; 1 only in the baseline, 1 only in this run; without a score value: 1 in the " \
           "baseline, 1 in this run" in c.report()
    assert not c.failed  # -50pp is not below -100pp
    props = dict(c.properties())
    assert props["compare.score.missing"] == "only_baseline=1 only_new=1 unscored_baseline=1 unscored_new=1"


def test_refused_across_versions_datasets_and_prompts_unless_forced() -> None:
    base = base_of([row(0, 1.0)])
    for field, value in [("benchmark_version", "2"), ("dataset.id", "other"), ("dataset.revision", "r2"),
                         ("dataset.split", "train"), ("prompt_hash", "h2")]:
        c = run(base, [row(0, 1.0)], identity={**IDENTITY, field: value})
        assert c.failed and not c.metrics
        assert f"    {field}: {IDENTITY[field]!r} (baseline) -> {value!r} (this run)" in c.report()
        assert "pass --metis-compare-force" in c.report()
    forced = run(base, [row(0, 1.0)], ["score:-1pp"], identity={**IDENTITY, "prompt_hash": "h2"}, force=True)
    assert not forced.failed and forced.metrics[0].result.n == 1
    assert "compared under --metis-compare-force although these differ:" in forced.report()


def test_another_model_or_temperature_is_shown_not_refused() -> None:
    c = run(base_of([row(0, 1.0)]), [row(0, 1.0)], context={**CONTEXT, "model": "m2", "sampling.temperature": 0.7,
                                                          "judge": {"model": "j2"}})
    assert not c.failed and c.metrics
    assert "  note: judge: None (baseline) -> {'model': 'j2'} (this run)" in c.report()
    assert "  note: model: 'm' (baseline) -> 'm2' (this run)" in c.report()
    assert "  note: sampling.temperature: 0.0 (baseline) -> 0.7 (this run)" in c.report()


def test_metric_rules_unknown_metrics_and_scopes() -> None:
    base = base_of([row(i, 1.0, flex=1.0) for i in range(4)])
    new = [row(i, 1.0, flex=0.0 if i < 2 else 1.0) for i in range(4)]
    c = run(base, new, ["flex:-10pp", "other/nope:-1pp"])
    assert [m.metric for m in c.metrics] == ["score", "flex"]  # the scoped rule is another benchmark's
    assert c.failures == ["flex:-10pp: delta -50.00pp is below -10pp"]
    typo = run(base, new, ["flx:-10pp"])
    assert typo.failures == ["flx:-10pp: unknown metric 'flx'"]
    assert "metric 'flx': neither the baseline nor this run has it (known: flex, score)" in typo.report()


def test_an_expected_subset_is_all_an_item_is_compared_with() -> None:
    base = base_of([row(i, 1.0, run=k) for i in range(3) for k in range(2)])
    c = run(base, [row(0, 1.0, run=1), row(1, 1.0, run=1)], expected=[r for r in base.rows if r.run_index == 1])
    m = c.metrics[0]
    assert (m.result.n, m.only_baseline, m.only_new) == (2, 1, 0)


def test_continuous_scores_get_the_bootstrap() -> None:
    base = base_of([row(i, v) for i, v in enumerate([0.5, -0.25, 1.0, 0.0])])
    c = run(base, [row(i, v) for i, v in enumerate([0.25, -0.5, 0.75, -0.25])], ["score:p<0.05"])
    assert c.metrics[0].result.test == "bootstrap" and c.metrics[0].result.delta == pytest.approx(-0.25)
    assert "paired bootstrap p=" in c.report()


def test_two_saves_of_the_same_run_are_byte_identical(tmp_path: Path) -> None:
    first = baselines.save(baselines.from_run(RECORDED), tmp_path / "a")
    copy = tmp_path / "copy"
    shutil.copytree(RECORDED, copy)
    second = baselines.save(baselines.from_run(copy), tmp_path / "b")
    assert first.read_bytes() == second.read_bytes()
    assert first.relative_to(tmp_path / "a") == Path("gsm8k/scripted-mix.json")
    loaded = baselines.load(first)
    assert loaded.to_text() == first.read_text()  # a round trip changes nothing


def test_a_file_that_is_not_a_baseline_is_named(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="x.json: not a Metis baseline"):
        baselines.load(path)


def test_sampling_keeps_no_endpoint_or_credential() -> None:
    sampling = {"model": "m", "temperature": 0.0, "max_tokens": 5, "api_base": "http://h:1/v1", "api_key": "k",
                "base_url": "u", "extra_headers": {"a": "b"}, "access_token": "t"}
    assert baselines.public_sampling(sampling) == {"model": "m", "temperature": 0.0, "max_tokens": 5}

"""The benchmark registry: found by name through entry points, one spec per name, clear errors."""

from __future__ import annotations

import sys
import types
from importlib.metadata import EntryPoint

import pytest

from metis_pytest import registry
from metis_pytest.registry import Benchmark, ScoreResult


def test_gsm8k_is_found_by_name_through_its_entry_point() -> None:
    from evals.gsm8k.benchmark import BENCHMARK

    assert registry.get_benchmark("gsm8k") is BENCHMARK
    assert "gsm8k" in registry.benchmark_names()
    result = BENCHMARK.score("<answer>1,080</answer>", "1080", {})
    assert (result.score, result.valid, result.metrics["answer_tag"]) == (1.0, True, 1.0)


def test_an_unknown_benchmark_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match=r"unknown benchmark 'nope'; known: .*gsm8k"):
        registry.get_benchmark("nope")


def test_two_different_specs_cannot_share_a_name() -> None:
    from evals.gsm8k.benchmark import BENCHMARK

    assert registry.register_benchmark(BENCHMARK) is BENCHMARK  # the same spec again: unchanged
    reimported = Benchmark(**BENCHMARK.__dict__)  # what importing the same module again makes
    assert registry.register_benchmark(reimported) is reimported
    registry.register_benchmark(BENCHMARK)
    with pytest.raises(ValueError, match="registered twice"):
        registry.register_benchmark(Benchmark(**{**BENCHMARK.__dict__, "version": "9.9.9"}))


def test_a_shadowing_evals_package_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    impostor = types.ModuleType("evals")
    impostor.__file__ = "/site-packages/evals/__init__.py"
    monkeypatch.setitem(sys.modules, "evals", impostor)
    ep = EntryPoint(name="gsm8k", value="evals.gsm8k.benchmark:BENCHMARK", group=registry.ENTRY_POINT_GROUP)
    with pytest.raises(ImportError, match=r"'evals' imported from /site-packages/evals/__init__.py is not Metis's"):
        registry._load(ep)


@pytest.mark.parametrize("score, valid, problem", [(float("nan"), True, "finite"), (float("inf"), True, "finite")])
def test_a_valid_score_must_be_finite(score: float, valid: bool, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        ScoreResult(score=score, valid=valid)


def test_an_invalid_score_becomes_an_invalid_evaluate_result() -> None:
    result = ScoreResult(score=float("nan"), valid=False, retryable=True, reason="judge said prose").to_evaluate_result()
    assert (result.is_score_valid, result.score, result.error) == (False, 0.0, "judge said prose")
    assert result.trajectory_info == {"metis": {"retryable": True, "details": {}}}

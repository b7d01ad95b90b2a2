"""The paired tests against worked examples: hand-computed 2x2 tables, exact binomial tails, all ties, n = 0."""

from __future__ import annotations

import math

import pytest

from metis_pytest.gates.stats import (
    Z95,
    binomial_two_sided,
    mcnemar,
    paired_bootstrap,
    paired_test,
    percentile,
)


def table(both: int, b: int, c: int, neither: int) -> tuple[list[float], list[float]]:
    """Paired 0/1 values: ``both`` right in both, ``b`` right then wrong, ``c`` wrong then right."""
    base = [1.0] * both + [1.0] * b + [0.0] * c + [0.0] * neither
    new = [1.0] * both + [0.0] * b + [1.0] * c + [0.0] * neither
    return base, new


@pytest.mark.parametrize(("k", "m", "p"), [
    (0, 0, 1.0),            # no discordant pair
    (0, 1, 1.0),            # 2 * 1/2, capped
    (1, 4, 10 / 16),        # 2 * (1 + 4) / 2^4
    (2, 4, 1.0),            # 2 * (1 + 4 + 6) / 16 = 22/16, capped
    (0, 5, 2 / 32),         # 0.0625: five flips all one way is not significant at 0.05
    (0, 6, 2 / 64),         # 0.03125: six is
    (1, 7, 16 / 128),       # 2 * (1 + 7) / 2^7
    (2, 10, 112 / 1024),    # 2 * (1 + 10 + 45) / 2^10
    (8, 10, 112 / 1024),    # symmetric: the smaller tail is taken
    (0, 10, 2 / 1024),
])
def test_exact_binomial_two_sided(k: int, m: int, p: float) -> None:
    assert binomial_two_sided(k, m) == pytest.approx(p, abs=1e-15)


def test_mcnemar_on_a_hand_computed_table() -> None:
    # 12 rows: 6 right in both, 3 right -> wrong (b), 1 wrong -> right (c), 2 wrong in both
    r = mcnemar(*table(6, 3, 1, 2))
    assert (r.test, r.n, r.worse, r.better) == ("mcnemar", 12, 3, 1)
    assert r.baseline_mean == pytest.approx(9 / 12) and r.new_mean == pytest.approx(7 / 12)
    assert r.delta == pytest.approx(-2 / 12)
    assert r.p_value == pytest.approx(10 / 16)  # 2 * P(X <= 1), X ~ Bin(4, 1/2)
    half = 1.959963984540054 * math.sqrt(4 - 4 / 12) / 12  # Wald: sqrt(b + c - (c - b)^2 / n) / n
    assert (r.ci_low, r.ci_high) == (pytest.approx(-2 / 12 - half), pytest.approx(-2 / 12 + half))
    assert half == pytest.approx(0.31276, abs=1e-5)


def test_mcnemar_significant_regression() -> None:
    r = mcnemar(*table(20, 7, 0, 3))  # 30 rows, 7 flipped to wrong, none the other way
    assert r.delta == pytest.approx(-7 / 30) and r.p_value == pytest.approx(2 / 128)
    assert r.ci_high < 0 < 1  # the whole interval below zero


def test_mcnemar_all_ties() -> None:
    r = mcnemar(*table(5, 0, 0, 3))
    assert (r.n, r.delta, r.ci_low, r.ci_high, r.p_value) == (8, 0.0, 0.0, 0.0, 1.0)


@pytest.mark.parametrize("test", [mcnemar, paired_bootstrap, paired_test])
def test_no_rows_estimates_nothing(test) -> None:
    r = test([], [])
    assert (r.test, r.n, r.delta, r.ci_low, r.ci_high, r.p_value) == ("none", 0, None, None, None, None)


def test_unpaired_lengths_are_an_error() -> None:
    with pytest.raises(ValueError, match="2 baseline values but 1 new"):
        paired_test([1.0, 0.0], [1.0])


def test_bootstrap_all_ties() -> None:
    base = [0.5, -0.25, 1.0, -1.0]
    r = paired_bootstrap(base, list(base))
    assert (r.test, r.delta, r.ci_low, r.ci_high, r.p_value) == ("bootstrap", 0.0, 0.0, 0.0, 1.0)


def test_bootstrap_constant_shift_has_a_degenerate_interval_and_the_smallest_p() -> None:
    base = [0.5, 0.25, 1.0, -0.5, 0.0]
    new = [v - 0.1 for v in base]
    r = paired_bootstrap(base, new, resamples=999)
    assert r.delta == pytest.approx(-0.1) and (r.ci_low, r.ci_high) == (pytest.approx(-0.1), pytest.approx(-0.1))
    assert r.p_value == pytest.approx(2 / 1000)  # 2 * (1 + 0) / (999 + 1)
    assert (r.worse, r.better) == (5, 0)


def test_bootstrap_two_opposite_rows() -> None:
    # differences -1 and +1: resampled means -1, 0, +1 with probabilities 1/4, 1/2, 1/4
    r = paired_bootstrap([1.0, -1.0], [0.0, 0.0], resamples=4000)
    assert r.delta == 0.0 and (r.ci_low, r.ci_high) == (-1.0, 1.0)
    assert r.p_value == 1.0  # 2 * (1 + ~3000) / 4001, capped


def test_bootstrap_p_matches_the_binomial_it_approximates() -> None:
    # 10 rows, differences 8 x -0.5 and 2 x +0.5: a resampled mean is >= 0 iff at least 5 of the
    # 10 draws are positive, P(Bin(10, 0.2) >= 5) = 0.0328, so p ~ 2 * 0.0328 = 0.0656.
    base = [0.5] * 10
    new = [0.0] * 8 + [1.0] * 2
    r = paired_bootstrap(base, new)
    assert r.delta == pytest.approx(-0.3)
    assert r.p_value == pytest.approx(0.0656, abs=0.01)
    # a resampled mean is 0.1 * K - 0.5, K ~ Bin(10, 0.2): P(K = 0) = 0.107 > 2.5% and
    # P(K <= 4) = 0.967 < 97.5% <= P(K <= 5) = 0.994, so the interval is [K=0, K=5] = [-0.5, 0.0]
    assert r.ci_low == pytest.approx(-0.5, abs=1e-9) and r.ci_high == pytest.approx(0.0, abs=1e-9)


def test_bootstrap_is_seeded() -> None:
    base, new = [0.1, 0.4, -0.3, 0.9, 0.2, -0.7], [0.0, 0.5, -0.6, 0.4, 0.2, -0.5]
    assert paired_bootstrap(base, new, seed=7) == paired_bootstrap(base, new, seed=7)
    assert paired_bootstrap(base, new, seed=7).delta == paired_bootstrap(base, new, seed=8).delta


def test_bootstrap_of_one_row_reports_the_delta_only() -> None:
    r = paired_bootstrap([0.5], [-0.5])
    assert (r.n, r.delta, r.ci_low, r.p_value) == (1, -1.0, None, None)


def test_the_test_is_chosen_by_the_values() -> None:
    assert paired_test([1.0, 0.0], [0.0, 0.0]).test == "mcnemar"
    assert paired_test([1.0, 0.0], [0.5, 0.0]).test == "bootstrap"  # ACE-like [-1, 1] task scores
    assert paired_test([-1.0, 1.0], [1.0, 1.0]).test == "bootstrap"


def test_percentile_interpolates() -> None:
    assert percentile([0.0, 10.0], 0.5) == 5.0
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 0.025) == pytest.approx(1.1)
    assert Z95 == pytest.approx(1.96, abs=1e-3)

"""The MODPO loss against values computed by hand, its change of variables onto TRL's DPO loss, and (where
torch is installed) the tensor version against the pure one."""

from __future__ import annotations

import math

import pytest

from metis_pytest.train.modpo.loss import modpo_loss, modpo_loss_tensor, modpo_weights, trl_reference


def neg_log_sigmoid(x: float) -> float:
    return math.log(1.0 + math.exp(-x))


def test_a_pair_by_hand() -> None:
    # w = 0.5, beta = 0.1; policy logps -10 / -12, SFT logps -11 / -11, margin rewards 0.4 / -0.2:
    # R(c) = (0.1 * (-10 + 11) - 0.5 * 0.4) / 0.5 = -0.2;  R(r) = (0.1 * (-12 + 11) - 0.5 * -0.2) / 0.5 = 0.0
    # loss = -log sigmoid(-0.2) = log(1 + e^0.2)
    got = modpo_loss(-10.0, -12.0, -11.0, -11.0, 0.4, -0.2, w=0.5, beta=0.1)
    assert got.chosen_reward == pytest.approx(-0.2, abs=1e-12)
    assert got.rejected_reward == pytest.approx(0.0, abs=1e-12)
    assert got.loss == pytest.approx(math.log(1.0 + math.exp(0.2)), abs=1e-12)
    assert got.loss == pytest.approx(0.7981388693815918, abs=1e-12)


@pytest.mark.parametrize("margins", [(0.0, 0.0), (5.0, -3.0), (-2.0, 7.0)])
def test_w_equal_one_is_dpo_whatever_the_margin(margins: tuple[float, float]) -> None:
    beta = 0.1
    got = modpo_loss(-10.0, -12.0, -11.0, -11.5, *margins, w=1.0, beta=beta)
    dpo = neg_log_sigmoid(beta * ((-10.0 + 11.0) - (-12.0 + 11.5)))
    assert got.loss == pytest.approx(dpo, abs=1e-12)
    assert modpo_weights(1.0) == (1.0, 0.0)


def test_the_margin_term_is_subtracted_so_a_chosen_response_the_margin_favours_pulls_harder() -> None:
    """Inside R the margin reward is subtracted (a cost there): when the chosen response has the larger
    margin reward the logit R(c) - R(r) is smaller than DPO's, the loss larger, and the gradient that raises
    logp_theta(chosen) steeper; a rejected response with the larger margin reward does the opposite."""
    args = dict(policy_rejected=-12.0, sft_chosen=-11.0, sft_rejected=-11.0)

    def loss(policy_chosen: float, margin_chosen: float, margin_rejected: float) -> float:
        return modpo_loss(policy_chosen, args["policy_rejected"], args["sft_chosen"], args["sft_rejected"],
                          margin_chosen, margin_rejected, w=0.5, beta=0.1).loss

    def slope(m_c: float, m_r: float, h: float = 1e-6) -> float:
        return (loss(-10.0 + h, m_c, m_r) - loss(-10.0 - h, m_c, m_r)) / (2 * h)

    neutral, favours_chosen, favours_rejected = loss(-10.0, 0.0, 0.0), loss(-10.0, 1.0, 0.0), loss(-10.0, 0.0, 1.0)
    assert favours_chosen > neutral > favours_rejected
    # by hand: logit = (0.1 * 1 - 0.5 * (m_c - m_r) - 0.1 * (-1)) / 0.5 = 0.4 - (m_c - m_r)
    assert favours_chosen == pytest.approx(neg_log_sigmoid(0.4 - 1.0), abs=1e-12)
    assert slope(1.0, 0.0) < slope(0.0, 0.0) < slope(0.0, 1.0) < 0


@pytest.mark.parametrize("w", [0.0, -0.1, 1.5, float("nan"), float("inf")])
def test_w0_must_be_positive_and_w_at_most_one(w: float) -> None:
    with pytest.raises(ValueError, match="0 < w <= 1"):
        modpo_weights(w)
    with pytest.raises(ValueError):
        modpo_loss(-1.0, -2.0, -1.0, -2.0, 0.0, 0.0, w=w, beta=0.1)


@pytest.mark.parametrize("w", [0.1, 0.5, 0.9, 1.0])
def test_trls_dpo_loss_with_beta_over_w0_and_shifted_references_is_the_modpo_loss(w: float) -> None:
    beta = 0.1
    pc, pr, sc, sr, mc, mr = -20.0, -23.5, -21.0, -22.0, 0.7, -0.3
    ref_c = trl_reference(sc, mc, w=w, beta=beta)
    ref_r = trl_reference(sr, mr, w=w, beta=beta)
    trl = neg_log_sigmoid((beta / w) * ((pc - ref_c) - (pr - ref_r)))
    assert trl == pytest.approx(modpo_loss(pc, pr, sc, sr, mc, mr, w=w, beta=beta).loss, abs=1e-12)
    with pytest.raises(ValueError):
        trl_reference(sc, mc, w=0.0, beta=beta)


def test_the_tensor_loss_is_the_pure_loss() -> None:
    torch = pytest.importorskip("torch", reason="torch is not installed (pip install 'metis-pytest[train]')")
    rows = [(-10.0, -12.0, -11.0, -11.0, 0.4, -0.2), (-5.0, -4.0, -5.5, -3.0, -1.0, 2.0),
            (-30.0, -31.0, -30.0, -31.0, 0.0, 0.0)]
    columns = [torch.tensor(col, dtype=torch.float64) for col in zip(*rows)]
    for w in (0.1, 0.5, 1.0):
        losses, chosen, rejected = modpo_loss_tensor(*columns, w=w, beta=0.1)
        for i, row in enumerate(rows):
            want = modpo_loss(*row, w=w, beta=0.1)
            assert float(losses[i]) == pytest.approx(want.loss, abs=1e-12)
            assert (float(chosen[i]), float(rejected[i])) == pytest.approx((want.chosen_reward, want.rejected_reward))
    with pytest.raises(ValueError):
        modpo_loss_tensor(*columns, w=0.0, beta=0.1)

"""Unlearning losses against hand-worked numbers (expected values computed with math.*, not the code under test)."""

import math

import pytest
import torch

from mrdkit.unlearning import losses as L


def t(*xs):
    return torch.tensor(xs, dtype=torch.float64)


def softplus(x):
    return math.log1p(math.exp(x))


def log_sigmoid(x):
    return -math.log1p(math.exp(-x))


def test_ga_and_nll_use_token_mean_over_batch():
    # two sequences: 2 tokens summing to -3, 4 tokens summing to -1 -> token mean = -4 / 6
    logp_sum, n = t(-3.0, -1.0), torch.tensor([2, 4])
    assert math.isclose(float(L.ga_loss(logp_sum, n)), -4 / 6, rel_tol=1e-12)
    assert math.isclose(float(L.nll_loss(logp_sum, n)), 4 / 6, rel_tol=1e-12)
    # without counts: plain batch mean (mean of per-sequence means), NOT the token mean
    assert math.isclose(float(L.ga_loss(t(-1.5, -0.25))), (-1.5 - 0.25) / 2, rel_tol=1e-12)


def test_token_mean_of_one_token_and_of_none():
    """One scored token: the mean is its log-prob (the count is 1, not clamped up); no scored token: 0, not NaN."""
    assert float(L.token_mean(t(-2.5), torch.tensor([1]))) == -2.5
    assert float(L.token_mean(t(0.0), torch.tensor([0]))) == 0.0


def test_ga_gradient_points_to_lower_likelihood():
    logp = t(-1.0, -2.0).requires_grad_()
    L.ga_loss(logp, torch.tensor([1, 1])).backward()
    assert torch.all(logp.grad > 0)  # descending on +logp lowers it


def test_kl_loss_hand_computed_and_ignores_masked_positions():
    # position 0: p_ref = (1/2, 1/2), p_model = (3/4, 1/4) -> KL = 0.5 ln(0.5/0.75) + 0.5 ln(0.5/0.25)
    # position 1: identical distributions -> KL = 0; position 2 is masked and differs wildly
    model = torch.tensor([[[math.log(3.0), 0.0], [1.0, 2.0], [50.0, -50.0]]], dtype=torch.float64)
    ref = torch.tensor([[[0.0, 0.0], [1.0, 2.0], [-50.0, 50.0]]], dtype=torch.float64)
    mask = torch.tensor([[True, True, False]])
    kl0 = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    assert math.isclose(float(L.kl_loss(model, ref, mask)), kl0 / 2, rel_tol=1e-9)


def test_kl_direction_is_ref_to_model():
    # KL(p_ref || p_model) != KL(p_model || p_ref) for these; check we get the first
    model = torch.tensor([[[0.0, 0.0]]], dtype=torch.float64)  # p_model = (.5, .5)
    ref = torch.tensor([[[math.log(9.0), 0.0]]], dtype=torch.float64)  # p_ref = (.9, .1)
    expected = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)
    got = float(L.kl_loss(model, ref, torch.tensor([[True]])))
    assert math.isclose(got, expected, rel_tol=1e-9)
    assert not math.isclose(got, 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1), rel_tol=1e-3)


def test_npo_at_reference_equals_two_over_beta_ln2():
    for beta in (0.1, 1.0, 2.5):
        logp = t(-3.0, -7.5)
        assert math.isclose(float(L.npo_loss(logp, logp.clone(), beta)), 2 / beta * math.log(2), rel_tol=1e-12)


def test_npo_hand_computed():
    beta = 0.1
    logp, ref = t(-2.0, -3.0), t(-2.5, -2.5)  # log ratios +0.5, -0.5
    expected = (2 / beta) * (softplus(beta * 0.5) + softplus(-beta * 0.5)) / 2
    assert math.isclose(float(L.npo_loss(logp, ref, beta)), expected, rel_tol=1e-12)
    # same number through the paper's form -(2/beta) log sigmoid(-beta log ratio)
    paper = -(2 / beta) * (log_sigmoid(-beta * 0.5) + log_sigmoid(beta * 0.5)) / 2
    assert math.isclose(expected, paper, rel_tol=1e-12)


def test_simnpo_hand_computed_and_margin():
    beta, delta = 2.5, 0.3
    logp_mean = t(-1.2, -0.4)
    # open-unlearning form: -(2/beta) log sigmoid(beta (NLL - delta)), NLL = -logp_mean
    expected = -(2 / beta) * (log_sigmoid(beta * (1.2 - delta)) + log_sigmoid(beta * (0.4 - delta))) / 2
    assert math.isclose(float(L.simnpo_loss(logp_mean, beta, delta)), expected, rel_tol=1e-12)
    # paper form with gamma = beta * delta: -(2/beta) log sigmoid(-beta logp_mean - gamma)
    gamma = beta * delta
    paper = -(2 / beta) * (log_sigmoid(beta * 1.2 - gamma) + log_sigmoid(beta * 0.4 - gamma)) / 2
    assert math.isclose(expected, paper, rel_tol=1e-12)


def test_dpo_hand_computed_and_npo_is_its_lose_only_case():
    beta = 0.1
    win, lose, ref_win, ref_lose = t(-4.0), t(-2.0), t(-5.0), t(-1.0)
    margin = (-4.0 + 5.0) - (-2.0 + 1.0)  # = 2
    expected = -(2 / beta) * log_sigmoid(beta * margin)
    assert math.isclose(float(L.dpo_loss(win, lose, ref_win, ref_lose, beta)), expected, rel_tol=1e-12)
    zero = t(0.0)
    assert math.isclose(float(L.dpo_loss(zero, lose, zero, ref_lose, beta)), float(L.npo_loss(lose, ref_lose, beta)))


def test_rmu_losses_hand_computed_with_mask():
    u = torch.tensor([1.0, 0.0])
    h = torch.tensor([[[2.0, 1.0], [0.0, 0.0], [9.0, 9.0]]])  # (1, 3, 2); last position masked
    mask = torch.tensor([[True, True, False]])
    coef = 2.0  # target (2, 0): errors (0, 1) -> 0.5 per element; (-2, 0) -> 2.0
    assert math.isclose(float(L.rmu_loss(h, u, coef, mask)), (0.5 + 2.0) / 2, rel_tol=1e-6)
    frozen = torch.zeros_like(h)
    # (4 + 1) / 2 = 2.5, 0 -> mean 1.25; unmasked adds (81 + 81) / 2 = 81
    assert math.isclose(float(L.rmu_retain_loss(h, frozen, mask)), 1.25, rel_tol=1e-6)
    assert math.isclose(float(L.rmu_retain_loss(h, frozen)), (2.5 + 0 + 81) / 3, rel_tol=1e-6)


def test_rmu_loss_of_a_single_masked_position_is_that_position():
    # one masked position: the mean over the mask divides by exactly 1 (a clamp at 2 would halve it)
    u = torch.tensor([1.0, 0.0])
    h = torch.tensor([[[3.0, 2.0], [7.0, 7.0]]])  # (1, 2, 2); only the first position is kept
    mask = torch.tensor([[True, False]])
    # coef 1: target (1, 0), errors (2, 2) -> mean squared 4.0
    assert math.isclose(float(L.rmu_loss(h, u, 1.0, mask)), 4.0, rel_tol=1e-6)
    assert math.isclose(float(L.rmu_retain_loss(h, torch.zeros_like(h), mask)), (9.0 + 4.0) / 2, rel_tol=1e-6)


@pytest.mark.parametrize("which", ["npo", "dpo"])
def test_preference_losses_push_forget_likelihood_down(which):
    logp, ref = t(-2.0, -3.0).requires_grad_(), t(-2.0, -3.0)
    loss = L.npo_loss(logp, ref, 0.1) if which == "npo" else L.dpo_loss(ref, logp, ref, ref, 0.1)
    loss.backward()
    # at pi = pi_ref both gradients are (1/B) * 2 * sigmoid(0) = 0.5 per sample: exactly GA on the sum
    assert torch.allclose(logp.grad, t(0.5, 0.5))

"""Worked-math tests of the MRD estimators (mrdkit.scoring.estimators)."""

from __future__ import annotations

import math

import pytest
import torch

from mrdkit.errors import MrdkitError
from mrdkit.scoring.estimators import (
    ESTIMATORS,
    AntitheticAccumulator,
    PaperAccumulator,
    accumulator_from_state,
    antithetic_estimate,
    make_accumulator,
    masked_row_sums,
    paper_estimate,
    relative_change,
    unresolved_mask,
)

F64 = torch.float64


def test_relative_change_worked_example_skips_zero_and_masked():
    base = torch.tensor([[-1.0, -2.0, 0.0, -4.0], [-0.5, -1.0, -9.0, -9.0]], dtype=F64)
    pert = torch.tensor([[-1.1, -1.0, -3.0, -4.0], [-0.5, -1.5, -1.0, -2.0]], dtype=F64)
    mask = torch.tensor([[True, True, True, True], [True, True, False, False]])
    r = relative_change(base, pert, mask)
    # row 0: (-1+1.1)/-1 + (-2+1)/-2 + skip(l=0) + 0 = -0.1 + 0.5; row 1: 0 + (-1+1.5)/-1, padding ignored
    torch.testing.assert_close(r, torch.tensor([0.4, -0.5], dtype=F64))


def test_masked_row_sums_bitwise_independent_of_padding_width():
    gen = torch.Generator().manual_seed(0)
    row = torch.randn(37, generator=gen, dtype=F64)
    sums = []
    for width in (37, 40, 64, 129):
        values = torch.zeros(2, width, dtype=F64)
        mask = torch.zeros(2, width, dtype=torch.bool)
        values[0, :37], mask[0, :37] = row, True
        sums.append(masked_row_sums(values, mask)[0])
    assert all(torch.equal(s, sums[0]) for s in sums)


def test_masked_row_sums_of_an_empty_batch_is_empty_float64():
    out = masked_row_sums(torch.zeros(0, 5, dtype=torch.float32), torch.zeros(0, 5, dtype=torch.bool))
    assert out.shape == (0,) and out.dtype == F64


def test_paper_estimate_worked_example_and_clip():
    base = torch.tensor([[-1.0, -1.0]], dtype=F64)
    mask = torch.ones(1, 2, dtype=torch.bool)
    # r_k = sum_t (l - l')/l with l = -1: draw 0 -> (-1+2)/-1 + (-1+3)/-1 = -3; draw 1 -> -1; draw 2 -> -2
    pert = torch.tensor([[[-2.0, -3.0]], [[-2.0, -1.0]], [[-3.0, -1.0]]], dtype=F64)
    est = paper_estimate(base, pert, mask)
    torch.testing.assert_close(est.values, torch.tensor([[-3.0, -1.0, -2.0]], dtype=F64))
    assert float(est.mean) == -2.0 and float(est.mrd) == 2.0
    assert float(est.stderr) == pytest.approx(1.0 / math.sqrt(3))
    assert not bool(est.unresolved)
    clipped = paper_estimate(base, 2 * pert, mask, clip=2.0)  # r = -8, -4, -6: mean -6, |mean| clipped at 2
    assert float(clipped.mean) == pytest.approx(-6.0) and float(clipped.mrd) == 2.0


def test_unresolved_flag_and_single_draw():
    acc = PaperAccumulator(2)
    acc.add(0, torch.tensor([1.0, 0.1], dtype=F64))
    est = acc.finalize()
    assert math.isinf(float(est.stderr[0])) and bool(est.unresolved.all())
    acc.add(1, torch.tensor([1.2, -0.2], dtype=F64))
    est = acc.finalize()
    assert est.unresolved.tolist() == [False, True]  # 1.1 +- 0.1 resolved; -0.05 +- 0.15 not


def test_resolved_threshold_sits_at_two_standard_errors():
    """Hand math (std with ddof 1): draws (-2, 2, 5, 5): mean 2.5, stderr sqrt(11)/2 = 1.658, |mean| = 1.51
    stderr -> unresolved; draws (0, 1, 1, 2): mean 1, stderr sqrt(2/3)/2 = 0.408, |mean| = 2.45 stderr -> resolved.
    A threshold of 1 or 3 standard errors would flip one of the two."""
    acc = PaperAccumulator(2)
    for k, (a, b) in enumerate(zip((-2.0, 2.0, 5.0, 5.0), (0.0, 1.0, 1.0, 2.0))):
        acc.add(k, torch.tensor([a, b], dtype=F64))
    est = acc.finalize()
    assert est.mean.tolist() == [2.5, 1.0]
    assert est.stderr.tolist() == pytest.approx([math.sqrt(11) / 2, math.sqrt(2 / 3) / 2], rel=1e-12)
    assert est.unresolved.tolist() == [True, False]


def test_antithetic_single_draw_has_infinite_spread_and_stderr():
    """One antithetic pair: no spread can be estimated (std with ddof 1 of one value): inf, never NaN."""
    acc = AntitheticAccumulator(1)
    acc.add(0, torch.tensor([0.3], dtype=F64), torch.tensor([0.1], dtype=F64))
    est = acc.finalize()
    assert est.mean.tolist() == pytest.approx([0.2]) and est.first_order_mean.tolist() == pytest.approx([0.1])
    assert math.isinf(float(est.first_order_spread[0])) and math.isinf(float(est.stderr[0]))
    assert bool(est.unresolved[0])


def test_non_finite_or_zero_variance_is_never_resolved():
    mean = torch.tensor([float("nan"), 1.0, 1.0, 1.0, float("inf"), 1.0], dtype=F64)
    stderr = torch.tensor([0.1, float("nan"), 0.0, 0.1, 0.1, float("inf")], dtype=F64)
    assert unresolved_mask(mean, stderr).tolist() == [True, True, True, False, True, True]
    acc = PaperAccumulator(1)
    for k in range(3):  # the same value three times: zero variance, e.g. noise that never changed the log-probs
        acc.add(k, torch.tensor([0.25], dtype=F64))
    est = acc.finalize()
    assert float(est.stderr[0]) == 0.0 and bool(est.unresolved[0])


def random_logprobs(n=5, t=9, k=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    base = -torch.rand(n, t, generator=gen, dtype=F64) * 3 - 0.01
    mask = torch.rand(n, t, generator=gen) < 0.8
    plus = base + 1e-3 * torch.randn(k, n, t, generator=gen, dtype=F64)
    minus = base + 1e-3 * torch.randn(k, n, t, generator=gen, dtype=F64)
    return base, plus, minus, mask


def test_antithetic_parts_match_token_formulas_and_paper_identity():
    base, plus, minus, mask = random_logprobs()
    est = antithetic_estimate(base, plus, minus, mask)
    valid = mask & (base != 0)
    curv = (((base - (plus + minus) / 2) / base) * valid).sum(-1).T  # (N, K): sum_t (l - (l+ + l-)/2) / l
    first = ((((minus - plus) / 2) / base) * valid).sum(-1).T  # (N, K): sum_t ((l- - l+)/2) / l
    torch.testing.assert_close(est.values, curv, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(est.first_order_values, first, rtol=1e-12, atol=1e-15)
    r_plus = torch.stack([relative_change(base, p, mask) for p in plus], 1)
    torch.testing.assert_close(est.values + est.first_order_values, r_plus, rtol=1e-12, atol=1e-15)
    # the paper estimator on all 2K draws has the antithetic curvature mean as its mean
    both = torch.cat([plus, minus])
    torch.testing.assert_close(paper_estimate(base, both, mask).mean, est.mean, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(est.first_order_spread, first.std(dim=1), rtol=1e-12, atol=0)
    assert torch.equal(est.mrd, est.mean.abs())


def test_streaming_state_roundtrip_is_bitwise():
    base, plus, minus, mask = random_logprobs(k=6)
    full = AntitheticAccumulator(5, meta={"sigma": 1e-3})
    half = AntitheticAccumulator(5, meta={"sigma": 1e-3})
    for k in range(6):
        rs = relative_change(base, plus[k], mask), relative_change(base, minus[k], mask)
        full.add(k, *rs)
        if k < 3:
            half.add(k, *rs)
        elif k == 3:
            half = accumulator_from_state(half.state_dict())
            assert half.meta == {"sigma": 1e-3} and half.num_draws == 3
        if k >= 3:
            half.add(k, *rs)
    a, b = full.finalize(), half.finalize()
    for field in ("values", "mean", "stderr", "mrd", "first_order_values", "first_order_spread"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field


def test_accumulator_guards():
    acc = make_accumulator("paper", 3)
    with pytest.raises(MrdkitError, match="expected draw 0"):
        acc.add(1, torch.zeros(3, dtype=F64))
    with pytest.raises(ValueError, match="shape"):
        acc.add(0, torch.zeros(4, dtype=F64))
    with pytest.raises(ValueError, match="value vectors"):
        make_accumulator("antithetic", 3).add(0, torch.zeros(3, dtype=F64))
    with pytest.raises(MrdkitError, match="checkpoint is for"):
        AntitheticAccumulator(3).load_state_dict(acc.state_dict())


def test_registry_names_and_did_you_mean():
    assert ESTIMATORS.names() == ["antithetic", "paper"]
    assert ESTIMATORS.get("paper") is PaperAccumulator
    assert ESTIMATORS.entry("antithetic").meta["passes_per_draw"] == 2
    with pytest.raises(MrdkitError, match="did you mean 'antithetic'"):
        make_accumulator("antithetc", 2)

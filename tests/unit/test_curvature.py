"""Hutchinson trace and its agreement with the antithetic MRD estimator (mrdkit.scoring.curvature)."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from mrdkit.logprob import token_logprobs
from mrdkit.scoring.curvature import eager_attention, hutchinson_trace, rademacher_probe, relative_objective
from mrdkit.scoring.engine import score_batches
from mrdkit.scoring.perturb import select_parameters

VOCAB = 64


def really_tiny_gpt2(attn="eager", seed=0):
    """~4.6k parameters, float64."""
    config = GPT2Config(vocab_size=VOCAB, n_positions=16, n_embd=16, n_layer=1, n_head=2, n_inner=64,
                        bos_token_id=0, eos_token_id=1, attn_implementation=attn)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return GPT2LMHeadModel(config).double()


def make_batches(n=6, seed=1):
    gen = torch.Generator().manual_seed(seed)
    lengths = [12, 10, 8, 12, 6, 9][:n]
    ids = torch.randint(2, VOCAB, (n, 12), generator=gen)
    att = torch.zeros(n, 12, dtype=torch.long)
    for i, length in enumerate(lengths):
        att[i, :length] = 1
    labels, ids = ids.masked_fill(att == 0, -100), ids.masked_fill(att == 0, 0)
    return [{"input_ids": ids[i:i + 3], "attention_mask": att[i:i + 3], "labels": labels[i:i + 3],
             "ids": [f"s{j}" for j in range(i, min(i + 3, n))]} for i in range(0, n, 3)]


def train_briefly(model, batches, steps=10):
    """A few Adam steps so that the log-likelihood is curved mostly one way (a random init is indefinite)."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        for b in batches:
            loss = -token_logprobs(model, b, grad=True).mean().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.zero_grad(set_to_none=True)
    return model


@pytest.fixture(scope="module")
def trained():
    batches = make_batches()
    return train_briefly(really_tiny_gpt2().train(False), batches), batches


def one_sample(batches):
    b = batches[0]
    return {k: b[k][:1, :12] for k in ("input_ids", "attention_mask", "labels")}


def test_quadratic_form_matches_finite_differences(trained):
    model, batches = trained
    params = select_parameters(model)
    res = hutchinson_trace(model, batches[:1], probes=2, seed=4)
    v = rademacher_probe(params, 4, 1)
    sample, eps = one_sample(batches), 1e-4
    with torch.no_grad():
        base = token_logprobs(model, sample)
    f = lambda: float((token_logprobs(model, sample).values[base.mask] / base.values[base.mask]).sum())  # noqa
    values, saved = [], [p.detach().clone() for _, p in params]
    for sign in (1, -1, 0):
        with torch.no_grad():
            for (_, p), vi in zip(params, v):
                p.add_(sign * eps * vi)
            values.append(f())
            for (_, p), keep in zip(params, saved):
                p.copy_(keep)  # exact restore: the fixture model is shared
    fd = (values[0] + values[1] - 2 * values[2]) / eps ** 2
    assert float(res.values[0, 1]) == pytest.approx(fd, rel=1e-4)


def test_trace_is_exact_on_a_small_subset(trained):
    model, batches = trained
    params = select_parameters(model, r"ln_f\.bias")  # 16 parameters: the full Hessian is cheap
    p = params[0][1]
    sample = one_sample(batches)
    f, _ = relative_objective(model.eval(), sample)
    (g,) = torch.autograd.grad(f, [p], create_graph=True)
    exact = sum(float(torch.autograd.grad(g[i], [p], retain_graph=True)[0][i]) for i in range(p.numel()))
    res = hutchinson_trace(model, batches[:1], probes=64, param_pattern=r"ln_f\.bias")
    est, se = float(res.trace[0]), float(res.stderr[0])
    assert abs(est - exact) < 4 * se + 1e-9 * abs(exact)


def test_antithetic_estimator_agrees_with_hutchinson_prediction(trained):
    model, batches = trained
    sigma = 1e-3
    anti = score_batches(model, batches, draws=200, sigma=sigma, estimator="antithetic", seed=0).estimate
    hutch = hutchinson_trace(model, batches, probes=200, seed=1)
    pred, pred_se = hutch.predicted_curvature(sigma)
    assert hutch.ids == [f"s{i}" for i in range(6)]
    combined = torch.sqrt(anti.stderr ** 2 + pred_se ** 2)
    assert torch.all((anti.mean - pred).abs() < 4 * combined), (anti.mean, pred, combined)
    rel = abs(float(anti.mean.mean()) - float(pred.mean())) / abs(float(pred.mean()))
    assert rel < 0.25, rel


def test_relative_noise_prediction(trained):
    model, batches = trained
    sigma = 1e-2  # relative: delta = sigma * |theta| * z
    anti = score_batches(model, batches, draws=100, sigma=sigma, relative=True, seed=2).estimate
    pred, pred_se = hutchinson_trace(model, batches, probes=100, relative=True, seed=3).predicted_curvature(sigma)
    assert torch.all((anti.mean - pred).abs() < 4 * torch.sqrt(anti.stderr ** 2 + pred_se ** 2))


def test_sdpa_model_switched_to_eager_and_back_without_grads():
    model = really_tiny_gpt2(attn="sdpa")
    with eager_attention(model):
        assert model.config._attn_implementation == "eager"
    assert model.config._attn_implementation == "sdpa"
    res = hutchinson_trace(model, make_batches(3), probes=2)
    assert torch.isfinite(res.trace).all() and model.config._attn_implementation == "sdpa"
    assert all(p.grad is None for p in model.parameters())

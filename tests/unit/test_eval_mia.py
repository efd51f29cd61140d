"""Min-K%++ and the gradient-norm attack: worked numbers, and a tiny model against a computation by hand from the
full softmax / a plain backward pass (open-unlearning ``mia/min_k_plus_plus.py``, ``mia/gradnorm.py``)."""

from __future__ import annotations

import math

import pytest
import torch

from mrdkit.data import Sample, encode_samples
from mrdkit.errors import MrdkitError
from mrdkit.evaluation import mia
from mrdkit.membership import min_k_plus_plus

SAMPLES = [Sample("t:0", "Who wrote the book?", "The author is Jane Doe, born in Paris."),
           Sample("t:1", "What genre does she write in?", "She writes mystery novels and short stories about cats.")]


def test_min_k_plus_plus_worked_numbers():
    values = torch.tensor([-1.0, -2.0, -3.0, -0.5])
    mu = torch.tensor([-1.5, -1.5, -2.0, -1.0])
    var = torch.tensor([0.25, 1.0, 4.0, 1e-8])  # the last is clamped to 1e-6: sigma = 1e-3
    # z = (0.5 / 0.5, -0.5 / 1, -1 / 2, 0.5 / 1e-3) = (1, -0.5, -0.5, 500)
    assert min_k_plus_plus(values, mu, var, 0.5) == pytest.approx(-0.5)  # floor(0.5 * 4) = 2 lowest
    assert min_k_plus_plus(values, mu, var, 0.75) == pytest.approx(0.0)  # -0.5, -0.5, 1
    assert min_k_plus_plus(values, mu, var, 1.0) == pytest.approx(500 / 4)
    assert min_k_plus_plus(values[:1], mu[:1], var[:1], 0.4) == pytest.approx(1.0)  # at least one token


def test_mean_parameter_norm_worked_numbers():
    grads = [torch.tensor([3.0, 4.0]), None, torch.tensor([[1.0, 0.0], [0.0, 0.0]])]
    assert mia.mean_parameter_norm(grads) == pytest.approx((5.0 + 1.0) / 2)
    assert mia.mean_parameter_norm(grads, p=1) == pytest.approx((7.0 + 1.0) / 2)
    assert mia.mean_parameter_norm(grads, p=math.inf) == pytest.approx((4.0 + 1.0) / 2)
    with pytest.raises(MrdkitError, match="p must be one of"):
        mia.mean_parameter_norm(grads, p=3)
    with pytest.raises(MrdkitError, match="no parameter received a gradient"):
        mia.mean_parameter_norm([None])


@pytest.fixture(scope="module")
def tiny_lm():
    from mrdkit.models import load_model

    # float64: this machine's fp32 forward is not bitwise invariant to the padded width, and the check below compares
    # a padded batch of two with each sample alone
    return load_model("tiny-gpt2:d32-l1-h2-v512", device="cpu", dtype="float64")


def _scored(tokenizer, sample):
    """(input ids (1, T), positions t whose next token is a scored answer token, EOS left out, those tokens)."""
    enc = encode_samples([sample], tokenizer, template="auto", token_set="answer", max_length=512)[0]
    ids, labels = torch.tensor([enc.input_ids]), torch.tensor(enc.labels)
    pos = (labels[1:] != -100).nonzero()[:, 0]
    assert int(labels[1:][pos[-1]]) == tokenizer.eos_token_id  # the last scored label is EOS ...
    pos = pos[:-1]  # ... and open-unlearning leaves it out
    return ids, pos, labels[1:][pos]


def test_min_k_plus_plus_scores_match_the_full_softmax_by_hand(tiny_lm):
    model, tok = tiny_lm.model, tiny_lm.tokenizer
    got = mia.min_k_plus_plus_scores(model, tok, SAMPLES, k=0.4, batch_size=2)  # one padded batch of two
    for s in SAMPLES:
        ids, pos, targets = _scored(tok, s)
        with torch.no_grad():
            probs = torch.softmax(model(ids).logits[0].double(), dim=-1)[pos]  # (n, V): p(v | prefix) at each t
        logp = torch.log(probs)
        mu = (probs * logp).sum(-1)  # E_v[log p(v)]
        var = (probs * (logp - mu[:, None]) ** 2).sum(-1)  # Var_v[log p(v)], the centred form
        z = (logp[torch.arange(len(pos)), targets] - mu) / var.clamp(min=1e-6).sqrt()
        k = max(1, int(0.4 * len(z)))
        assert got[s.id] == pytest.approx(float(z.sort().values[:k].mean()), rel=1e-9, abs=1e-9)


def _grad_norm_by_hand(model, ids, pos, targets):
    model.zero_grad(set_to_none=True)
    logp = torch.log_softmax(model(ids).logits[0].double(), dim=-1)
    (-logp[pos, targets].mean()).backward()
    norms = [p.grad.norm(2) for p in model.parameters() if p.grad is not None]
    model.zero_grad(set_to_none=True)
    return float(torch.stack(norms).mean())


def test_gradnorm_matches_a_plain_backward_pass_and_leaves_the_model_untouched(tiny_lm):
    model, tok = tiny_lm.model, tiny_lm.tokenizer
    model.eval()
    before = [p.detach().clone() for p in model.parameters()]
    got = mia.gradnorm_scores(model, tok, SAMPLES)
    assert all(p.grad is None for p in model.parameters())  # autograd.grad: nothing written to .grad
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters()))
    for s in SAMPLES:
        assert got[s.id] == pytest.approx(_grad_norm_by_hand(model, *_scored(tok, s)), rel=1e-6)


def test_gradnorm_is_measured_in_eval_mode_even_for_a_model_in_train_mode(tiny_lm):
    """The decision documented in mrdkit.evaluation.mia: dropout off, so the score is not a random draw."""
    model, tok = tiny_lm.model, tiny_lm.tokenizer
    assert model.config.resid_pdrop > 0
    model.train()
    try:
        first, second = mia.gradnorm_scores(model, tok, SAMPLES), mia.gradnorm_scores(model, tok, SAMPLES)
        assert first == second and model.training  # deterministic, and the caller's mode is restored
        model.eval()
        assert first == pytest.approx(mia.gradnorm_scores(model, tok, SAMPLES), rel=1e-12)
    finally:
        model.eval()


def test_gradnorm_of_a_frozen_model_uses_every_parameter(tiny_lm):
    model, tok = tiny_lm.model, tiny_lm.tokenizer
    expected = mia.gradnorm_scores(model, tok, SAMPLES[:1])
    model.requires_grad_(False)
    try:
        assert mia.gradnorm_scores(model, tok, SAMPLES[:1]) == pytest.approx(expected, rel=1e-12)
        assert not any(p.requires_grad for p in model.parameters())  # frozen again afterwards
    finally:
        model.requires_grad_(True)

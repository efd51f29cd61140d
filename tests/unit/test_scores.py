"""Difficulty scores (mrdkit.evaluation.scores) on hand-checkable cases."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from mrdkit.data import Sample, collate, encode_samples, pad_id
from mrdkit.errors import MrdkitError
from mrdkit.evaluation.scores import SCORES, ScoreConfig, parse_names, score_difficulty
from mrdkit.logprob import token_logprobs
from mrdkit.models import build_tiny_model
from mrdkit.samplers import orient as oriented

SAMPLES = [Sample(f"s{i}", f"Who wrote book {i}?", f"Book {i} was written by Jane Doe in Paris.") for i in range(3)]


@pytest.fixture(scope="module")
def lm():
    return build_tiny_model([s.prompt + " " + s.answer for s in SAMPLES] * 4, vocab_size=300, n_layer=1,
                            d_model=32, n_head=2, dtype="float64", seed=2, attn_implementation="eager")


def state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def f_of(model, tok, sample):
    """The scores' objective: mean answer log-prob of one sample (joint encoding, answer tokens + EOS)."""
    (enc,) = encode_samples([sample], tok, template="plain")
    return token_logprobs(model, collate([enc], pad_id(tok)), grad=True).mean()[0]


def test_lookahead_equals_a_hand_run_adamw_step_and_restores_bitwise(lm):
    before = state(lm.model)
    table = score_difficulty(lm.model, lm.tokenizer, SAMPLES, "lookahead_1", lr=1e-2, template="plain")
    assert all(torch.equal(v, before[k]) for k, v in lm.model.state_dict().items())
    for s in SAMPLES:  # the same step by hand: GA minimises the mean log-prob with AdamW (decay 0)
        model = copy.deepcopy(lm.model).eval()
        f0 = float(f_of(model, lm.tokenizer, s).detach())
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
        f_of(model, lm.tokenizer, s).backward()
        opt.step()
        drop = f0 - float(f_of(model, lm.tokenizer, s).detach())
        assert table.column("lookahead_1")[s.id] == pytest.approx(drop, rel=1e-9) and drop > 0


def test_newton_steps_extrapolate_the_first_step(lm):
    """An untrained model's P(a|q) ~ 1/300 is below 0.02 (0 steps); at tau = 1e-4 the gap is positive."""
    for tau in (0.02, 1e-4):
        table = score_difficulty(lm.model, lm.tokenizer, SAMPLES, "lookahead_1,newton_steps", lr=1e-2,
                                 template="plain", threshold=tau)
        for s in SAMPLES:
            f0 = float(f_of(lm.model, lm.tokenizer, s).detach())
            want = max(0.0, (f0 - math.log(tau)) / table.column("lookahead_1")[s.id])
            assert table.column("newton_steps")[s.id] == pytest.approx(want, rel=1e-12)
            assert (want > 0) == (tau == 1e-4)


def test_directional_curvature_matches_a_hessian_vector_product(lm):
    """u'Hu with u = g/|g|, by double backward (exact) vs the score's antithetic finite difference."""
    table = score_difficulty(lm.model, lm.tokenizer, SAMPLES[:2], "grad_curvature", template="plain",
                             curvature_step=1e-3)
    params = [p for p in lm.model.parameters() if p.requires_grad]
    for s in SAMPLES[:2]:
        g = torch.autograd.grad(f_of(lm.model, lm.tokenizer, s), params, create_graph=True)
        norm = math.sqrt(sum(float(x.pow(2).sum()) for x in g))
        u = [x.detach() / norm for x in g]
        hu = torch.autograd.grad(sum((gi * ui).sum() for gi, ui in zip(g, u)), params)
        exact = sum(float((h * ui).sum()) for h, ui in zip(hu, u))
        assert table.column("grad_curvature")[s.id] == pytest.approx(exact, rel=1e-4, abs=1e-6)


def test_cheap_scores_by_hand(lm):
    table = score_difficulty(lm.model, lm.tokenizer, SAMPLES, "loss,n_tokens,grad_norm", template="plain")
    params = [p for p in lm.model.parameters() if p.requires_grad]
    for s in SAMPLES:
        f = f_of(lm.model, lm.tokenizer, s)
        (enc,) = encode_samples([s], lm.tokenizer, template="plain")
        g = torch.autograd.grad(f, params)
        row = next(r for r in table.rows if r["id"] == s.id)
        assert row["loss"] == pytest.approx(-float(f), rel=1e-12)
        assert row["n_tokens"] == sum(t != -100 for t in enc.labels)
        assert row["grad_norm"] == pytest.approx(math.sqrt(sum(float(x.pow(2).sum()) for x in g)), rel=1e-9)
    assert set(table.meta["scores"]) == {"loss", "n_tokens", "grad_norm"}
    assert table.meta["scores"]["loss"]["direction"] == "easier"


def test_mrd_scores_run_on_answer_tokens(lm):
    table = score_difficulty(lm.model, lm.tokenizer, SAMPLES, "mrd_antithetic", draws=2, sigma=1e-3,
                             template="plain")
    assert all(v > 0 for v in table.column("mrd_antithetic").values())


def test_names_orientation_and_errors():
    assert parse_names("all") == SCORES.names() and "lookahead_3" in SCORES.names()
    with pytest.raises(MrdkitError, match="did you mean 'lookahead_3'"):
        parse_names("lookahed_3")
    with pytest.raises(MrdkitError, match="no difficulty score named"):
        parse_names(" , ")
    assert oriented({"a": 2.0}, "harder") == {"a": -2.0} and oriented({"a": 2.0}, "easier") == {"a": 2.0}
    with pytest.raises(MrdkitError, match="unknown score direction"):
        oriented({}, "up")
    with pytest.raises(MrdkitError, match="threshold"):
        ScoreConfig(threshold=2.0).check()


def test_step_scores_refuse_methods_needing_retain_data(lm):
    with pytest.raises(MrdkitError, match="needs retain or IDK data"):
        score_difficulty(lm.model, lm.tokenizer, SAMPLES, "lookahead_1", method="graddiff", template="plain")

"""Cheap difficulty baselines (mrdkit.scoring.proxies)."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from mrdkit.logprob import token_logprobs
from mrdkit.membership import min_k_logprob, zlib_ratio
from mrdkit.scoring.proxies import compute_proxies, token_proxies

VOCAB = 64


def tiny_gpt2(seed=0):
    config = GPT2Config(vocab_size=VOCAB, n_positions=32, n_embd=32, n_layer=1, n_head=2, bos_token_id=0,
                        eos_token_id=1)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return GPT2LMHeadModel(config).double()


@pytest.fixture(scope="module")
def setup():
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(2, VOCAB, (3, 10), generator=gen)
    att = torch.ones_like(ids)
    att[1, 7:] = 0
    labels = ids.masked_fill(att == 0, -100)
    labels[:, :2] = -100  # a two-token "prompt" is not scored
    batch = {"input_ids": ids.masked_fill(att == 0, 0), "attention_mask": att, "labels": labels,
             "ids": ["a", "b", "c"]}
    return tiny_gpt2(), [batch]


def test_values_match_definitions(setup):
    model, batches = setup
    texts = {"a": "The quick brown fox", "b": "jumps over the lazy dog"}
    out = compute_proxies(model, batches, texts=texts, grad_norm=False)
    rows = token_logprobs(model.eval(), batches[0]).rows()
    for sid, values in zip("abc", rows):
        assert out[sid]["n_tokens"] == values.numel()
        assert out[sid]["loss"] == pytest.approx(-float(values.mean()), rel=1e-12)
        assert out[sid]["logprob"] == pytest.approx(float(values.sum()), rel=1e-12)
        assert out[sid]["min_k_20"] == min_k_logprob(values, 0.2)
        assert out[sid]["min_k_40"] == min_k_logprob(values, 0.4)
        assert "grad_norm" not in out[sid]
    assert out["b"]["n_tokens"] == 5 and out["a"]["n_tokens"] == 8
    assert out["a"]["zlib"] == pytest.approx(zlib_ratio(float(rows[0].mean()), texts["a"]), rel=1e-12)
    assert "zlib" not in out["c"]


def test_grad_norm_matches_backward_and_leaves_no_grads(setup):
    model, batches = setup
    model.train()
    marker = torch.full_like(model.transformer.wte.weight, 7.0)
    model.transformer.wte.weight.grad = marker.clone()  # an existing .grad must be left untouched
    out = compute_proxies(model, batches)
    assert model.training
    assert torch.equal(model.transformer.wte.weight.grad, marker)
    assert all(p.grad is None for n, p in model.named_parameters() if n != "transformer.wte.weight")
    model.transformer.wte.weight.grad = None
    b = batches[0]
    sample = {k: b[k][1:2, :7] for k in ("input_ids", "attention_mask", "labels")}  # sample "b", unpadded
    model.eval()
    (-token_logprobs(model, sample, grad=True).sum().sum()).backward()
    want = math.sqrt(sum(float(p.grad.pow(2).sum()) for p in model.parameters()))
    model.zero_grad(set_to_none=True)
    assert out["b"]["grad_norm"] == pytest.approx(want, rel=1e-9)


def test_token_proxies_empty_row():
    row = token_proxies(torch.zeros(0, dtype=torch.float64), (0.2,))
    assert row["n_tokens"] == 0 and math.isnan(row["loss"]) and math.isnan(row["min_k_20"])

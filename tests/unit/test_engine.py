"""The common-random-number MRD engine (mrdkit.scoring.engine)."""

from __future__ import annotations

import warnings

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from mrdkit.errors import MrdkitError
from mrdkit.logprob import token_logprobs
from mrdkit.scoring.engine import canonical_batches, floor_check, score_batches, sigma_scaling_check
from mrdkit.scoring.estimators import relative_change
from mrdkit.scoring.perturb import perturbed

VOCAB = 64


def tiny_gpt2(dtype=torch.float64, seed=0):
    config = GPT2Config(vocab_size=VOCAB, n_positions=32, n_embd=32, n_layer=1, n_head=2, bos_token_id=0,
                        eos_token_id=1)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return GPT2LMHeadModel(config).to(dtype)


def make_samples(n=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(4, 20, (n,), generator=gen).tolist()
    return [(f"s{i}", torch.randint(2, VOCAB, (L,), generator=gen)) for i, L in enumerate(lengths)]


def make_batches(samples, batch_size):
    """Right-padded batches, each padded to its own longest sample; the first token is a masked 'prompt'."""
    batches = []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start:start + batch_size]
        width = max(len(t) for _, t in chunk)
        ids = torch.zeros(len(chunk), width, dtype=torch.long)
        att = torch.zeros_like(ids)
        for i, (_, toks) in enumerate(chunk):
            ids[i, :len(toks)], att[i, :len(toks)] = toks, 1
        labels = ids.masked_fill(att == 0, -100)
        labels[:, 0] = -100
        batches.append({"input_ids": ids, "attention_mask": att, "labels": labels, "ids": [s for s, _ in chunk]})
    return batches


def snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def assert_unchanged(model, snap):
    for n, p in model.named_parameters():
        assert torch.equal(p, snap[n]), n


@pytest.fixture(scope="module")
def model64():
    return tiny_gpt2()


@pytest.fixture(scope="module")
def batches():
    return make_batches(make_samples(), 4)


def test_engine_matches_manual_perturbed_forward_and_restores(model64, batches):
    model64.train()  # dropout must be switched off by the engine and the mode restored
    snap = snapshot(model64)
    res = score_batches(model64, batches, draws=2, sigma=1e-3, estimator="paper", seed=5, width_multiple=None)
    assert_unchanged(model64, snap)
    assert model64.training
    model64.eval()
    base = [token_logprobs(model64, b) for b in batches]
    with perturbed(model64, sigma=1e-3, draw=1, seed=5):
        want = torch.cat([relative_change(lp.values, token_logprobs(model64, b).values, lp.mask)
                          for lp, b in zip(base, batches)])
    assert torch.equal(res.estimate.values[:, 1], want)
    assert res.ids == [f"s{i}" for i in range(8)]
    torch.testing.assert_close(res.base_logprob, torch.cat([lp.sum() for lp in base]), rtol=1e-12, atol=0)
    assert res.n_tokens.tolist() == torch.cat([lp.count() for lp in base]).tolist()
    assert res.forward_passes == 3 * len(batches)


def test_params_restored_after_crash_mid_draw(model64, batches):
    snap = snapshot(model64)
    calls = {"n": 0}

    def crash(module, args, output):
        calls["n"] += 1
        if calls["n"] == len(batches) + 2:  # second batch of the first perturbed pass
            raise RuntimeError("forward crashed")

    handle = model64.transformer.h[0].register_forward_hook(crash)
    try:
        with pytest.raises(RuntimeError, match="forward crashed"):
            score_batches(model64, batches, draws=3, sigma=1e-2)
    finally:
        handle.remove()
    assert_unchanged(model64, snap)


@pytest.mark.parametrize("estimator", ["paper", "antithetic"])
def test_sigma_zero_gives_exact_zero(model64, batches, estimator):
    res = score_batches(model64, batches, draws=2, sigma=0.0, estimator=estimator)
    assert torch.all(res.estimate.mrd == 0)


def test_seed_determinism(model64, batches):
    a = score_batches(model64, batches, draws=3, sigma=1e-3, seed=1).estimate
    b = score_batches(model64, batches, draws=3, sigma=1e-3, seed=1).estimate
    c = score_batches(model64, batches, draws=3, sigma=1e-3, seed=2).estimate
    assert torch.equal(a.values, b.values) and torch.equal(a.first_order_values, b.first_order_values)
    assert not torch.equal(a.values, c.values)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_bitwise_independent_of_batch_size_and_order(dtype):
    model, samples = tiny_gpt2(dtype), make_samples()
    runs = [score_batches(model, make_batches(s, bs), draws=2, sigma=1e-3, seed=3)
            for s, bs in ((samples, 1), (samples, 4), (samples[::-1], 3))]
    runs[2] = reorder(runs[2], runs[0].ids)
    for run in runs[1:]:
        assert run.ids == runs[0].ids
        for f in ("values", "first_order_values"):
            assert torch.equal(getattr(run.estimate, f), getattr(runs[0].estimate, f)), f
        assert torch.equal(run.base_logprob, runs[0].base_logprob)


def reorder(result, ids):
    index = torch.tensor([result.ids.index(i) for i in ids])
    result.estimate.values = result.estimate.values[index]
    result.estimate.first_order_values = result.estimate.first_order_values[index]
    result.base_logprob, result.ids = result.base_logprob[index], list(ids)
    return result


def test_canonical_batches_pad_each_sample_by_its_own_length(batches):
    canon, ids, order = canonical_batches(batches, multiple=8)
    assert ids == [f"s{i}" for i in range(8)] and sorted(order.tolist()) == list(range(8))
    flat = [(sid, b, i) for b in canon for i, sid in enumerate(b["ids"])]
    assert [sid for sid, _, _ in flat] == [ids[j] for j in order]
    for sid, b, i in flat:
        src = next((x, r) for x in batches for r, y in enumerate(x["ids"]) if y == sid)
        length = int(src[0]["attention_mask"][src[1]].sum())
        assert b["input_ids"].shape[1] == -(-length // 8) * 8
        assert torch.equal(b["labels"][i, :length], src[0]["labels"][src[1], :length])
        assert torch.all(b["labels"][i, length:] == -100) and torch.all(b["attention_mask"][i, length:] == 0)


def test_resume_is_bitwise_identical(model64, batches):
    seen, saved = [], {}

    def checkpoint(k, state):
        seen.append(k)
        saved[k] = state

    progress = []
    full = score_batches(model64, batches, draws=6, sigma=1e-3, seed=4, progress=lambda d, t: progress.append((d, t)))
    score_batches(model64, batches, draws=3, sigma=1e-3, seed=4, checkpoint=checkpoint)
    assert seen == [0, 1, 2] and progress[-1] == (6, 6)
    resumed = score_batches(model64, batches, draws=6, sigma=1e-3, seed=4, start_draw=3, accumulator=saved[2])
    for f in ("values", "mean", "stderr", "mrd", "first_order_values", "first_order_spread"):
        assert torch.equal(getattr(full.estimate, f), getattr(resumed.estimate, f)), f
    with pytest.raises(MrdkitError, match="different settings"):
        score_batches(model64, batches, draws=6, sigma=2e-3, seed=4, start_draw=3, accumulator=saved[2])
    with pytest.raises(MrdkitError, match="accumulator state"):
        score_batches(model64, batches, draws=6, sigma=1e-3, start_draw=3)


def test_stderr_shrinks_as_inverse_sqrt_draws(model64, batches):
    small = score_batches(model64, batches, draws=16, sigma=1e-3, seed=9).estimate.stderr
    large = score_batches(model64, batches, draws=64, sigma=1e-3, seed=10).estimate.stderr
    ratio = float((large / small).median())
    assert 0.35 <= ratio <= 0.65, ratio


def test_reference_scheme_and_clip_run(model64, batches):
    res = score_batches(model64, batches, draws=2, sigma=1e-3, estimator="paper", scheme="reference", clip=2.0,
                        width_multiple=None)
    assert res.config["scheme"] == "reference" and torch.all(res.estimate.mrd <= 2.0)
    base = [token_logprobs(model64.eval(), b) for b in batches]
    with perturbed(model64, sigma=1e-3, draw=0, scheme="reference"):
        want = torch.cat([relative_change(lp.values, token_logprobs(model64, b).values, lp.mask)
                          for lp, b in zip(base, batches)])
    assert torch.equal(res.estimate.values[:, 0], want)


def test_llama_architecture(batches):
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
    res = score_batches(model, batches, draws=2, sigma=1e-3)
    assert res.estimate.values.shape == (8, 2) and torch.isfinite(res.estimate.mean).all()


def test_floor_check(model64, batches):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = floor_check(model64, batches, sigma=1e-5)
    assert out["ok"] and out["curvature_ok"] and out["repeat_diff"] == 0.0 and out["effect_ratio"] > 100
    assert 3.9 < out["scaling_median"] < 4.1 and out["scaling_ok"] and "reason" not in out
    model32 = tiny_gpt2(torch.float32)
    with pytest.warns(RuntimeWarning, match="float32 rounding floor"):
        weak = floor_check(model32, batches, sigma=1e-9)
    assert not weak["ok"] and not weak["curvature_ok"] and "rounding floor" in weak["reason"]


def test_floor_check_refuses_a_sigma_too_large_to_be_local(model64, batches):
    """Far above the floor but not a local probe: the curvature no longer grows 4x when sigma doubles."""
    with pytest.warns(RuntimeWarning, match="grows"):
        out = floor_check(model64, batches, sigma=1e-2)  # scaling 2.86 on this model (4.0 at 1e-5)
    assert out["effect_ok"] and out["curvature_ok"] and not out["scaling_ok"] and not out["ok"]
    assert "from sigma to 2 sigma" in out["reason"]


def test_sigma_scaling_is_quadratic(model64, batches):
    out = sigma_scaling_check(model64, batches, sigma=1e-3, draws=4)
    assert 3.5 < out["median_ratio"] < 4.5 and out["ok"] and len(out["ratios"]) == 8

"""Exact perturb/restore and the two noise schemes (mrdkit.scoring.perturb)."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from mrdkit.errors import MrdkitError
from mrdkit.scoring.perturb import Perturber, eval_mode, perturbed, select_parameters
from mrdkit.seeding import make_generator


def tiny_gpt2(dtype=torch.float32, seed=0):
    config = GPT2Config(vocab_size=64, n_positions=16, n_embd=32, n_layer=1, n_head=2, bos_token_id=0,
                        eos_token_id=1)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return GPT2LMHeadModel(config).to(dtype)


def snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def assert_bitwise_equal(model, snap):
    for n, p in model.named_parameters():
        assert torch.equal(p, snap[n]), n


def test_select_parameters_sorted_trainable_and_regex():
    model = tiny_gpt2()
    model.transformer.wpe.weight.requires_grad_(False)
    names = [n for n, _ in select_parameters(model)]
    assert names == sorted(names)
    assert "transformer.wpe.weight" not in names
    assert len(names) == sum(1 for p in model.parameters() if p.requires_grad)
    assert [n for n, _ in select_parameters(model, r"\.mlp\.")] == [n for n in names if ".mlp." in n]
    with pytest.raises(MrdkitError, match="no trainable"):
        select_parameters(model, "nothing-matches")
    with pytest.raises(MrdkitError, match="invalid"):
        select_parameters(model, "(")


def test_apply_adds_seeded_noise_and_restore_is_bitwise():
    model = tiny_gpt2()
    snap = snapshot(model)
    params = select_parameters(model)
    with Perturber(model, params, sigma=1e-3, seed=7) as pert:
        pert.apply(2, sign=1)
        for name, p in params:
            z = torch.randn(p.shape, generator=make_generator(7, "mrd-noise", 2, name), dtype=p.dtype)
            assert torch.equal(p, snap[name] + 1e-3 * z)
        pert.apply(2, sign=-1)  # apply restores first: no accumulation of draws
        for name, p in params:
            z = torch.randn(p.shape, generator=make_generator(7, "mrd-noise", 2, name), dtype=p.dtype)
            assert torch.equal(p, snap[name] + (-1e-3) * z)
        pert.restore()
        assert_bitwise_equal(model, snap)
        pert.apply(0)
    assert_bitwise_equal(model, snap)  # exit restores


def test_relative_noise_scales_by_abs_theta():
    model = tiny_gpt2(torch.float64)
    snap = snapshot(model)
    params = select_parameters(model, "c_fc.weight")
    with perturbed(model, params, sigma=1e-2, draw=1, seed=3, relative=True):
        name, p = params[0]
        z = torch.randn(p.shape, generator=make_generator(3, "mrd-noise", 1, name), dtype=p.dtype)
        torch.testing.assert_close(p - snap[name], 1e-2 * snap[name].abs() * z, rtol=1e-9, atol=1e-15)
    assert_bitwise_equal(model, snap)


def test_noise_independent_of_subset_order_and_draw_splitting():
    model = tiny_gpt2()
    full, sub = select_parameters(model), select_parameters(model, "attn")
    with Perturber(model, full, sigma=1e-3, seed=1) as pert:
        pert.apply(3)
        want = {n: p.detach().clone() for n, p in sub}
    with Perturber(model, list(reversed(sub)), sigma=1e-3, seed=1) as pert:
        for k in range(3):  # earlier draws must not shift draw 3
            pert.apply(k)
        pert.apply(3)
        for n, p in sub:
            assert torch.equal(p, want[n]), n


def test_restored_after_exception():
    model = tiny_gpt2()
    snap = snapshot(model)
    with pytest.raises(RuntimeError, match="boom"):
        with perturbed(model, sigma=1.0, draw=0, seed=0):
            raise RuntimeError("boom")
    assert_bitwise_equal(model, snap)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_refused(dtype):
    model = tiny_gpt2(dtype)
    with pytest.raises(MrdkitError, match="resolution"):
        Perturber(model, sigma=1e-5)


def test_bad_arguments():
    model = tiny_gpt2()
    with pytest.raises(MrdkitError, match="scheme"):
        Perturber(model, sigma=1e-5, scheme="nope")
    with pytest.raises(MrdkitError, match="sigma"):
        Perturber(model, sigma=-1.0)


def global_rng_reference(model, draw, sigma):
    """The reference code, verbatim in spirit: global seed 42 + k, randn_like per named parameter that requires
    grad (the authors' loop skips frozen parameters, so they do not advance the stream)."""
    out = {}
    with torch.random.fork_rng():
        torch.manual_seed(42 + draw)
        for name, p in model.named_parameters():
            if p.requires_grad:
                out[name] = p.detach() + torch.randn_like(p) * sigma
    return out


@pytest.mark.parametrize("pattern", [None, r"h\.0\.mlp"])
def test_reference_scheme_matches_global_rng_without_touching_it(pattern):
    model = tiny_gpt2()
    model.transformer.wpe.weight.requires_grad_(False)  # not perturbed, and draws nothing from the stream
    want = global_rng_reference(model, 5, 1e-3)
    snap = snapshot(model)
    state = torch.get_rng_state()
    params = select_parameters(model, pattern)
    with Perturber(model, params, sigma=1e-3, scheme="reference") as pert:
        pert.apply(5)
        for name, p in params:
            assert torch.equal(p, want[name]), name
    assert torch.equal(torch.get_rng_state(), state)
    assert_bitwise_equal(model, snap)


def test_one_clone_reused_across_draws():
    model = tiny_gpt2()
    with Perturber(model, sigma=1e-3) as pert:
        clones = [c.data_ptr() for c in pert._snapshot.saved]
        for k in range(3):
            pert.apply(k)
            pert.restore()
        assert [c.data_ptr() for c in pert._snapshot.saved] == clones
        assert pert.n_elements == sum(p.numel() for p in model.parameters())
        assert len(pert._buffers) == 1  # a single param-sized noise buffer for one (device, dtype)


def test_eval_mode_restores_training_flags():
    model = tiny_gpt2().train()
    model.transformer.h[0].eval()
    with eval_mode(model):
        assert not any(m.training for m in model.modules())
    assert model.training and not model.transformer.h[0].training and model.transformer.wte.training

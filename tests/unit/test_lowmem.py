"""Low-memory perturbation (mrdkit.scoring.lowmem): bitwise the copy mode's numbers, exact restore, small clones."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from mrdkit.errors import MrdkitError
from mrdkit.logprob import token_logprobs
from mrdkit.scoring.engine import floor_check, score_batches
from mrdkit.scoring.perturb import (
    LowMemPerturber,
    Perturber,
    largest_group_bytes,
    make_perturber,
    owner_groups,
    select_parameters,
)

VOCAB = 64


def gpt2(tied=True, dtype=torch.float64):
    config = GPT2Config(vocab_size=VOCAB, n_positions=32, n_embd=32, n_layer=2, n_head=2, bos_token_id=0,
                        eos_token_id=1, tie_word_embeddings=tied)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return GPT2LMHeadModel(config).to(dtype).eval()


def llama(tied=True, dtype=torch.float64):
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32,
                         tie_word_embeddings=tied, bos_token_id=0, eos_token_id=1, pad_token_id=1)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return LlamaForCausalLM(config).to(dtype).eval()


MODELS = {"gpt2-tied": lambda: gpt2(True), "gpt2-untied": lambda: gpt2(False), "llama-tied": lambda: llama(True),
          "llama-untied": lambda: llama(False)}


def make_batches(n=6, batch_size=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    out = []
    for start in range(0, n, batch_size):
        lengths = torch.randint(4, 16, (batch_size,), generator=gen).tolist()
        ids = torch.zeros(batch_size, max(lengths), dtype=torch.long)
        att = torch.zeros_like(ids)
        for i, length in enumerate(lengths):
            ids[i, :length] = torch.randint(2, VOCAB, (length,), generator=gen)
            att[i, :length] = 1
        out.append({"input_ids": ids, "attention_mask": att, "labels": ids.masked_fill(att == 0, -100),
                    "ids": [f"s{start + i}" for i in range(batch_size)]})
    return out


def snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def assert_unchanged(model, snap):
    for n, p in model.named_parameters():
        assert torch.equal(p, snap[n]), n


@pytest.mark.parametrize("arch", list(MODELS))
@pytest.mark.parametrize("estimator", ["paper", "antithetic"])
def test_engine_bitwise_equal_to_copy_mode(arch, estimator):
    model, batches = MODELS[arch](), make_batches()
    snap = snapshot(model)
    kw = dict(draws=2, sigma=1e-3, estimator=estimator, seed=3)
    copy, low = score_batches(model, batches, **kw), score_batches(model, batches, perturb_mode="lowmem", **kw)
    assert torch.equal(copy.estimate.values, low.estimate.values)  # antithetic: (+delta, -delta) via both parts
    if estimator == "antithetic":
        assert torch.equal(copy.estimate.first_order_values, low.estimate.first_order_values)
    assert low.config["perturb_mode"] == "lowmem" and low.n_perturbed == copy.n_perturbed
    assert_unchanged(model, snap)


@pytest.mark.parametrize("arch", ["gpt2-tied", "llama-untied"])
@pytest.mark.parametrize("sign", [1, -1])
@pytest.mark.parametrize("relative", [False, True])
def test_forward_under_one_draw_matches_copy(arch, sign, relative):
    model, batch = MODELS[arch](), make_batches(3, 3)[0]
    params = select_parameters(model, r"h\.1\.|layers\.1\.|wte|embed" if relative else None)
    outs = []
    for cls in (Perturber, LowMemPerturber):
        with cls(model, params, sigma=1e-2, seed=5, relative=relative) as pert:
            pert.apply(4, sign)
            outs.append(token_logprobs(model, batch).values)
    assert torch.equal(outs[0], outs[1])


def test_tied_weights_are_shared_and_perturbed_once():
    model = gpt2(tied=True)
    shared, groups = owner_groups(model, select_parameters(model))
    assert [n for n, _ in shared] == ["transformer.wte.weight"]  # also owned by lm_head
    grouped = [n for _, g in groups for n, _ in g]
    assert len(grouped) + 1 == len(select_parameters(model)) and len(set(grouped)) == len(grouped)
    assert not any(p is model.lm_head.weight for _, g in groups for _, p in g)


@pytest.mark.parametrize("arch", list(MODELS))
def test_peak_clone_bytes_is_largest_module_plus_shared(arch):
    model, batches = MODELS[arch](), make_batches()
    params = select_parameters(model)
    sizes = largest_group_bytes(model, params)
    groups = owner_groups(model, params)[1]
    largest = max(sum(p.numel() * p.element_size() for _, p in g) for _, g in groups)
    with LowMemPerturber(model, params, sigma=1e-3) as pert:
        for sign in (1, -1):
            pert.apply(0, sign)
            for batch in batches:
                token_logprobs(model, batch)
        assert pert.clone_bytes == sizes["shared"]  # every module clone was freed after its forward
        assert pert.peak_clone_bytes == sizes["shared"] + largest == sizes["lowmem"]
    assert sizes["copy"] == sum(p.numel() * p.element_size() for _, p in params)
    assert sizes["lowmem"] < sizes["copy"] / 3
    if arch.endswith("untied"):
        assert sizes["shared"] == 0


def test_restored_bit_exactly_when_a_forward_raises():
    model, batches = gpt2(tied=True), make_batches()
    snap = snapshot(model)

    def crash(module, args, output):
        raise RuntimeError("boom")

    handle = model.transformer.h[1].mlp.c_fc.register_forward_hook(crash)  # raised while c_fc is perturbed
    try:
        with pytest.raises(RuntimeError, match="boom"):
            score_batches(model, batches, draws=2, sigma=1e-1, perturb_mode="lowmem")
    finally:
        handle.remove()
    assert_unchanged(model, snap)
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in model.modules())  # hooks removed


def test_restore_between_draws_and_no_effect_when_disarmed():
    model, batch = llama(tied=True), make_batches(3, 3)[0]
    snap = snapshot(model)
    base = token_logprobs(model, batch).values
    with LowMemPerturber(model, sigma=1e-2) as pert:
        assert torch.equal(token_logprobs(model, batch).values, base)  # hooks idle until apply
        pert.apply(0)
        first = token_logprobs(model, batch).values
        assert not torch.equal(first, base)
        pert.apply(1)  # restores draw 0 first
        pert.apply(0)
        assert torch.equal(token_logprobs(model, batch).values, first)
        pert.restore()
        assert_unchanged(model, snap)
        assert torch.equal(token_logprobs(model, batch).values, base)


def test_floor_check_same_in_both_modes():
    model, batches = gpt2(tied=True), make_batches()
    copy, low = (floor_check(model, batches, sigma=1e-5, perturb_mode=m) for m in ("copy", "lowmem"))
    assert copy == low


def test_score_mrd_lowmem_config(tmp_path):
    from mrdkit.data import Sample
    from mrdkit.models import build_tiny_model
    from mrdkit.scoring.config import MRDConfig
    from mrdkit.scoring.mrd import score_mrd

    samples = [Sample(f"s{i}", f"Question: who is {i}?", f" Author {i} writes.") for i in range(4)]
    loaded = build_tiny_model([s.text for s in samples], arch="llama", vocab_size=300, n_layer=1, d_model=32,
                              n_head=2, dtype="float64", seed=1)
    kw = dict(draws=2, sigma=1e-3, batch_size=2, proxies=False, diagnostics=False)
    copy = score_mrd(loaded, samples, config=MRDConfig(**kw))
    low = score_mrd(loaded, samples, config=MRDConfig(perturb_mode="lowmem", **kw), out_dir=tmp_path / "r")
    assert torch.equal(copy.draws, low.draws) and low.config["perturb_mode"] == "lowmem"
    with pytest.raises(MrdkitError, match="perturb_mode"):
        MRDConfig(perturb_mode="nope").validate()


def test_bad_arguments():
    model = gpt2()
    with pytest.raises(MrdkitError, match="scheme 'mrdkit'"):
        LowMemPerturber(model, sigma=1e-5, scheme="reference")
    with pytest.raises(MrdkitError, match="sigma"):
        LowMemPerturber(model, sigma=-1.0)
    with pytest.raises(MrdkitError, match="resolution"):
        LowMemPerturber(gpt2(dtype=torch.bfloat16), sigma=1e-5)
    with pytest.raises(MrdkitError, match="perturb mode"):
        make_perturber("fast", model, sigma=1e-5)
    with LowMemPerturber(model, sigma=1e-5) as pert, pytest.raises(ValueError, match="sign"):
        pert.apply(0, 2)

"""token_logprobs: equals a hand-computed sum; invariant to batch size and padding (bitwise, fp32 weights)."""

import math

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from mrdkit.logprob import gather_logprobs, token_logprobs


def tiny_gpt2(seed=0):
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=32, n_positions=32, n_embd=16, n_layer=1, n_head=2, bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(cfg).eval()


def batch_of(seqs, label_masks, pad=0):
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), pad)
    att = torch.zeros((len(seqs), T), dtype=torch.long)
    lab = torch.full((len(seqs), T), -100)
    for i, (s, m) in enumerate(zip(seqs, label_masks)):
        ids[i, : len(s)] = torch.tensor(s)
        att[i, : len(s)] = 1
        lab[i, : len(s)] = torch.tensor([t if keep else -100 for t, keep in zip(s, m)])
    return {"input_ids": ids, "attention_mask": att, "labels": lab}


def test_gather_matches_hand_computation():
    logits = torch.tensor([[[0.0, 1.0, 2.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]])  # (1, 3, 3)
    labels = torch.tensor([[-100, 2, 0]])
    out = gather_logprobs(logits, labels)
    z0 = math.log(1 + math.e + math.e**2)
    z1 = math.log(math.e + 2)
    expected = [2.0 - z0, 1.0 - z1]
    assert out.mask.tolist() == [[True, True]]
    assert torch.allclose(out.values[0], torch.tensor(expected, dtype=torch.float64), atol=1e-12)
    assert out.values.dtype == torch.float64
    assert math.isclose(float(out.sum()[0]), sum(expected), rel_tol=1e-12)
    assert math.isclose(float(out.mean()[0]), sum(expected) / 2, rel_tol=1e-12)
    # argmax of position 0 is token 2 (= label), of position 1 is token 0 (= label): both correct
    assert out.correct.tolist() == [[True, True]] and out.accuracy().tolist() == [1.0]


def test_moments_are_mean_and_variance_of_log_p_under_p():
    logits = torch.tensor([[[0.0, 1.0, 2.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]])  # (1, 3, 3)
    out = gather_logprobs(logits, torch.tensor([[-100, 2, -100]]), moments=True)
    z0 = math.log(1 + math.e + math.e**2)
    logp = [0.0 - z0, 1.0 - z0, 2.0 - z0]  # position 0
    p = [math.exp(x) for x in logp]
    mu = sum(a * b for a, b in zip(p, logp))
    var = sum(a * (b - mu) ** 2 for a, b in zip(p, logp))
    assert out.mu[0, 0].item() == pytest.approx(mu, rel=1e-12) and out.var[0, 0].item() == pytest.approx(var, rel=1e-12)
    assert out.mu[0, 1].item() == 0.0 and out.var[0, 1].item() == 0.0  # masked
    assert gather_logprobs(logits, torch.tensor([[-100, 2, 0]])).mu is None  # only when asked


def test_masked_positions_are_zero_and_excluded():
    logits = torch.randn(2, 4, 5)
    labels = torch.tensor([[-100, -100, 1, 2], [-100, 3, -100, -100]])
    out = gather_logprobs(logits, labels)
    assert out.count().tolist() == [2, 1]
    assert float(out.values[~out.mask].abs().sum()) == 0.0
    assert [r.numel() for r in out.rows()] == [2, 1]


def padded_to(seq, mask, width):
    """One sample right-padded to ``width`` (pads attend 0, labels -100)."""
    batch = batch_of([seq], [mask])
    out = {k: torch.full((1, width), 0 if k != "labels" else -100) for k in ("input_ids", "attention_mask", "labels")}
    for k, v in batch.items():
        out[k][:, :v.shape[1]] = v
    return out


def test_batch_size_invariance_is_bitwise_at_a_fixed_width_and_close_across_widths():
    """What the MRD engine relies on (environment notes): at the same padded width a sample's log-probs do not
    depend on the other rows of its batch, bit for bit; another width may move the last bits of fp32 kernels
    (it does on some CPUs), which is why the engine pads every sample to a width of its own."""
    model = tiny_gpt2()
    seqs = [[1, 5, 7, 9, 2], [3, 4, 0], [8, 8, 8, 8, 8, 8, 1], [2, 6]]
    masks = [[0, 1, 1, 1, 1], [0, 1, 1], [0, 0, 1, 1, 1, 1, 1], [1, 1]]
    together = token_logprobs(model, batch_of(seqs, masks)).sum()  # width 7
    alone_same_width = torch.cat([token_logprobs(model, padded_to(s, m, 7)).sum() for s, m in zip(seqs, masks)])
    assert torch.equal(together, alone_same_width)
    alone_own_width = torch.cat([token_logprobs(model, batch_of([s], [m])).sum() for s, m in zip(seqs, masks)])
    assert torch.allclose(together, alone_own_width, rtol=1e-6, atol=0)


def test_grad_flag():
    model = tiny_gpt2()
    batch = batch_of([[1, 2, 3]], [[0, 1, 1]])
    assert not token_logprobs(model, batch).values.requires_grad
    out = token_logprobs(model, batch, grad=True)
    out.sum().sum().backward()
    assert model.transformer.wte.weight.grad is not None

"""mrdkit's ``--scheme reference`` paper estimator against the MRD authors' loop, written out here independently.

The authors' loop, as their code runs it (paper-notes section 1): one sample at a time, unpadded; the templated
question and answer tokenized as ONE string with the tokenizer's special tokens (TOFU's data module); for draw k,
reload the original weights, ``torch.manual_seed(42 + k)``, then for every parameter WITH ``requires_grad`` in
``named_parameters()`` order ``p += randn_like(p) * sigma``; walk the tokens from the second one and stop before the
first EOS; ``r_k = sum_t (l_t - l'_t) / l_t`` (tokens with ``l_t == 0`` skipped); ``MRD = |mean_k r_k|``.
"""

from __future__ import annotations

import copy

import pytest
import torch

from mrdkit.data import Sample, encode_samples, iter_batches, pad_id, render
from mrdkit.models import build_tiny_model
from mrdkit.scoring.engine import score_batches

SIGMA, K = 1e-3, 3
SAMPLES = [Sample(f"q{i}", f"Who wrote book number {i}?", f"The author of book {i} is Jane Doe, born in Paris.")
           for i in range(4)]


def authors_mrd(model: torch.nn.Module, tokenizer, sample: Sample, template: str = "plain") -> float:
    """The reference loop, on the global RNG as the authors use it (inside fork_rng so the test leaves it alone)."""
    ids = torch.tensor([tokenizer(render(sample, tokenizer, template).full, add_special_tokens=True)["input_ids"]
                        + [tokenizer.eos_token_id]])
    original = copy.deepcopy(model.state_dict())

    def token_logps() -> list[float]:
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits.double(), dim=-1)[0]  # (T, V)
        out = []
        for t in range(1, ids.shape[1]):
            if ids[0, t].item() == tokenizer.eos_token_id:
                break
            out.append(logp[t - 1, ids[0, t]].item())
        return out

    base, rs = token_logps(), []
    with torch.random.fork_rng(devices=[]):
        for k in range(K):
            model.load_state_dict(original)
            torch.manual_seed(42 + k)
            with torch.no_grad():
                for _, p in model.named_parameters():
                    if p.requires_grad:
                        p.add_(torch.randn_like(p) * SIGMA)
            pert = token_logps()
            rs.append(sum((b - q) / b for b, q in zip(base, pert) if b != 0))
    model.load_state_dict(original)
    return abs(sum(rs) / K)


def mrdkit_mrd(model, tokenizer) -> list[float]:
    encoded = encode_samples(SAMPLES, tokenizer, template="plain", token_set="all")  # joint encoding: the default
    batches = list(iter_batches(encoded, 2, pad_token_id=pad_id(tokenizer)))
    res = score_batches(model, batches, draws=K, sigma=SIGMA, estimator="paper", scheme="reference")
    return res.estimate.mrd.tolist()


@pytest.fixture()
def lm():
    return build_tiny_model([s.prompt + " " + s.answer for s in SAMPLES] * 3, vocab_size=300, n_layer=1,
                            d_model=32, n_head=2, dtype="float64", seed=3)


def test_reference_scheme_equals_the_authors_loop(lm):
    want = [authors_mrd(lm.model, lm.tokenizer, s) for s in SAMPLES]
    assert mrdkit_mrd(lm.model, lm.tokenizer) == pytest.approx(want, rel=1e-9)


def test_reference_scheme_equals_the_authors_loop_with_a_frozen_parameter(lm):
    """A frozen LayerNorm draws no noise in the authors' loop: every later parameter's noise shifts accordingly."""
    lm.model.transformer.h[0].ln_1.weight.requires_grad_(False)
    want = [authors_mrd(lm.model, lm.tokenizer, s) for s in SAMPLES]
    got = mrdkit_mrd(lm.model, lm.tokenizer)
    assert got == pytest.approx(want, rel=1e-9)
    lm.model.transformer.h[0].ln_1.weight.requires_grad_(True)  # and the stream really differs without the freeze
    assert mrdkit_mrd(lm.model, lm.tokenizer) != pytest.approx(got, rel=1e-6)


def test_reference_scheme_with_lora_perturbs_only_the_adapters(lm):
    from mrdkit.unlearning.config import LoraSettings
    from mrdkit.unlearning.lora import apply_lora

    peft_model, _ = apply_lora(lm.model, LoraSettings(r=2, alpha=4, dropout=0.0), seed=0)
    with torch.no_grad():  # non-zero B so that the adapters' noise changes the outputs
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02, generator=torch.Generator().manual_seed(1))
    want = [authors_mrd(peft_model, lm.tokenizer, s) for s in SAMPLES]
    assert mrdkit_mrd(peft_model, lm.tokenizer) == pytest.approx(want, rel=1e-9)
    base = {n: p.detach().clone() for n, p in peft_model.named_parameters() if not p.requires_grad}
    mrdkit_mrd(peft_model, lm.tokenizer)
    assert all(torch.equal(base[n], p) for n, p in peft_model.named_parameters() if n in base)

"""Model fingerprints in run configs: a run is never resumed or reused with other weights."""

from __future__ import annotations

import copy

import pytest
import torch

from mrdkit.data import load_tofu
from mrdkit.errors import MrdkitError
from mrdkit.models import model_fingerprint


@pytest.fixture(scope="module")
def lm():
    from mrdkit.models import build_tiny_model

    return build_tiny_model([s.text for s in load_tofu("forget01")], vocab_size=300, n_layer=1, d_model=32,
                            n_head=2, seed=3)


@pytest.fixture(scope="module")
def samples():
    return load_tofu("forget01")[:3]


def _nudged(model, index=(7, 5)):
    """A copy with ONE weight changed by 1e-6: a sparse change the evenly spaced picks would miss."""
    other = copy.deepcopy(model)
    with torch.no_grad():
        dict(other.named_parameters())["transformer.h.0.mlp.c_fc.weight"][index] += 1e-6
    return other


def test_fingerprint_is_stable_and_sees_any_change(lm):
    fp = model_fingerprint(lm.model)
    assert fp == model_fingerprint(copy.deepcopy(lm.model))
    assert fp["n_params"] == sum(p.numel() for p in lm.model.parameters()) and fp["dtype"] == "float32"
    assert model_fingerprint(_nudged(lm.model))["weights"] != fp["weights"]
    as64 = model_fingerprint(copy.deepcopy(lm.model).double())
    assert as64["dtype"] == "float64" and as64["weights"] != fp["weights"]


def test_mrd_run_of_another_model_is_neither_resumed_nor_reused(lm, samples, tmp_path):
    from mrdkit.scoring.mrd import score_mrd

    settings = dict(draws=2, sigma=1e-3, proxies=False, diagnostics=False)
    first = score_mrd(lm, samples, out_dir=tmp_path / "run", **settings)
    again = score_mrd(lm, samples, out_dir=tmp_path / "run", resume=True, **settings)  # finished: loaded
    assert again.mrd.tolist() == first.mrd.tolist()
    with pytest.raises(MrdkitError, match="differs in: model"):
        score_mrd(_nudged(lm.model), samples, tokenizer=lm.tokenizer, out_dir=tmp_path / "run", resume=True,
                  **settings)


def test_required_updates_checkpoint_of_another_model_is_refused(lm, samples, tmp_path):
    from mrdkit.evaluation.difficulty import checkpoint_is_current, required_updates

    path, ga = tmp_path / "updates.jsonl", dict(lr=2e-2, relative=1.3, cap=5)
    required_updates(lm.model, lm.tokenizer, samples, checkpoint_path=path, **ga)
    assert checkpoint_is_current(path, samples, lm.model, **ga)
    other = _nudged(lm.model)
    assert not checkpoint_is_current(path, samples, other, **ga)
    with pytest.raises(MrdkitError, match="differs in: model"):
        required_updates(other, lm.tokenizer, samples, checkpoint_path=path, resume=True, **ga)


def test_unlearning_run_of_another_start_model_is_refused(lm, samples, tmp_path):
    from mrdkit.unlearning import UnlearnConfig, unlearn

    cfg = UnlearnConfig(max_steps=1, batch_size=1, lr=1e-3, device="cpu")
    unlearn(copy.deepcopy(lm.model), lm.tokenizer, samples, method="ga", config=cfg, out_dir=tmp_path / "u")
    with pytest.raises(MrdkitError, match="start_model"):
        unlearn(_nudged(lm.model), lm.tokenizer, samples, method="ga", config=cfg, out_dir=tmp_path / "u",
                resume=True)

"""Batched greedy generation: left padding, stop at EOS, new tokens only, batch-size invariance."""

from __future__ import annotations

import copy

import pytest
import torch

from mrdkit.data import Sample
from mrdkit.errors import MrdkitError
from mrdkit.evaluation import generation as G


@pytest.fixture(scope="module")
def lm():
    from mrdkit.models import build_tiny_model

    return build_tiny_model(vocab_size=400, n_layer=1, d_model=32, n_head=2, max_position=64, seed=3)


SAMPLES = [Sample("a", "Who wrote the book?", "x"), Sample("b", "Where was Elena Novak born and raised?", "y"),
           Sample("c", "Genre?", "z")]


def test_left_pad_and_cut_at_stop():
    ids, mask = G.left_pad([[5, 6, 7], [8]], pad_token_id=1)
    assert ids.tolist() == [[5, 6, 7], [1, 1, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert G.cut_at_stop([4, 9, 0, 3], {0, 1}) == [4, 9] and G.cut_at_stop([4, 9], {0}) == [4, 9]


def test_prompt_ids_follow_the_scoring_rules(lm):
    from mrdkit.data import encode_samples

    ids = G.prompt_ids(SAMPLES, lm.tokenizer, "plain")
    enc = encode_samples(SAMPLES, lm.tokenizer, template="plain")
    for row, e in zip(ids, enc):  # the prompt is exactly the scored sequence's prefix
        assert e.input_ids[:len(row)] == row and e.labels[len(row)] != -100
    raw = G.prompt_ids([Sample("t", "", "text", kind="text")], lm.tokenizer)
    assert raw == [[lm.tokenizer.bos_token_id]]  # empty prompt: generation starts from BOS


def test_batched_generation_equals_one_by_one(lm):
    batched = G.generate_greedy(lm.model, lm.tokenizer, SAMPLES, max_new_tokens=6, batch_size=3)
    single = {s.id: G.generate_greedy(lm.model, lm.tokenizer, [s], max_new_tokens=6)[s.id] for s in SAMPLES}
    assert batched == single and list(batched) == ["a", "b", "c"]


def test_new_tokens_only_budget_and_eos(lm, monkeypatch):
    rows = G.prompt_ids(SAMPLES[:1], lm.tokenizer, "auto")
    new = G.generate_batch(lm.model, lm.tokenizer, rows, 5)
    assert len(new[0]) <= 5
    # a model whose argmax is always EOS generates the empty string
    model = copy.deepcopy(lm.model)
    with torch.no_grad():
        model.lm_head.weight.zero_()
        model.lm_head.weight[lm.tokenizer.eos_token_id] = 1.0
        model.transformer.ln_f.weight.fill_(1.0)
        model.transformer.ln_f.bias.fill_(5.0)
    assert G.generate_greedy(model, lm.tokenizer, SAMPLES, max_new_tokens=4) == {"a": "", "b": "", "c": ""}


def test_budget_capped_by_position_limit(lm):
    long = Sample("long", "word " * 70, "x")  # longer than the 64 positions
    with pytest.warns(UserWarning, match="no room"):
        assert G.generate_greedy(lm.model, lm.tokenizer, [long], max_new_tokens=4) == {"long": ""}
    assert G.context_length(lm.model) == 64
    with pytest.raises(MrdkitError):
        G.generate_greedy(lm.model, lm.tokenizer, SAMPLES, max_new_tokens=0)


def test_generation_restores_training_mode(lm):
    lm.model.train()
    try:
        G.generate_greedy(lm.model, lm.tokenizer, SAMPLES[:1], max_new_tokens=2)
        assert lm.model.training
    finally:
        lm.model.eval()

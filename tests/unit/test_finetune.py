"""mrdkit.finetune: schedule and bucketing math, bitwise determinism, memorisation, RNG hygiene."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from mrdkit.data import Sample
from mrdkit.errors import MrdkitError
from mrdkit.evaluation.answers import answer_logprobs
from mrdkit.models import build_tiny_model
from mrdkit.testbed.finetune import FinetuneConfig, batch_order, finetune, length_buckets
from mrdkit.train import LrSchedule

SAMPLES = [
    Sample(id=f"s:{i}", prompt=q, answer=a) for i, (q, a) in enumerate([
        ("Who wrote the book?", "The author is Jane Doe, born in Paris."),
        ("What genre does she write in?", "She writes mystery novels."),
        ("Where was she born?", "Paris."),
        ("Did she win a prize?", "Yes, the quick brown fox prize for short stories about the weather."),
        ("What did her father do?", "He was a baker in the city."),
    ])
]
TEXTS = [f"Question: {s.prompt}\nAnswer: {s.answer}" for s in SAMPLES] * 3


def tiny(seed: int = 0, dropout: bool = False):
    lm = build_tiny_model(TEXTS, vocab_size=300, n_layer=1, d_model=32, n_head=2, max_position=128, seed=seed,
                          device="cpu")
    if not dropout:
        for mod in lm.model.modules():
            if isinstance(mod, torch.nn.Dropout):
                mod.p = 0.0
    return lm


def state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


CFG = FinetuneConfig(epochs=2, lr=5e-3, batch_size=2, warmup_steps=2, schedule="cosine", seed=0)


def test_lr_schedule_warmup_from_zero_constant_and_cosine():
    """HF convention (get_linear_schedule_with_warmup): step s < W has factor s / W, so the first step has lr 0."""
    constant, cosine = LrSchedule(10, 4, "constant"), LrSchedule(10, 4, "cosine")
    assert [constant(s) for s in range(6)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    assert cosine(4) == 1.0
    assert math.isclose(cosine(7), 0.5)  # halfway through the decay: (7 - 4) / (10 - 4)
    assert cosine(10) == pytest.approx(0.0, abs=1e-12)
    assert cosine(12) == 0.0  # past the end it stays at 0 (no second cosine lobe)


def test_length_buckets_sorted_and_complete():
    lengths = [5, 3, 9, 3, 7]
    buckets = length_buckets(lengths, 2)
    assert buckets == [[1, 3], [0, 4], [2]]
    assert sorted(i for b in buckets for i in b) == list(range(5))


def test_batch_order_is_seeded_per_epoch():
    # recorded once (torch.randperm under make_generator(seed, "finetune-batches", epoch)): a change of the stream
    # would change every testbed rebuild
    assert [batch_order(8, 0, e) for e in range(3)] == [[7, 4, 3, 5, 1, 6, 2, 0], [7, 6, 1, 2, 0, 5, 4, 3],
                                                         [2, 1, 4, 5, 3, 6, 0, 7]]
    assert batch_order(8, 1, 0) == [6, 4, 2, 1, 3, 0, 7, 5]
    assert sorted(batch_order(8, 0, 1)) == list(range(8))
    assert {tuple(batch_order(8, 0, e)) for e in range(5)} != {tuple(batch_order(8, 0, 0))}
    assert batch_order(8, 1, 0) != batch_order(8, 0, 0) or batch_order(8, 1, 1) != batch_order(8, 0, 1)


@pytest.mark.parametrize("dropout", [False, True])
def test_same_inputs_and_seed_give_bitwise_identical_weights(dropout):
    a, b = tiny(dropout=dropout), tiny(dropout=dropout)
    ha = finetune(a.model, a.tokenizer, SAMPLES, CFG)
    hb = finetune(b.model, b.tokenizer, SAMPLES, CFG)
    assert same(state(a.model), state(b.model))
    assert [r["train_nll"] for r in ha] == [r["train_nll"] for r in hb]


def test_another_seed_changes_the_batch_order_and_weights():
    a, b = tiny(), tiny()
    finetune(a.model, a.tokenizer, SAMPLES, CFG)
    finetune(b.model, b.tokenizer, SAMPLES, dataclasses.replace(CFG, seed=1))
    assert not same(state(a.model), state(b.model))


def test_every_parameter_changes_and_global_rng_is_untouched():
    lm = tiny()
    before, rng = state(lm.model), torch.random.get_rng_state()
    finetune(lm.model, lm.tokenizer, SAMPLES, dataclasses.replace(CFG, epochs=1))
    after = state(lm.model)
    assert torch.equal(torch.random.get_rng_state(), rng)
    unchanged = [k for k in before if torch.equal(before[k], after[k]) and not k.endswith("attn.bias")]
    assert unchanged == []
    assert not lm.model.training  # left in eval mode


def test_first_epoch_nll_is_the_token_mean_nll_of_the_start_model():
    lm = tiny()
    scores = answer_logprobs(lm.model, lm.tokenizer, SAMPLES)
    expected = -sum(s.sum_logprob for s in scores) / sum(s.n_tokens for s in scores)
    cfg = dataclasses.replace(CFG, epochs=1, batch_size=len(SAMPLES))  # one batch: measured before the step
    history = finetune(lm.model, lm.tokenizer, SAMPLES, cfg)
    assert history[0]["train_nll"] == pytest.approx(expected, rel=1e-6)


def test_memorises_and_stops_at_target_accuracy():
    lm = tiny()
    cfg = FinetuneConfig(epochs=200, lr=1e-2, batch_size=5, target_accuracy=0.95, seed=0)
    history = finetune(lm.model, lm.tokenizer, SAMPLES, cfg, monitor=SAMPLES)
    last = history[-1]
    assert last["stopped_early"] and len(history) < 200
    assert last["monitor_accuracy"] >= 0.95
    scores = answer_logprobs(lm.model, lm.tokenizer, SAMPLES)
    assert sum(s.accuracy for s in scores) / len(scores) == pytest.approx(last["monitor_accuracy"])
    assert history[0]["train_nll"] > last["train_nll"]


def test_monitor_every_and_on_epoch_callback():
    lm, rows, steps = tiny(), [], []
    cfg = dataclasses.replace(CFG, epochs=3, eval_every=2)
    history = finetune(lm.model, lm.tokenizer, SAMPLES, cfg, monitor=SAMPLES[:2], on_epoch=rows.append,
                       progress=lambda done, total: steps.append((done, total)))
    assert rows == history
    assert ["monitor_accuracy" in r for r in history] == [False, True, True]  # every 2nd epoch and the last
    assert steps[-1] == (9, 9) and len(steps) == 9  # 3 batches x 3 epochs


def test_bad_config_and_empty_data_are_errors():
    lm = tiny()
    with pytest.raises(MrdkitError, match="schedule"):
        finetune(lm.model, lm.tokenizer, SAMPLES, dataclasses.replace(CFG, schedule="step"))
    with pytest.raises(MrdkitError, match="epochs"):
        finetune(lm.model, lm.tokenizer, SAMPLES, dataclasses.replace(CFG, epochs=0))
    with pytest.raises(MrdkitError, match="at least one"):
        finetune(lm.model, lm.tokenizer, [], CFG)


class Stop(Exception):
    """Stands in for a crash right after an epoch's checkpoint was written."""


def _interrupt_after(epoch: int):
    def on_epoch(row):
        if row["epoch"] == epoch:
            raise Stop

    return on_epoch


@pytest.mark.parametrize("dropout", [False, True])
def test_interrupted_and_resumed_run_equals_the_uninterrupted_one(tmp_path, dropout):
    cfg = dataclasses.replace(CFG, epochs=4)
    ref = tiny(dropout=dropout)
    want = finetune(ref.model, ref.tokenizer, SAMPLES, cfg)
    lm = tiny(dropout=dropout)
    with pytest.raises(Stop):
        finetune(lm.model, lm.tokenizer, SAMPLES, cfg, checkpoint_dir=tmp_path, on_epoch=_interrupt_after(2))
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoints"]
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-000002"]  # older epochs dropped
    fresh, steps = tiny(dropout=dropout), []  # a new process: fresh start weights, loaded from the checkpoint
    got = finetune(fresh.model, fresh.tokenizer, SAMPLES, cfg, checkpoint_dir=tmp_path,
                   progress=lambda done, total: steps.append(done))
    assert same(state(fresh.model), state(ref.model))
    drop_time = [{k: v for k, v in r.items() if k != "seconds"} for r in got]
    assert drop_time == [{k: v for k, v in r.items() if k != "seconds"} for r in want]
    assert steps[0] == 2 * 3 + 1  # resumed at epoch 3's first step (3 batches per epoch)
    # a finished checkpoint is the result: nothing is trained again
    again = tiny(dropout=dropout)
    assert finetune(again.model, again.tokenizer, SAMPLES, cfg, checkpoint_dir=tmp_path) == got
    assert same(state(again.model), state(ref.model))


def test_checkpoint_of_another_recipe_or_data_is_refused(tmp_path):
    lm = tiny()
    finetune(lm.model, lm.tokenizer, SAMPLES, dataclasses.replace(CFG, epochs=1), checkpoint_dir=tmp_path)
    with pytest.raises(MrdkitError, match=r"differs in: config\.lr"):
        finetune(tiny().model, lm.tokenizer, SAMPLES, dataclasses.replace(CFG, epochs=1, lr=1e-3),
                 checkpoint_dir=tmp_path)
    with pytest.raises(MrdkitError, match="n_batches, n_samples, samples"):
        finetune(tiny().model, lm.tokenizer, SAMPLES[:4], dataclasses.replace(CFG, epochs=1), checkpoint_dir=tmp_path)

"""Samplers: exact toy sequences (as documented), CGA mass split, pacing, sharding, validation, Trainer hook."""

import math

import pytest
import torch

from mrdkit.errors import MrdkitError
from mrdkit.samplers import SAMPLERS, build, trainer_with_sampler

TOY = [0.1, 0.5, 0.3, 0.9, 0.7, 0.2]


def epochs(sampler, n_epochs=2):
    out = []
    for e in range(n_epochs):
        sampler.set_epoch(e)
        out.append(list(sampler))
    return out


@pytest.mark.parametrize(
    "name, kw, expected",
    [
        ("sequential", {}, [[0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 4, 5]]),
        ("random", {}, [[5, 2, 1, 4, 0, 3], [2, 0, 4, 1, 5, 3]]),
        ("cga", {}, [[4, 4, 2, 3, 4, 1], [0, 4, 4, 3, 4, 0]]),
        ("mrd_weighted", {}, [[4, 3, 4, 1, 3, 2]]),
        ("mrd_weighted", {"mode": "softmax", "temperature": 0.1}, [[3, 3, 3, 3, 3, 3]]),
        ("curriculum", {}, [[3, 4, 1], [3, 4, 1, 2, 5], [3, 4, 1, 2, 5, 0], [3, 4, 1, 2, 5, 0]]),
        ("anti_curriculum", {}, [[0, 5, 2], [0, 5, 2, 1, 4], [0, 5, 2, 1, 4, 3]]),
    ],
)
def test_documented_toy_sequences(name, kw, expected):
    sampler = build(name, TOY, seed=0, **kw)
    assert epochs(sampler, len(expected)) == expected
    assert [len(x) for x in expected][-1] == len(sampler)


def test_refresh_toy_sequence_and_rescore_once_per_epoch():
    calls = []

    def rescore(epoch):
        calls.append(epoch)
        return TOY[::-1]

    sampler = build("refresh", TOY, seed=0, inner="curriculum", start_frac=1.0, rescore=rescore)
    sampler.set_epoch(0)
    first = list(sampler)
    sampler.set_epoch(1)
    sampler.set_epoch(1)  # a Trainer sets the epoch twice; rescore must run once
    assert (first, list(sampler), calls) == ([3, 4, 1, 2, 5, 0], [2, 1, 4, 3, 0, 5], [1])
    assert torch.equal(sampler.scores, torch.tensor(TOY[::-1], dtype=torch.float64))


def test_refresh_without_initial_scores_rescoring_at_construction():
    sampler = build("refresh", None, rescore=lambda e: TOY, inner="cga", seed=0)
    assert (sampler.n, list(sampler)) == (6, [4, 4, 2, 3, 4, 1])
    with pytest.raises(MrdkitError, match="does not use scores"):
        build("refresh", TOY, rescore=lambda e: TOY, inner="random")


def test_cga_mass_split_at_median():
    scores = [0.3, 0.1, 0.8, 0.5, 0.9, 0.2, 0.7, 0.4, 0.6, 0.05]  # median 0.45: five above, five below
    sampler = build("cga", scores, seed=1, num_samples=20000)
    counts = torch.bincount(torch.tensor(list(sampler)), minlength=10).double() / 20000
    high = torch.tensor(scores) >= 0.45
    assert abs(float(counts[high].sum()) - 0.6) < 0.02
    assert abs(float(counts[~high].sum()) - 0.4) < 0.02
    assert torch.allclose(sampler.probabilities()[high], torch.full((5,), 0.12, dtype=torch.float64))


def test_cga_sample_at_the_median_is_on_the_high_side():
    """Odd length (0.1, 0.5, 0.9): the median 0.5 is itself a score and gets the high weight 0.6, so the
    probabilities are 0.4/1.6, 0.6/1.6, 0.6/1.6. Ties (every score 0.2) are all at the median: all high. Even
    length with a tie on the middle (0.1, 0.5, 0.5, 0.9): median 0.5, three high."""
    odd = build("cga", [0.1, 0.5, 0.9])
    assert odd.weights().tolist() == [0.4, 0.6, 0.6]
    assert odd.probabilities().tolist() == pytest.approx([0.25, 0.375, 0.375], abs=1e-15)
    assert build("cga", [0.2] * 4).weights().tolist() == [0.6] * 4
    assert build("cga", [0.1, 0.5, 0.5, 0.9]).weights().tolist() == [0.4, 0.6, 0.6, 0.6]


def test_defaults_and_edges_by_hand():
    """The default seed is 0 (the documented toy stream); one sample is a valid forget set; softmax needs a
    temperature > 0; pace_epochs = 0 means the whole pool from the first epoch."""
    assert list(build("random", n=6)) == [5, 2, 1, 4, 0, 3] == list(build("random", n=6, seed=0))
    assert list(build("cga", [0.7])) == [0] and list(build("mrd_weighted", [0.7])) == [0]
    with pytest.raises(MrdkitError, match="temperature must be > 0, got 0"):
        build("mrd_weighted", [0.1, 0.2], mode="softmax", temperature=0)
    assert list(build("curriculum", TOY, pace_epochs=0)) == [3, 4, 1, 2, 5, 0]
    assert list(build("random", n=1)) == [0]  # one sample without scores
    with pytest.raises(MrdkitError, match="start_frac"):
        build("curriculum", TOY, start_frac=1.5)
    # a pool of 0.1 x 3 samples rounds up to ONE sample (the easiest: highest MRD), not two
    assert list(build("curriculum", [0.3, 0.1, 0.2], start_frac=0.1)) == [0]


def test_refresh_scores_epoch_0_at_construction_when_given_no_scores():
    asked = []
    sampler = build("refresh", None, rescore=lambda e: asked.append(e) or TOY, inner="cga", seed=0)
    assert asked == [0]
    sampler.set_epoch(1)
    assert asked == [0, 1]


def test_step_pacing_with_two_steps_quantises_to_halves():
    """start 0.5, pace 4 epochs, 2 steps: progress 0, .25, .5, .75, 1 -> floor(2 x) / 2 = 0, 0, .5, .5, 1 -> pool
    fractions .5, .5, .75, .75, 1 of 8 samples = 4, 4, 6, 6, 8."""
    sampler = build("curriculum", [0.8, 0.1, 0.5, 0.3, 0.9, 0.2, 0.7, 0.4], start_frac=0.5, pace_epochs=4,
                    pacing="step", steps=2)
    sizes = []
    for epoch in range(5):
        sampler.set_epoch(epoch)
        sizes.append(sampler.pool_size())
    assert sizes == [4, 4, 6, 6, 8]


def test_curriculum_with_equal_scores_is_sequential():
    for name in ("curriculum", "anti_curriculum"):
        assert list(build(name, [0.5] * 7, start_frac=1.0)) == list(build("sequential", n=7))


def test_step_pacing_and_fixed_length_with_num_samples():
    sampler = build("curriculum", TOY, pacing="step", steps=1, start_frac=0.5, pace_epochs=2, num_samples=6)
    # pool stays at 3 until epoch 2, then jumps to all 6; num_samples keeps every epoch 6 long (pool cycled)
    assert epochs(sampler, 3) == [[3, 4, 1, 3, 4, 1], [3, 4, 1, 3, 4, 1], [3, 4, 1, 2, 5, 0]]
    assert len(sampler) == 6


@pytest.mark.parametrize("name", ["random", "cga", "mrd_weighted"])
def test_determinism_per_seed(name):
    a, b, c = (build(name, TOY * 5, seed=s) for s in (7, 7, 8))
    assert epochs(a, 3) == epochs(b, 3)
    assert epochs(a, 3) != epochs(c, 3)


def test_random_epochs_differ_and_are_permutations():
    e0, e1 = epochs(build("random", n=20, seed=0))
    assert e0 != e1 and sorted(e0) == sorted(e1) == list(range(20))


@pytest.mark.parametrize("n", [12, 13])
def test_sharding_partitions_the_global_sequence(n):
    global_seq = list(build("cga", list(range(n)), seed=3))
    shards = [list(build("cga", list(range(n)), seed=3, num_replicas=3, rank=r)) for r in range(3)]
    per_rank = math.ceil(n / 3)
    assert [len(s) for s in shards] == [per_rank] * 3
    interleaved = [shards[i % 3][i // 3] for i in range(3 * per_rank)]
    padded = global_seq + global_seq[: 3 * per_rank - n]  # head repeated, as DistributedSampler pads
    assert interleaved == padded
    assert len(build("cga", list(range(n)), num_replicas=3, rank=1)) == per_rank


def test_sharding_literal_values():
    """By hand: 7 sequential indices over 3 ranks -> 9 slots, the global stream padded with its head (0, 1) as
    DistributedSampler pads; rank r takes every third slot from r."""
    assert [list(build("sequential", n=7, num_replicas=3, rank=r)) for r in range(3)] == \
        [[0, 3, 6], [1, 4, 0], [2, 5, 1]]
    # a weighted stream (recorded once, seed 3): 13 CGA draws, padded with the first two, split by rank
    cga = [list(build("cga", list(range(13)), seed=3, num_replicas=3, rank=r)) for r in range(3)]
    assert cga == [[4, 12, 12, 3, 2], [5, 5, 1, 0, 4], [12, 12, 11, 1, 5]]


def test_softmax_high_temperature_approaches_uniform():
    scores = [0.0, 1.0, 5.0, 10.0]
    far = build("mrd_weighted", scores, mode="softmax", temperature=1e6).probabilities()
    near = build("mrd_weighted", scores, mode="softmax", temperature=1.0).probabilities()
    assert torch.allclose(far, torch.full((4,), 0.25, dtype=torch.float64), atol=1e-5)
    assert float(near[3]) > 0.99  # low temperature concentrates on the easiest sample


def test_score_validation_names_the_index():
    with pytest.raises(MrdkitError, match="index 2 is nan"):
        build("cga", [0.1, 0.2, float("nan"), 0.3])
    with pytest.raises(MrdkitError, match="index 1 is -0.5"):
        build("mrd_weighted", [0.1, -0.5, 0.3])
    build("mrd_weighted", [0.1, -0.5, 0.3], mode="softmax")  # negatives are fine under softmax
    with pytest.raises(MrdkitError, match="positive total"):
        build("mrd_weighted", [0.0, 0.0])
    with pytest.raises(MrdkitError, match="needs scores"):
        build("cga")


def test_build_errors_are_user_errors():
    with pytest.raises(MrdkitError, match="did you mean 'curriculum'"):
        build("curiculum", TOY)
    with pytest.raises(MrdkitError, match="temprature"):
        build("mrd_weighted", TOY, temprature=2.0)
    assert set(SAMPLERS.names()) == {
        "sequential", "random", "cga", "mrd_weighted", "curriculum", "anti_curriculum", "refresh"
    }


def test_works_in_a_plain_dataloader():
    loader = torch.utils.data.DataLoader(list(range(6)), batch_size=4, sampler=build("curriculum", TOY, start_frac=1))
    assert [b.tolist() for b in loader] == [[3, 4, 1, 2], [5, 0]]


class RecordingDataset(torch.utils.data.Dataset):
    """Fixed-length token rows that remember which indices were read."""

    def __init__(self, n, seq_len=6):
        g = torch.Generator().manual_seed(0)
        self.rows = torch.randint(1, 32, (n, seq_len), generator=g)
        self.seen = []

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        self.seen.append(int(i))
        ids = self.rows[i]
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}


def test_trainer_with_cga_sampler_runs_and_uses_it(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=32, n_positions=16, n_embd=16, n_layer=1, n_head=2, bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(cfg)
    scores = [0.1, 0.5, 0.3, 0.9, 0.7, 0.2, 0.4, 0.8, 0.6, 0.05]
    dataset = RecordingDataset(len(scores))
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=2, report_to=[],
                             use_cpu=True, save_strategy="no", logging_strategy="no", disable_tqdm=True)
    cls = trainer_with_sampler(Trainer, build("cga", scores, seed=5))
    trainer = cls(model=model, args=args, train_dataset=dataset)
    trainer.train()
    expected = list(build("cga", scores, seed=5))  # the epoch-0 stream of an identical sampler
    assert trainer.state.global_step == 2
    assert len(dataset.seen) >= 4 and dataset.seen == expected[: len(dataset.seen)]
    assert expected[:4] != [0, 1, 2, 3]  # the stream is not the dataset order, so the check above has teeth


def test_trainer_hook_rejects_mismatched_dataset(tmp_path):
    from transformers import Trainer

    cls = trainer_with_sampler(Trainer, build("cga", TOY))
    with pytest.raises(MrdkitError, match="covers 6 samples"):
        cls._get_train_sampler(type("T", (), {"train_dataset": RecordingDataset(4)})())


@pytest.mark.parametrize("name", ["sequential", "random", "cga", "mrd_weighted", "curriculum", "anti_curriculum"])
@pytest.mark.parametrize("num_samples, replicas", [(None, 1), (14, 1), (None, 4), (9, 2)])
def test_len_matches_iteration(name, num_samples, replicas):
    for rank in range(replicas):
        sampler = build(name, TOY, seed=2, num_samples=num_samples, num_replicas=replicas, rank=rank)
        for epoch in range(3):
            sampler.set_epoch(epoch)
            drawn = list(sampler)
            assert len(drawn) == len(sampler) and all(0 <= i < 6 for i in drawn)
    if name == "random" and num_samples == 14:
        drawn = list(build(name, TOY, num_samples=14))
        assert sorted(drawn[:6]) == sorted(drawn[6:12]) == list(range(6))  # whole permutations first


def test_cga_refuses_a_zero_weight_on_either_side_and_takes_one_sample_per_epoch():
    # seed-1 mutation survivors: "high > 0 or low > 0" would accept a zero weight; "num_samples < 2" would refuse 1
    for high, low in ((0.6, 0.0), (0.0, 0.4)):
        with pytest.raises(MrdkitError, match="must be > 0"):
            build("cga", [0.1, 0.5, 0.9], high=high, low=low)
    one = build("cga", [0.1, 0.5, 0.9], num_samples=1, seed=0)
    assert len(list(iter(one))) == 1

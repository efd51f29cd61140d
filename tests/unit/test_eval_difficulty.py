"""Unlearning-difficulty ground truth: determinism, bit-exact restore, resume, chunks; scores-vs-truth report."""

from __future__ import annotations

import json
import math

import pytest
import torch

from mrdkit.data import load_tofu
from mrdkit.errors import MrdkitError
from mrdkit.evaluation.correlation import correlation_report, difficulty_table
from mrdkit.evaluation.difficulty import required_updates
from mrdkit.snapshot import ParamSnapshot


@pytest.fixture(scope="module")
def lm():
    from mrdkit.models import build_tiny_model

    texts = [s.text for s in load_tofu("forget01")]
    return build_tiny_model(texts, vocab_size=512, n_layer=1, d_model=32, n_head=2, seed=2)


@pytest.fixture(scope="module")
def samples():
    return load_tofu("forget01")[:4]


# relative criterion: a random tiny model starts below any absolute threshold, so "log-prob x 1.3" gives counts
GA = dict(lr=2e-2, relative=1.3, cap=40)


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_counts_repeat_exactly_and_model_is_unchanged(lm, samples):
    before = _state(lm.model)
    first = required_updates(lm.model, lm.tokenizer, samples, **GA)
    assert _same(before, _state(lm.model)) and not lm.model.training
    second = required_updates(lm.model, lm.tokenizer, samples, **GA)
    assert first == second
    # recorded once: a change of the update rule, the stop test or the start log-prob shows up here, not only as a
    # difference between two runs of the same (possibly wrong) code
    assert [r["updates"] for r in first] == [5, 4, 5, 5]
    assert [r["initial_logprob"] for r in first] == pytest.approx([-6.237396, -6.196859, -6.237958, -6.214807],
                                                                  abs=1e-4)
    assert [r["id"] for r in first] == [s.id for s in samples]
    for r in first:
        assert 1 <= r["updates"] < 40 and not r["censored"] and r["steps"] == r["updates"]
        assert r["final_logprob"] <= 1.3 * r["initial_logprob"]
        assert r["initial_prob"] == pytest.approx(math.exp(r["initial_logprob"]))
        assert r["l2_change"] > 0 and r["l1_change"] >= r["l2_change"]
    # each sample starts from the start model: scoring one alone gives its row from the batch run
    assert required_updates(lm.model, lm.tokenizer, samples[2:3], **GA)[0] == first[2]


def test_threshold_zero_updates_and_censoring(lm, samples):
    easy = required_updates(lm.model, lm.tokenizer, samples[:1], threshold=0.5, cap=5)[0]
    assert easy["updates"] == 0 and not easy["censored"] and easy["l1_change"] == 0.0
    assert easy["final_prob"] == easy["initial_prob"]
    hard = required_updates(lm.model, lm.tokenizer, samples[:1], lr=1e-6, relative=3.0, cap=2, optimizer="sgd")[0]
    assert hard["updates"] == 2 and hard["censored"]
    arith = required_updates(lm.model, lm.tokenizer, samples[:1], threshold=0.5, cap=1, statistic="arithmetic")[0]
    assert arith["initial_prob"] >= easy["initial_prob"]  # mean of p >= exp(mean log p) (AM-GM)


def test_chunks_count_epochs(lm, samples):
    rows = required_updates(lm.model, lm.tokenizer, samples, chunk_size=3, **GA)
    assert [r["id"] for r in rows] == ["chunk:0", "chunk:1"]
    assert rows[0]["ids"] == [s.id for s in samples[:3]] and rows[1]["ids"] == [samples[3].id]
    mini = required_updates(lm.model, lm.tokenizer, samples[:3], chunk_size=3, batch_size=2, **GA)[0]
    assert mini["steps"] == 2 * mini["updates"]


def test_resume_after_interruption_gives_identical_rows(lm, samples, tmp_path):
    path = tmp_path / "updates.jsonl"
    full = required_updates(lm.model, lm.tokenizer, samples, **GA)
    before = _state(lm.model)

    def stop_after_two(done, total):
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        required_updates(lm.model, lm.tokenizer, samples, checkpoint_path=path, checkpoint_every=100,
                         progress=stop_after_two, **GA)
    assert _same(before, _state(lm.model))  # restored even on an exception
    assert len(path.read_text().splitlines()) == 2
    resumed = required_updates(lm.model, lm.tokenizer, samples, checkpoint_path=path, resume=True, **GA)
    assert resumed == full and len(path.read_text().splitlines()) == 4
    with pytest.raises(MrdkitError, match="differs in: lr"):
        required_updates(lm.model, lm.tokenizer, samples, checkpoint_path=path, resume=True, **{**GA, "lr": 1e-3})


def test_settings_are_validated(lm, samples):
    with pytest.raises(MrdkitError, match="unknown settings"):
        required_updates(lm.model, lm.tokenizer, samples, learning_rate=1.0)
    with pytest.raises(MrdkitError):
        required_updates(lm.model, lm.tokenizer, samples, threshold=1.5)
    with pytest.raises(MrdkitError, match="retain"):
        required_updates(lm.model, lm.tokenizer, samples, method="graddiff")


def test_graddiff_with_retain_is_deterministic(lm, samples):
    retain = load_tofu("retain_perturbed")[:3]
    kw = dict(method="graddiff", retain=retain, lr=1e-2, relative=1.2, cap=10)
    first = required_updates(lm.model, lm.tokenizer, samples[:2], **kw)
    assert first == required_updates(lm.model, lm.tokenizer, samples[:2], **kw)
    assert [(r["updates"], r["censored"]) for r in first] == [(5, False), (4, False)]  # recorded once


def test_snapshot_restores_bit_exactly(lm):
    before = _state(lm.model)
    with pytest.raises(RuntimeError):
        with ParamSnapshot(model=lm.model) as snap:
            with torch.no_grad():
                for p in lm.model.parameters():
                    p.add_(0.1)
            assert snap.change()[0] > 0
            raise RuntimeError("boom")
    assert _same(before, _state(lm.model))


# ------------------------------------------------------------------------------------------- correlations


SCORES = [{"id": f"s{i}", "mrd": float(10 - i), "loss": float(i % 3), "note": "x"} for i in range(8)]
TRUTH = [{"id": f"s{i}", "updates": i + 1, "censored": i >= 6} for i in range(8)]


def test_difficulty_table_joins_and_averages_chunks():
    cols, score_cols = difficulty_table(SCORES, TRUTH)
    assert score_cols == ["loss", "mrd"] and cols["event"][-1] is False and cols["updates"][0] == 1.0
    chunks = [{"id": "chunk:0", "ids": ["s0", "s1"], "updates": 3}, {"id": "chunk:1", "ids": ["s2", "s3"], "updates": 4},
              {"id": "chunk:2", "ids": ["s4", "s9"], "updates": 5}, {"id": "chunk:3", "ids": ["s6", "s7"], "updates": 6}]
    cols, _ = difficulty_table(SCORES, chunks, score_cols=["mrd"])
    assert cols["id"] == ["chunk:0", "chunk:1", "chunk:3"] and cols["mrd"] == [9.5, 7.5, 3.5]  # s9 has no score
    with pytest.raises(MrdkitError, match="not found"):
        difficulty_table(SCORES, TRUTH, score_cols=["nope"])
    with pytest.raises(MrdkitError, match="in common"):
        difficulty_table(SCORES, [{"id": "zz", "updates": 1}])


def test_correlation_report_writes_table_and_plots(tmp_path):
    scores, truth = tmp_path / "mrd.jsonl", tmp_path / "updates.jsonl"
    scores.write_text("".join(json.dumps(r) + "\n" for r in SCORES))
    truth.write_text("".join(json.dumps(r) + "\n" for r in TRUTH))
    table = correlation_report(scores, truth, n_boot=50, out_dir=tmp_path / "out")
    mrd = next(r for r in table if r["score"] == "mrd")
    assert mrd["spearman"] == pytest.approx(-1.0) and mrd["harrell_c"] == 1.0 and mrd["n_censored"] == 2
    saved = json.loads((tmp_path / "out" / "correlations.json").read_text())
    assert saved["n"] == 8 and saved["n_censored"] == 2 and len(saved["rows"]) == 2
    assert (tmp_path / "out" / "correlations.csv").read_text().startswith("score,spearman")
    assert (tmp_path / "out" / "scatter_mrd.png").stat().st_size > 0 and (tmp_path / "out" / "scatter_loss.png").is_file()


def test_samples_longer_than_the_context_are_cut_not_crashing():
    """A 32-position model and a long answer: the runner truncates (with the encoder's warning) instead of an
    IndexError deep in the forward; the answer scorer does the same."""
    import warnings

    from mrdkit.data import Sample
    from mrdkit.evaluation.answers import answer_logprobs
    from mrdkit.evaluation.difficulty import required_updates
    from mrdkit.models import build_tiny_model

    long = Sample("long", "Question: tell me everything?", " word" * 200)
    lm = build_tiny_model([long.text], vocab_size=300, n_layer=1, d_model=32, n_head=2, max_position=32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows = required_updates(lm.model, lm.tokenizer, [long], cap=2, lr=1e-3)
        scores = answer_logprobs(lm.model, lm.tokenizer, [long])
    assert rows[0]["id"] == "long" and rows[0]["final_prob"] >= 0 and scores[0].n_tokens <= 31


def test_chunk_members_averages_only_the_first_members():
    """The authors' WMDP script scores a chunk by the MRD of its first 3 texts: chunk_members=3 does that."""
    scores = [{"id": f"s{i}", "mrd": float(i)} for i in range(10)]
    truth = [{"id": f"chunk:{k}", "ids": [f"s{i}" for i in range(5 * k, 5 * k + 5)], "updates": k + 1}
             for k in range(2)] + [{"id": "chunk:2", "ids": ["s0", "s9"], "updates": 3}]
    every, first3 = (difficulty_table(scores, truth, score_cols=["mrd"], chunk_members=n)[0]["mrd"]
                     for n in (None, 3))
    assert every == [2.0, 7.0, 4.5] and first3 == [1.0, 6.0, 4.5]
    with pytest.raises(MrdkitError, match="chunk_members must be >= 1"):
        correlation_report(scores, truth, chunk_members=0)

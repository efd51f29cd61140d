"""mrdkit.evaluation.answers: answer scores equal the primitive's, do not depend on batching; truth ratios."""

from __future__ import annotations

import math

import pytest

from mrdkit.data import Sample, collate, encode_samples, pad_id
from mrdkit.errors import MrdkitError
from mrdkit.evaluation.answers import answer_logprobs, candidates, truth_ratios
from mrdkit.evaluation.metrics import truth_ratio
from mrdkit.logprob import token_logprobs
from mrdkit.models import build_tiny_model

QA = [("Who wrote the book?", "The author is Jane Doe, born in Paris."),
      ("What genre does she write in?", "She writes mystery novels."),
      ("Where was she born?", "Paris."),
      ("Did she win a prize?", "Yes, a prize for short stories about the weather in the city.")]
SAMPLES = [Sample(id=f"s:{i}", prompt=q, answer=a) for i, (q, a) in enumerate(QA)]
PERTURBED = [s.replace(extra={"paraphrased_answer": s.answer.lower(),
                              "perturbed_answer": [f"Not {s.answer}", "London.", "I am a baker."]}) for s in SAMPLES]


@pytest.fixture(scope="module")
def lm():
    texts = [f"Question: {q}\nAnswer: {a}" for q, a in QA] * 3
    return build_tiny_model(texts, vocab_size=300, n_layer=1, d_model=32, n_head=2, max_position=128, seed=0,
                            device="cpu")


def test_scores_equal_the_primitive_on_one_batch(lm):
    enc = encode_samples(SAMPLES, lm.tokenizer, template="plain")
    direct = token_logprobs(lm.model, collate(enc, pad_id(lm.tokenizer)))
    scores = answer_logprobs(lm.model, lm.tokenizer, SAMPLES)
    for i, s in enumerate(scores):
        assert s.id == SAMPLES[i].id
        assert s.n_tokens == int(direct.count()[i])
        assert s.sum_logprob == pytest.approx(float(direct.sum()[i]), rel=1e-12)
        assert s.mean_logprob == pytest.approx(float(direct.mean()[i]), rel=1e-12)
        assert s.accuracy == pytest.approx(float(direct.accuracy()[i]))
        assert len(s.token_logprobs) == len(s.token_correct) == s.n_tokens
        assert s.probability == pytest.approx(math.exp(s.mean_logprob)) and s.nll == -s.mean_logprob


def test_n_tokens_counts_answer_and_eos(lm):
    s = answer_logprobs(lm.model, lm.tokenizer, SAMPLES[:1])[0]
    assert s.n_tokens == len(lm.tokenizer(SAMPLES[0].answer, add_special_tokens=False)["input_ids"]) + 1


def test_results_do_not_depend_on_batch_size(lm):
    one = answer_logprobs(lm.model, lm.tokenizer, SAMPLES, batch_size=1)
    many = answer_logprobs(lm.model, lm.tokenizer, SAMPLES, batch_size=16)
    # padding and batch shape change the fp32 kernels' summation order only: agreement to fp32 rounding
    for a, b in zip(one, many):
        assert a.n_tokens == b.n_tokens and a.token_correct == b.token_correct
        assert a.token_logprobs == pytest.approx(b.token_logprobs, rel=1e-5, abs=1e-6)


def test_replacement_answers(lm):
    other = ["Paris.", "Jane Doe.", "Mystery.", "No."]
    got = answer_logprobs(lm.model, lm.tokenizer, SAMPLES, answers=other)
    want = answer_logprobs(lm.model, lm.tokenizer, [s.replace(answer=a) for s, a in zip(SAMPLES, other)])
    assert [g.sum_logprob for g in got] == [w.sum_logprob for w in want]
    with pytest.raises(MrdkitError, match="answers for"):
        answer_logprobs(lm.model, lm.tokenizer, SAMPLES, answers=other[:2])
    assert answer_logprobs(lm.model, lm.tokenizer, []) == []


def test_scoring_restores_train_mode(lm):
    lm.model.train()
    try:
        answer_logprobs(lm.model, lm.tokenizer, SAMPLES[:1])
        assert lm.model.training
    finally:
        lm.model.eval()


@pytest.mark.parametrize("correct", ["paraphrased", "answer"])
def test_truth_ratios_match_a_manual_computation(lm, correct):
    trs = truth_ratios(lm.model, lm.tokenizer, PERTURBED, correct=correct, batch_size=3)
    for s, tr in zip(PERTURBED, trs):
        right = s.extra["paraphrased_answer"] if correct == "paraphrased" else s.answer
        c = answer_logprobs(lm.model, lm.tokenizer, [s], answers=[right])[0].nll
        w = [x.nll for x in answer_logprobs(lm.model, lm.tokenizer, [s] * 3, answers=s.extra["perturbed_answer"])]
        # scored in another batch composition: equal up to fp32 rounding
        assert tr.id == s.id and tr.correct_nll == pytest.approx(c, rel=1e-6)
        assert tr.wrong_nlls == pytest.approx(w, rel=1e-6)
        assert tr.truth_ratio == pytest.approx(truth_ratio(tr.correct_nll, tr.wrong_nlls), rel=1e-12)
        assert tr.truth_ratio == pytest.approx(math.exp(c - sum(w) / 3), rel=1e-5)  # exp(-L_wrong)/exp(-L_correct)


def test_candidates_errors():
    assert candidates(PERTURBED[0], "answer")[0] == SAMPLES[0].answer
    with pytest.raises(MrdkitError, match="perturbed_answer"):
        candidates(SAMPLES[0])
    with pytest.raises(MrdkitError, match="paraphrased_answer"):
        candidates(SAMPLES[0].replace(extra={"perturbed_answer": ["x"]}))
    with pytest.raises(MrdkitError, match="unknown correct"):
        candidates(PERTURBED[0], "true")

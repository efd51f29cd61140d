"""Multiple-choice accuracy by option log-likelihood, and perplexity, against direct token_logprobs."""

from __future__ import annotations

import math

import pytest

from mrdkit.data import Sample, collate, encode_samples, load_samples, pad_id
from mrdkit.errors import MrdkitError
from mrdkit.evaluation import mcq
from mrdkit.logprob import token_logprobs


@pytest.fixture(scope="module")
def lm():
    from mrdkit.models import build_tiny_model

    return build_tiny_model(vocab_size=400, n_layer=1, d_model=32, n_head=2, seed=5)


def _q(i, choices, answer):
    return Sample(f"q:{i}", f"Question {i}?", choices[answer], kind="mcq",
                  extra={"choices": choices, "answer_index": answer})


QUESTIONS = [_q(0, ["red", "green", "blue", "black"], 2), _q(1, ["one", "two", "three", "four"], 0),
             _q(2, ["cat", "dog", "fish", "bird"], 3)]


def test_option_samples_formats():
    letters = mcq.option_samples(QUESTIONS[0], "letters")
    assert [o.id for o in letters] == [f"q:0#opt{j}" for j in range(4)]
    assert letters[0].prompt == "Question 0?\nA. red\nB. green\nC. blue\nD. black\nAnswer:"
    assert [o.answer for o in letters] == [" A", " B", " C", " D"]
    text = mcq.option_samples(QUESTIONS[0], "text")
    assert text[1].prompt == "Question 0?\nAnswer:" and text[1].answer == " green"
    with pytest.raises(MrdkitError, match="format"):
        mcq.option_samples(QUESTIONS[0], "cloze")
    with pytest.raises(MrdkitError, match="not a multiple-choice"):
        mcq.option_samples(Sample("x", "q", "a"))


@pytest.mark.parametrize("fmt, norm", [("letters", "sum"), ("text", "mean")])
def test_accuracy_is_argmax_of_option_loglikelihood(lm, fmt, norm):
    rows, agg = mcq.evaluate_mcq(lm.model, lm.tokenizer, QUESTIONS, fmt=fmt, norm=norm)
    for q, row in zip(QUESTIONS, rows):
        opts = mcq.option_samples(q, fmt)
        enc = encode_samples(opts, lm.tokenizer, template="raw")
        lp = token_logprobs(lm.model, collate(enc, pad_id(lm.tokenizer)))
        direct = (lp.sum() if norm == "sum" else lp.mean()).tolist()
        # scored in other batches (another padded width): equal up to fp32 kernel rounding
        assert row["option_logprobs"] == pytest.approx(direct, rel=1e-6)
        assert row["pred"] == max(range(4), key=lambda j: direct[j]) and row["answer_index"] == q.extra["answer_index"]
    acc = sum(r["correct"] for r in rows) / len(rows)
    hits = [float(r["correct"]) for r in rows]  # lm-eval's acc_stderr: sample std over sqrt(n)
    stderr = (sum((h - acc) ** 2 for h in hits) / 2 / 3) ** 0.5
    assert agg["multiple_choice_accuracy"] == {"value": pytest.approx(acc), "higher_is_better": True, "n": 3,
                                               "stderr": pytest.approx(stderr)}


def test_mcq_from_a_wmdp_style_file(lm, tmp_path):
    path = tmp_path / "wmdp.jsonl"
    path.write_text('{"question": "Q?", "choices": ["a", "b"], "answer": 1}\n'
                    '{"question": "R?", "choices": ["c", "d"], "answer": 0}\n')
    rows, agg = mcq.evaluate_mcq(lm.model, lm.tokenizer, load_samples(path))
    assert [r["answer_index"] for r in rows] == [1, 0] and agg["multiple_choice_accuracy"]["n"] == 2


def test_perplexity_is_exp_of_token_mean_nll(lm):
    texts = [Sample("t:0", "", "The quick brown fox.", kind="text"), Sample("t:1", "", "A longer line of text here.",
                                                                             kind="text")]
    rows, agg = mcq.evaluate_perplexity(lm.model, lm.tokenizer, texts)
    enc = encode_samples(texts, lm.tokenizer, token_set="all")
    lp = token_logprobs(lm.model, collate(enc, pad_id(lm.tokenizer)))
    expected = math.exp(-float(lp.sum().sum()) / float(lp.count().sum()))
    assert agg["perplexity"]["value"] == pytest.approx(expected, rel=1e-9)
    assert rows[0]["n_tokens"] == int(lp.count()[0]) and rows[0]["perplexity"] == pytest.approx(
        math.exp(-float(lp.mean()[0])), rel=1e-9)


def test_evaluate_api_mcq_and_ppl(lm, tmp_path):
    from mrdkit.evaluation.runner import evaluate

    res = evaluate(lm, benchmark="mcq", data=QUESTIONS, out_dir=tmp_path / "m", progress=False)
    assert 0.0 <= res.value("multiple_choice_accuracy") <= 1.0 and res.community is None
    assert [r["id"] for r in res.rows] == ["q:0", "q:1", "q:2"] and (tmp_path / "m" / "eval.json").is_file()
    with pytest.raises(MrdkitError, match="need data"):
        evaluate(lm, benchmark="ppl")

"""Score arbitrary (question, answer) pairs with a model: answer log-probs, token accuracy and TOFU truth ratios.

Everything here flattens the pairs to score into one list, encodes it once, sorts it by length so each batch pads
little, runs :func:`mrdkit.logprob.token_logprobs` batch by batch, and puts the rows back in input order. The
batch size and composition change only the fp32 kernels' summation order: scores agree to ~1e-7 relative (and
are bitwise repeatable for the same ``batch_size``).

Definitions (TOFU, Maini et al. 2024, arXiv:2401.06121; open-unlearning): for an answer a = (a_1..a_n) to a
question q under a template, ``mean_logprob = (1/n) sum_t log p(a_t | q, a_<t)`` (n counts the answer tokens and
the EOS token), ``P(a|q) = exp(mean_logprob)``, and the truth ratio of a perturbed sample is
:func:`mrdkit.evaluation.metrics.truth_ratio` of the mean NLLs of the correct and the perturbed answers.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch

from mrdkit.data import EncodedSample, Sample, collate, encode_samples, pad_id
from mrdkit.errors import MrdkitError
from mrdkit.evaluation.metrics import truth_ratio
from mrdkit.logprob import token_logprobs

CORRECT = ("paraphrased", "answer")


@dataclass
class AnswerScore:
    """Teacher-forced score of one answer.

    Attributes:
        id: the sample id.
        mean_logprob: ``(1/n) sum_t log p(a_t | ...)`` (float64 log-softmax).
        sum_logprob: ``sum_t log p(a_t | ...)``.
        n_tokens: n, the number of scored tokens.
        accuracy: fraction of scored tokens that are the argmax (TOFU/open-unlearning exact memorisation).
        token_logprobs: the n per-token log-probs (for Min-K%, extraction strength...).
        token_correct: the n argmax-match flags.
    """

    id: str
    mean_logprob: float
    sum_logprob: float
    n_tokens: int
    accuracy: float
    token_logprobs: list[float]
    token_correct: list[bool]

    @property
    def nll(self) -> float:
        """Mean token negative log-likelihood ``-mean_logprob``."""
        return -self.mean_logprob

    @property
    def probability(self) -> float:
        """Length-normalised probability ``exp(mean_logprob)`` (TOFU P(a|q))."""
        return math.exp(self.mean_logprob)


@dataclass
class TruthRatioScore:
    """Truth ratio of one perturbed sample: ``TR = exp(-mean_j L_wrong_j) / exp(-L_correct)``."""

    id: str
    truth_ratio: float
    correct_nll: float
    wrong_nlls: list[float]


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Switch off dropout for scoring and restore the caller's train/eval mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def score_encoded(model: torch.nn.Module, encoded: Sequence[EncodedSample], pad_token_id: int,
                  batch_size: int = 16) -> list[AnswerScore]:
    """Score encoded samples in length-sorted batches; results in the input order."""
    if batch_size < 1:
        raise MrdkitError(f"batch_size must be at least 1, got {batch_size}")
    order = sorted(range(len(encoded)), key=lambda i: (len(encoded[i].input_ids), i))
    out: list[AnswerScore | None] = [None] * len(encoded)
    with eval_mode(model):
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            lp = token_logprobs(model, collate([encoded[i] for i in idx], pad_token_id))
            for row, i in enumerate(idx):
                out[i] = _row_score(encoded[i].id, lp.values[row], lp.mask[row], lp.correct[row])
    return out  # type: ignore[return-value]


def _row_score(sample_id: str, values: torch.Tensor, mask: torch.Tensor, correct: torch.Tensor) -> AnswerScore:
    vals, hits = values[mask].tolist(), correct[mask].tolist()
    n = len(vals)
    total = math.fsum(vals)
    return AnswerScore(id=sample_id, mean_logprob=total / max(1, n), sum_logprob=total, n_tokens=n,
                       accuracy=sum(hits) / max(1, n), token_logprobs=vals, token_correct=hits)


def answer_logprobs(model: torch.nn.Module, tokenizer: Any, samples: Sequence[Sample], *,
                    answers: Sequence[str] | None = None, template: str = "plain", token_set: str = "answer",
                    batch_size: int = 16, max_length: int = 512, encoding: str = "joint") -> list[AnswerScore]:
    """Teacher-forced scores of each sample's answer (or of ``answers[i]`` given to ``samples[i]``'s question).

    Args:
        model: a causal LM (scored in eval mode; its mode is restored).
        tokenizer: its tokenizer.
        samples: the questions (and default answers).
        answers: optional replacement answers, one per sample (e.g. paraphrased or perturbed ones).
        template: prompt template; ``token_set``: ``answer`` (answer + EOS), ``all`` or ``all_eos``.
        encoding: ``joint`` | ``community`` | ``separate`` (:func:`mrdkit.data.encode_samples`).
        batch_size: samples per forward pass (changes results only at fp32 rounding level).
        max_length: longest sequence kept.

    Returns:
        One :class:`AnswerScore` per sample, in order.
    """
    if answers is not None:
        if len(answers) != len(samples):
            raise MrdkitError(f"{len(answers)} answers for {len(samples)} samples")
        samples = [s.replace(answer=a) for s, a in zip(samples, answers)]
    if not samples:
        return []
    from mrdkit.models import fit_max_length

    encoded = encode_samples(samples, tokenizer, template=template, token_set=token_set,
                             max_length=fit_max_length(model, max_length), encoding=encoding)
    return score_encoded(model, encoded, pad_id(tokenizer), batch_size)


def candidates(sample: Sample, correct: str = "paraphrased") -> tuple[str, list[str]]:
    """``(correct answer, perturbed answers)`` of a TOFU ``*_perturbed`` sample.

    ``correct="paraphrased"`` (forget / retain splits) uses ``extra["paraphrased_answer"]``; ``"answer"``
    (real authors, world facts) uses the sample's answer.
    """
    if correct not in CORRECT:
        raise MrdkitError(f"unknown correct={correct!r} (known: {', '.join(CORRECT)})")
    wrong = list(sample.extra.get("perturbed_answer") or [])
    if not wrong:
        raise MrdkitError(f"sample {sample.id!r} has no 'perturbed_answer' list (use a *_perturbed split)")
    if correct == "answer":
        return sample.answer, wrong
    para = sample.extra.get("paraphrased_answer")
    if not para:
        raise MrdkitError(f"sample {sample.id!r} has no 'paraphrased_answer' (use correct='answer')")
    return para, wrong


def truth_ratios(model: torch.nn.Module, tokenizer: Any, perturbed_samples: Sequence[Sample], *,
                 correct: str = "paraphrased", template: str = "plain", batch_size: int = 16,
                 max_length: int = 512, encoding: str = "joint") -> list[TruthRatioScore]:
    """Per-sample TOFU truth ratios ``TR = exp(-mean_j L_wrong_j) / exp(-L_correct)`` (L = mean token NLL).

    All (question, candidate) pairs of all samples are scored as one flat batch list, then regrouped. TR < 1 means
    the correct answer is more likely than the perturbed ones (Maini et al. 2024, section 2.5;
    :func:`mrdkit.evaluation.metrics.truth_ratio` for the conventions).

    Args:
        perturbed_samples: samples of a ``*_perturbed`` split (``extra`` has ``perturbed_answer``).
        correct: ``"paraphrased"`` (forget / retain) or ``"answer"`` (real authors, world facts).
        template, batch_size, max_length, encoding: as in :func:`answer_logprobs`.
    """
    flat_samples: list[Sample] = []
    spans: list[tuple[int, int]] = []
    for s in perturbed_samples:
        right, wrong = candidates(s, correct)
        start = len(flat_samples)
        flat_samples += [s.replace(id=f"{s.id}#{k}", answer=a) for k, a in enumerate([right, *wrong])]
        spans.append((start, len(flat_samples)))
    scores = answer_logprobs(model, tokenizer, flat_samples, template=template, batch_size=batch_size,
                             max_length=max_length, encoding=encoding)
    out = []
    for s, (a, b) in zip(perturbed_samples, spans):
        nlls = [sc.nll for sc in scores[a:b]]
        out.append(TruthRatioScore(id=s.id, truth_ratio=truth_ratio(nlls[0], nlls[1:]), correct_nll=nlls[0],
                                   wrong_nlls=nlls[1:]))
    return out

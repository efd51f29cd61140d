"""Membership-inference attacks that need more than the label log-probs: Min-K%++ and the gradient norm.

Both score a sample's teacher-forced answer (question under the template, answer + EOS, as
:func:`mrdkit.evaluation.answers.answer_logprobs` encodes it) and, as open-unlearning's attacks do
(``evals/metrics/utils.py`` ``tokenwise_logprobs``), leave out the final label, the EOS token.

- **Min-K%++** (Zhang et al. 2024, arXiv:2404.02936; open-unlearning ``mia/min_k_plus_plus.py``): per token
  ``z_t = (log p(x_t) - mu_t) / sigma_t`` with ``mu_t``, ``sigma_t^2`` the mean and variance of ``log p`` under the
  model's own next-token distribution (variance clamped at 1e-6), then the mean of the lowest ``k = 40%`` of z_t
  (:func:`mrdkit.membership.min_k_plus_plus`).
- **Gradient norm** (Wang et al. 2024, arXiv:2402.17012; open-unlearning ``mia/gradnorm.py``): the gradient of the
  sample's mean token NLL ``L = -(1/n) sum_t log p(x_t)`` with respect to every trainable parameter tensor
  ``theta_j``; the score is ``(1/J) sum_j ||dL/dtheta_j||_p`` with p = 2 (:func:`mean_parameter_norm`), one
  backward pass per sample.

Scores are returned as open-unlearning computes them before its sign convention; the TOFU suite stores them
"higher = member" (Min-K%++ as is, the gradient norm negated) and the community file negates both back.

Why eval mode for the gradient norm: open-unlearning calls ``model.train()`` before the backward pass, so a model
with dropout gets a random mask per sample and the score is a random draw from the global RNG. mrdkit runs the pass
in eval mode instead: the score is deterministic (house rule: same seed, same numbers), and for the models the
community evaluates (Llama / Phi / Gemma, ``attention_dropout = 0``, no hidden dropout) train and eval mode give
the same forward pass, so the numbers agree. The gradients come from ``torch.autograd.grad``: no ``.grad`` is
written to the model (open-unlearning zeroes and overwrites them).
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Iterator, Sequence

import torch

from mrdkit.data import EncodedSample, Sample, encode_samples, iter_batches, pad_id
from mrdkit.errors import MrdkitError
from mrdkit.evaluation.answers import eval_mode
from mrdkit.logprob import token_logprobs
from mrdkit.membership import min_k_plus_plus
from mrdkit.models import fit_max_length

NORMS = (1, 2, math.inf)


def encode_answers(model: Any, tokenizer: Any, samples: Sequence[Sample], *, template: str = "auto",
                   max_length: int = 512, encoding: str = "joint") -> list[EncodedSample]:
    """Question + answer + EOS, answer tokens scored: the encoding :func:`~mrdkit.evaluation.answers.answer_logprobs`
    scores (so every TOFU column of a sample sees the same tokens)."""
    return encode_samples(samples, tokenizer, template=template, token_set="answer",
                          max_length=fit_max_length(model, max_length), encoding=encoding)


def without_eos(values: torch.Tensor) -> torch.Tensor:
    """A sample's scored values without the final (EOS) label; a lone token is kept (nothing else to score)."""
    return values[:-1] if values.numel() > 1 else values


def min_k_plus_plus_scores(model: Any, tokenizer: Any, samples: Sequence[Sample], *, k: float = 0.4,
                           template: str = "auto", batch_size: int = 16, max_length: int = 512,
                           encoding: str = "joint") -> dict[str, float]:
    """``{sample_id: Min-K%++ score}`` (higher = member), one batched forward pass per ``batch_size`` samples."""
    encoded = encode_answers(model, tokenizer, samples, template=template, max_length=max_length, encoding=encoding)
    out: dict[str, float] = {}
    with eval_mode(model):
        for batch in iter_batches(encoded, batch_size, sort_by_length=True, pad_token_id=pad_id(tokenizer)):
            lp = token_logprobs(model, batch, moments=True)
            for row, sid in enumerate(batch["ids"]):
                keep = lp.mask[row]
                values, mu, var = (without_eos(t[row][keep]) for t in (lp.values, lp.mu, lp.var))
                out[sid] = min_k_plus_plus(values, mu, var, k)
    return out


def mean_parameter_norm(grads: Sequence[torch.Tensor | None], p: float = 2) -> float:
    """``(1/J) sum_j ||g_j||_p`` over the J parameter tensors that received a gradient (None entries skipped),
    accumulated in float64 (open-unlearning ``GradNormAttack``: ``torch.stack(norms).mean()``)."""
    if p not in NORMS:
        raise MrdkitError(f"gradient-norm p must be one of 1, 2, inf, got {p}")
    norms = [torch.linalg.vector_norm(g.detach().double(), ord=p) for g in grads if g is not None]
    if not norms:
        raise MrdkitError("no parameter received a gradient: cannot compute the gradient-norm attack")
    return float(torch.stack(norms).mean())


@contextlib.contextmanager
def trainable_parameters(model: torch.nn.Module) -> Iterator[list[torch.nn.Parameter]]:
    """The parameters that require grad; a fully frozen model (loaded for inference) has all of them switched on
    for the measurement and switched off again afterwards."""
    params = [p for p in model.parameters() if p.requires_grad]
    frozen = not params
    if frozen:
        params = list(model.parameters())
        for p in params:
            p.requires_grad_(True)
    try:
        yield params
    finally:
        if frozen:
            for p in params:
                p.requires_grad_(False)


def gradnorm_scores(model: Any, tokenizer: Any, samples: Sequence[Sample], *, p: float = 2, template: str = "auto",
                    max_length: int = 512, encoding: str = "joint") -> dict[str, float]:
    """``{sample_id: mean_j ||d L / d theta_j||_p}`` with L the mean token NLL of the answer without its EOS
    (higher = more loss = less member-like); one forward + backward per sample, in eval mode (module docstring)."""
    encoded = encode_answers(model, tokenizer, samples, template=template, max_length=max_length, encoding=encoding)
    out: dict[str, float] = {}
    with eval_mode(model), trainable_parameters(model) as params:
        for one in iter_batches(encoded, 1, pad_token_id=pad_id(tokenizer)):
            lp = token_logprobs(model, one, grad=True)
            loss = -without_eos(lp.values[0][lp.mask[0]]).mean()
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            out[one["ids"][0]] = mean_parameter_norm(grads, p)
    return out

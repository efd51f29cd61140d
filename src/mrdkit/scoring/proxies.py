"""Cheap per-sample difficulty baselines to compare with MRD (Feng et al. 2025, arXiv 2504.06658).

The paper's question is whether MRD predicts unlearning difficulty better than simple signals; these are the
simple signals, computed on the same batches as MRD (paper-notes section 4):

* ``loss``: mean token NLL ``-(1/n) sum_t l_t``; ``logprob``: ``sum_t l_t``; ``n_tokens``: n (length);
* ``grad_norm``: ``|| grad_theta sum_t -l_t ||_2`` over the trainable parameters (one backward per sample);
* ``min_k_20``, ``min_k_40``: Min-K% Prob (Shi et al. 2023, arXiv 2310.16789), mean of the lowest k% of l_t;
* ``zlib``: mean log-prob / zlib-compressed length of the text (Carlini et al. 2021), when texts are given.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Optional, Sequence

import torch

from mrdkit.logprob import token_logprobs
from mrdkit.membership import min_k_logprob, zlib_ratio
from mrdkit.scoring.engine import single_samples
from mrdkit.scoring.perturb import eval_mode, select_parameters

Batch = Mapping[str, Any]
DEFAULT_MIN_K = (0.2, 0.4)


def sample_grad_norm(model: torch.nn.Module, sample: Batch, params: Sequence[torch.Tensor]) -> float:
    """``|| d/dtheta sum_t -l_t(theta) ||_2`` for one sample, accumulated in float64.

    Uses ``torch.autograd.grad`` so no ``.grad`` is written to the model (a proxy must not change its state).
    """
    nll = -token_logprobs(model, sample, grad=True).sum().sum()
    grads = torch.autograd.grad(nll, list(params), allow_unused=True)
    return math.sqrt(sum(float(g.double().pow(2).sum()) for g in grads if g is not None))


def token_proxies(values: torch.Tensor, min_k: Sequence[float]) -> dict[str, float]:
    """Loss, log-prob, length and Min-K% scores from one sample's scored token log-probs ``values`` (1-D).

    ``loss = -(1/n) sum_t l_t``; ``min_k_<pct> = mean of the floor(k n) lowest l_t`` (Shi et al. 2023,
    arXiv 2310.16789); cited as baselines for MRD (arXiv 2504.06658).
    """
    n = int(values.numel())
    total = float(values.double().sum())
    out = {"loss": -total / n if n else math.nan, "logprob": total, "n_tokens": float(n)}
    for k in min_k:
        out[f"min_k_{round(100 * k)}"] = min_k_logprob(values, k)
    return out


def grad_norms(model: torch.nn.Module, batches: Iterable[Batch],
               param_pattern: Optional[str] = None) -> dict[str, float]:
    """Per-sample gradient norm of the summed NLL (a per-sample loop: one forward + backward each)."""
    params = [p for _, p in select_parameters(model, param_pattern)]
    return {sid: sample_grad_norm(model, sample, params) for sid, sample in single_samples(batches)}


def compute_proxies(model: torch.nn.Module, batches: Iterable[Batch], texts: Optional[Mapping[str, str]] = None,
                    grad_norm: bool = True, *, min_k: Sequence[float] = DEFAULT_MIN_K,
                    param_pattern: Optional[str] = None) -> dict[str, dict[str, float]]:
    """Baseline difficulty signals per sample id (see the module docstring for the formulas).

    Args:
        model: causal LM; run in eval mode, its state (weights, ``.grad``, train/eval mode) is left unchanged.
        batches: dicts with input_ids, attention_mask, labels (-100 = not scored), ids.
        texts: optional ``{id: text}`` for the zlib score (Carlini et al. 2021); ids without text get none.
        grad_norm: also compute the per-sample gradient norm (one backward per sample).
        min_k: fractions k for Min-K% Prob (Shi et al. 2023). param_pattern: parameters for the gradient norm.

    Returns:
        ``{id: {"loss", "logprob", "n_tokens", "min_k_20", "min_k_40", ["grad_norm"], ["zlib"]}}``.
    """
    batches = list(batches)
    out: dict[str, dict[str, float]] = {}
    with eval_mode(model):
        for batch in batches:
            lp = token_logprobs(model, batch)
            for sid, values in zip(batch["ids"], lp.rows()):
                row = token_proxies(values, min_k)
                if texts is not None and sid in texts:
                    row["zlib"] = zlib_ratio(-row["loss"], texts[sid])
                out[str(sid)] = row
        if grad_norm:
            for sid, norm in grad_norms(model, batches, param_pattern).items():
                out[sid]["grad_norm"] = norm
    return out

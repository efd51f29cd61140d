"""Membership-style scores of one sequence from its per-token log-probs (shared by proxies and MIA metrics):
Min-K%, Min-K%++ and zlib.

Conventions: every score here is "higher = more member-like" (more likely seen in training), so an AUC of
members vs non-members above 0.5 means the attack works.
"""

from __future__ import annotations

import math
import zlib

import torch


def min_k_logprob(values: torch.Tensor, k: float) -> float:
    """Min-K% Prob (Shi et al. 2023, arXiv:2310.16789): mean of the lowest ``floor(k * n)`` token log-probs.

    ``values`` is the 1-D tensor of a sample's scored token log-probs. At least one token is used. Higher =
    more member-like. MUSE's PrivLeak score is the negative of this with k = 0.4.
    """
    if not 0.0 < k <= 1.0:
        raise ValueError(f"k must be in (0, 1], got {k}")
    n = int(values.numel())
    if n == 0:
        return float("nan")
    m = max(1, int(math.floor(k * n)))
    lowest = torch.topk(values.to(torch.float64), m, largest=False).values
    return float(lowest.mean())


def min_k_plus_plus(values: torch.Tensor, mu: torch.Tensor, var: torch.Tensor, k: float,
                    min_var: float = 1e-6) -> float:
    """Min-K%++ (Zhang et al. 2024, arXiv:2404.02936): Min-K% of the standardised token log-probs.

    ``z_t = (log p(x_t) - mu_t) / sqrt(max(var_t, min_var))`` with ``mu_t``, ``var_t`` the mean and variance of
    ``log p`` under the model's own next-token distribution at position t (:func:`mrdkit.logprob.logprob_moments`);
    the score is the mean of the lowest ``max(1, floor(k * n))`` z_t (:func:`min_k_logprob` of z). Higher =
    more member-like. open-unlearning ``MinKPlusPlusAttack`` clamps the variance at 1e-6 the same way and reports
    the negative (its loss-like convention).
    """
    z = (values.double() - mu.double()) / var.double().clamp(min=min_var).sqrt()
    return min_k_logprob(z, k)


def zlib_entropy(text: str) -> int:
    """Length in bytes of the zlib-compressed UTF-8 text (Carlini et al. 2021, arXiv:2012.07805)."""
    return len(zlib.compress(text.encode("utf-8")))


def zlib_ratio(mean_logprob: float, text: str) -> float:
    """Zlib membership score: ``mean log-prob / zlib_entropy(text)`` (higher = more member-like).

    Carlini et al. compare the model's log-perplexity with the text's zlib entropy; dividing the (negative) mean
    log-prob by the compressed length keeps the "higher = member" convention.
    """
    return float(mean_logprob) / max(1, zlib_entropy(text))

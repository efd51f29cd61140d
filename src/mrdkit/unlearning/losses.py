"""Unlearning losses as pure functions of log-probs, logits or activations (no model in here).

Every function returns a scalar to MINIMISE. Conventions shared by all of them:

- ``logp_sum`` is a per-sequence log-likelihood ``log pi(y|x) = sum_t ell_t`` (shape (B,)), ``logp_mean`` the
  length-normalised ``(1/|y|) sum_t ell_t``; both come from :class:`mrdkit.logprob.TokenLogProbs`.
- Token-level terms (GA, NLL) average over all scored tokens of the batch, ``sum_i logp_sum_i / sum_i n_i``,
  which is what a Hugging Face causal-LM ``outputs.loss`` is and therefore what TOFU (Maini et al. 2024,
  arXiv:2401.06121) and open-unlearning use for GA / GradDiff.
- Preference-style terms (NPO, DPO) use sequence sums, as in their papers and in open-unlearning's
  ``compute_batch_nll``; SimNPO uses the length-normalised mean, which is its whole point.

These losses drive the baselines that the MRD paper (Feng et al., arXiv:2504.06658, section 3 of
``docs/paper-notes.md``) reorders with its curriculum sampler.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def token_mean(logp_sum: Tensor, n_tokens: Tensor | None = None) -> Tensor:
    """Mean log-prob per scored token over the whole batch.

    ``token_mean = sum_i logp_sum_i / sum_i n_i``; without ``n_tokens`` the plain batch mean of ``logp_sum``
    (use that form when the inputs are already per-sequence means).

    Args:
        logp_sum: (B,) per-sequence summed log-probs.
        n_tokens: (B,) scored-token counts, or None.
    """
    if n_tokens is None:
        return logp_sum.mean()
    return logp_sum.sum() / n_tokens.sum().clamp(min=1).to(logp_sum.dtype)


def nll_loss(logp_sum: Tensor, n_tokens: Tensor | None = None) -> Tensor:
    """Negative log-likelihood for gradient DESCENT on retain data.

    ``L_NLL = -(sum_i sum_t ell_{i,t}) / (sum_i n_i)``, the mean token NLL of the batch (the HF causal-LM loss).

    Args:
        logp_sum: (B,) per-sequence summed log-probs (or per-sequence means with ``n_tokens=None``).
        n_tokens: (B,) scored-token counts; None -> plain mean over the batch.
    """
    return -token_mean(logp_sum, n_tokens)


def ga_loss(logp_sum: Tensor, n_tokens: Tensor | None = None) -> Tensor:
    """Gradient-ascent forget loss: minimising it maximises the forget set's NLL.

    ``L_GA = -L_NLL = (sum_i sum_t ell_{i,t}) / (sum_i n_i)``, i.e. ``-outputs.loss`` as in TOFU's ``grad_ascent``
    and open-unlearning's ``GradAscent`` (Jang et al. 2023, arXiv:2210.01504; Maini et al. 2024).

    Args:
        logp_sum: (B,) per-sequence summed log-probs (or per-sequence means with ``n_tokens=None``).
        n_tokens: (B,) scored-token counts; None -> plain mean over the batch.
    """
    return token_mean(logp_sum, n_tokens)


def kl_loss(model_logits: Tensor, ref_logits: Tensor, mask: Tensor) -> Tensor:
    """Mean KL divergence from the reference (original) model to the current model at scored positions.

    ``L_KL = (1/|M|) sum_{(i,t) in M} KL(p_ref(.|x_<=t) || p_model(.|x_<=t))``
    ``     = (1/|M|) sum_{(i,t) in M} sum_v p_ref,v (log p_ref,v - log p_model,v)``.

    Direction as in TOFU's "KL" baseline and open-unlearning's ``compute_kl_divergence``:
    ``F.kl_div(log p_model, log p_ref, log_target=True)`` is ``KL(p_ref || p_model)``. Unlike them (who
    average over every position of the padded batch, prompt and padding included) we average over the scored
    positions ``M`` only, so padding never dilutes the loss. Log-softmax runs in float64 (house rule 1).

    Args:
        model_logits: (B, T, V) current-model logits (with grad).
        ref_logits: (B, T, V) reference-model logits at the same positions (no grad needed).
        mask: (B, T) bool, True where the position is scored.
    """
    logq = torch.log_softmax(model_logits.to(torch.float64), dim=-1)  # (B, T, V) current model
    logp = torch.log_softmax(ref_logits.to(torch.float64), dim=-1)  # (B, T, V) reference
    per_pos = (logp.exp() * (logp - logq)).sum(dim=-1)  # (B, T)
    mask = mask.to(per_pos.device)
    return (per_pos * mask).sum() / mask.sum().clamp(min=1)


def npo_loss(logp_seq: Tensor, ref_logp_seq: Tensor, beta: float) -> Tensor:
    """Negative Preference Optimization forget loss (Zhang et al. 2024, arXiv:2404.05868).

    ``L_NPO = -(2/beta) E[log sigmoid(-beta log(pi_theta(y|x) / pi_ref(y|x)))]``
    ``      =  (2/beta) E[softplus(beta (log pi_theta - log pi_ref))]``.
    At ``pi_theta = pi_ref`` it equals ``(2/beta) ln 2``; as beta -> 0 its gradient tends to GA's.

    Args:
        logp_seq: (B,) sequence log-likelihoods under the current model (with grad).
        ref_logp_seq: (B,) the same under the frozen reference model.
        beta: inverse temperature, > 0 (NPO default 0.1).
    """
    log_ratio = logp_seq - ref_logp_seq.to(logp_seq.dtype)  # (B,)
    return (2.0 / beta) * F.softplus(beta * log_ratio).mean()


def simnpo_loss(logp_mean: Tensor, beta: float, delta: float = 0.0) -> Tensor:
    """SimNPO forget loss: reference-free, length-normalised NPO (Fan et al. 2024, arXiv:2410.07163).

    With ``NLL = -(1/|y|) log pi_theta(y|x)``, as open-unlearning's ``SimNPO`` computes it:
    ``L = -(2/beta) E[log sigmoid(beta (NLL - delta))] = (2/beta) E[softplus(beta (logp_mean + delta))]``.
    The paper writes the margin outside the temperature, ``-(2/beta) log sigmoid(-(beta/|y|) log pi - gamma)``;
    the two agree with ``gamma = beta * delta``.

    Args:
        logp_mean: (B,) length-normalised log-likelihoods (with grad).
        beta: inverse temperature, > 0.
        delta: reward margin in NLL units (``delta = gamma / beta`` in the paper's notation).
    """
    return (2.0 / beta) * F.softplus(beta * (logp_mean + delta)).mean()


def dpo_loss(logp_win: Tensor, logp_lose: Tensor, ref_win: Tensor, ref_lose: Tensor, beta: float) -> Tensor:
    """DPO loss with the 2/beta scale used for unlearning ("IdkDPO": win = an "I don't know" answer,
    lose = the forget answer; Maini et al. 2024 TOFU; Zhang et al. 2024 NPO section 3).

    ``L = -(2/beta) E[log sigmoid(beta ((log pi(y_w) - log pi_ref(y_w)) - (log pi(y_l) - log pi_ref(y_l))))]``.
    Rafailov et al. 2023 (arXiv:2305.18290) omit the 2/beta factor; open-unlearning's ``compute_dpo_loss``
    keeps it, which makes NPO exactly this loss without its win term.

    Args:
        logp_win, logp_lose: (B,) sequence log-likelihoods under the current model (with grad).
        ref_win, ref_lose: (B,) the same under the frozen reference.
        beta: inverse temperature, > 0.
    """
    win = logp_win - ref_win.to(logp_win.dtype)  # (B,)
    lose = logp_lose - ref_lose.to(logp_lose.dtype)  # (B,)
    return -(2.0 / beta) * F.logsigmoid(beta * (win - lose)).mean()


def _masked_mse(a: Tensor, b: Tensor, mask: Tensor | None) -> Tensor:
    """Mean over masked positions of the per-position mean squared error over the hidden dimension."""
    per_pos = (a - b).pow(2).mean(dim=-1)  # (B, T)
    if mask is None:
        return per_pos.mean()
    mask = mask.to(per_pos.device)
    return (per_pos * mask).sum() / mask.sum().clamp(min=1)


def rmu_loss(activations: Tensor, control_vector: Tensor, coef: float, mask: Tensor | None = None) -> Tensor:
    """RMU forget loss: push the chosen layer's activations towards a scaled random direction.

    ``L_forget = (1/|M|) sum_{(i,t) in M} (1/D) ||h_{i,t} - c u||^2`` with ``u`` a unit vector and ``c`` the
    steering coefficient (Li et al. 2024, WMDP, arXiv:2403.03218). The 1/D factor matches the
    reference code's ``F.mse_loss`` (element mean), so its ``alpha`` / ``c`` values carry over.

    Args:
        activations: (B, T, D) hidden states of the updated model on forget data (with grad).
        control_vector: (D,) unit-norm direction u.
        coef: steering coefficient c.
        mask: (B, T) bool of positions to use; None = all.
    """
    target = coef * control_vector.to(activations.dtype)  # (D,) broadcast over (B, T)
    return _masked_mse(activations, target, mask)


def rmu_retain_loss(h_model: Tensor, h_frozen: Tensor, mask: Tensor | None = None) -> Tensor:
    """RMU retain loss: keep retain activations equal to the frozen model's (WMDP, arXiv:2403.03218).

    ``L_retain = (1/|M|) sum_{(i,t) in M} (1/D) ||h_updated - h_frozen||^2``.

    Args:
        h_model: (B, T, D) activations of the updated model (with grad).
        h_frozen: (B, T, D) activations of the frozen model.
        mask: (B, T) bool of positions to use; None = all.
    """
    return _masked_mse(h_model, h_frozen.to(h_model.dtype), mask)

"""The one primitive that touches the model: per-token log-probabilities of the label tokens.

For a batch with ``input_ids`` x (B, T) and ``labels`` y (B, T) (``-100`` = not scored), the value at position t
is ``ell_t = log softmax(logits_t)[y_{t+1}]`` for t = 0..T-2, computed in float64 so that MRD's tiny relative
changes are not swamped by rounding (paper-notes section 1). MRD, unlearning losses and metrics all call
:func:`token_logprobs`; nothing else runs the model forward for scoring.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch

IGNORE_INDEX = -100


@dataclass
class TokenLogProbs:
    """Per-token log-probs of label tokens with their mask.

    Attributes:
        values: (B, T-1) float64; ``log p(label_{t+1} | x_{<=t})``, 0 where masked.
        mask: (B, T-1) bool; True where the position is scored.
        correct: (B, T-1) bool or None; True where the label is the model's argmax (teacher forcing), False where
            masked. Used for token accuracy, exact memorisation and extraction strength.
        mu, var: (B, T-1) float64 or None (only with ``moments=True``): mean and variance of ``log p(v | x_<=t)``
            under the model's own next-token distribution, ``mu_t = sum_v p_v log p_v`` and
            ``var_t = sum_v p_v (log p_v)^2 - mu_t^2``; 0 where masked. Min-K%++ (Zhang et al. 2024,
            arXiv:2404.02936) standardises each token's log-prob with them.
    """

    values: torch.Tensor
    mask: torch.Tensor
    correct: torch.Tensor | None = None
    mu: torch.Tensor | None = None
    var: torch.Tensor | None = None

    def sum(self) -> torch.Tensor:
        """Sequence log-likelihood ``sum_t ell_t`` per sample, shape (B,)."""
        return self.values.sum(dim=-1)

    def count(self) -> torch.Tensor:
        """Number of scored tokens per sample, shape (B,)."""
        return self.mask.sum(dim=-1)

    def mean(self) -> torch.Tensor:
        """Length-normalised log-likelihood ``(1/n) sum_t ell_t`` per sample (0 for empty rows), shape (B,)."""
        return self.sum() / self.count().clamp(min=1).to(self.values.dtype)

    def detach(self) -> TokenLogProbs:
        """A copy without autograd history."""
        return TokenLogProbs(self.values.detach(), self.mask, self.correct,
                             None if self.mu is None else self.mu.detach(),
                             None if self.var is None else self.var.detach())

    def accuracy(self) -> torch.Tensor:
        """Teacher-forced token accuracy per sample (fraction of scored tokens that are the argmax), (B,)."""
        if self.correct is None:
            raise ValueError("token accuracy needs logits: call token_logprobs, not a bare TokenLogProbs")
        return self.correct.sum(dim=-1).to(torch.float64) / self.count().clamp(min=1).to(torch.float64)

    def rows(self) -> list[torch.Tensor]:
        """Per-sample 1-D tensors of the scored values (padding removed), in batch order."""
        return [v[m] for v, m in zip(self.values, self.mask)]


def shift_labels(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets for positions 0..T-2 and their mask: ``(labels[:, 1:], labels[:, 1:] != -100)``."""
    targets = labels[:, 1:]  # (B, T-1)
    return targets, targets != IGNORE_INDEX


def logprob_moments(logp: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance of ``log p`` under ``p`` itself at each position: ``(mu, var)``, both (B, T-1).

    ``mu_t = sum_v p_v log p_v`` (minus the entropy) and ``var_t = sum_v p_v (log p_v)^2 - mu_t^2``, the
    statistics Min-K%++ standardises with (open-unlearning ``MinKPlusPlusAttack.compute_score`` computes the same
    sums); zero where ``mask`` is False.
    """
    p = logp.exp()  # (B, T-1, V)
    # nan_to_num: a token with p = 0 (log p = -inf, e.g. a masked logit) contributes 0 * -inf = NaN otherwise
    mu = (p * logp).nan_to_num(nan=0.0).sum(-1)  # (B, T-1)
    var = (p * logp.square()).nan_to_num(nan=0.0).sum(-1) - mu.square()  # (B, T-1)
    return mu * mask, var * mask


def gather_logprobs(logits: torch.Tensor, labels: torch.Tensor, *, moments: bool = False) -> TokenLogProbs:
    """Log-probs of ``labels`` under ``logits`` (B, T, V) using float64 log-softmax.

    The logits at position t predict token t+1, so position T-1 is dropped and labels are shifted left.
    ``moments=True`` also fills ``mu`` / ``var`` (:func:`logprob_moments`).
    """
    targets, mask = shift_labels(labels)
    logp = torch.log_softmax(logits[:, :-1].to(torch.float64), dim=-1)  # (B, T-1, V)
    safe = targets.clamp(min=0).unsqueeze(-1)  # (B, T-1, 1); masked positions read token 0, then zeroed
    values = logp.gather(-1, safe).squeeze(-1) * mask  # (B, T-1)
    correct = (logits[:, :-1].argmax(dim=-1) == targets) & mask  # (B, T-1)
    mu, var = logprob_moments(logp, mask) if moments else (None, None)
    return TokenLogProbs(values=values, mask=mask, correct=correct, mu=mu, var=var)


def model_device(model: torch.nn.Module) -> torch.device:
    """Where the model's inputs go: the device of its first parameter (CPU for a parameterless module); for a model
    whose weights accelerate keeps in host memory (``cpu_offload``: parameters on the meta device, loaded module by
    module by hooks) the device those hooks execute on."""
    for p in model.parameters():
        if p.device.type == "meta":
            for module in model.modules():
                device = getattr(getattr(module, "_hf_hook", None), "execution_device", None)
                if device is not None:
                    return torch.device(device)
        return p.device
    return torch.device("cpu")


def no_grad_for(model: torch.nn.Module):
    """``torch.inference_mode()``, or ``torch.no_grad()`` for a model sharded with FSDP2 (DTensor parameters): FSDP
    keeps the gathered weights in buffers it refills in place on every forward, and a buffer first allocated under
    inference mode cannot be refilled by a later training forward."""
    sharded = any(type(p).__name__ == "DTensor" for p in model.parameters())
    return torch.no_grad() if sharded else torch.inference_mode()


def token_logprobs(model: torch.nn.Module, batch: Mapping[str, Any], *, grad: bool = False,
                   moments: bool = False) -> TokenLogProbs:
    """Run ``model`` on ``batch`` and return per-token log-probs of its labels.

    Args:
        model: a Hugging Face causal LM (anything returning ``.logits`` of shape (B, T, V)).
        batch: mapping with ``input_ids`` (B, T), ``attention_mask`` (B, T) and ``labels`` (B, T) where
            ``-100`` marks positions that are not scored. Right padding; padded positions must be -100.
        grad: keep the autograd graph (for losses); otherwise run under ``torch.inference_mode`` (:func:`no_grad_for`).
        moments: also return the per-position mean / variance of the log-probs under the model's next-token
            distribution (:func:`logprob_moments`; Min-K%++).

    Returns:
        :class:`TokenLogProbs` with float64 values of shape (B, T-1).
    """
    device = model_device(model)
    input_ids = batch["input_ids"].to(device)
    attention_mask = batch["attention_mask"].to(device)
    labels = batch["labels"].to(device)
    with torch.enable_grad() if grad else no_grad_for(model):
        logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
        return gather_logprobs(logits, labels, moments=moments)

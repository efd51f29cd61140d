"""A faithful re-implementation of the reference MRD loop (arXiv 2504.06658), the baseline of ``mrd_speed.py``.

The reference code scores one sample at a time (batch size 1) and, for every sample and every draw k, reloads the
saved state dict, re-runs the unperturbed forward, seeds the global RNG with ``42 + k`` and adds
``randn_like(p) * sigma`` to every parameter in ``named_parameters`` order.

Loaded by the entry scripts through ``common.load("reference_loop")``.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Optional, Sequence

import mrdkit_benchmarks_common as common  # registered by the entry script (see common.load)


def reference_inputs(batches: Sequence[dict], device: str) -> list[tuple[Any, Any]]:
    """Per-sample unpadded ``(input_ids, labels)`` of shape (1, L), cut from mrdkit's right-padded batches so both
    implementations score exactly the same tokens."""
    out = []
    for batch in batches:
        for i in range(batch["input_ids"].shape[0]):
            length = int(batch["attention_mask"][i].sum())
            out.append((batch["input_ids"][i:i + 1, :length].to(device), batch["labels"][i:i + 1, :length].to(device)))
    return out


def _reference_logprobs(model, input_ids, labels):
    """Scored token log-probs of one unpadded sample, (n,) float64.

    The log-softmax is taken in float64 as mrdkit does (with float64 weights the logits already are), so the
    value check compares the estimator, not two log-softmax precisions.
    """
    import torch

    with torch.no_grad():
        logits = model(input_ids=input_ids, use_cache=False).logits  # (1, L, V)
    logp = torch.log_softmax(logits[0, :-1].to(torch.float64), dim=-1)  # (L-1, V)
    targets = labels[0, 1:]  # (L-1,)
    mask = targets != -100
    return logp.gather(-1, targets.clamp(min=0)[:, None])[:, 0][mask]


def reference_loop(model, inputs: Sequence[tuple[Any, Any]], draws: int, sigma: float,
                   stats: Optional[dict[str, float]] = None, device: str = "cpu") -> tuple[list, list]:
    """The reference estimator, loop for loop: ``MRD = |(1/K) sum_k sum_t (l_t - l'_t) / l_t|`` per sample.

    ``stats`` (CPU only) receives the time spent reloading the state dict, in forward passes and adding noise.

    Returns:
        (mrd per sample, per-sample lists of the K per-draw relative changes r_k).
    """
    import torch

    def phase(key: str):
        return common.timed(device, stats, key) if stats is not None else nullcontext()

    saved_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    mrds, raws = [], []
    with torch.random.fork_rng(devices=devices):  # the reference seeds the global RNG; leave it as it was
        for input_ids, labels in inputs:
            rs = []
            for k in range(draws):
                with phase("reload_s"):
                    model.load_state_dict(saved_state)
                with phase("forward_s"):
                    base = _reference_logprobs(model, input_ids, labels)  # re-run for every draw, as the reference
                with phase("noise_s"):
                    torch.manual_seed(42 + k)
                    with torch.no_grad():
                        for _, p in model.named_parameters():
                            p.add_(torch.randn_like(p) * sigma)
                with phase("forward_s"):
                    perturbed = _reference_logprobs(model, input_ids, labels)
                valid = base != 0  # the reference skips tokens with l_t == 0
                rs.append(((base[valid] - perturbed[valid]) / base[valid]).sum().item())
            raws.append(rs)
            mrds.append(abs(sum(rs) / draws))
    model.load_state_dict(saved_state)
    return mrds, raws

"""Hutchinson trace of the per-sample MRD objective: an exact check of what MRD measures.

Per sample define ``f(theta) = sum_t l_t(theta) / l_t(theta_0)`` with the base log-probs ``l_t(theta_0)`` held
constant (tokens with ``l_t(theta_0) == 0`` skipped, as in MRD). Its Hessian is ``H_f = sum_t H_t / l_t(theta_0)``.
Hutchinson (1989): for Rademacher ``v`` (entries +-1), ``E[v^T H v] = tr(H)``; each ``v^T H v`` costs one
Hessian-vector product by double backward, which needs eager attention (fused SDPA/flash kernels on CPU have no
second derivative).

Second-order prediction for the antithetic curvature part (arXiv 2504.06658, Theorem 3.2 reconstructed): with
``l_t(theta +- delta) = l_t +- g_t^T delta + (1/2) delta^T H_t delta +- O(|delta|^3) + O(|delta|^4)``,

    c = sum_t (l_t - (l+_t + l-_t)/2) / l_t = -(1/2) sum_t delta^T H_t delta / l_t + O(sigma^4)
      = -(1/2) delta^T H_f delta + O(sigma^4),

and ``E[delta^T H_f delta] = sigma^2 tr(H_f)`` for ``delta ~ N(0, sigma^2 I)``, hence

    E[c] = -(sigma^2 / 2) tr(H_f),        MRD ~ (sigma^2 / 2) |tr(H_f)|.

For relative noise ``delta = sigma |theta_0| * z`` the trace becomes ``tr(D H_f D)`` with ``D = diag|theta_0|``,
estimated with probes ``D v``.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping, Optional

import torch

from mrdkit.errors import MrdkitError
from mrdkit.logprob import token_logprobs
from mrdkit.scoring.engine import single_samples
from mrdkit.scoring.estimators import mean_and_stderr
from mrdkit.scoring.perturb import eval_mode, select_parameters
from mrdkit.seeding import make_generator

Batch = Mapping[str, Any]


@dataclass
class HutchinsonResult:
    """Per-sample Hutchinson estimates of ``tr(H_f)``.

    Attributes:
        ids: sample ids. values: (N, P) ``v_j^T H_f v_j`` per probe. trace, stderr: (N,) mean and its standard
        error over probes. n_tokens: (N,) scored tokens. relative: whether probes were scaled by ``|theta_0|``.
    """

    ids: list[str]
    values: torch.Tensor
    trace: torch.Tensor
    stderr: torch.Tensor
    n_tokens: torch.Tensor
    relative: bool = False

    def predicted_curvature(self, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Predicted antithetic curvature mean ``E[c] = -(sigma^2/2) tr(H_f)`` and its stderr (see module doc)."""
        return predicted_curvature(self.trace, sigma), (sigma ** 2 / 2) * self.stderr


def predicted_curvature(trace: torch.Tensor, sigma: float) -> torch.Tensor:
    """Second-order prediction of the antithetic curvature part: ``E[c] = -(sigma^2 / 2) tr(H_f)``.

    Derived from the Taylor expansion in the module docstring (arXiv 2504.06658, Thm 3.2; Hutchinson 1989).
    """
    return -(float(sigma) ** 2 / 2) * trace


@contextmanager
def eager_attention(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Temporarily switch a Hugging Face model to eager attention (double backward needs it), then switch back.

    Raises:
        MrdkitError: the model uses another attention kernel and cannot be switched.
    """
    config = getattr(model, "config", None)
    current = getattr(config, "_attn_implementation", None)
    if current in (None, "eager"):
        yield model
        return
    if not hasattr(model, "set_attn_implementation"):
        raise MrdkitError(f"Hessian-vector products need eager attention, model uses {current!r}; load it with "
                          "attn_implementation='eager'")
    model.set_attn_implementation("eager")
    try:
        yield model
    finally:
        model.set_attn_implementation(current)


def rademacher_probe(params: list[tuple[str, torch.Tensor]], seed: int, index: int,
                     scale: Optional[list[torch.Tensor]] = None) -> list[torch.Tensor]:
    """Probe ``index``: Rademacher (+-1) entries per parameter from ``make_generator(seed, "hutchinson", index, name)``.

    The same probes are used for every sample (common random numbers). ``scale`` multiplies element-wise
    (``|theta_0|`` for relative noise).
    """
    probe = []
    for j, (name, p) in enumerate(params):
        gen = make_generator(seed, "hutchinson", int(index), name, device=str(p.device))
        v = torch.randint(0, 2, p.shape, generator=gen, device=p.device).to(p.dtype).mul_(2).sub_(1)
        probe.append(v * scale[j] if scale is not None else v)
    return probe


def relative_objective(model: torch.nn.Module, sample: Batch) -> tuple[torch.Tensor, int]:
    """``f(theta) = sum_t l_t(theta) / l_t(theta_0)`` with the denominator detached, and the token count."""
    lp = token_logprobs(model, sample, grad=True)
    base = lp.values.detach()
    valid = lp.mask & (base != 0)
    return (lp.values[valid] / base[valid]).sum(), int(lp.mask.sum())


def sample_quadratic_forms(model: torch.nn.Module, sample: Batch, params: list[tuple[str, torch.Tensor]],
                           probes: int, seed: int, scale: Optional[list[torch.Tensor]]) -> tuple[torch.Tensor, int]:
    """``v_j^T H_f v_j`` for ``j < probes`` on one sample: one gradient graph, one double backward per probe."""
    tensors = [p for _, p in params]
    f, n_tokens = relative_objective(model, sample)
    grads = torch.autograd.grad(f, tensors, create_graph=True, allow_unused=True)
    # parameters f does not use, or uses only linearly, contribute 0 to v^T H v
    live = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
    out = torch.zeros(probes, dtype=torch.float64)
    for j in range(probes if live else 0):
        v = rademacher_probe(params, seed, j, scale)
        gv = sum((grads[i] * v[i]).sum() for i in live)
        hv = torch.autograd.grad(gv, [tensors[i] for i in live], retain_graph=j < probes - 1, allow_unused=True)
        out[j] = sum(float((h.double() * v[i].double()).sum()) for h, i in zip(hv, live) if h is not None)
    return out, n_tokens


def hutchinson_trace(model: torch.nn.Module, batches: Iterable[Batch], *, probes: int = 64, seed: int = 0,
                     param_pattern: Optional[str] = None, relative: bool = False) -> HutchinsonResult:
    """Per-sample Hutchinson estimate of ``tr(H_f)``, ``f = sum_t l_t(theta)/l_t(theta_0)`` (Hutchinson 1989).

    ``tr(H_f) ~ (1/P) sum_j v_j^T H_f v_j`` with Rademacher ``v_j``; stderr = ``std_j / sqrt(P)``. Use
    :meth:`HutchinsonResult.predicted_curvature` to compare with the antithetic MRD estimator (arXiv
    2504.06658): ``E[c] = -(sigma^2/2) tr(H_f)``. Gradients are taken with ``torch.autograd.grad``, so no
    ``.grad`` is left on the model; the model runs in eval mode with eager attention.

    Args:
        model: causal LM (float64 recommended). batches: as for :func:`mrdkit.scoring.engine.score_batches`.
        probes: number of probe vectors P. seed: probe seed. param_pattern: regex for the parameter subset.
        relative: estimate ``tr(D H_f D)``, ``D = diag|theta_0|`` (matches relative noise).
    """
    if probes < 1:
        raise MrdkitError(f"probes must be >= 1, got {probes}")
    params = select_parameters(model, param_pattern)
    scale = [p.detach().abs() for _, p in params] if relative else None
    ids, rows, counts = [], [], []
    with eval_mode(model), eager_attention(model):
        for sid, sample in single_samples(batches):
            values, n = sample_quadratic_forms(model, sample, params, probes, seed, scale)
            ids.append(sid)
            rows.append(values)
            counts.append(n)
    values = torch.stack(rows) if rows else torch.zeros(0, probes, dtype=torch.float64)
    trace, stderr = mean_and_stderr(values)  # stderr is inf for a single probe
    return HutchinsonResult(ids, values, trace, stderr, torch.tensor(counts, dtype=torch.long), relative)

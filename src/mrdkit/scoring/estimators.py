"""MRD estimators: math on per-token log-probs, no models (Feng et al. 2025, arXiv 2504.06658).

Notation: ``l_t = log p(x_t | x_<t; theta)`` (base), ``l'_t`` the same under ``theta + delta_k``. Per-sample token
rows are padded ``(N, T)`` float64 tensors with a bool mask. The per-draw, per-sample reduction is the paper's
relative change

    r_k = sum_t (l_t - l'_t) / l_t        (scored tokens with l_t != 0; tokens with l_t == 0 are skipped)

Estimators are streaming accumulators that receive one draw's ``(N,)`` values at a time, so a caller never holds
``(N, T, K)``; they keep the per-draw ``(N, K)`` values for raw-draw output and bit-exact resume.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence, Union

import torch

from mrdkit.errors import MrdkitError
from mrdkit.registry import Registry

ESTIMATORS: Registry = Registry("estimator")


@dataclass
class EstimateResult:
    """Per-sample MRD estimate with its Monte Carlo uncertainty and raw draws.

    Attributes:
        estimator: registry name (``paper`` or ``antithetic``).
        draws: draw indices, in column order.
        values: (N, K) per-draw values whose mean is the signed estimate (paper: r_k; antithetic: c_k).
        mean: (N,) signed mean over draws.
        stderr: (N,) ``std(values, ddof=1) / sqrt(K)`` (inf when K < 2).
        mrd: (N,) ``|mean|``, clipped at ``clip`` when one was given.
        unresolved: (N,) bool, ``|mean| < 2 * stderr`` (K is too small to tell the sign/size from noise), a
            non-finite mean or stderr, or zero variance (:func:`unresolved_mask`).
        first_order_values, first_order_mean, first_order_stderr, first_order_spread: antithetic only; the odd
            (gradient) part f_k, its mean and standard error, and its spread ``std(f_k)`` (~ sigma * ||g|| in the
            relative units of r).
    """

    estimator: str
    draws: list[int]
    values: torch.Tensor
    mean: torch.Tensor
    stderr: torch.Tensor
    mrd: torch.Tensor
    unresolved: torch.Tensor
    first_order_values: Optional[torch.Tensor] = None
    first_order_mean: Optional[torch.Tensor] = None
    first_order_stderr: Optional[torch.Tensor] = None
    first_order_spread: Optional[torch.Tensor] = None


def masked_row_sums(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``sum_t values[i, t]`` over ``mask[i]`` for each row, shape (N,), float64.

    Each row's scored values are extracted and summed on their own, so the result is bitwise independent of
    how much right padding the batch has (a padded-row reduction may split lanes differently per width).
    """
    values = values.to(torch.float64)
    if values.shape[0] == 0:
        return values.new_zeros(0)
    return torch.stack([row[m].sum() for row, m in zip(values, mask)])


def relative_change(base: torch.Tensor, perturbed: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-sample relative change ``r = sum_t (l_t - l'_t) / l_t`` (arXiv 2504.06658, MRD inner term).

    Args:
        base: (N, T) base log-probs ``l_t``.
        perturbed: (N, T) perturbed log-probs ``l'_t``.
        mask: (N, T) bool, scored positions. Positions with ``l_t == 0`` are skipped, as in the reference code.

    Returns:
        (N,) float64.
    """
    base, perturbed = base.to(torch.float64), perturbed.to(torch.float64)
    valid = mask & (base != 0)
    rel = (base - perturbed) / torch.where(valid, base, torch.ones_like(base))  # (N, T); invalid -> ignored
    return masked_row_sums(rel, valid)


def mean_and_stderr(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean over draws (dim 1) and its standard error ``std(ddof=1) / sqrt(K)``; stderr is inf when K < 2."""
    k = values.shape[1]
    mean = values.mean(dim=1)
    if k < 2:
        return mean, torch.full_like(mean, math.inf)
    return mean, values.std(dim=1, correction=1) / math.sqrt(k)


def unresolved_mask(mean: torch.Tensor, stderr: torch.Tensor) -> torch.Tensor:
    """(N,) bool: the estimate cannot be told from Monte Carlo noise, ``|mean| < 2 * stderr`` (about a 95% interval
    around the mean that holds 0), or is not a usable number at all: a non-finite mean or stderr, or zero variance
    (``stderr == 0``: every draw gave the same value, which happens when the noise never changed the log-probs)."""
    finite = torch.isfinite(mean) & torch.isfinite(stderr)
    return ~finite | (stderr == 0) | (mean.abs() < 2 * stderr)


def _mrd(mean: torch.Tensor, stderr: torch.Tensor, clip: Optional[float]) -> tuple[torch.Tensor, torch.Tensor]:
    mrd = mean.abs()
    if clip is not None:
        mrd = mrd.clamp(max=float(clip))
    return mrd, unresolved_mask(mean, stderr)


class Accumulator:
    """Streaming store of per-draw per-sample values for one estimator.

    ``add(draw, *rs)`` takes one ``(N,)`` tensor of relative changes r per sign in :attr:`signs` (paper: r for
    +delta; antithetic: r for +delta and for -delta of the same draw). Draws must arrive as 0, 1, 2, ...
    ``state_dict()`` / :meth:`from_state` checkpoint exactly, so a resumed run is bitwise identical.
    """

    name = ""
    signs: tuple[int, ...] = (1,)

    def __init__(self, n: int, *, meta: Optional[Mapping[str, Any]] = None) -> None:
        self.n = int(n)
        self.meta: dict[str, Any] = dict(meta or {})
        self._cols: list[list[torch.Tensor]] = [[] for _ in self.signs]

    @property
    def num_draws(self) -> int:
        """Number of draws added so far (the next draw index)."""
        return len(self._cols[0])

    def add(self, draw: int, *rs: torch.Tensor) -> None:
        """Add draw ``draw``: one (N,) tensor per sign, in the order of :attr:`signs`."""
        if draw != self.num_draws:
            raise MrdkitError(f"{self.name} accumulator expected draw {self.num_draws}, got {draw}")
        if len(rs) != len(self.signs):
            raise ValueError(f"{self.name} needs {len(self.signs)} value vectors per draw, got {len(rs)}")
        for col, r in zip(self._cols, rs):
            if r.shape != (self.n,):
                raise ValueError(f"expected shape ({self.n},), got {tuple(r.shape)}")
            col.append(r.detach().to("cpu", torch.float64).clone())

    def raw(self) -> torch.Tensor:
        """(S, N, K) raw relative changes, S = number of signs."""
        if self.num_draws == 0:
            return torch.zeros(len(self.signs), self.n, 0, dtype=torch.float64)
        return torch.stack([torch.stack(col, dim=1) for col in self._cols])

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue: estimator name, N, meta, and the raw (S, N, K) values."""
        return {"estimator": self.name, "n": self.n, "meta": dict(self.meta), "raw": self.raw().clone()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Replace this accumulator's contents with ``state`` (from :meth:`state_dict`)."""
        if state["estimator"] != self.name:
            raise MrdkitError(f"checkpoint is for estimator {state['estimator']!r}, not {self.name!r}")
        raw = torch.as_tensor(state["raw"], dtype=torch.float64)
        if raw.shape[:2] != (len(self.signs), int(state["n"])):
            raise MrdkitError(f"checkpoint values have shape {tuple(raw.shape)}; expected ({len(self.signs)}, N, K)")
        self.n, self.meta = int(state["n"]), dict(state.get("meta", {}))
        self._cols = [[raw[s, :, k].clone() for k in range(raw.shape[2])] for s in range(raw.shape[0])]

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Accumulator:
        """A new accumulator of this class holding ``state``."""
        acc = cls(int(state["n"]))
        acc.load_state_dict(state)
        return acc

    def finalize(self, clip: Optional[float] = None) -> EstimateResult:  # pragma: no cover - abstract
        raise NotImplementedError


@ESTIMATORS.register("paper", passes_per_draw=1, citation="arXiv 2504.06658 (reference code)",
                     summary="|mean_k r_k|, r_k = sum_t (l_t - l_t(theta+delta_k)) / l_t")
class PaperAccumulator(Accumulator):
    """The paper's estimator: ``MRD = | (1/K) sum_k r_k |`` with ``r_k = sum_t (l_t - l'_t)/l_t`` (arXiv 2504.06658).

    At small K it is dominated by the zero-mean first-order term ``g^T delta`` (paper-notes section 2); check
    :attr:`EstimateResult.unresolved`. ``clip=2.0`` reproduces the reference code paths that clip at 2.
    """

    name = "paper"
    signs = (1,)

    def finalize(self, clip: Optional[float] = None) -> EstimateResult:
        """Mean, stderr and MRD of the draws so far."""
        values = self.raw()[0]  # (N, K)
        mean, stderr = mean_and_stderr(values)
        mrd, unresolved = _mrd(mean, stderr, clip)
        return EstimateResult(self.name, list(range(self.num_draws)), values, mean, stderr, mrd, unresolved)


@ESTIMATORS.register("antithetic", passes_per_draw=2, citation="arXiv 2504.06658; antithetic variates",
                     summary="|mean_k c_k|, c_k = sum_t (l_t - (l+_t + l-_t)/2) / l_t (curvature part)")
class AntitheticAccumulator(Accumulator):
    """Antithetic pairs (+delta_k, -delta_k) split r into its even (curvature) and odd (gradient) parts.

    With ``r+_k, r-_k`` the paper's r for +delta_k and -delta_k:

        c_k = sum_t (l_t - (l+_t + l-_t)/2) / l_t = (r+_k + r-_k) / 2     (curvature part)
        f_k = sum_t ((l-_t - l+_t)/2) / l_t       = (r+_k - r-_k) / 2     (first-order part)

    so ``c_k + f_k = r+_k`` and ``c_k - f_k = r-_k``, and the paper estimator's mean over all 2K draws equals
    ``mean_k c_k``. ``MRD = |mean_k c_k|``; by Taylor expansion ``E[c_k] = -(sigma^2/2) tr(H_f)`` with
    ``f = sum_t l_t(theta)/l_t(theta_0)`` (see :mod:`mrdkit.scoring.curvature`). ``std_k f_k`` estimates
    ``sigma * ||grad f||``, the noise that swamps the paper estimator (arXiv 2504.06658; paper-notes sec. 2).
    """

    name = "antithetic"
    signs = (1, -1)

    def finalize(self, clip: Optional[float] = None) -> EstimateResult:
        """Curvature mean/stderr/MRD plus first-order mean, stderr and spread."""
        plus, minus = self.raw()  # (N, K) each
        curv, first = (plus + minus) / 2, (plus - minus) / 2
        mean, stderr = mean_and_stderr(curv)
        f_mean, f_stderr = mean_and_stderr(first)
        spread = first.std(dim=1, correction=1) if first.shape[1] > 1 else torch.full_like(f_mean, math.inf)
        mrd, unresolved = _mrd(mean, stderr, clip)
        return EstimateResult(self.name, list(range(self.num_draws)), curv, mean, stderr, mrd, unresolved,
                              first, f_mean, f_stderr, spread)


def make_accumulator(name: str, n: int, *, meta: Optional[Mapping[str, Any]] = None) -> Accumulator:
    """A fresh accumulator for the estimator registered as ``name`` (did-you-mean on unknown names)."""
    return ESTIMATORS.get(name)(n, meta=meta)


def accumulator_from_state(state: Mapping[str, Any]) -> Accumulator:
    """Rebuild an accumulator from :meth:`Accumulator.state_dict` output (e.g. a loaded checkpoint)."""
    return ESTIMATORS.get(state["estimator"]).from_state(state)


def resume_accumulator(accumulator: Union[Accumulator, Mapping[str, Any], None], start_draw: int,
                       name: str, n: int, meta: dict[str, Any]) -> Accumulator:
    """A fresh accumulator, or the given one (object or state) after checking it fits this run.

    Resuming needs the same estimator, ``num_draws == start_draw`` and equal ``meta`` (sigma, seed, ids...).
    """
    if accumulator is None:
        if start_draw != 0:
            raise MrdkitError(f"start_draw={start_draw} needs the accumulator state of the interrupted run")
        return make_accumulator(name, n, meta=meta)
    acc = accumulator_from_state(accumulator) if isinstance(accumulator, Mapping) else accumulator
    if acc.name != name or acc.num_draws != start_draw:
        raise MrdkitError(f"checkpoint holds {acc.num_draws} {acc.name!r} draws; cannot resume {name!r} at "
                          f"draw {start_draw}")
    diff = {k: (acc.meta.get(k), v) for k, v in meta.items() if acc.meta.get(k) != v}
    if diff:
        raise MrdkitError(f"checkpoint was made with different settings (saved, now): {diff}")
    return acc


def paper_estimate(base: torch.Tensor, perturbed: Sequence[torch.Tensor] | torch.Tensor, mask: torch.Tensor, *,
                   clip: Optional[float] = None) -> EstimateResult:
    """Paper MRD from padded token log-probs: base (N, T), perturbed (K, N, T), mask (N, T).

    ``MRD = | (1/K) sum_k sum_t (l_t - l'_{k,t}) / l_t |`` (arXiv 2504.06658), optionally clipped.
    """
    acc = PaperAccumulator(base.shape[0])
    for k, pert in enumerate(perturbed):
        acc.add(k, relative_change(base, pert, mask))
    return acc.finalize(clip)


def antithetic_estimate(base: torch.Tensor, plus: Sequence[torch.Tensor] | torch.Tensor,
                        minus: Sequence[torch.Tensor] | torch.Tensor, mask: torch.Tensor, *,
                        clip: Optional[float] = None) -> EstimateResult:
    """Antithetic MRD from padded token log-probs: base (N, T), plus/minus (K, N, T) under +-delta_k, mask (N, T).

    ``MRD = | (1/K) sum_k c_k |`` with ``c_k = sum_t (l_t - (l+_{k,t} + l-_{k,t})/2) / l_t`` (arXiv 2504.06658,
    antithetic variant; see :class:`AntitheticAccumulator`).
    """
    if len(plus) != len(minus):
        raise ValueError(f"plus has {len(plus)} draws but minus has {len(minus)}")
    acc = AntitheticAccumulator(base.shape[0])
    for k, (p, m) in enumerate(zip(plus, minus)):
        acc.add(k, relative_change(base, p, mask), relative_change(base, m, mask))
    return acc.finalize(clip)

"""Exact Gaussian weight perturbations for MRD (Feng et al. 2025, arXiv 2504.06658).

MRD compares log-probs at theta and at theta + delta with delta ~ N(0, sigma^2 I). Two facts shape this module
(paper-notes section 1): subtracting the same noise again does NOT restore the weights bit-exactly (~5% of
elements end 1 ulp off), so every perturbation is undone by ``copy_`` from a saved clone; and bf16/fp16 weights
cannot represent a 1e-5 change at all, so they are refused. One :class:`Perturber` holds a single clone for a
whole scoring run, so peak extra memory is one copy of the perturbed parameters plus one noise buffer.

Noise schemes:

* ``"mrdkit"``: draw k of parameter ``name`` comes from ``make_generator(seed, "mrd-noise", k, name)``, so the
  noise does not depend on parameter order, on which subset is perturbed, or on how draws are split over runs.
* ``"reference"``: the authors' code, ``torch.manual_seed(42 + k)`` then ``randn_like(p) * sigma`` for every
  parameter in ``model.named_parameters()`` order; reproduced with a private generator (never the global RNG).
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from typing import Iterator, Optional, Sequence

import torch

from mrdkit.errors import MrdkitError
from mrdkit.seeding import make_generator

NamedParams = list[tuple[str, torch.nn.Parameter]]
SCHEMES = ("mrdkit", "reference")
REFERENCE_SEED_OFFSET = 42  # the reference code seeds draw k with 42 + k
_HALF = (torch.bfloat16, torch.float16)


def select_parameters(model: torch.nn.Module, pattern: Optional[str] = None) -> NamedParams:
    """Trainable parameters to perturb, sorted by name.

    Args:
        model: any module; tied parameters appear once (``named_parameters`` de-duplicates them).
        pattern: optional regular expression; keeps names where ``re.search(pattern, name)`` matches.

    Returns:
        ``[(name, parameter), ...]`` sorted by name. MRD (arXiv 2504.06658) perturbs every trainable parameter,
        which is the default.

    Raises:
        MrdkitError: the pattern is invalid or selects nothing.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if pattern is not None:
        try:
            rx = re.compile(pattern)
        except re.error as exc:
            raise MrdkitError(f"invalid parameter pattern {pattern!r}: {exc}") from exc
        named = [(n, p) for n, p in named if rx.search(n)]
    if not named:
        raise MrdkitError(f"no trainable parameters match pattern {pattern!r}")
    return sorted(named, key=lambda item: item[0])


def _check_dtype(name: str, p: torch.Tensor) -> None:
    if p.dtype in _HALF:
        raise MrdkitError(
            f"parameter {name!r} is {p.dtype}: a sigma ~ 1e-5 perturbation is below its resolution (most weights "
            "would not change at all); load the model in float32 or float64 to score MRD"
        )
    if not p.is_floating_point():
        raise MrdkitError(f"parameter {name!r} has non-floating dtype {p.dtype} and cannot be perturbed")


def add_noise(p: torch.Tensor, clone: torch.Tensor, z: torch.Tensor, scale: float, relative: bool) -> None:
    """``p += scale * z`` (``scale * |clone| * z`` when ``relative``), overwriting ``z``; the one rounding rule.

    Every perturbation mode calls this, so they agree bit for bit. delta is rounded on its own, then added (as
    the reference's ``p + randn_like(p) * sigma``): a fused ``add_(z, alpha=sigma)`` differs by 1 ulp in ~5% of
    elements, and -delta is then exactly -(+delta).
    """
    if relative:
        z.mul_(clone.abs())
    p.add_(z.mul_(scale))


class PerturbedParams:
    """What every perturber exposes about its ``params`` list of (name, parameter)."""

    params: list

    @property
    def names(self) -> list[str]:
        """Names of the perturbed parameters, in the order they are stored."""
        return [n for n, _ in self.params]

    @property
    def n_elements(self) -> int:
        """Total number of perturbed scalars (the dimension d of delta)."""
        return sum(p.numel() for _, p in self.params)


class Perturber(PerturbedParams):
    """Applies draw k of the MRD noise to a set of parameters and restores them bit-exactly.

    ``apply(k, sign)`` sets ``theta = theta_0 + sign * sigma * z_k`` (or ``theta_0 + sign * sigma * |theta_0| * z_k``
    when ``relative``), with ``z_k ~ N(0, I)`` drawn in each parameter's dtype on its device; ``restore()`` copies
    ``theta_0`` back from one clone taken at construction. Use as a context manager so that the parameters are
    restored even when an exception escapes (design rule 6).

    Args:
        model: the module owning the parameters (the reference scheme needs its parameter order).
        params: ``[(name, parameter)]`` to perturb; default :func:`select_parameters` (all trainable).
        sigma: noise standard deviation (the paper uses 1e-5), >= 0.
        seed: run seed for the ``"mrdkit"`` scheme (ignored by ``"reference"``, which seeds 42 + k).
        relative: scale the noise by ``|theta_0|`` element-wise.
        scheme: ``"mrdkit"`` or ``"reference"`` (see the module docstring).
    """

    def __init__(self, model: torch.nn.Module, params: Optional[Sequence[tuple[str, torch.Tensor]]] = None, *,
                 sigma: float, seed: int = 0, relative: bool = False, scheme: str = "mrdkit") -> None:
        if scheme not in SCHEMES:
            raise MrdkitError(f"unknown noise scheme {scheme!r} (known: {', '.join(SCHEMES)})")
        if not sigma >= 0:
            raise MrdkitError(f"sigma must be >= 0, got {sigma}")
        self.model, self.sigma, self.seed = model, float(sigma), int(seed)
        self.relative, self.scheme = bool(relative), scheme
        self.params = list(params) if params is not None else select_parameters(model)
        for name, p in self.params:
            _check_dtype(name, p)
        with torch.no_grad():  # the one saved copy, reused by every draw
            self._clones = [p.detach().clone() for _, p in self.params]
        self._sizes: dict[tuple[torch.device, torch.dtype], int] = {}
        for _, p in self.params:
            key = (p.device, p.dtype)
            self._sizes[key] = max(self._sizes.get(key, 0), p.numel())
        self._buffers: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}
        self._dirty = False

    def _noise_buffer(self, p: torch.Tensor) -> torch.Tensor:
        """A view of a reusable flat buffer shaped like ``p``: one param-sized buffer per (device, dtype)."""
        key = (p.device, p.dtype)
        if key not in self._buffers:
            self._buffers[key] = torch.empty(self._sizes[key], dtype=p.dtype, device=p.device)
        return self._buffers[key][: p.numel()].view(p.shape)

    def _add(self, p: torch.Tensor, clone: torch.Tensor, z: torch.Tensor, sign: int) -> None:
        add_noise(p, clone, z, sign * self.sigma, self.relative)

    def _noises_mrdkit(self, draw: int) -> Iterator[tuple[int, torch.Tensor]]:
        for i, (name, p) in enumerate(self.params):
            gen = make_generator(self.seed, "mrd-noise", int(draw), name, device=str(p.device))
            yield i, self._noise_buffer(p).normal_(generator=gen)

    def _noises_reference(self, draw: int) -> Iterator[tuple[int, torch.Tensor]]:
        # One generator per device, advanced through EVERY parameter in named_parameters order exactly as the
        # global RNG is in the reference code, so a perturbed subset still sees the reference's values.
        index = {id(p): i for i, (_, p) in enumerate(self.params)}
        gens: dict[torch.device, torch.Generator] = {}
        for _, p in self.model.named_parameters():
            if p.device not in gens:
                gens[p.device] = torch.Generator(device=p.device).manual_seed(REFERENCE_SEED_OFFSET + int(draw))
            if id(p) in index:
                yield index[id(p)], self._noise_buffer(p).normal_(generator=gens[p.device])
            else:  # advance the stream as randn_like(p) would
                torch.empty_like(p).normal_(generator=gens[p.device])

    def apply(self, draw: int, sign: int = 1) -> None:
        """Set the parameters to ``theta_0 + sign * sigma * z_draw`` (restoring first if already perturbed)."""
        if sign not in (1, -1):
            raise ValueError(f"sign must be +1 or -1, got {sign}")
        if self._clones is None:
            raise RuntimeError("Perturber is closed")
        self.restore()
        noises = self._noises_mrdkit if self.scheme == "mrdkit" else self._noises_reference
        self._dirty = True
        with torch.no_grad():
            for i, z in noises(draw):
                self._add(self.params[i][1], self._clones[i], z, sign)

    def restore(self) -> None:
        """Copy ``theta_0`` back from the clone: bit-exact, unlike subtracting the noise."""
        if not self._dirty or self._clones is None:
            return
        with torch.no_grad():
            for (_, p), clone in zip(self.params, self._clones):
                p.copy_(clone)
        self._dirty = False

    def close(self) -> None:
        """Restore the parameters and free the clone and noise buffers."""
        if self._clones is not None:
            self._dirty = True  # restore unconditionally: the caller may have edited the weights in between
            self.restore()
        self._clones, self._buffers = None, {}

    def __enter__(self) -> "Perturber":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


@contextmanager
def perturbed(model: torch.nn.Module, params: Optional[Sequence[tuple[str, torch.Tensor]]] = None, *,
              sigma: float, draw: int, seed: int = 0, sign: int = 1, relative: bool = False,
              scheme: str = "mrdkit") -> Iterator[Perturber]:
    """Context manager: inside, ``theta = theta_0 + sign * sigma * z_draw``; on exit theta_0 is restored exactly.

    This is a one-draw convenience over :class:`Perturber` (which scoring loops use to keep one clone for all
    draws). Noise as in arXiv 2504.06658: ``delta ~ N(0, sigma^2 I)`` over the selected parameters.

    Example:
        >>> with perturbed(model, sigma=1e-5, draw=0, seed=0):
        ...     lp = token_logprobs(model, batch)
    """
    with Perturber(model, params, sigma=sigma, seed=seed, relative=relative, scheme=scheme) as perturber:
        perturber.apply(draw, sign)
        yield perturber


@contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Run ``model`` in eval mode (dropout off: a measurement must be deterministic) and restore its mode after.

    Models built from a config start in training mode; with dropout active every MRD "draw" would add dropout
    noise on top of the weight noise.
    """
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training

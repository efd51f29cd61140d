"""Low-memory MRD perturbation: perturb each module's weights just before it runs, restore them right after.

The default ``copy`` mode (:class:`mrdkit.scoring.perturb.Perturber`) keeps one clone of every perturbed
parameter for the whole run: extra memory = one full copy of the weights (plus one noise buffer). For a model that
barely fits, :class:`LowMemPerturber` instead registers a forward pre-hook on every module that directly owns
perturbed parameters: the pre-hook clones that module's parameters and adds the noise, the forward hook (also
called when the forward raises) copies the clone back. Extra memory = the largest module's parameters (clone)
plus one noise buffer of the largest parameter; the price is one noise generation per module per forward pass.

The noise is the ``copy`` mode's, bit for bit: the same generator per (seed, "mrd-noise", draw, parameter name),
the same dtype and device, and the same rounding (:func:`mrdkit.scoring.perturb.add_noise`), so MRD is bitwise
equal in both modes (arXiv 2504.06658: ``delta ~ N(0, sigma^2 I)`` over all selected parameters).

Shared (tied) parameters, such as GPT-2's ``lm_head.weight`` = ``wte.weight``, are owned by several modules; they
are perturbed globally by ``apply`` and stay perturbed for the whole forward, as in ``copy`` mode (perturbing them
per module would add the noise twice when one owner runs inside another). Limitation: a parameter read outside
its owning module's forward (e.g. ``F.linear(h, self.embed.weight)`` in a parent) would be seen unperturbed;
Hugging Face GPT-2/Llama-style models do not do this, and tied embeddings are handled as shared. For measurement
only (no autograd): restoring a weight after its module ran would invalidate a graph that saved it.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch

from mrdkit.errors import MrdkitError
from mrdkit.scoring.perturb import PerturbedParams, Perturber, _check_dtype, add_noise, select_parameters
from mrdkit.seeding import make_generator

PERTURB_MODES = ("copy", "lowmem")
NamedParams = list[tuple[str, torch.Tensor]]


def make_perturber(mode: str, model: torch.nn.Module, params: Optional[Sequence[tuple[str, torch.Tensor]]] = None,
                   **noise: Any):
    """The perturber of ``mode``: ``copy`` -> :class:`Perturber`, ``lowmem`` -> :class:`LowMemPerturber`.

    Both take ``sigma``, ``seed``, ``relative``, ``scheme`` and give bitwise-equal numbers.
    """
    if mode == "copy":
        return Perturber(model, params, **noise)
    if mode == "lowmem":
        return LowMemPerturber(model, params, **noise)
    raise MrdkitError(f"unknown perturb mode {mode!r} (known: {', '.join(PERTURB_MODES)})")


def owner_groups(model: torch.nn.Module, params: NamedParams) -> tuple[NamedParams, list[tuple[torch.nn.Module,
                                                                                                NamedParams]]]:
    """Split ``params`` into shared ones (owned by several modules) and per-module groups of directly owned ones.

    Returns:
        ``(shared, groups)``: ``shared`` in the order of ``params``; ``groups`` as ``[(module, [(name, p)])]`` in
        ``model.modules()`` order, each parameter in exactly one place.
    """
    owners: dict[int, list[torch.nn.Module]] = {}
    for module in model.modules():  # de-duplicated modules: a module reused at two paths is still one owner
        for p in module._parameters.values():
            if p is not None:
                owners.setdefault(id(p), []).append(module)
    selected = {id(p): (name, p) for name, p in params}
    shared = [(n, p) for n, p in params if len(owners.get(id(p), ())) != 1]
    groups: dict[int, tuple[torch.nn.Module, NamedParams]] = {}
    for module in model.modules():
        for p in module._parameters.values():
            if p is not None and id(p) in selected and len(owners[id(p)]) == 1:
                groups.setdefault(id(module), (module, []))[1].append(selected[id(p)])
    return shared, list(groups.values())


def _nbytes(params: NamedParams) -> int:
    return sum(p.numel() * p.element_size() for _, p in params)


class LowMemPerturber(PerturbedParams):
    """Drop-in for :class:`~mrdkit.scoring.perturb.Perturber` that clones one module's weights at a time.

    ``apply(k, sign)`` arms the hooks for draw k (and perturbs shared parameters at once); every forward pass
    then sees ``theta_0 + sign * sigma * z_k`` module by module. ``restore()`` disarms them and copies every
    still-perturbed parameter back bit-exactly; use it as a context manager (hooks are removed on exit).

    Attributes:
        clone_bytes: bytes of parameter clones alive now; ``peak_clone_bytes``: their maximum so far (shared
            parameters plus the largest module group for an untied model's forward).

    Args:
        model, params, sigma, seed, relative: as :class:`Perturber`. scheme: only ``"mrdkit"`` (the reference
            scheme draws every parameter from one stream, which cannot be produced module by module).
    """

    def __init__(self, model: torch.nn.Module, params: Optional[Sequence[tuple[str, torch.Tensor]]] = None, *,
                 sigma: float, seed: int = 0, relative: bool = False, scheme: str = "mrdkit") -> None:
        if scheme != "mrdkit":
            raise MrdkitError(f"perturb mode 'lowmem' needs noise scheme 'mrdkit', not {scheme!r} (the reference "
                              "scheme is one stream over all parameters; use perturb mode 'copy')")
        if not sigma >= 0:
            raise MrdkitError(f"sigma must be >= 0, got {sigma}")
        self.model, self.sigma, self.seed, self.relative = model, float(sigma), int(seed), bool(relative)
        self.params = list(params) if params is not None else select_parameters(model)
        for name, p in self.params:
            _check_dtype(name, p)
        self.shared, self.groups = owner_groups(model, self.params)
        self._sizes: dict[tuple[torch.device, torch.dtype], int] = {}
        for _, p in self.params:
            key = (p.device, p.dtype)
            self._sizes[key] = max(self._sizes.get(key, 0), p.numel())
        self._buffers: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}
        with torch.no_grad():  # shared parameters are perturbed for whole forwards: one clone kept, as copy mode
            self._shared_clones = [p.detach().clone() for _, p in self.shared]
        self._live: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}  # group index -> [(param, clone)]
        self.clone_bytes = self.peak_clone_bytes = _nbytes(self.shared)
        self._draw: Optional[tuple[int, int]] = None  # (draw, sign) while armed
        self._shared_dirty, self._closed = False, False
        self._hooks = []
        for i, (module, _) in enumerate(self.groups):
            self._hooks.append(module.register_forward_pre_hook(self._pre_hook(i)))
            self._hooks.append(module.register_forward_hook(self._post_hook(i), always_call=True))

    def _noise(self, name: str, p: torch.Tensor, draw: int) -> torch.Tensor:
        """``z ~ N(0, I)`` shaped like ``p``, from the same generator and buffer layout as :class:`Perturber`."""
        key = (p.device, p.dtype)
        if key not in self._buffers:  # a normal tensor even when first needed inside torch.inference_mode
            with torch.inference_mode(False):
                self._buffers[key] = torch.empty(self._sizes[key], dtype=p.dtype, device=p.device)
        gen = make_generator(self.seed, "mrd-noise", int(draw), name, device=str(p.device))
        return self._buffers[key][: p.numel()].view(p.shape).normal_(generator=gen)

    def _perturb(self, params: NamedParams, clones: Sequence[torch.Tensor]) -> None:
        draw, sign = self._draw
        with torch.no_grad():
            for (name, p), clone in zip(params, clones):
                add_noise(p, clone, self._noise(name, p, draw), sign * self.sigma, self.relative)

    def _pre_hook(self, index: int):
        def hook(module: torch.nn.Module, args: Any) -> None:
            if self._draw is None:
                return
            self._restore_group(index)  # a module re-entered before its post-hook: start again from theta_0
            params = self.groups[index][1]
            with torch.no_grad():
                clones = [p.detach().clone() for _, p in params]
            self._live[index] = [(p, c) for (_, p), c in zip(params, clones)]
            self.clone_bytes += _nbytes(params)
            self.peak_clone_bytes = max(self.peak_clone_bytes, self.clone_bytes)
            self._perturb(params, clones)
        return hook

    def _post_hook(self, index: int):
        def hook(module: torch.nn.Module, args: Any, output: Any) -> None:
            self._restore_group(index)
        return hook

    def _restore_group(self, index: int) -> None:
        live = self._live.pop(index, None)
        if live is None:
            return
        with torch.no_grad():
            for p, clone in live:
                p.copy_(clone)
        self.clone_bytes -= sum(c.numel() * c.element_size() for _, c in live)

    def apply(self, draw: int, sign: int = 1) -> None:
        """Arm draw ``draw`` with ``sign``: shared parameters now, every other module when it runs."""
        if sign not in (1, -1):
            raise ValueError(f"sign must be +1 or -1, got {sign}")
        if self._closed:
            raise RuntimeError("LowMemPerturber is closed")
        self.restore()
        self._draw = (int(draw), sign)
        self._shared_dirty = True
        self._perturb(self.shared, self._shared_clones)

    def restore(self) -> None:
        """Disarm the hooks and copy ``theta_0`` back into every parameter still perturbed (bit-exact)."""
        self._draw = None
        for index in list(self._live):  # only left over when a forward raised before its post-hook
            self._restore_group(index)
        if self._shared_dirty:
            with torch.no_grad():
                for (_, p), clone in zip(self.shared, self._shared_clones):
                    p.copy_(clone)
            self._shared_dirty = False

    def close(self) -> None:
        """Restore, remove the hooks and free clones and buffers."""
        if self._closed:
            return
        self._shared_dirty = True  # unconditionally, as Perturber.close
        self.restore()
        for handle in self._hooks:
            handle.remove()
        self._hooks, self._shared_clones, self._buffers, self._closed = [], [], {}, True

    def __enter__(self) -> "LowMemPerturber":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def largest_group_bytes(model: torch.nn.Module, params: Optional[NamedParams] = None) -> dict[str, int]:
    """Analytic extra bytes of each mode (noise buffer excluded): copy = all params; lowmem = shared + largest group.

    Returns:
        dict with ``copy``, ``lowmem``, ``shared`` and ``largest_group`` byte counts.
    """
    params = list(params) if params is not None else select_parameters(model)
    shared, groups = owner_groups(model, params)
    largest = max((_nbytes(g) for _, g in groups), default=0)
    return {"copy": _nbytes(params), "lowmem": _nbytes(shared) + largest, "shared": _nbytes(shared),
            "largest_group": largest}

"""Exact Gaussian weight perturbations for MRD (Feng et al. 2025, arXiv 2504.06658).

MRD compares log-probs at theta and at theta + delta with delta ~ N(0, sigma^2 I). Two facts shape this module
(paper-notes section 1): subtracting the same noise again does NOT restore the weights bit-exactly (~5% of
elements end 1 ulp off), so every perturbation is undone by ``copy_`` from a saved clone; and bf16/fp16 weights
cannot represent a 1e-5 change at all, so they are refused. Two modes give bitwise the same numbers:

* ``copy`` (:class:`Perturber`): one :class:`~mrdkit.snapshot.ParamSnapshot` of the perturbed parameters for a
  whole scoring run; peak extra memory = one copy of those parameters plus one noise buffer.
* ``lowmem`` (:class:`LowMemPerturber`): each module's weights are perturbed just before it runs and restored
  right after (forward hooks); extra memory = the largest module's parameters plus one noise buffer, at the price
  of one noise generation per module per forward pass.

Noise schemes:

* ``"mrdkit"``: draw k of parameter ``name`` comes from ``make_generator(seed, "mrd-noise", k, name)``, so the
  noise does not depend on parameter order, on which subset is perturbed, or on how draws are split over runs.
* ``"reference"``: the authors' code, ``torch.manual_seed(42 + k)`` then ``randn_like(p) * sigma`` for every
  parameter with ``requires_grad`` in ``model.named_parameters()`` order (frozen parameters draw nothing, LoRA
  adapters are the only ones drawn under LoRA); reproduced with a private generator (never the global RNG).
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from typing import Any, Iterator, Optional, Sequence

import torch

from mrdkit.errors import MrdkitError
from mrdkit.seeding import make_generator
from mrdkit.snapshot import ParamSnapshot

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


def check_dtype(name: str, p: torch.Tensor, compute_dtype: Optional[torch.dtype] = None) -> None:
    """Refuse what cannot be perturbed in place: half weights (unless every module runs in ``compute_dtype``,
    :class:`Upcaster`), weights offloaded to host memory or disk (meta tensors), integer weights."""
    if p.device.type == "meta":
        raise MrdkitError(
            f"parameter {name!r} is offloaded (on the meta device, loaded per module by accelerate's hooks): MRD "
            "perturbs weights in place, so every weight must live on a device; give the device_map enough device "
            "memory (max_memory) or use --dtype bfloat16 --compute-dtype float32 to halve what it needs"
        )
    if p.dtype in _HALF and compute_dtype is None:
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
            check_dtype(name, p)
        self._snapshot: Optional[ParamSnapshot] = ParamSnapshot(p for _, p in self.params)  # reused by every draw
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
        # One generator per device, advanced exactly as the global RNG is in the reference code: through every
        # parameter WITH requires_grad, in named_parameters order (frozen ones draw nothing there), so a perturbed
        # subset of the trainable parameters still sees the reference's values.
        index = {id(p): i for i, (_, p) in enumerate(self.params)}
        gens: dict[torch.device, torch.Generator] = {}
        for _, p in self.model.named_parameters():
            if not p.requires_grad:
                continue
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
        if self._snapshot is None:
            raise RuntimeError("Perturber is closed")
        self.restore()
        noises = self._noises_mrdkit if self.scheme == "mrdkit" else self._noises_reference
        self._dirty = True
        with torch.no_grad():
            for i, z in noises(draw):
                self._add(self.params[i][1], self._snapshot.saved[i], z, sign)

    def restore(self) -> None:
        """Copy ``theta_0`` back from the clone: bit-exact, unlike subtracting the noise."""
        if not self._dirty or self._snapshot is None:
            return
        self._snapshot.restore()
        self._dirty = False

    def close(self) -> None:
        """Restore the parameters and free the clone and noise buffers."""
        if self._snapshot is not None:
            self._snapshot.release()  # restores unconditionally: the caller may have edited the weights in between
        self._snapshot, self._buffers, self._dirty = None, {}, False

    def __enter__(self) -> Perturber:
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


# ----------------------------------------------------------------------------------------------- low-memory mode
#
# Low-memory MRD perturbation: perturb each module's weights just before it runs, restore them right after.
#
# The default ``copy`` mode (:class:`mrdkit.scoring.perturb.Perturber`) keeps one clone of every perturbed
# parameter for the whole run: extra memory = one full copy of the weights (plus one noise buffer). For a model that
# barely fits, :class:`LowMemPerturber` instead registers a forward pre-hook on every module that directly owns
# perturbed parameters: the pre-hook clones that module's parameters and adds the noise, the forward hook (also
# called when the forward raises) copies the clone back. Extra memory = the largest module's parameters (clone)
# plus one noise buffer of the largest parameter; the price is one noise generation per module per forward pass.
#
# The noise is the ``copy`` mode's, bit for bit: the same generator per (seed, "mrd-noise", draw, parameter name),
# the same dtype and device, and the same rounding (:func:`add_noise`), so MRD is bitwise
# equal in both modes (arXiv 2504.06658: ``delta ~ N(0, sigma^2 I)`` over all selected parameters).
#
# Shared (tied) parameters, such as GPT-2's ``lm_head.weight`` = ``wte.weight``, are owned by several modules; they
# are perturbed globally by ``apply`` and stay perturbed for the whole forward, as in ``copy`` mode (perturbing them
# per module would add the noise twice when one owner runs inside another). Limitation: a parameter read outside
# its owning module's forward (e.g. ``F.linear(h, self.embed.weight)`` in a parent) would be seen unperturbed;
# Hugging Face GPT-2/Llama-style models do not do this, and tied embeddings are handled as shared. For measurement
# only (no autograd): restoring a weight after its module ran would invalidate a graph that saved it.

PERTURB_MODES = ("copy", "lowmem")


def make_perturber(mode: str, model: torch.nn.Module, params: Optional[Sequence[tuple[str, torch.Tensor]]] = None,
                   compute_dtype: Optional[torch.dtype] = None, **noise: Any):
    """The perturber of ``mode``: ``copy`` -> :class:`Perturber`, ``lowmem`` -> :class:`LowMemPerturber`.

    Both take ``sigma``, ``seed``, ``relative``, ``scheme`` and give bitwise-equal numbers; ``compute_dtype``
    (half-precision weights run module by module in a wider dtype) needs ``lowmem``.
    """
    if mode == "copy":
        if compute_dtype is not None:
            raise MrdkitError("compute_dtype needs perturb mode 'lowmem' (copy mode would clone every weight in the "
                              "wider dtype: the full copy compute_dtype exists to avoid)")
        return Perturber(model, params, **noise)
    if mode == "lowmem":
        return LowMemPerturber(model, params, compute_dtype=compute_dtype, **noise)
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


class Upcaster:
    """Run a half-precision model in a wider ``dtype`` one module at a time, without a full wide copy.

    MRD's sigma = 1e-5 noise is below bf16's resolution (``w + delta`` rounds back to ``w`` for ~92% of weights),
    so a bf16 checkpoint must be scored in fp32 (Feng et al. 2025, arXiv 2504.06658, paper-notes section 1). A
    forward pre-hook on every module that owns parameters swaps each of its half weights for a widened copy just
    before it runs; the forward hook (also called when the forward raises) puts the ORIGINAL half tensor back: no
    copy, bit-exact. Parameters owned by several modules (tied embeddings) stay widened for the whole context.
    Every computation then sees exactly the weights of the same checkpoint converted to ``dtype``, so MRD equals
    that of the converted model bit for bit, with extra memory = the shared parameters + the largest module, in
    ``dtype``. For measurement only (no autograd through the swapped weights).

    Attributes:
        wide_bytes: bytes of widened weights alive now; ``peak_wide_bytes``: their maximum so far.
    """

    def __init__(self, model: torch.nn.Module, dtype: torch.dtype) -> None:
        named = [(n, p) for n, p in model.named_parameters() if p.dtype in _HALF]
        shared, self.groups = owner_groups(model, named)
        self.dtype, self._live, self.closed = dtype, {}, False
        self._shared = [(p, p.data) for _, p in shared]
        for p, half in self._shared:
            p.data = half.to(dtype)
        self.wide_bytes = self.peak_wide_bytes = _nbytes(shared)
        self._hooks = []
        for i, (module, _) in enumerate(self.groups):
            self._hooks.append(module.register_forward_pre_hook(self._widen(i)))
            self._hooks.append(module.register_forward_hook(self._narrow(i), always_call=True))

    def _widen(self, index: int):
        def hook(module: torch.nn.Module, args: Any) -> None:
            self._restore(index)  # re-entered before its post-hook: start again from the stored weights
            params = [p for _, p in self.groups[index][1]]
            self._live[index] = [p.data for p in params]
            for p in params:
                p.data = p.data.to(self.dtype)
            self.wide_bytes += _nbytes(self.groups[index][1])
            self.peak_wide_bytes = max(self.peak_wide_bytes, self.wide_bytes)
        return hook

    def _narrow(self, index: int):
        def hook(module: torch.nn.Module, args: Any, output: Any) -> None:
            self._restore(index)
        return hook

    def _restore(self, index: int) -> None:
        stored = self._live.pop(index, None)
        if stored is not None:
            self.wide_bytes -= _nbytes(self.groups[index][1])
            for (_, p), half in zip(self.groups[index][1], stored):
                p.data = half

    def close(self) -> None:
        """Put every original half tensor back and remove the hooks."""
        if self.closed:
            return
        for index in list(self._live):
            self._restore(index)
        for p, half in self._shared:
            p.data = half
        for handle in self._hooks:
            handle.remove()
        self._hooks, self._shared, self.closed = [], [], True

    def __enter__(self) -> Upcaster:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


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
        compute_dtype: for half-precision weights: every module runs in this dtype (an :class:`Upcaster` the
            perturber owns, hooked in before its own hooks), and the noise is drawn and added in it, exactly as for
            a model whose weights were converted to that dtype.
    """

    def __init__(self, model: torch.nn.Module, params: Optional[Sequence[tuple[str, torch.Tensor]]] = None, *,
                 sigma: float, seed: int = 0, relative: bool = False, scheme: str = "mrdkit",
                 compute_dtype: Optional[torch.dtype] = None) -> None:
        if scheme != "mrdkit":
            raise MrdkitError(f"perturb mode 'lowmem' needs noise scheme 'mrdkit', not {scheme!r} (the reference "
                              "scheme is one stream over all parameters; use perturb mode 'copy')")
        if not sigma >= 0:
            raise MrdkitError(f"sigma must be >= 0, got {sigma}")
        self.model, self.sigma, self.seed, self.relative = model, float(sigma), int(seed), bool(relative)
        self.params = list(params) if params is not None else select_parameters(model)
        for name, p in self.params:
            check_dtype(name, p, compute_dtype)
        # hooks run in registration order: the upcaster's pre-hook first (this perturber then clones and perturbs
        # the widened weights), its post-hook last (this perturber's post-hook is prepended)
        self.upcaster = Upcaster(model, compute_dtype) if compute_dtype is not None else None
        self.shared, self.groups = owner_groups(model, self.params)
        self._sizes: dict[tuple[torch.device, torch.dtype], int] = {}
        for _, p in self.params:
            key = (p.device, compute_dtype if compute_dtype is not None and p.dtype in _HALF else p.dtype)
            self._sizes[key] = max(self._sizes.get(key, 0), p.numel())
        self._buffers: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}
        # shared parameters are perturbed for whole forwards: one snapshot kept, as copy mode
        self._shared = ParamSnapshot(p for _, p in self.shared)
        self._live: dict[int, ParamSnapshot] = {}  # group index -> snapshot of that module's parameters
        self.clone_bytes = self.peak_clone_bytes = _nbytes(self.shared)
        self._draw: Optional[tuple[int, int]] = None  # (draw, sign) while armed
        self._shared_dirty, self._closed = False, False
        self._hooks = []
        for i, (module, _) in enumerate(self.groups):
            self._hooks.append(module.register_forward_pre_hook(self._pre_hook(i)))
            self._hooks.append(module.register_forward_hook(self._post_hook(i), always_call=True, prepend=True))

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
            self._live[index] = snapshot = ParamSnapshot(p for _, p in params)
            self.clone_bytes += snapshot.nbytes
            self.peak_clone_bytes = max(self.peak_clone_bytes, self.clone_bytes)
            self._perturb(params, snapshot.saved)
        return hook

    def _post_hook(self, index: int):
        def hook(module: torch.nn.Module, args: Any, output: Any) -> None:
            self._restore_group(index)
        return hook

    def _restore_group(self, index: int) -> None:
        snapshot = self._live.pop(index, None)
        if snapshot is None:
            return
        snapshot.restore()
        self.clone_bytes -= snapshot.nbytes

    def apply(self, draw: int, sign: int = 1) -> None:
        """Arm draw ``draw`` with ``sign``: shared parameters now, every other module when it runs."""
        if sign not in (1, -1):
            raise ValueError(f"sign must be +1 or -1, got {sign}")
        if self._closed:
            raise RuntimeError("LowMemPerturber is closed")
        self.restore()
        self._draw = (int(draw), sign)
        self._shared_dirty = True
        self._perturb(self.shared, self._shared.saved)

    def restore(self) -> None:
        """Disarm the hooks and copy ``theta_0`` back into every parameter still perturbed (bit-exact)."""
        self._draw = None
        for index in list(self._live):  # only left over when a forward raised before its post-hook
            self._restore_group(index)
        if self._shared_dirty:
            self._shared.restore()
            self._shared_dirty = False

    def close(self) -> None:
        """Restore, remove the hooks and free clones and buffers."""
        if self._closed:
            return
        self._shared_dirty = True  # unconditionally, as Perturber.close
        self.restore()
        for handle in self._hooks:
            handle.remove()
        self._shared.saved = None  # free the copy (restored above)
        self._hooks, self._buffers, self._closed = [], {}, True
        if self.upcaster is not None:
            self.upcaster.close()

    def __enter__(self) -> LowMemPerturber:
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

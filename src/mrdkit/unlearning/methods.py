"""Unlearning methods: small hyper-parameter dataclasses that turn a step's log-probs into one loss.

A method never runs a model. The loop asks it what it needs (``needs_*`` flags), lets
:func:`gather_step_inputs` run the model(s) and fill a :class:`StepInputs`, then calls
``method.compute(inputs) -> LossOutput``. Every method has the form (open-unlearning's GradDiff family)

    L = gamma * L_forget + alpha * L_retain,

with ``L_retain`` = mean token NLL (``retain_loss="nll"``) or KL(p_ref || p_model) (``"kl"``) on retain data,
or RMU's activation-matching loss. These are the base algorithms that the MRD curriculum (Feng et al.,
arXiv:2504.06658, paper-notes section 3) reorders; defaults and their sources are on each class.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from mrdkit.errors import MrdkitError
from mrdkit.logprob import TokenLogProbs
from mrdkit.registry import Registry
from mrdkit.seeding import make_generator
from mrdkit.unlearning import losses as L

METHODS: Registry[type[UnlearnMethod]] = Registry("method")


@dataclass
class StepInputs:
    """Everything one step's loss may read; :func:`gather_step_inputs` fills only what the method needs.

    Model tensors carry autograd history; ``ref_*`` tensors come from the frozen reference model, no grad.
    Logits are aligned with the log-prob masks (position t predicts token t+1), hidden states are not shifted.
    """

    forget: TokenLogProbs | None = None  # model on forget batch
    retain: TokenLogProbs | None = None  # model on retain batch
    idk: TokenLogProbs | None = None  # model on the forget prompts with "I don't know" answers
    ref_forget: TokenLogProbs | None = None
    ref_idk: TokenLogProbs | None = None
    retain_logits: Tensor | None = None  # (B, T-1, V), scored where retain.mask
    ref_retain_logits: Tensor | None = None  # (B, T-1, V)
    forget_hidden: Tensor | None = None  # (B, T, D) at the method's layer
    forget_hidden_mask: Tensor | None = None  # (B, T) bool: labels != -100
    retain_hidden: Tensor | None = None  # (B, T, D)
    ref_retain_hidden: Tensor | None = None  # (B, T, D)
    retain_hidden_mask: Tensor | None = None  # (B, T) bool

    def need(self, name: str, method: str) -> Any:
        """Return field ``name`` or raise a :class:`MrdkitError` saying which method needed it."""
        if getattr(self, name) is None:
            raise MrdkitError(f"method {method!r} needs StepInputs.{name}, which was not filled")
        return getattr(self, name)


@dataclass
class LossOutput:
    """The scalar to minimise and its logged parts (python floats)."""

    total: Tensor
    parts: dict[str, float] = field(default_factory=dict)


@dataclass(kw_only=True)
class UnlearnMethod:
    """Base: ``L = gamma * L_forget + alpha * L_retain``. Subclasses define :meth:`forget_loss`.

    Attributes:
        gamma: forget-term weight (open-unlearning ``gamma``, default 1).
        alpha: retain-term weight; 0 drops the retain term and the retain forward pass.
        retain_loss: ``"nll"`` (descent on retain data) or ``"kl"`` (KL to the reference model on retain data).
    """

    name: ClassVar[str] = ""
    retain_losses: ClassVar[tuple[str, ...]] = ("nll", "kl")
    forget_uses_reference: ClassVar[bool] = False
    needs_idk: ClassVar[bool] = False
    needs_activations: ClassVar[bool] = False
    needs_forget: ClassVar[bool] = True

    gamma: float = 1.0
    alpha: float = 1.0
    retain_loss: str = "nll"

    def __post_init__(self) -> None:
        # comparisons with NaN are False, so NaN hyper-parameters are rejected too
        self._require(self.retain_loss in self.retain_losses, f"retain_loss must be one of {self.retain_losses}")
        self._require(self.gamma >= 0 and self.alpha >= 0, f"gamma, alpha must be >= 0, got {self.gamma}, {self.alpha}")
        self._require(getattr(self, "beta", 1.0) > 0, f"beta must be > 0, got {getattr(self, 'beta', None)}")

    def _require(self, ok: bool, message: str) -> None:
        if not ok:
            raise MrdkitError(f"method {self.name!r}: {message}")

    @property
    def needs_retain(self) -> bool:
        """Whether a retain batch must be run (any retain term with non-zero weight)."""
        return self.alpha != 0

    @property
    def needs_logits(self) -> bool:
        """Whether full retain logits (model and reference) are needed: the KL retain term."""
        return self.needs_retain and self.retain_loss == "kl"

    @property
    def needs_reference(self) -> bool:
        """Whether a frozen reference model must be run."""
        return self.forget_uses_reference or self.needs_logits

    def forget_loss(self, ctx: StepInputs) -> Tensor:
        raise NotImplementedError  # pragma: no cover

    def retain_term(self, ctx: StepInputs) -> Tensor:
        """Mean token NLL on retain data, or mean KL(p_ref || p_model) over its scored positions."""
        retain = ctx.need("retain", self.name)
        if self.retain_loss == "kl":
            logits, ref = ctx.need("retain_logits", self.name), ctx.need("ref_retain_logits", self.name)
            return L.kl_loss(logits, ref, retain.mask)
        return L.nll_loss(retain.sum(), retain.count())

    def compute(self, ctx: StepInputs) -> LossOutput:
        """Combine the terms; ``parts`` logs each term and the forget set's mean token log-prob."""
        forget = self.forget_loss(ctx)
        total = self.gamma * forget
        parts = {"forget_loss": float(forget.detach())}
        if self.needs_retain:
            retain = self.retain_term(ctx)
            total = total + self.alpha * retain
            parts["retain_loss"] = float(retain.detach())
        if ctx.forget is not None:
            parts["forget_logp"] = float(L.token_mean(ctx.forget.sum(), ctx.forget.count()).detach())
        parts["total"] = float(total.detach())
        return LossOutput(total=total, parts=parts)

    def hparams(self) -> dict[str, Any]:
        """Hyper-parameters as a plain dict (for the run's resolved config)."""
        return {"method": self.name, **dataclasses.asdict(self)}


def _register(name: str, summary: str, citation: str):
    """Register a method class under ``name`` and stamp the name on it."""

    def decorate(cls):
        cls.name = name
        return METHODS.register(name, summary=summary, citation=citation)(cls)

    return decorate


@_register("ga", "gradient ascent on the forget set", "Jang et al. 2023, arXiv:2210.01504")
@dataclass(kw_only=True)
class GradAscent(UnlearnMethod):
    """``L_forget = mean token log-prob of the forget batch`` (TOFU / open-unlearning GradAscent); no retain term."""

    alpha: float = 0.0

    def forget_loss(self, ctx: StepInputs) -> Tensor:
        forget = ctx.need("forget", self.name)
        return L.ga_loss(forget.sum(), forget.count())


@_register("graddiff", "GA on forget + descent on retain", "Liu et al. 2022; Maini et al. 2024, arXiv:2401.06121")
@dataclass(kw_only=True)
class GradDiff(GradAscent):
    """GA plus a retain term; defaults gamma = alpha = 1, NLL retain (open-unlearning GradDiff.yaml)."""

    alpha: float = 1.0


@_register("kl", "GA on forget + KL to the original model on retain", "Maini et al. 2024, arXiv:2401.06121")
@dataclass(kw_only=True)
class KLMin(GradDiff):
    """TOFU's "KL minimisation" baseline: GradDiff with ``retain_loss="kl"``, gamma = alpha = 1."""

    retain_loss: str = "kl"


@_register("npo", "negative preference optimization", "Zhang et al. 2024, arXiv:2404.05868")
@dataclass(kw_only=True)
class NPO(UnlearnMethod):
    """NPO forget loss on sequence log-likelihoods vs the reference model.

    Defaults: beta = 0.1 (NPO paper; paper-notes section 6). Retain-free by default (``alpha = 0``, plain NPO);
    ``alpha = 1`` gives NPO+RT, which is what open-unlearning's NPO.yaml and the MRD paper's runs use.
    """

    forget_uses_reference: ClassVar[bool] = True
    alpha: float = 0.0
    beta: float = 0.1

    def forget_loss(self, ctx: StepInputs) -> Tensor:
        forget = ctx.need("forget", self.name)
        return L.npo_loss(forget.sum(), ctx.need("ref_forget", self.name).sum(), self.beta)


@_register("simnpo", "reference-free length-normalised NPO", "Fan et al. 2024, arXiv:2410.07163")
@dataclass(kw_only=True)
class SimNPO(UnlearnMethod):
    """SimNPO on mean token log-probs with margin ``delta``; defaults from open-unlearning's SimNPO.yaml
    (beta 4.5, delta 0, forget weight gamma 0.125, retain weight alpha 1, NLL retain)."""

    gamma: float = 0.125
    beta: float = 4.5
    delta: float = 0.0

    def forget_loss(self, ctx: StepInputs) -> Tensor:
        return L.simnpo_loss(ctx.need("forget", self.name).mean(), self.beta, self.delta)


@_register("idk", "descent on 'I don't know' answers to forget prompts", "Maini et al. 2024, arXiv:2401.06121")
@dataclass(kw_only=True)
class IDK(UnlearnMethod):
    """TOFU's IDK baseline: ``L_forget = NLL(idk answer | forget prompt)``; gamma = alpha = 1, NLL retain."""

    needs_idk: ClassVar[bool] = True
    needs_forget: ClassVar[bool] = False

    def forget_loss(self, ctx: StepInputs) -> Tensor:
        idk = ctx.need("idk", self.name)
        return L.nll_loss(idk.sum(), idk.count())


@_register("idkdpo", "DPO: IDK answer wins, forget answer loses", "Rafailov et al. 2023, arXiv:2305.18290; as an "
          "unlearning baseline in Maini et al. 2024 and Zhang et al. 2024")
@dataclass(kw_only=True)
class IdkDPO(UnlearnMethod):
    """DPO forget term (win = IDK answer, lose = forget answer); beta 0.1, gamma = alpha = 1 (open-unlearning DPO)."""

    forget_uses_reference: ClassVar[bool] = True
    needs_idk: ClassVar[bool] = True
    beta: float = 0.1

    def forget_loss(self, ctx: StepInputs) -> Tensor:
        keys = ("idk", "forget", "ref_idk", "ref_forget")
        win, lose, ref_win, ref_lose = (ctx.need(key, self.name).sum() for key in keys)
        return L.dpo_loss(win, lose, ref_win, ref_lose, self.beta)


@_register("rmu", "representation misdirection", "Li et al. 2024 (WMDP), arXiv:2403.03218")
@dataclass(kw_only=True)
class RMU(UnlearnMethod):
    """RMU: steer layer ``layer``'s forget activations to ``steering_coef * u``, keep retain activations.

    Defaults are the WMDP reference script's (``layer_id 7``, ``steering_coeffs 20``, ``alpha 100``). ``u`` is
    uniform[0, 1)^D normalised to unit length, as there, drawn from ``make_generator(seed, "rmu-control", D)``.
    ``layer`` L means the output of transformer block L, i.e. ``hidden_states[L + 1]`` (for the LAST block HF
    returns it after the final norm).
    """

    retain_losses: ClassVar[tuple[str, ...]] = ("activation",)
    needs_activations: ClassVar[bool] = True
    alpha: float = 100.0
    retain_loss: str = "activation"
    layer: int = 7
    steering_coef: float = 20.0
    seed: int = 0

    @property
    def needs_reference(self) -> bool:
        return self.needs_retain  # the frozen model supplies the retain activations

    @property
    def needs_logits(self) -> bool:
        return False

    def control_vector(self, dim: int, device: torch.device | str = "cpu", dtype=torch.float32) -> Tensor:
        """The fixed unit direction ``u`` (D,) for this seed."""
        u = torch.rand(dim, generator=make_generator(self.seed, "rmu-control", dim), dtype=torch.float64)
        return (u / u.norm()).to(device=device, dtype=dtype)

    def forget_loss(self, ctx: StepInputs) -> Tensor:
        h = ctx.need("forget_hidden", self.name)
        u = self.control_vector(h.shape[-1], h.device, h.dtype)
        return L.rmu_loss(h, u, self.steering_coef, ctx.forget_hidden_mask)

    def retain_term(self, ctx: StepInputs) -> Tensor:
        h, ref = ctx.need("retain_hidden", self.name), ctx.need("ref_retain_hidden", self.name)
        return L.rmu_retain_loss(h, ref, ctx.retain_hidden_mask)


def build_method(name: str, **hparams: Any) -> UnlearnMethod:
    """Instantiate a registered method; unknown hyper-parameters raise :class:`MrdkitError` naming them."""
    cls = METHODS.get(name)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(hparams) - known)
    if unknown:
        raise MrdkitError(f"method {name!r} has no hyper-parameter {unknown[0]!r} (known: {', '.join(sorted(known))})")
    return cls(**hparams)


# --------------------------------------------------------------------------- the only code here running models

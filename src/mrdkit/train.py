"""The one training step of mrdkit, with its optimizer, learning-rate schedule and seeded dropout.

Three things train a model here, and all of them take their optimizer steps through :func:`train_step`:
the unlearning loop (:mod:`mrdkit.unlearning.loop`), the required-updates ground truth and the lookahead
difficulty scores (:mod:`mrdkit.evaluation.difficulty`, :mod:`mrdkit.evaluation.scores`), and the fine-tuning that
builds the testbeds (:mod:`mrdkit.testbed.finetune`). A step is

    for each micro-batch m of the step (M of them):   backward( L_m / M )
    clip the global gradient norm;  optimizer step;  scheduler step;  zero the gradients

so the gradient of a step is the mean of its micro-batch gradients, whatever M is. Conventions follow the Hugging
Face ``Trainer`` that TOFU (Maini et al. 2024, arXiv:2401.06121) and open-unlearning train with: AdamW with
decoupled weight decay on matrices only (not on biases and norm gains), and a warmup that starts at lr 0
(``get_linear_schedule_with_warmup``).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Sequence

import torch
from torch import Tensor

from mrdkit.errors import MrdkitError, NonFiniteLossError
from mrdkit.seeding import derive_seed

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("constant", "linear", "cosine")

#: One micro-batch: returns the loss to differentiate and its logged parts (python floats).
MicroLoss = Callable[[], tuple[Tensor, Mapping[str, float]]]


def make_optimizer(params: Iterable[torch.nn.Parameter] | Mapping[str, torch.nn.Parameter], *, lr: float,
                   name: str = "adamw", weight_decay: float = 0.0,
                   betas: Sequence[float] = (0.9, 0.999)) -> torch.optim.Optimizer:
    """AdamW (decoupled decay on matrices only, as the HF Trainer) or plain SGD over ``params``.

    Raises:
        MrdkitError: no parameters, or an unknown optimizer name.
    """
    params = list(params.values()) if isinstance(params, Mapping) else list(params)
    if not params:
        raise MrdkitError("there are no trainable parameters (requires_grad is False everywhere)")
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)
    if name != "adamw":
        raise MrdkitError(f"unknown optimizer {name!r} (known: {', '.join(OPTIMIZERS)})")
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, betas=tuple(betas))


@dataclass
class LrSchedule:
    """Learning-rate factor of optimizer step ``s`` (0-based), as the Hugging Face schedulers.

    ``f(s) = s / W`` for ``s < W`` (warmup; the first step has lr 0, as ``get_linear_schedule_with_warmup``);
    afterwards, with progress ``u = (s - W) / max(1, T - W)``: ``1`` (constant), ``max(0, 1 - u)`` (linear) or
    ``max(0, (1 + cos(pi u)) / 2)`` (cosine). A callable object so that ``LambdaLR.state_dict`` stores it as JSON.
    """

    total: int
    warmup: int
    kind: str = "linear"

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise MrdkitError(f"unknown schedule {self.kind!r} (known: {', '.join(SCHEDULES)})")

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return step / max(1, self.warmup)
        if self.kind == "constant":
            return 1.0
        progress = (step - self.warmup) / max(1, self.total - self.warmup)
        if self.kind == "linear":
            return max(0.0, 1.0 - progress)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))


def make_scheduler(optimizer: torch.optim.Optimizer, schedule: LrSchedule) -> torch.optim.lr_scheduler.LambdaLR:
    """``LambdaLR`` driven by ``schedule`` (its state dict is plain JSON: see :mod:`mrdkit.checkpoint`)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


@dataclass
class StepResult:
    """What one optimizer step reports: each loss part averaged over the micro-batches, and the gradient norm
    (before clipping)."""

    parts: dict[str, float] = field(default_factory=dict)
    grad_norm: float = 0.0


def _nonfinite_error(parts: Mapping[str, float]) -> Exception:
    text = ", ".join(f"{k}={v:.4g}" for k, v in parts.items())
    return NonFiniteLossError(f"non-finite loss ({text}); lower the lr or check the loss's hyper-parameters")


def train_step(micro_losses: Sequence[MicroLoss], *, params: Sequence[torch.nn.Parameter],
               optimizer: torch.optim.Optimizer, scheduler: Any = None, max_grad_norm: Optional[float] = None,
               accelerator: Any = None, model: Any = None,
               reduce_parts: Optional[Callable[[dict[str, float]], dict[str, float]]] = None,
               on_nonfinite: Callable[[Mapping[str, float]], Exception] = _nonfinite_error) -> StepResult:
    """One optimizer step over ``len(micro_losses)`` micro-batches (module docstring).

    Args:
        micro_losses: one callable per micro-batch, run in order; each runs its forward pass(es) and returns
            ``(loss, parts)``.
        params: the trainable parameters (clipped as one vector).
        optimizer, scheduler: stepped once (the scheduler may be None).
        max_grad_norm: clip the global gradient norm to this; None = no clipping (the norm is still measured).
        accelerator, model: with an ``accelerate.Accelerator``, backward / clipping go through it and every
            micro-batch but the last runs under ``accelerator.no_sync(model)`` (one all-reduce per step).
        reduce_parts: maps each micro-batch's parts before use (e.g. the mean over processes, so every rank
            sees the same numbers and stops together on a NaN).
        on_nonfinite: builds the exception raised when a loss part or the gradient norm is NaN/Inf; it is raised
            BEFORE the optimizer step, so the weights stay as they were.

    Returns:
        :class:`StepResult`.
    """
    n, parts = len(micro_losses), {}
    for m, micro_loss in enumerate(micro_losses):
        sync = accelerator.no_sync(model) if accelerator is not None and m < n - 1 else contextlib.nullcontext()
        with sync:
            loss, micro = micro_loss()
            micro = reduce_parts(dict(micro)) if reduce_parts is not None else dict(micro)
            if not all(math.isfinite(v) for v in micro.values()):
                raise on_nonfinite(micro)
            scaled = loss / n
            accelerator.backward(scaled) if accelerator is not None else scaled.backward()
        parts = {k: parts.get(k, 0.0) + v / n for k, v in micro.items()}
    clip = accelerator.clip_grad_norm_ if accelerator is not None else torch.nn.utils.clip_grad_norm_
    norm = float(clip(list(params), max_grad_norm or math.inf))
    if not math.isfinite(norm):
        raise on_nonfinite({**parts, "grad_norm": norm})
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return StepResult(parts, norm)


@contextlib.contextmanager
def seeded_dropout(seed: int, *keys: Any, device: torch.device | str = "cpu") -> Iterator[None]:
    """Dropout masks from ``derive_seed(seed, "dropout", *keys)`` instead of the global RNG, which is restored
    afterwards (house rule 5): a step's dropout depends only on (seed, keys), so resuming needs no RNG state."""
    device = torch.device(device)
    cuda = device.type == "cuda"
    with torch.random.fork_rng(devices=[device.index or 0] if cuda else []):
        s = derive_seed(seed, "dropout", *keys)
        torch.default_generator.manual_seed(s)
        if cuda:
            torch.cuda.manual_seed(s)
        yield


@contextlib.contextmanager
def pinned_threads(n: int) -> Iterator[None]:
    """Run with ``n`` intra-op CPU threads (0: unchanged) and restore the old count afterwards.

    CPU training is bitwise repeatable only at a fixed thread count (the kernels split reductions by thread), so
    builds that promise identical weights pin it.
    """
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)

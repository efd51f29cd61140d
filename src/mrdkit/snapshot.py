"""One saved copy of some parameters, restored bit-exactly: the one snapshot / restore mechanism of mrdkit.

House rule 6: parameters changed for a measurement (MRD's weight noise, a lookahead step, the updates of the
ground truth) are put back by copying from a clone, never by undoing the change arithmetically: subtracting the
same noise leaves ~5% of elements 1 ulp off (paper-notes section 1). Used by the MRD perturbers
(:mod:`mrdkit.scoring.perturb`), the difficulty scores and the required-updates ground truth.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Optional

import torch


def trainable(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The parameters with ``requires_grad``, in ``model.parameters()`` order (tied weights once)."""
    return [p for p in model.parameters() if p.requires_grad]


class ParamSnapshot:
    """A clone of ``params`` taken at construction; :meth:`restore` copies it back bit-exactly.

    As a context manager it restores on exit, even when an exception escapes, and (when built from a ``model``)
    puts the model back in the train/eval mode it had.

    Args:
        params: the parameters to save (default: the trainable parameters of ``model``).
        model: the module they belong to (only needed for ``params=None`` or to restore its mode).
        drop_grads: also clear ``.grad`` on restore (an optimizer's leftovers must not leak into the next use).
    """

    def __init__(self, params: Optional[Iterable[torch.Tensor]] = None, *, model: Optional[torch.nn.Module] = None,
                 drop_grads: bool = False) -> None:
        if params is None and model is None:
            raise ValueError("ParamSnapshot needs params or a model")
        self.params = list(params) if params is not None else trainable(model)
        self.model, self.drop_grads = model, drop_grads
        self.was_training = model.training if model is not None else None
        with torch.no_grad():
            self.saved: Optional[list[torch.Tensor]] = [p.detach().clone() for p in self.params]

    @property
    def nbytes(self) -> int:
        """Bytes held by the saved copy."""
        return sum(s.numel() * s.element_size() for s in self.saved or [])

    def restore(self) -> None:
        """Copy the saved values back (bit-exact)."""
        if self.saved is None:
            raise RuntimeError("ParamSnapshot was released")
        with torch.no_grad():
            for p, s in zip(self.params, self.saved):
                p.copy_(s)
                if self.drop_grads:
                    p.grad = None

    def change(self) -> tuple[float, float]:
        """``(sum |theta - theta_0|, ||theta - theta_0||_2)`` over the saved parameters, in float64."""
        l1 = l2 = 0.0
        for p, s in zip(self.params, self.saved or []):
            d = p.detach().double() - s.double()
            l1, l2 = l1 + float(d.abs().sum()), l2 + float(d.pow(2).sum())
        return l1, math.sqrt(l2)

    def release(self) -> None:
        """Restore, then free the saved copy."""
        if self.saved is not None:
            self.restore()
        self.saved = None

    def __enter__(self) -> ParamSnapshot:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.saved is not None:
            self.restore()
        if self.model is not None and self.was_training is not None:
            self.model.train(self.was_training)

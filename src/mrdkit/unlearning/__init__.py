"""Unlearning: losses (pure math), methods (loss recipes + the step's model calls) and the loop.

``losses`` holds the formulas, ``methods`` the registered algorithms (``METHODS``: ga, graddiff, kl, npo,
simnpo, idk, idkdpo, rmu), ``step`` runs the model(s) a method needs, ``loop`` is :func:`unlearn` (set up by
``setup``; batches from ``feed``; LoRA in ``lora``). The forget-set samplers, MRD-guided ones included, are
:mod:`mrdkit.samplers`. See Feng et al., arXiv:2504.06658 and paper-notes sections 3 and 6.

Names are resolved lazily: the loop pulls in accelerate and peft.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "METHODS": "mrdkit.unlearning.methods", "UnlearnMethod": "mrdkit.unlearning.methods",
    "LossOutput": "mrdkit.unlearning.methods", "StepInputs": "mrdkit.unlearning.methods",
    "build_method": "mrdkit.unlearning.methods", "gather_step_inputs": "mrdkit.unlearning.step",
    "method_loss": "mrdkit.unlearning.step", "unlearn": "mrdkit.unlearning.loop",
    "UnlearnResult": "mrdkit.unlearning.loop", "UnlearnState": "mrdkit.unlearning.setup",
    "UnlearnConfig": "mrdkit.unlearning.config", "LoraSettings": "mrdkit.unlearning.config",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mrdkit.unlearning' has no attribute {name!r}")

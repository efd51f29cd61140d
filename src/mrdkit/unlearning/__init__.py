"""MRD-guided unlearning: losses (pure math), methods (loss recipes + the step's model calls), samplers.

``losses`` holds the formulas, ``methods`` the registered algorithms (``METHODS``: ga, graddiff, kl, npo,
simnpo, idk, idkdpo, rmu) and :func:`gather_step_inputs`, ``samplers`` the registered forget-set samplers
(``SAMPLERS``: sequential, random, cga, mrd_weighted, curriculum, anti_curriculum, refresh) and the
Hugging Face ``Trainer`` hook. See Feng et al., arXiv:2504.06658 and ``docs/paper-notes.md`` sections 3 and 6.
"""

from __future__ import annotations

import importlib
from typing import Any

from mrdkit.unlearning.methods import METHODS, LossOutput, StepInputs, UnlearnMethod, build_method
from mrdkit.unlearning.step import gather_step_inputs
from mrdkit.unlearning.samplers import SAMPLERS, MrdSampler, build, trainer_with_sampler, validate_scores

build_sampler = build

__all__ = [
    "METHODS",
    "SAMPLERS",
    "LossOutput",
    "MrdSampler",
    "StepInputs",
    "UnlearnMethod",
    "build",
    "build_method",
    "build_sampler",
    "gather_step_inputs",
    "trainer_with_sampler",
    "validate_scores",
    "unlearn",
    "UnlearnConfig",
    "LoraSettings",
    "UnlearnResult",
]


_LAZY = {"unlearn": "mrdkit.unlearning.loop", "UnlearnResult": "mrdkit.unlearning.loop",
         "UnlearnConfig": "mrdkit.unlearning.config", "LoraSettings": "mrdkit.unlearning.config"}


def __getattr__(name: str) -> Any:
    # the loop pulls in accelerate/peft: import it only when asked for
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mrdkit.unlearning' has no attribute {name!r}")

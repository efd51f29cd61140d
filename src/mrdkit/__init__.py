"""mrdkit: sample-level Memory Removal Difficulty (MRD) for LLM unlearning.

Implements and extends Feng et al., "A Neuro-inspired Interpretation of Unlearning in Large Language Models
through Sample-level Unlearning Difficulty", arXiv:2504.06658 (2025).

The top-level names are imported lazily so ``import mrdkit`` stays cheap (no torch until needed). ``load_model``
is the full model-spec resolver (testbed names included, :mod:`mrdkit.testbed.specs`). The package map is in
``docs/architecture.md``.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "Sample": "mrdkit.data",
    "load_samples": "mrdkit.data",
    "load_tofu": "mrdkit.data",
    "load_model": "mrdkit.testbed.specs",
    "token_logprobs": "mrdkit.logprob",
    "score_mrd": "mrdkit.scoring.mrd",
    "MRDResult": "mrdkit.scoring.mrd",
    "MRDConfig": "mrdkit.scoring.config",
    "load_mrd_result": "mrdkit.scoring.mrd",
    "unlearn": "mrdkit.unlearning.loop",
    "UnlearnConfig": "mrdkit.unlearning.config",
    "evaluate": "mrdkit.evaluation.runner",
    "MrdkitError": "mrdkit.errors",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mrdkit' has no attribute {name!r}")

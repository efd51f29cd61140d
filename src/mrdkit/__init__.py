"""mrdkit: sample-level Memory Removal Difficulty (MRD) for LLM unlearning.

Implements and extends Feng et al., "A Neuro-inspired Interpretation of Unlearning in Large Language Models
through Sample-level Unlearning Difficulty", arXiv:2504.06658 (2025).

The top-level names are imported lazily so ``import mrdkit`` stays cheap (no torch until needed).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "Sample": "mrdkit.data",
    "load_samples": "mrdkit.data",
    "load_tofu": "mrdkit.data",
    "load_model": "mrdkit.models",
    "token_logprobs": "mrdkit.logprob",
    "score_mrd": "mrdkit.scoring",
    "MRDResult": "mrdkit.scoring",
    "load_mrd_result": "mrdkit.scoring",
    "unlearn": "mrdkit.unlearning",
    "evaluate": "mrdkit.evaluation",
    "MrdkitError": "mrdkit.errors",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mrdkit' has no attribute {name!r}")

"""MRD scoring (Feng et al. 2025, "A Neuro-inspired Interpretation of Unlearning in LLMs through Sample-level
Unlearning Difficulty", arXiv 2504.06658): exact weight perturbation (``perturb``), streaming estimators
(``estimators``), the common-random-number engine (``engine``) and its multi-process form (``distributed``),
``score_mrd`` with its result and run directory (``mrd``), the Hutchinson curvature check (``curvature``) and cheap
difficulty baselines (``proxies``). Settings travel as one :class:`~mrdkit.scoring.config.MRDConfig`.

Names are resolved lazily, so ``import mrdkit.scoring`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "MRDConfig": "mrdkit.scoring.config", "MRDResult": "mrdkit.scoring.mrd", "score_mrd": "mrdkit.scoring.mrd",
    "load_mrd_result": "mrdkit.scoring.mrd", "ESTIMATORS": "mrdkit.scoring.estimators",
    "score_batches": "mrdkit.scoring.engine", "floor_check": "mrdkit.scoring.engine",
    "Perturber": "mrdkit.scoring.perturb", "LowMemPerturber": "mrdkit.scoring.perturb",
    "perturbed": "mrdkit.scoring.perturb", "hutchinson_trace": "mrdkit.scoring.curvature",
    "compute_proxies": "mrdkit.scoring.proxies",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mrdkit.scoring' has no attribute {name!r}")

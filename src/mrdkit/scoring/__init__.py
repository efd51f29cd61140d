"""MRD scoring (Feng et al. 2025, "A Neuro-inspired Interpretation of Unlearning in LLMs through Sample-level
Unlearning Difficulty", arXiv 2504.06658): exact weight perturbation, streaming estimators, the common-random-
number engine, the Hutchinson curvature check and cheap difficulty baselines.
"""

from mrdkit.scoring.curvature import HutchinsonResult, eager_attention, hutchinson_trace, predicted_curvature
from mrdkit.scoring.engine import EngineResult, canonical_batches, floor_check, score_batches, sigma_scaling_check
from mrdkit.scoring.estimators import (ESTIMATORS, Accumulator, AntitheticAccumulator, EstimateResult,
                                       PaperAccumulator, accumulator_from_state, antithetic_estimate,
                                       make_accumulator, paper_estimate, relative_change, resume_accumulator)
from mrdkit.scoring.perturb import Perturber, eval_mode, perturbed, select_parameters
from mrdkit.scoring.lowmem import LowMemPerturber, make_perturber
from mrdkit.scoring.mrd import MRDConfig, MRDResult, load_mrd_result, score_mrd
from mrdkit.scoring.proxies import compute_proxies

__all__ = [
    "ESTIMATORS", "LowMemPerturber", "make_perturber", "MRDConfig", "MRDResult", "load_mrd_result", "score_mrd", "Accumulator", "AntitheticAccumulator", "EngineResult", "EstimateResult", "HutchinsonResult",
    "PaperAccumulator", "Perturber", "accumulator_from_state", "antithetic_estimate", "canonical_batches",
    "compute_proxies", "eager_attention", "eval_mode", "floor_check", "hutchinson_trace", "make_accumulator",
    "paper_estimate", "perturbed", "predicted_curvature", "relative_change", "resume_accumulator", "score_batches",
    "select_parameters", "sigma_scaling_check",
]

"""Evaluation: unlearning metrics (TOFU, MUSE, MIA, MCQ), difficulty correlations, community-format I/O.

Pure math lives in :mod:`~mrdkit.evaluation.metrics` (registry :data:`~mrdkit.evaluation.metrics.METRICS`),
:mod:`~mrdkit.evaluation.correlation` and :mod:`~mrdkit.evaluation.community`; the code that runs models calls them:
:func:`evaluate` (:mod:`~mrdkit.evaluation.runner`: TOFU suite in :mod:`~mrdkit.evaluation.tofu`, multiple choice
and perplexity in :mod:`~mrdkit.evaluation.mcq`, greedy generation in :mod:`~mrdkit.evaluation.generation`) and
the difficulty ground truth :func:`required_updates` (:mod:`~mrdkit.evaluation.difficulty`) and how well scores
predict it, :func:`correlation_report` (:mod:`~mrdkit.evaluation.correlation`).
Names are resolved lazily so ``import mrdkit.evaluation`` does not pull in scipy, scikit-learn or rouge-score.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    **{name: "mrdkit.evaluation.metrics" for name in (
        "METRICS", "MODEL_UTILITY_KEYS", "answer_probability", "truth_ratio", "truth_ratio_forget_agg",
        "truth_ratio_retain_agg", "forget_quality", "model_utility", "normalised_probability", "rouge_l_recall",
        "rouge_l_f1", "rouge_l_recall_batch", "rouge_l_f1_batch", "extraction_strength", "exact_memorization",
        "mia_auc", "privacy_leakage", "relative_difference", "muse_auc", "muse_privleak",
        "multiple_choice_correct", "multiple_choice_accuracy", "perplexity", "mean_probability")},
    **{name: "mrdkit.evaluation.correlation" for name in (
        "CorrelationResult", "correlate", "harrell_c", "concordance_counts", "correlation_table",
        "difficulty_table", "correlation_report")},
    **{name: "mrdkit.evaluation.community" for name in (
        "FORGET_TRUTH_RATIO", "to_community", "summarize", "write_community", "read_community",
        "read_forget_truth_ratios", "value_field")},
    **{name: "mrdkit.evaluation.runner" for name in ("evaluate", "EvalResult", "reference_from_log")},
    **{name: "mrdkit.evaluation.tofu" for name in ("TofuConfig", "Reference", "reference_from_model")},
    **{name: "mrdkit.evaluation.generation" for name in ("generate_greedy",)},
    **{name: "mrdkit.evaluation.mcq" for name in ("evaluate_mcq", "evaluate_perplexity", "option_logprobs")},
    **{name: "mrdkit.evaluation.difficulty" for name in ("required_updates", "DifficultyConfig")},
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mrdkit.evaluation' has no attribute {name!r}")

"""TOFU metrics as pure functions of numbers (re-exported by :mod:`mrdkit.evaluation.metrics`).

Answer probability, truth ratio and its forget / retain aggregates, forget quality, model utility and the
normalised probability as in TOFU (Maini et al. 2024, arXiv:2401.06121; locuslab/tofu ``aggregate_eval_stat.py``)
and open-unlearning (Dorna et al. 2025, arXiv:2506.12618; ``src/evals/metrics/{memorization,utility,utils}.py``),
plus the per-sample memorisation metrics extraction strength and exact memorisation it reports on the TOFU
forget split. Also the float64 array helpers ``_arr`` / ``_nanmean`` the other metric modules share.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from mrdkit.errors import MrdkitError

#: The 9 TOFU model-utility components, named as open-unlearning names them in ``TOFU_EVAL.json``.
MODEL_UTILITY_KEYS = ("retain_Q_A_Prob", "retain_Q_A_ROUGE", "retain_Truth_Ratio", "ra_Q_A_Prob_normalised",
                      "ra_Q_A_ROUGE", "ra_Truth_Ratio", "wf_Q_A_Prob_normalised", "wf_Q_A_ROUGE", "wf_Truth_Ratio")


def _arr(x: Any) -> np.ndarray:
    """float64 numpy view of a number, sequence, numpy array or torch tensor."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _nanmean(values: Any, name: str) -> float:
    """Mean ignoring NaN (open-unlearning drops ``None`` per-sample values the same way)."""
    a = _arr(values).ravel()
    a = a[~np.isnan(a)]
    if a.size == 0:
        raise MrdkitError(f"{name}: no per-sample values to aggregate")
    return float(a.mean())


def answer_probability(mean_logprob: Any) -> Any:
    """Length-normalised answer probability ``P(a|q) = exp((1/n) sum_t log p(a_t | q, a_<t))`` (TOFU); a number
    gives a float, an array/tensor of per-sample mean log-probs an array."""
    p = np.exp(_arr(mean_logprob))
    return float(p) if p.ndim == 0 else p


def truth_ratio(correct_mean_nll: Any, wrong_mean_nlls: Sequence[float], *, eps: float = 0.0) -> float:
    """Truth ratio ``TR = exp(-mean_j L_wrong_j) / exp(-L_correct)``, L = mean token NLL of an answer.

    As open-unlearning ``truth_ratio`` does, the perturbed answers are averaged in NLL space (a geometric mean
    of their probabilities), and several correct answers (paraphrases) likewise. TOFU's ``aggregate_eval_stat.py``
    stores the reciprocal, ``exp(L_pert - L_para) = 1/TR``. ``eps=1e-10`` reproduces open-unlearning's
    ``wrong_prob / (correct_prob + 1e-10)`` bit for bit; the default 0 is the exact ratio, computed in log space.
    """
    wrong = _arr(wrong_mean_nlls).ravel()
    if wrong.size == 0:
        raise MrdkitError("truth_ratio needs at least one perturbed (wrong) answer")
    l_c, l_w = float(_arr(correct_mean_nll).mean()), float(wrong.mean())
    return math.exp(l_c - l_w) if eps == 0 else math.exp(-l_w) / (math.exp(-l_c) + eps)


def truth_ratio_forget_agg(trs: Sequence[float], *, eps: float = 0.0) -> float:
    """Forget-split aggregate ``mean_i min(TR_i, 1/TR_i)`` in [0, 1]; 1 = true and false answers equally likely.

    open-unlearning aggregator ``closer_to_1_better`` (it uses ``1/(TR + 1e-10)``; pass ``eps=1e-10`` to match);
    TOFU ``mean(minimum(s, 1/s))`` with ``s = 1/TR`` is the same number.
    """
    tr = _arr(trs)
    return _nanmean(np.minimum(tr, 1.0 / (tr + eps)), "truth_ratio_forget")


def truth_ratio_retain_agg(trs: Sequence[float]) -> float:
    """Retain/real-author/world-fact aggregate ``mean_i max(0, 1 - TR_i)``; higher = true answer preferred.

    open-unlearning aggregator ``true_better``; TOFU writes it as ``maximum(0, 1 - 1/s)`` with ``s = 1/TR``.
    """
    return _nanmean(np.maximum(0.0, 1.0 - _arr(trs)), "truth_ratio_retain")


def forget_quality(unlearned_forget_trs: Sequence[float], retain_forget_trs: Sequence[float]) -> float:
    """TOFU forget quality: p-value of ``scipy.stats.ks_2samp`` between forget-set truth ratios of the unlearned
    model and of the retain model (never trained on the forget set). NaNs are dropped. High = indistinguishable.
    open-unlearning ``ks_test`` compares the ``forget_truth_ratio`` per-sample scores; TOFU compares ``1/TR``
    (the KS statistic is unchanged by a monotone map of both samples).
    """
    from scipy.stats import ks_2samp

    a, b = _arr(unlearned_forget_trs).ravel(), _arr(retain_forget_trs).ravel()
    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    if a.size == 0 or b.size == 0:
        raise MrdkitError("forget_quality needs truth ratios of both the unlearned and the retain model")
    return float(ks_2samp(a, b).pvalue)


def model_utility(values: Mapping[str, float]) -> float:
    """TOFU model utility: harmonic mean (``scipy.stats.hmean``) of the 9 values in :data:`MODEL_UTILITY_KEYS`
    (retain / real-author / world-fact x probability / ROUGE-L recall / truth-ratio aggregate). Other keys in
    ``values`` are ignored, so a whole summary dict can be passed. Any zero component gives 0.
    """
    from scipy.stats import hmean

    missing = [k for k in MODEL_UTILITY_KEYS if values.get(k) is None]
    if missing:
        raise MrdkitError(f"model_utility is missing {', '.join(missing)}")
    vals = [float(values[k]) for k in MODEL_UTILITY_KEYS]
    bad = [k for k, v in zip(MODEL_UTILITY_KEYS, vals) if not (math.isfinite(v) and v >= 0)]
    if bad:
        raise MrdkitError(f"model_utility components must be finite and >= 0: {', '.join(bad)}")
    return float(hmean(vals))


def normalised_probability(p_true: float, p_wrongs: Sequence[float], *, eps: float = 0.0) -> float:
    """``P_true / (P_true + sum_j P_wrong_j)`` over length-normalised probabilities (TOFU real authors / world
    facts). open-unlearning ``probability_w_options`` adds 1e-10 to the denominator (``eps=1e-10`` to match)."""
    p = float(p_true)
    return p / (p + float(_arr(p_wrongs).sum()) + eps)


def extraction_strength(token_correct: Sequence[bool], *, open_unlearning_compat: bool = False) -> float:
    """Extraction strength ``ES = 1 - k*/n``, ``k* = min{k : the teacher-forced argmax predicts y_k..y_n}``.

    Carlini et al. 2021 (arXiv:2012.07805) extraction, as made per-sample by Wang et al. 2024 (arXiv:2406.09179)
    and implemented in open-unlearning ``extraction_strength``. ``token_correct[t]`` is True where the argmax
    prediction equals answer token t; ES is then the length of the trailing run of correct tokens over n. If
    the last token is wrong, k* = n and ES = 0; open-unlearning's loop stops at k = n - 1 and reports 1/n instead
    (``open_unlearning_compat=True``). open-unlearning also drops the final (EOS) label token. NaN if n = 0.
    """
    c = _arr(token_correct).ravel() != 0
    n = c.size
    if n == 0:
        return float("nan")
    wrong = np.flatnonzero(~c)
    run = n if wrong.size == 0 else n - 1 - int(wrong[-1])
    return (max(run, 1) if open_unlearning_compat else run) / n


def exact_memorization(token_correct: Sequence[bool]) -> float:
    """Exact memorisation ``EM = (1/n) sum_t [argmax_v p(v | x, y_<t) == y_t]`` (Tirumala et al. 2022,
    arXiv:2205.10770; open-unlearning ``exact_memorization``). NaN if n = 0 (open-unlearning: None)."""
    c = _arr(token_correct).ravel() != 0
    return float(c.mean()) if c.size else float("nan")


def mean_probability(mean_logprobs: Sequence[float]) -> float:
    """Mean of :func:`answer_probability` over samples (TOFU ``*_Q_A_Prob``; NaN skipped)."""
    return _nanmean(np.exp(_arr(mean_logprobs)), "probability")

"""Unlearning metrics (TOFU, MUSE, membership inference, multiple choice) as pure functions of numbers and text.

Definitions as in TOFU (Maini et al. 2024, arXiv:2401.06121; locuslab/tofu ``aggregate_eval_stat.py``), the
community framework open-unlearning (Dorna et al. 2025, arXiv:2506.12618; locuslab/open-unlearning
``src/evals/metrics/{memorization,privacy,utility,utils}.py``, ``mia/utils.py``) and MUSE (Shi et al. 2024,
arXiv:2407.06460). Per-sample functions return a float; the aggregates in :data:`METRICS` take per-sample columns.
Metadata ``higher_is_better`` is None when the better direction depends on the split (forget vs retain) or on
a target value (``ideal``).

Sections: TOFU (answer probability, truth ratio and its forget / retain aggregates, forget quality, model
utility, normalised probability, and the memorisation metrics extraction strength and exact memorisation), then
ROUGE-L, membership inference / privacy leakage, multiple choice and perplexity, and the :data:`METRICS` registry.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from mrdkit.errors import MrdkitError
from mrdkit.registry import Registry

METRICS: Registry[Callable[..., float]] = Registry("metric")


# ------------------------------------------------------------------------------------------------ TOFU

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
    ``wrong_prob / (correct_prob + 1e-10)`` bit for bit (what ``TOFU_EVAL.json`` holds); the default 0 is the
    exact ratio, computed in log space (what mrdkit's ``eval.json`` holds).
    """
    wrong = _arr(wrong_mean_nlls).ravel()
    if wrong.size == 0:
        raise MrdkitError("truth_ratio needs at least one perturbed (wrong) answer")
    l_c, l_w = float(_arr(correct_mean_nll).mean()), float(wrong.mean())
    return math.exp(l_c - l_w) if eps == 0 else math.exp(-l_w) / (math.exp(-l_c) + eps)


def truth_ratio_forget_agg(trs: Sequence[float], *, eps: float = 0.0) -> float:
    """Forget-split aggregate ``mean_i min(TR_i, 1/TR_i)`` in [0, 1]; 1 = true and false answers equally likely.

    open-unlearning aggregator ``closer_to_1_better`` (it uses ``1/(TR + 1e-10)``; ``eps=1e-10`` matches it, as
    ``TOFU_EVAL.json`` does; ``eval.json`` uses 0); TOFU ``mean(minimum(s, 1/s))`` with ``s = 1/TR`` is the same.
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
    facts). open-unlearning ``probability_w_options`` adds 1e-10 to the denominator (``eps=1e-10`` to match, as
    ``TOFU_EVAL.json`` does; ``eval.json`` uses 0)."""
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


# ------------------------------------------------------------------------------- ROUGE, privacy, MCQ, perplexity


@functools.lru_cache(maxsize=4)
def _rouge_scorer(use_stemmer: bool, types: tuple[str, ...] = ("rougeL",)) -> Any:
    """One cached ``RougeScorer(types)`` per stemming choice (building one loads the tokenizer rules)."""
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(list(types), use_stemmer=use_stemmer)


def rouge_l_recall(prediction: str, reference: str) -> float:
    """TOFU ROUGE-L recall = LCS(pred, ref) / |ref tokens|, ``RougeScorer(["rougeL"], use_stemmer=True)``,
    scored as ``score(reference, prediction)`` (open-unlearning ``eval_text_similarity``, ``rougeL_recall``)."""
    return float(_rouge_scorer(True).score(reference, prediction)["rougeL"].recall)


def rouge_l_f1(prediction: str, reference: str) -> float:
    """MUSE ROUGE-L F1, ``RougeScorer(["rougeL"], use_stemmer=False)``, ``score(reference, prediction)``,
    ``fmeasure`` (MUSE ``verbmem/get_rouge.py``, ``knowmem/get_rouge_qa.py``)."""
    return float(_rouge_scorer(False).score(reference, prediction)["rougeL"].fmeasure)


def text_similarity(generation: str, ground_truth: str) -> dict[str, float]:
    """open-unlearning's per-sample ROUGE fields (``evals/metrics/utils.py``, ``eval_text_similarity``):
    ``RougeScorer(["rouge1", "rougeL"], use_stemmer=True).score(ground_truth, generation)`` ->
    ``{"rouge1_recall", "rougeL_f1", "rougeL_recall"}``. Its TOFU metrics aggregate ``rougeL_recall``, its MUSE
    metrics ``rougeL_f1`` (stemmed, unlike MUSE's own :func:`rouge_l_f1`)."""
    scores = _rouge_scorer(True, ("rouge1", "rougeL")).score(ground_truth, generation)
    return {"rouge1_recall": float(scores["rouge1"].recall), "rougeL_f1": float(scores["rougeL"].fmeasure),
            "rougeL_recall": float(scores["rougeL"].recall)}


def _pairs(predictions: Sequence[str], references: Sequence[str]) -> list[tuple[str, str]]:
    if len(predictions) != len(references):
        raise MrdkitError(f"{len(predictions)} predictions but {len(references)} references")
    return list(zip(predictions, references))


def rouge_l_recall_batch(predictions: Sequence[str], references: Sequence[str]) -> list[float]:
    """:func:`rouge_l_recall` for each (prediction, reference) pair."""
    return [rouge_l_recall(p, r) for p, r in _pairs(predictions, references)]


def rouge_l_f1_batch(predictions: Sequence[str], references: Sequence[str]) -> list[float]:
    """:func:`rouge_l_f1` for each (prediction, reference) pair."""
    return [rouge_l_f1(p, r) for p, r in _pairs(predictions, references)]


def mia_auc(member_scores: Sequence[float], nonmember_scores: Sequence[float]) -> float:
    """ROC-AUC of member (e.g. forget) vs non-member (e.g. holdout) samples, ``sklearn.metrics.roc_auc_score``.

    Convention: scores are "higher = more member-like" (:mod:`mrdkit.membership`: ``min_k_logprob``,
    ``min_k_plus_plus``, ``zlib_ratio``, or minus the loss / gradient norm); AUC 1 = members perfectly detected,
    0.5 = chance. This is the number and the score sign of mrdkit's ``eval.json``. It equals open-unlearning's
    ``mia_*`` AUC (``evals/metrics/mia/utils.py``), which labels forget 0 / holdout 1 and scores with loss-like
    values ``-s``: ``roc_auc_score([0]*F + [1]*H, -s_forget + -s_holdout) = mia_auc(s_forget, s_holdout)``. The
    community files store those ``-s`` (:func:`mrdkit.evaluation.community.attack_entry`).
    """
    from sklearn.metrics import roc_auc_score

    m, h = _arr(member_scores).ravel(), _arr(nonmember_scores).ravel()
    if m.size == 0 or h.size == 0 or np.isnan(m).any() or np.isnan(h).any():
        raise MrdkitError("mia_auc needs non-empty member and non-member scores without NaN")
    labels = np.r_[np.ones(m.size), np.zeros(h.size)]
    return float(roc_auc_score(labels, np.r_[m, h]))


def privacy_leakage(auc_unlearned: float, auc_retain: float, *, eps: float = 0.0) -> float:
    """open-unlearning ``privleak``: ``((1 - AUC_u) - (1 - AUC_r)) / ((1 - AUC_r) + eps) * 100`` with
    member-convention AUCs from :func:`mia_auc` (TOFU: Min-K% k=0.4, forget vs holdout; AUC_r from the retain
    model, 0.5 when unknown). ``1 - AUC`` is MUSE's AUC, so this is MUSE's PrivLeak. 0 = ideal, negative = forget
    set still detectable (under-unlearning), positive = over-unlearning. open-unlearning adds ``eps = 1e-10`` to
    the denominator (``evals/metrics/privacy.py``; pass it for the community files); with the default 0 an
    ``AUC_r`` of 1 is an error instead of a number of order 1e12."""
    ref = 1.0 - float(auc_retain)
    if ref + eps == 0:
        raise MrdkitError("privacy_leakage is undefined for a retain-model AUC of 1")
    return ((1.0 - float(auc_unlearned)) - ref) / (ref + eps) * 100.0


def relative_difference(value: float, reference: float) -> float:
    """open-unlearning ``rel_diff``: ``(value - reference) / reference * 100`` (e.g. an MIA AUC vs the retain model)."""
    if float(reference) == 0:
        raise MrdkitError("relative_difference is undefined for a reference of 0")
    return (float(value) - float(reference)) / float(reference) * 100.0


def muse_auc(forget_scores: Sequence[float], holdout_scores: Sequence[float]) -> float:
    """MUSE ``forget_holdout_Min-40%`` AUC: ROC-AUC with forget labelled 0 and holdout 1, scored by ``-s(x)``.

    Pass membership scores (higher = member), i.e. ``-s(x) = mrdkit.membership.min_k_logprob(values, 0.4)``.
    That is ``mia_auc`` with holdout as the positive class (= ``1 - mia_auc(forget, holdout)``): ~0 while the
    model still knows the forget set, ~0.5 when forget and holdout look alike.
    """
    return mia_auc(holdout_scores, forget_scores)


def muse_privleak(forget_scores: Sequence[float], holdout_scores: Sequence[float],
                  auc_retrain: float = 0.4772) -> float:
    """MUSE PrivLeak ``(AUC_unlearn - AUC_retrain) / AUC_retrain * 100`` with AUC = :func:`muse_auc` and
    ``AUC_retrain`` = 0.4772 for MUSE-News (Shi et al. 2024; MUSE ``eval.py``, ``constants.py``). 0 = ideal;
    the target (un-unlearned) model scores about -99.8."""
    if float(auc_retrain) == 0:
        raise MrdkitError("muse_privleak is undefined for auc_retrain = 0")
    return (muse_auc(forget_scores, holdout_scores) - auc_retrain) / auc_retrain * 100.0


def multiple_choice_correct(option_logprobs: Sequence[Sequence[float]], answer_indices: Sequence[int]) -> list[bool]:
    """Per question: is ``argmax_j logp(option_j | question)`` the answer index? (ties -> first option;
    WMDP-style MCQ, Li et al. 2024, arXiv:2403.03218; lm-evaluation-harness ``acc``)."""
    if len(option_logprobs) != len(answer_indices):
        raise MrdkitError(f"{len(option_logprobs)} questions but {len(answer_indices)} answer indices")
    for i, (opts, ans) in enumerate(zip(option_logprobs, answer_indices)):
        if not 0 <= int(ans) < len(opts):
            raise MrdkitError(f"question {i}: answer index {ans} out of range for {len(opts)} options")
    return [int(np.argmax(_arr(o))) == int(a) for o, a in zip(option_logprobs, answer_indices)]


def multiple_choice_accuracy(option_logprobs: Sequence[Sequence[float]], answer_indices: Sequence[int]) -> float:
    """Fraction of questions whose highest-log-prob option is the answer (chance = 1/#options)."""
    return _nanmean(multiple_choice_correct(option_logprobs, answer_indices), "multiple_choice_accuracy")


def perplexity(nll_sum: float | Sequence[float], n_tokens: int | Sequence[int]) -> float:
    """Corpus perplexity ``exp(sum_i NLL_i / sum_i n_i)`` from per-sequence summed NLLs and token counts."""
    total = float(_arr(n_tokens).sum())
    if total <= 0:
        raise MrdkitError("perplexity needs at least one token")
    return math.exp(float(_arr(nll_sum).sum()) / total)


def _mean_of(fn: Callable[..., float]) -> Callable[..., float]:
    """Aggregate ``mean_i fn(col1[i], col2[i], ...)`` (NaN skipped) of a per-sample function."""

    def aggregate(*columns: Sequence[Any], **kwargs: Any) -> float:
        return _nanmean([fn(*row, **kwargs) for row in zip(*columns)], fn.__name__)

    aggregate.__name__ = f"mean_{fn.__name__}"
    aggregate.__doc__ = f"Mean over samples of :func:`{fn.__name__}` (arguments are per-sample columns)."
    return aggregate


def muse_rouge(predictions: Sequence[str], references: Sequence[str]) -> float:
    """MUSE VerbMem / KnowMem: ``100 * mean_i rouge_l_f1(pred_i, ref_i)`` (Shi et al. 2024, arXiv:2407.06460)."""
    return 100.0 * _nanmean(rouge_l_f1_batch(predictions, references), "muse_rouge")


_REGISTERED: list[tuple[str, Callable[..., float], bool | None, str]] = [
    ("probability", mean_probability, None, "mean exp(mean token log-prob) of the answer (TOFU P(a|q))"),
    ("probability_normalised", _mean_of(normalised_probability), True, "mean P_true / (P_true + sum P_wrong)"),
    ("rouge_l_recall", _mean_of(rouge_l_recall), None, "mean ROUGE-L recall, stemmed (TOFU)"),
    ("rouge_l_f1", _mean_of(rouge_l_f1), None, "mean ROUGE-L F1, unstemmed (MUSE VerbMem/KnowMem)"),
    ("truth_ratio_forget", truth_ratio_forget_agg, True, "mean min(TR, 1/TR) on the forget split (TOFU)"),
    ("truth_ratio_retain", truth_ratio_retain_agg, True, "mean max(0, 1 - TR) on retain/utility splits (TOFU)"),
    ("forget_quality", forget_quality, True, "KS-test p-value of forget truth ratios vs a retain model (TOFU)"),
    ("model_utility", model_utility, True, "harmonic mean of the 9 TOFU utility components"),
    ("extraction_strength", _mean_of(extraction_strength), None, "mean teacher-forced extractable answer suffix"),
    ("exact_memorization", _mean_of(exact_memorization), None, "mean teacher-forced argmax token accuracy"),
    ("mia_auc", mia_auc, None, "membership-inference ROC-AUC, members vs non-members (higher score = member)"),
    ("privleak", privacy_leakage, None, "open-unlearning privleak: relative MIA AUC gap to the retain model, %"),
    ("rel_diff", relative_difference, None, "relative difference to a reference value, %"),
    ("muse_privleak", muse_privleak, None, "MUSE PrivLeak from Min-40% scores, relative to AUC_retrain, %"),
    ("muse_auc", muse_auc, None, "MUSE forget (0) vs holdout (1) Min-40% AUC; ~0 while the forget set is known"),
    ("muse_verbmem", muse_rouge, None, "MUSE VerbMem: 100 x mean ROUGE-L F1 of 128-token continuations"),
    ("muse_knowmem", muse_rouge, None, "MUSE KnowMem: 100 x mean ROUGE-L F1 of cut few-shot answers"),
    ("multiple_choice_accuracy", multiple_choice_accuracy, None, "argmax-option accuracy on MCQ (WMDP)"),
    ("perplexity", perplexity, None, "corpus perplexity exp(total NLL / total tokens)"),
]
_IDEAL = {"privleak": 0.0, "rel_diff": 0.0, "muse_privleak": 0.0}
for _name, _fn, _hib, _summary in _REGISTERED:
    METRICS.register(_name, higher_is_better=_hib, summary=_summary, ideal=_IDEAL.get(_name))(_fn)

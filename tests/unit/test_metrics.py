"""Worked-math tests of the TOFU / MUSE / MIA / MCQ metrics against hand-computed numbers."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import hmean, ks_2samp
from sklearn.metrics import auc, roc_auc_score, roc_curve

from mrdkit.errors import MrdkitError
from mrdkit.evaluation import metrics as M


def test_answer_probability_scalar_array_tensor():
    assert M.answer_probability(-1.2) == pytest.approx(math.exp(-1.2))
    assert isinstance(M.answer_probability(-1.2), float)
    np.testing.assert_allclose(M.answer_probability([0.0, -1.0]), [1.0, math.exp(-1.0)])
    np.testing.assert_allclose(M.answer_probability(torch.tensor([-2.0], dtype=torch.float64)), [math.exp(-2.0)])


def test_truth_ratio_averages_wrong_answers_in_nll_space():
    # L_correct = 2, wrong NLLs 3 and 4: TR = exp(-(3+4)/2) / exp(-2) = exp(-1.5)
    assert M.truth_ratio(2.0, [3.0, 4.0]) == pytest.approx(math.exp(-1.5))
    mean_of_probs = np.mean(np.exp([-3.0, -4.0])) / math.exp(-2.0)
    assert M.truth_ratio(2.0, [3.0, 4.0]) != pytest.approx(mean_of_probs)
    # TOFU's aggregate_eval_stat.py stores exp(L_pert_mean - L_para) = 1 / TR
    assert 1.0 / M.truth_ratio(2.0, [3.0, 4.0]) == pytest.approx(math.exp(3.5 - 2.0))
    # several correct answers (paraphrases) are averaged the same way
    assert M.truth_ratio([1.0, 3.0], [3.0, 4.0]) == pytest.approx(math.exp(-1.5))


def test_truth_ratio_eps_reproduces_open_unlearning():
    ou = math.exp(-3.5) / (math.exp(-2.0) + 1e-10)
    assert M.truth_ratio(2.0, [3.0, 4.0], eps=1e-10) == ou
    # when the correct answer is nearly impossible, the epsilon caps the community TR
    assert M.truth_ratio(40.0, [3.0], eps=1e-10) == pytest.approx(math.exp(-3.0) / 1e-10)
    assert M.truth_ratio(40.0, [3.0]) == pytest.approx(math.exp(37.0))
    with pytest.raises(MrdkitError, match="perturbed"):
        M.truth_ratio(1.0, [])


def test_truth_ratio_aggregators():
    # min(TR, 1/TR): 0.5, 0.5, 1 -> 2/3 ; max(0, 1 - TR): 0.75, 0, 0 -> 0.25
    assert M.truth_ratio_forget_agg([0.5, 2.0, 1.0]) == pytest.approx(2 / 3)
    assert M.truth_ratio_retain_agg([0.25, 1.5, 1.0]) == pytest.approx(0.25)
    tr = np.array([0.3, 4.0])
    assert M.truth_ratio_forget_agg(tr, eps=1e-10) == np.mean(np.minimum(tr, 1 / (tr + 1e-10)))
    assert M.truth_ratio_forget_agg([0.5, float("nan")]) == pytest.approx(0.5)  # NaN skipped, like None upstream


def test_forget_quality_is_ks_pvalue_and_invariant_to_reciprocal():
    a, b = [0.2, 0.5, 0.9, 1.3, 2.0], [0.4, 0.6, 0.8, 1.1, 3.0, 5.0]
    assert M.forget_quality(a, b) == pytest.approx(ks_2samp(a, b).pvalue)
    # TOFU feeds 1/TR, open-unlearning TR: same p-value
    assert M.forget_quality(1 / np.array(a), 1 / np.array(b)) == pytest.approx(M.forget_quality(a, b))
    assert M.forget_quality(a, a) == pytest.approx(1.0)
    assert M.forget_quality([0.1, 0.2, 0.3], [5.0, 6.0, 7.0]) == pytest.approx(0.1)  # exact KS, n=m=3
    assert M.forget_quality(a + [float("nan")], b) == M.forget_quality(a, b)
    with pytest.raises(MrdkitError):
        M.forget_quality([], b)


def _utility_values(v=0.5):
    return {k: v + 0.05 * i for i, k in enumerate(M.MODEL_UTILITY_KEYS)}


def test_model_utility_harmonic_mean_of_nine():
    vals = _utility_values()
    assert M.model_utility(vals) == pytest.approx(hmean(list(vals.values())))
    assert M.model_utility({**vals, "forget_quality": 1e-9}) == M.model_utility(vals)  # extras ignored
    assert M.model_utility({**vals, "wf_Q_A_ROUGE": 0.0}) == 0.0
    missing = {k: v for k, v in vals.items() if k not in ("ra_Truth_Ratio", "wf_Q_A_Prob_normalised")}
    with pytest.raises(MrdkitError, match="ra_Truth_Ratio, wf_Q_A_Prob_normalised"):
        M.model_utility(missing)
    with pytest.raises(MrdkitError, match="retain_Q_A_Prob"):
        M.model_utility({**vals, "retain_Q_A_Prob": -0.1})


def test_normalised_probability():
    assert M.normalised_probability(0.5, [0.1, 0.4]) == pytest.approx(0.5)
    assert M.normalised_probability(0.2, [0.2], eps=1e-10) == 0.2 / (0.4 + 1e-10)


def test_rouge_l_recall_stemmed_and_f1_unstemmed():
    # stemming maps cats -> cat: LCS = "the cat sat" (3) over 4 reference tokens
    assert M.rouge_l_recall("the cats sat", "the cat sat on") == pytest.approx(3 / 4)
    # no stemming: LCS = "the sat" (2); P = 2/3, R = 2/4, F = 4/7
    assert M.rouge_l_f1("the cats sat", "the cat sat on") == pytest.approx(4 / 7)
    # the reference is the scorer's target: recall is over reference tokens
    assert M.rouge_l_recall("a b c d", "a b") == pytest.approx(1.0)
    assert M.rouge_l_recall("a b", "a b c d") == pytest.approx(0.5)
    assert M.rouge_l_recall_batch(["a b", "x"], ["a b c d", "y"]) == pytest.approx([0.5, 0.0])
    assert M.rouge_l_f1_batch(["a b"], ["a b"]) == [1.0]
    assert M._rouge_scorer(True) is M._rouge_scorer(True)
    with pytest.raises(MrdkitError, match="2 predictions but 1 references"):
        M.rouge_l_f1_batch(["a", "b"], ["a"])


def test_text_similarity_is_open_unlearnings_stemmed_rouge_entry():
    # reference "the cat sat on the mat" (6 tokens), generation "mat the cat": unigram overlap 3 -> R1 = 1/2;
    # LCS "the cat" = 2 -> R = 2/6, P = 2/3, F = 2 R P / (R + P) = 4/9
    assert M.text_similarity("mat the cat", "the cat sat on the mat") == pytest.approx(
        {"rouge1_recall": 0.5, "rougeL_f1": 4 / 9, "rougeL_recall": 1 / 3})
    # stemmed (cats -> cat): LCS 3 of 4 reference tokens, P = 1 -> F1 = 6/7; MUSE's own F1 is unstemmed (4/7)
    sim = M.text_similarity("the cats sat", "the cat sat on")
    assert sim["rougeL_f1"] == pytest.approx(6 / 7) and sim["rougeL_recall"] == M.rouge_l_recall("the cats sat",
                                                                                                  "the cat sat on")
    assert M.rouge_l_f1("the cats sat", "the cat sat on") == pytest.approx(4 / 7)


@pytest.mark.parametrize(
    "correct, es, es_compat",
    [([1, 1, 1, 1], 1.0, 1.0), ([0, 1, 1, 1], 0.75, 0.75), ([1, 0, 1, 1], 0.5, 0.5), ([1, 1, 1, 0], 0.0, 0.25),
     ([0, 0], 0.0, 0.5)],
)
def test_extraction_strength_hand_made(correct, es, es_compat):
    assert M.extraction_strength(correct) == pytest.approx(es)
    assert M.extraction_strength(correct, open_unlearning_compat=True) == pytest.approx(es_compat)


def _es_open_unlearning_loop(c):
    preds, labels = np.where(c, 1, 0), np.ones(len(c), int)  # argmax == label exactly where c is True
    for k in range(len(c)):
        if np.array_equal(preds[k:], labels[k:]):
            break
    return 1 - k / len(c)


def _es_definition(c):
    n = len(c)
    return 1 - min(k for k in range(n + 1) if all(c[k:])) / n


def test_extraction_strength_matches_definition_and_community_loop():
    rng = np.random.default_rng(0)
    for _ in range(200):
        c = list(rng.random(int(rng.integers(1, 9))) < 0.7)
        assert M.extraction_strength(c) == pytest.approx(_es_definition(c))
        assert M.extraction_strength(c, open_unlearning_compat=True) == pytest.approx(_es_open_unlearning_loop(c))
    assert math.isnan(M.extraction_strength([]))


def test_exact_memorization():
    assert M.exact_memorization([True, False, True, True]) == pytest.approx(0.75)
    assert M.exact_memorization(torch.tensor([True, True])) == 1.0
    assert math.isnan(M.exact_memorization([]))


def test_mia_auc_member_convention_matches_open_unlearning():
    members, nonmembers = [3.0, 4.0, 5.0], [1.0, 2.0, 3.5]
    assert M.mia_auc(members, nonmembers) == pytest.approx(8 / 9)  # 8 of 9 pairs ordered member > non-member
    # open-unlearning: loss-like scores (higher = non-member), forget labelled 0, holdout 1
    ou = roc_auc_score([0, 0, 0, 1, 1, 1], -np.array(members + nonmembers))
    assert M.mia_auc(members, nonmembers) == pytest.approx(ou)
    assert M.mia_auc([1.0, 1.0], [1.0]) == 0.5
    with pytest.raises(MrdkitError):
        M.mia_auc([1.0, float("nan")], [0.0])


def test_privacy_leakage_and_relative_difference():
    # open-unlearning privleak: ((1 - 0.9) - (1 - 0.5)) / (1 - 0.5) * 100 = -80
    assert M.privacy_leakage(0.9, 0.5) == pytest.approx(-80.0)
    assert M.privacy_leakage(0.6, 0.6) == pytest.approx(0.0)
    assert M.privacy_leakage(0.3, 0.5) == pytest.approx(40.0)
    assert M.relative_difference(0.6, 0.5) == pytest.approx(20.0)
    with pytest.raises(MrdkitError):
        M.privacy_leakage(0.5, 1.0)
    # open-unlearning's exact formula: 1e-10 in the denominator (the community files)
    assert M.privacy_leakage(0.9, 0.5, eps=1e-10) == ((1 - 0.9) - (1 - 0.5)) / ((1 - 0.5) + 1e-10) * 100
    assert M.privacy_leakage(0.8, 1.0, eps=1e-10) == pytest.approx(0.2 / 1e-10 * 100)  # defined, if huge


def test_muse_privleak_hand_made():
    # membership scores -s(x) (higher = member): forget texts still familiar, one holdout text looks familiar
    forget, holdout = [-0.1, -0.2, -0.3], [-1.0, -2.0, -0.15]
    # AUC (forget 0, holdout 1): P(holdout > forget) = 2/9 (only -0.15 beats -0.2 and -0.3)
    assert M.muse_auc(forget, holdout) == pytest.approx(2 / 9)
    fpr, tpr, _ = roc_curve([0, 0, 0, 1, 1, 1], np.array(forget + holdout))  # as MUSE: roc_curve(y, -s), auc
    assert M.muse_auc(forget, holdout) == pytest.approx(auc(fpr, tpr))
    assert M.muse_privleak(forget, holdout) == pytest.approx((2 / 9 - 0.4772) / 0.4772 * 100)
    assert M.muse_privleak([0.0, -0.1], [-5.0, -6.0]) == pytest.approx(-100.0)  # target-like: AUC 0
    assert M.muse_privleak(forget, holdout, auc_retrain=2 / 9) == pytest.approx(0.0)
    assert M.muse_auc(forget, holdout) == pytest.approx(1 - M.mia_auc(forget, holdout))


def test_multiple_choice():
    logps = [[-1.0, -2.0, -3.0], [-3.0, -1.0, -2.0], [-1.0, -1.0, -5.0]]
    assert M.multiple_choice_correct(logps, [0, 2, 1]) == [True, False, False]  # tie -> first option
    assert M.multiple_choice_accuracy(logps, [0, 1, 0]) == pytest.approx(1.0)
    assert M.multiple_choice_accuracy([[-1.0, -0.5]], [1]) == 1.0
    with pytest.raises(MrdkitError, match="question 0: answer index 3"):
        M.multiple_choice_accuracy([[-1.0, -2.0]], [3])
    with pytest.raises(MrdkitError, match="2 questions but 1"):
        M.multiple_choice_accuracy(logps[:2], [0])


def test_perplexity_is_corpus_level():
    assert M.perplexity([2.0, 4.0], [1, 3]) == pytest.approx(math.exp(6 / 4))
    assert M.perplexity(3.0, 2) == pytest.approx(math.exp(1.5))
    with pytest.raises(MrdkitError):
        M.perplexity([1.0], [0])


def test_metric_registry_metadata_and_aggregates():
    for entry in M.METRICS.entries():
        assert entry.meta["higher_is_better"] in (True, False, None)
        assert entry.meta["summary"]
    assert M.METRICS.get("forget_quality") is M.forget_quality
    assert M.METRICS.entry("model_utility").meta["higher_is_better"] is True
    assert M.METRICS.entry("privleak").meta["ideal"] == 0.0
    assert M.METRICS.get("exact_memorization")([[1, 0], [1, 1]]) == pytest.approx(0.75)
    mean_norm = M.METRICS.get("probability_normalised")([0.5, 0.2], [[0.5], [0.2, 0.2]])
    assert mean_norm == pytest.approx(0.5 * (0.5 + 1 / 3))
    assert M.METRICS.get("rouge_l_recall")(["a b"], ["a b c d"]) == pytest.approx(0.5)
    assert M.METRICS.get("probability")([0.0, float("nan"), math.log(0.5)]) == pytest.approx(0.75)
    with pytest.raises(MrdkitError, match="did you mean 'forget_quality'"):
        M.METRICS.get("forget_qualty")


def test_muse_privleak_by_hand_and_its_undefined_reference():
    """Forget scores (higher = more member-like) 1, 2 vs holdout 3, 4: MUSE's AUC (holdout as the positive class)
    is 1 (every holdout score above every forget score), so PrivLeak = (1 - r) / r * 100; r = 1 gives 0, r = 0.5
    gives 100; r = 0 is undefined."""
    from mrdkit.evaluation.metrics import muse_privleak

    assert muse_privleak([1.0, 2.0], [3.0, 4.0], auc_retrain=1.0) == 0.0
    assert muse_privleak([1.0, 2.0], [3.0, 4.0], auc_retrain=0.5) == pytest.approx(100.0)
    with pytest.raises(MrdkitError, match="undefined for auc_retrain = 0"):
        muse_privleak([1.0, 2.0], [3.0, 4.0], auc_retrain=0.0)


def test_metrics_registry_declares_the_ideal_of_two_sided_metrics():
    from mrdkit.evaluation.metrics import METRICS

    assert {n: METRICS.entry(n).meta.get("ideal") for n in ("privleak", "rel_diff", "muse_privleak")} == \
        {"privleak": 0.0, "rel_diff": 0.0, "muse_privleak": 0.0}


def test_truth_ratio_with_a_large_eps_uses_the_eps_formula():
    # eps = 1 (not only 1e-10): wrong_prob / (correct_prob + eps) by hand, not the exact log-space ratio
    want = math.exp(-3.5) / (math.exp(-2.0) + 1.0)
    assert M.truth_ratio(2.0, [3.0, 4.0], eps=1.0) == pytest.approx(want, rel=1e-12)
    assert M.truth_ratio(2.0, [3.0, 4.0], eps=1.0) != pytest.approx(math.exp(-1.5))


def test_mia_auc_with_a_single_member():
    assert M.mia_auc([2.0], [1.0, 3.0]) == pytest.approx(0.5)
    assert M.mia_auc([5.0], [1.0, 3.0]) == 1.0

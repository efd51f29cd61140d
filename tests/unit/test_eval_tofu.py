"""TOFU suite: aggregates on hand-made rows, community layout, and the runner on a tiny model with real TOFU."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.stats import hmean, ks_2samp

from mrdkit.data import Sample, load_tofu
from mrdkit.errors import MrdkitError
from mrdkit.evaluation import tofu
from mrdkit.evaluation.community import DEFAULT_METRICS, read_forget_truth_ratios
from mrdkit.evaluation.generation import prompt_ids
from mrdkit.evaluation.metrics import MODEL_UTILITY_KEYS
from mrdkit.evaluation.runner import evaluate, reference_from_log


def _row(sid, **cols):
    return {"id": sid, **cols}


def test_aggregate_truth_ratios_probabilities_and_auc():
    rows = {
        "forget": [_row("f0", truth_ratio=0.5, prob=0.2, pert_prob=[0.1, 0.3], mia_min_k=-1.0),
                   _row("f1", truth_ratio=2.0, prob=0.4, pert_prob=[0.2, 0.2], mia_min_k=-2.0),
                   _row("f2", truth_ratio=1.0, prob=float("nan"), pert_prob=[0.0, 0.4], mia_min_k=-3.0)],
        "retain": [_row("r0", truth_ratio=0.25), _row("r1", truth_ratio=1.5)],
        "holdout": [_row("h0", mia_min_k=-2.5), _row("h1", mia_min_k=-4.0)],
    }
    aggs = tofu.aggregate(rows)
    assert aggs["forget_truth_ratio"] == {"value": pytest.approx(2 / 3), "higher_is_better": True, "n": 3}
    assert aggs["retain_Truth_Ratio"]["value"] == pytest.approx(0.375)  # max(0, 1 - TR): 0.75, 0
    assert aggs["forget_Q_A_Prob"]["value"] == pytest.approx(0.3) and aggs["forget_Q_A_Prob"]["n"] == 2  # NaN dropped
    assert aggs["forget_Q_A_PERT_Prob"]["value"] == pytest.approx(0.2)  # mean over every perturbed answer
    # members -1, -2, -3 vs non-members -2.5, -4: 5 of 6 pairs ordered right
    assert aggs["mia_min_k"]["value"] == pytest.approx(5 / 6) and aggs["mia_min_k"]["n"] == 5
    assert "forget_Q_A_ROUGE" not in aggs and "mia_loss" not in aggs


def test_derived_forget_quality_utility_privleak():
    rows = {"forget": [_row(f"f{i}", truth_ratio=v) for i, v in enumerate([0.2, 0.5, 0.9, 1.3])]}
    aggs = {k: {"value": v, "higher_is_better": True, "n": 1} for k, v in zip(MODEL_UTILITY_KEYS, range(1, 10))}
    aggs["mia_min_k"] = {"value": 0.8, "n": 8}
    ref = tofu.Reference([0.4, 0.6, 0.8, 3.0, 5.0], 0.6, "retain")
    out, notes = tofu.derived(aggs, rows, ref)
    assert out["forget_quality"]["value"] == pytest.approx(ks_2samp([0.2, 0.5, 0.9, 1.3], ref.forget_truth_ratios).pvalue)
    assert out["model_utility"]["value"] == pytest.approx(hmean(range(1, 10)))
    assert out["privleak"]["value"] == pytest.approx(((1 - 0.8) - 0.4) / 0.4 * 100) and notes == []
    out, notes = tofu.derived({"mia_min_k": {"value": 0.8, "n": 8}}, rows, None)
    assert set(out) == {"privleak"} and out["privleak"]["value"] == pytest.approx(-60.0)
    assert any("forget_quality omitted" in n for n in notes) and any("model_utility omitted" in n for n in notes)
    assert any("0.5" in n for n in notes)
    out, notes = tofu.derived({"mia_min_k": {"value": 0.8, "n": 8}}, rows, tofu.Reference(None, 1.0, "r"))
    assert "privleak" not in out and any("AUC is 1" in n for n in notes)


def test_community_fields_and_mia_blocks():
    data = {"forget": [Sample("tofu:7", "q7", "a7"), Sample("tofu:9", "q9", "a9")], "holdout": [Sample("h:0", "q", "a")]}
    rows = {"forget": [_row("tofu:7", prob=0.5, avg_loss=0.69, rouge_l_recall=1.0, generation="a7", input="Q: q7",
                            mia_min_k=-1.0),
                       _row("tofu:9", prob=0.25, avg_loss=1.39, rouge_l_recall=0.0, generation="", input="Q: q9",
                            mia_min_k=-2.0)],
            "holdout": [_row("h:0", mia_min_k=-3.0)]}
    doc = tofu.community(rows, data, None)
    assert doc["forget_Q_A_Prob"]["value_by_index"] == {"0": {"prob": 0.5, "avg_loss": 0.69},
                                                        "1": {"prob": 0.25, "avg_loss": 1.39}}
    # open-unlearning's eval_text_similarity entry, fields in its order
    entry = doc["forget_Q_A_ROUGE"]["value_by_index"]["0"]
    assert entry == {"rouge1_recall": 1.0, "rougeL_f1": 1.0, "rougeL_recall": 1.0, "input": "Q: q7",
                     "ground_truth": "a7", "generation": "a7"}
    assert list(entry) == ["rouge1_recall", "rougeL_f1", "rougeL_recall", "input", "ground_truth", "generation"]
    mia = doc["mia_min_k"]
    assert list(mia) == ["forget", "holdout", "auc", "agg_value"] and mia["agg_value"] == mia["auc"] == 1.0
    assert mia["forget"] == {"agg_value": 1.5, "value_by_index": {"0": {"score": 1.0}, "1": {"score": 2.0}}}
    assert mia["holdout"]["value_by_index"] == {"0": {"score": 3.0}}  # loss-like, as upstream
    # no retain reference: forget_quality is written with a null value (and so stays out of the summary)
    assert doc["forget_quality"] == {"agg_value": None}
    # privleak against ref_value 0.5: open-unlearning's 1e-10 in TOFU_EVAL.json, none in eval.json
    assert doc["privleak"] == {"agg_value": ((1 - 1.0) - 0.5) / (0.5 + 1e-10) * 100}
    assert tofu.derived(tofu.aggregate(rows), rows, None)[0]["privleak"]["value"] == -100.0


def _perturbed(sid, para, pert):
    return Sample(sid, f"q {sid}", f"answer {sid}", extra={"paraphrased_answer": para, "perturbed_answer": pert})


def test_community_truth_ratio_and_normalised_probability_use_open_unlearnings_epsilon():
    """eval.json keeps the exact ratios; TOFU_EVAL.json holds wrong / (correct + 1e-10) and its aggregates."""
    # forget f0: L_para = 30 (P = 9.4e-14, below the 1e-10 term), L_pert = 2, 4: exact TR = exp(30 - 3) = exp(27)
    # forget f1: L_para = 1, L_pert = 1, 1 -> TR = 1 (both formulas to 1e-10)
    rows = {"forget": [_row("f0", truth_ratio=math.exp(27.0), para_avg_loss=30.0, pert_avg_loss=[2.0, 4.0]),
                       _row("f1", truth_ratio=1.0, para_avg_loss=1.0, pert_avg_loss=[1.0, 1.0])],
            # a real-author answer: P_true = 1e-12, P_wrong = 1e-12, 2e-12: exact 1/4, open-unlearning 1/104
            "ra": [_row("r0", prob=1e-12, avg_loss=-math.log(1e-12), pert_prob=[1e-12, 2e-12],
                        pert_avg_loss=[-math.log(1e-12), -math.log(2e-12)], truth_ratio=1.5, prob_normalised=0.25)]}
    ours = tofu.aggregate(rows)
    assert ours["forget_truth_ratio"]["value"] == pytest.approx((math.exp(-27.0) + 1.0) / 2)
    assert ours["ra_Q_A_Prob_normalised"]["value"] == 0.25
    ou_tr = math.exp(-3.0) / (math.exp(-30.0) + 1e-10)  # = 4.974e8, not exp(27) = 5.3e11
    assert ou_tr == pytest.approx(4.97405e8, rel=1e-5)
    crows = tofu.community_rows(rows)
    assert crows["forget"][0]["truth_ratio"] == ou_tr
    assert crows["ra"][0]["prob_normalised"] == pytest.approx(1e-12 / (4e-12 + 1e-10), rel=1e-12)
    assert rows["forget"][0]["truth_ratio"] == math.exp(27.0)  # the rows themselves are left alone
    data = {"forget": [_perturbed("f0", "p", ["x", "y"]), _perturbed("f1", "p", ["x", "y"])],
            "ra": [_perturbed("r0", "p", ["x", "y"])]}
    doc = tofu.community(rows, data, None)
    assert doc["forget_truth_ratio"]["value_by_index"]["0"] == {"score": ou_tr}
    tr1 = math.exp(-1.0) / (math.exp(-1.0) + 1e-10)
    expected = (min(ou_tr, 1 / (ou_tr + 1e-10)) + min(tr1, 1 / (tr1 + 1e-10))) / 2  # closer_to_1_better
    assert doc["forget_truth_ratio"]["agg_value"] == pytest.approx(expected, rel=1e-15)
    assert doc["ra_Q_A_Prob_normalised"]["value_by_index"]["0"] == {"prob": pytest.approx(1 / 104, rel=1e-12)}
    # wrong = exp(-mean L_wrong) = the geometric mean sqrt(1e-12 * 2e-12) of the perturbed probabilities
    assert doc["ra_Truth_Ratio"]["value_by_index"]["0"]["score"] == pytest.approx(
        math.sqrt(2) * 1e-12 / (1e-12 + 1e-10), rel=1e-9)


def test_community_forget_quality_against_the_references_open_unlearning_ratios():
    rows = {"forget": [_row(f"f{i}", truth_ratio=v, para_avg_loss=1.0, pert_avg_loss=[1.0 - math.log(v)])
                       for i, v in enumerate([0.2, 0.5, 0.9, 1.3])]}
    data = {"forget": [_perturbed(f"f{i}", "p", ["x"]) for i in range(4)]}
    ref = tofu.Reference([0.4, 0.6, 0.8, 3.0, 5.0], 0.6, "retain", community_truth_ratios=[0.1, 0.2, 0.3])
    doc = tofu.community(rows, data, ref)
    ours = [doc["forget_truth_ratio"]["value_by_index"][str(i)]["score"] for i in range(4)]
    assert ours == pytest.approx([0.2, 0.5, 0.9, 1.3], rel=1e-9)
    assert doc["forget_quality"]["agg_value"] == pytest.approx(ks_2samp(ours, [0.1, 0.2, 0.3]).pvalue)
    assert tofu.derived({}, rows, ref)[0]["forget_quality"]["value"] == pytest.approx(
        ks_2samp([0.2, 0.5, 0.9, 1.3], ref.forget_truth_ratios).pvalue)


def test_perturbed_rouge_holds_one_entry_per_perturbed_answer():
    """value_by_index of a list-answer metric: one list per field (open-unlearning's dict_transpose)."""
    sample = _perturbed("tofu:0", "the cat sat on the mat", ["the cat sat", "a dog ran"])
    row = _row("tofu:0", generation="the cat sat", input="Question: q\nAnswer:", rouge_l_recall=0.0,
               para_rouge_l_recall=0.5, pert_rouge_l_recall=[1.0, 0.0])
    row2 = _row("tofu:1", generation="a dog", input="Question: r\nAnswer:", rouge_l_recall=0.0,
                para_rouge_l_recall=0.0, pert_rouge_l_recall=[0.0, 2 / 3])
    sample2 = _perturbed("tofu:1", "the cat", ["the cat sat", "a dog ran"])
    doc = tofu.community({"forget": [row, row2]}, {"forget": [sample, sample2]}, None)
    pert = doc["forget_Q_A_PERT_ROUGE"]
    assert pert["value_by_index"]["0"] == {
        "rouge1_recall": [1.0, 0.0], "rougeL_f1": [1.0, 0.0], "rougeL_recall": [1.0, 0.0],
        "input": ["Question: q\nAnswer:"] * 2, "ground_truth": ["the cat sat", "a dog ran"],
        "generation": ["the cat sat"] * 2}
    assert pert["value_by_index"]["1"]["rougeL_recall"] == [0.0, pytest.approx(2 / 3)]
    assert pert["agg_value"] == pytest.approx((0.5 + 1 / 3) / 2)  # mean over samples of each sample's mean
    para = doc["forget_Q_A_PARA_ROUGE"]
    assert para["value_by_index"]["0"]["ground_truth"] == "the cat sat on the mat"
    assert para["value_by_index"]["0"]["rougeL_recall"] == 0.5 and para["agg_value"] == pytest.approx(0.25)
    assert tofu.aggregate({"forget": [row, row2]})["forget_Q_A_PERT_ROUGE"]["value"] == pytest.approx(5 / 12)


def test_mia_scores_follow_each_files_convention():
    """eval.json: higher = member, AUC of forget as positives; TOFU_EVAL.json: loss-like scores, forget 0 /
    holdout 1; the two AUCs are one number."""
    from sklearn.metrics import roc_auc_score

    forget = [_row(f"f{i}", mia_min_k_plus_plus=v, mia_gradnorm=-g, mia_reference=d)
              for i, (v, g, d) in enumerate([(0.5, 1.0, 0.3), (-0.2, 3.0, 0.1), (1.0, 2.0, -0.2)])]
    holdout = [_row(f"h{i}", mia_min_k_plus_plus=v, mia_gradnorm=-g, mia_reference=d)
               for i, (v, g, d) in enumerate([(0.0, 4.0, 0.0), (-1.0, 1.5, -0.4)])]
    rows = {"forget": forget, "holdout": holdout}
    data = {"forget": [Sample(r["id"], "q", "a") for r in forget], "holdout": [Sample(r["id"], "q", "a") for r in holdout]}
    ours, doc = tofu.aggregate(rows), tofu.community(rows, data, None)
    # Min-K%++: members 0.5, -0.2, 1.0 vs 0.0, -1.0: 5 of 6 pairs ordered right
    assert ours["mia_min_k_plus_plus"]["value"] == pytest.approx(5 / 6)
    # gradient norm: members 1, 3, 2 vs 4, 1.5 (lower norm = member): pairs (1<4, 1<1.5, 3<4, 2<4) = 4 of 6
    assert ours["mia_gradnorm"]["value"] == pytest.approx(4 / 6)
    assert ours["mia_reference"]["value"] == pytest.approx(5 / 6)
    assert doc["mia_gradnorm"]["forget"]["value_by_index"]["1"] == {"score": 3.0}  # the norm itself, as upstream
    for name in ("mia_min_k_plus_plus", "mia_gradnorm", "mia_reference"):
        entry = doc[name]
        f = [v["score"] for v in entry["forget"]["value_by_index"].values()]
        h = [v["score"] for v in entry["holdout"]["value_by_index"].values()]
        assert f == [-r[name] for r in forget] and h == [-r[name] for r in holdout]
        assert entry["auc"] == entry["agg_value"] == pytest.approx(roc_auc_score([0] * 3 + [1] * 2, f + h))
        assert entry["auc"] == pytest.approx(ours[name]["value"])


def test_task_columns_and_bad_split():
    assert tofu.task_columns("holdout", "generation") == ()
    assert tofu.task_columns("forget", "generation") == ("generation", "input", "rouge_l_recall",
                                                         "para_rouge_l_recall", "pert_rouge_l_recall")
    assert tofu.task_columns("retain", "generation") == ("generation", "input", "rouge_l_recall")
    assert tofu.task_columns("holdout", "mia") == ("mia_min_k_plus_plus", "mia_gradnorm")
    assert tofu.task_columns("forget", "reference") == ("ref_avg_loss", "mia_reference")
    assert tofu.task_columns("ra", "mia") == () == tofu.task_columns("wf", "reference")
    assert "prob_normalised" in tofu.task_columns("ra", "scores")
    assert "para_prob" in tofu.task_columns("retain", "scores") and "mia_min_k" not in tofu.task_columns("retain", "scores")
    with pytest.raises(MrdkitError, match="forget01"):
        tofu.TofuConfig(forget_split="forget20").split_names()
    assert tofu.TofuConfig(forget_split="forget05").split_names()["holdout"] == "holdout05"


# ---------------------------------------------------------------------------------- tiny model, real TOFU


@pytest.fixture(scope="module")
def lm():
    from mrdkit.models import build_tiny_model

    texts = [s.text for s in load_tofu("forget01_perturbed")] + [s.text for s in load_tofu("real_authors")]
    return build_tiny_model(texts, vocab_size=512, n_layer=1, d_model=32, n_head=2, seed=1)


RUN = dict(forget_split="forget01", limit=3, max_new_tokens=3, batch_size=8, progress=False)


@pytest.fixture(scope="module")
def first_run(lm, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "self"
    return evaluate(lm, out_dir=out, retain_model=lm, reference_model=lm, **RUN)


NEW_METRICS = {"forget_Q_A_PARA_ROUGE", "forget_Q_A_PERT_ROUGE", "mia_min_k_plus_plus", "mia_gradnorm", "mia_reference"}


def test_full_suite_writes_both_formats_and_self_forget_quality_is_one(first_run):
    out = first_run.out_dir
    for name in ("eval.json", "eval_samples.jsonl", "TOFU_EVAL.json", "TOFU_SUMMARY.json", "config.json"):
        assert (out / name).is_file()
    assert first_run.value("forget_quality") == 1.0
    assert first_run.value("privleak") == pytest.approx(0.0)  # same model: same Min-K% AUC
    assert first_run.value("mia_reference") == 0.5  # reference = target: every score is 0
    # the summary: open-unlearning's 7 configured TOFU metrics, sorted, json.dump(indent=4) byte for byte
    text = (out / "TOFU_SUMMARY.json").read_text()
    summary = json.loads(text)
    assert list(summary) == sorted(DEFAULT_METRICS["TOFU"]) and text == json.dumps(summary, indent=4)
    # the eval file: every metric mrdkit computes (pre-computes of the summary's metrics included)
    doc = json.loads((out / "eval.json").read_text())
    community = json.loads((out / "TOFU_EVAL.json").read_text())
    assert set(doc["metrics"]) <= set(community) and NEW_METRICS <= set(doc["metrics"])
    assert set(MODEL_UTILITY_KEYS) | {"forget_Q_A_PARA_Prob", "forget_Q_A_PERT_Prob", "mia_min_k"} <= set(community)
    assert doc["metrics"]["forget_truth_ratio"]["higher_is_better"] is True and doc["meta"]["notes"] == []
    assert doc["meta"]["reference_model"] == "tiny-gpt2:d32-l1-h2-v512-p512"
    assert len((out / "eval_samples.jsonl").read_text().splitlines()) == 5 * 3


def test_value_by_index_ids_match_sample_ids(first_run, lm):
    community = json.loads((first_run.out_dir / "TOFU_EVAL.json").read_text())
    rows = {(r["split"], r["id"]): r for r in first_run.rows}
    for label, split in (("forget", "forget01_perturbed"), ("retain", "retain_perturbed"), ("ra", "real_authors_perturbed")):
        samples = load_tofu(split)[:3]
        prefix = {"forget": "forget", "retain": "retain", "ra": "ra"}[label]
        vbi = community[f"{prefix}_Q_A_Prob"]["value_by_index"]
        assert list(vbi) == ["0", "1", "2"]
        for i, s in enumerate(samples):
            assert rows[(label, s.id)]["index"] == i
            assert vbi[str(i)]["prob"] == pytest.approx(rows[(label, s.id)]["prob"], rel=1e-12)
    gens = community["forget_Q_A_ROUGE"]["value_by_index"]
    tok, forget = lm.tokenizer, load_tofu("forget01_perturbed")[:3]
    prompts = [tok.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=True)
               for ids in prompt_ids(forget, tok, "auto")]
    assert [gens[str(i)]["input"] for i in range(3)] == prompts and prompts[0].startswith("Question: ")
    assert [gens[str(i)]["ground_truth"] for i in range(3)] == [s.answer for s in forget]
    pert = community["forget_Q_A_PERT_ROUGE"]["value_by_index"]["0"]
    assert pert["ground_truth"] == forget[0].extra["perturbed_answer"] and len(pert["rougeL_recall"]) == 5
    assert pert["generation"] == [gens["0"]["generation"]] * 5


def test_community_truth_ratio_is_open_unlearnings_formula_on_the_files_own_losses(first_run):
    """TOFU_EVAL.json: forget_truth_ratio score = exp(-mean PERT avg_loss) / (exp(-PARA avg_loss) + 1e-10)."""
    doc = json.loads((first_run.out_dir / "TOFU_EVAL.json").read_text())
    scores = []
    for i in range(3):
        para = doc["forget_Q_A_PARA_Prob"]["value_by_index"][str(i)]["avg_loss"]
        pert = doc["forget_Q_A_PERT_Prob"]["value_by_index"][str(i)]["avg_loss"]
        scores.append(doc["forget_truth_ratio"]["value_by_index"][str(i)]["score"])
        assert scores[-1] == pytest.approx(np.exp(-np.mean(pert)) / (np.exp(-para) + 1e-10), rel=1e-14)
    tr = np.array(scores)
    assert doc["forget_truth_ratio"]["agg_value"] == pytest.approx(np.mean(np.minimum(tr, 1 / (tr + 1e-10))),
                                                                   rel=1e-14)


def test_retain_log_round_trip(first_run, lm, tmp_path):
    forget = [r for r in first_run.rows if r["split"] == "forget"]
    trs = [r["truth_ratio"] for r in forget]
    ou = [tofu.community_truth_ratio(r, "forget") for r in forget]
    assert read_forget_truth_ratios(first_run.out_dir / "eval.json") == pytest.approx(trs, rel=1e-12)  # exact
    assert read_forget_truth_ratios(first_run.out_dir / "TOFU_EVAL.json") == pytest.approx(ou, rel=1e-12)
    assert ou != pytest.approx(trs, rel=1e-9)  # P(para) ~ 1/512 here: the 1e-10 term shows at 5e-8
    ref = reference_from_log(first_run.out_dir)  # a run directory works too
    assert ref.mia_min_k_auc == first_run.value("mia_min_k")
    res = evaluate(lm, out_dir=tmp_path / "vs_log", retain_log=first_run.out_dir / "eval.json", skip_generation=True,
                   **RUN)
    assert res.value("forget_quality") == 1.0 and res.value("privleak") == pytest.approx(0.0)
    assert "forget_Q_A_ROUGE" not in res.metrics and "model_utility" not in res.metrics
    assert any("skip-generation" in n for n in res.meta["notes"])


def test_rerun_skips_finished_tasks_and_fills_missing(lm, tmp_path, monkeypatch):
    out = tmp_path / "run"
    first = evaluate(lm, out_dir=out, skip_generation=True, **RUN)
    calls = []
    real = tofu.run_task
    monkeypatch.setattr(tofu, "run_task", lambda *a, **k: calls.append(a[2:4]) or real(*a, **k))
    second = evaluate(lm, out_dir=out, **RUN)  # only generation is missing
    assert sorted(set(t for t, _ in calls)) == ["generation"] and len(calls) == 4  # 4 splits generate
    assert second.value("forget_truth_ratio") == first.value("forget_truth_ratio")
    calls.clear()
    third = evaluate(lm, out_dir=out, **RUN)
    assert calls == [] and third.metrics == second.metrics
    evaluate(lm, out_dir=out, overwrite=True, skip_generation=True, **RUN)
    assert len(calls) == 7  # scores on 5 splits, mia on forget + holdout
    with pytest.raises(MrdkitError, match="differs in: max_new_tokens"):
        evaluate(lm, out_dir=out, **{**RUN, "max_new_tokens": 5})
    with pytest.raises(MrdkitError, match="differs in: reference_model"):  # stored mia_reference rows would be stale
        evaluate(lm, out_dir=out, reference_model=lm, **RUN)


def test_evaluate_argument_errors(lm):
    with pytest.raises(MrdkitError, match="unknown benchmark"):
        evaluate(lm, benchmark="muse")
    with pytest.raises(MrdkitError, match="not both"):
        evaluate(lm, retain_model=lm, retain_log="x.json", **RUN)
    with pytest.raises(MrdkitError, match="tofu benchmark only"):
        evaluate(lm, benchmark="ppl", data=[Sample("t:0", "", "a b c", kind="text")], reference_model=lm)
    with pytest.raises(MrdkitError, match="tokenizer"):
        evaluate(lm.model, **RUN)
    with pytest.raises(MrdkitError, match="no metric"):
        evaluate(lm, benchmark="ppl", data=[Sample("t:0", "", "some text here", kind="text")]).value("forget_quality")
    assert math.isfinite(evaluate(lm, benchmark="ppl", data=[Sample("t:0", "", "a b c", kind="text")]).value("perplexity"))
    assert np.isfinite(tofu.Reference([1.0], None, "x").as_dict()["forget_truth_ratio"][0])

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
from mrdkit.evaluation.community import read_forget_truth_ratios
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
    rows = {"forget": [_row("tofu:7", prob=0.5, avg_loss=0.69, rouge_l_recall=1.0, generation="a7", mia_min_k=-1.0),
                       _row("tofu:9", prob=0.25, avg_loss=1.39, rouge_l_recall=0.0, generation="", mia_min_k=-2.0)],
            "holdout": [_row("h:0", mia_min_k=-3.0)]}
    metrics = tofu.aggregate(rows)
    doc = tofu.community(rows, data, metrics)
    assert doc["forget_Q_A_Prob"]["value_by_index"] == {"0": {"prob": 0.5, "avg_loss": 0.69},
                                                        "1": {"prob": 0.25, "avg_loss": 1.39}}
    assert doc["forget_Q_A_ROUGE"]["value_by_index"]["0"] == {"rougeL_recall": 1.0, "input": "q7", "ground_truth": "a7",
                                                              "generation": "a7"}
    mia = doc["mia_min_k"]
    assert mia["agg_value"] == mia["auc"] == 1.0
    assert mia["forget"]["value_by_index"] == {"0": {"score": 1.0}, "1": {"score": 2.0}}  # loss-like, as upstream
    assert mia["holdout"]["value_by_index"] == {"0": {"score": 3.0}}


def test_task_columns_and_bad_split():
    assert tofu.task_columns("holdout", "generation") == ()
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
    return evaluate(lm, out_dir=out, retain_model=lm, **RUN)


def test_full_suite_writes_both_formats_and_self_forget_quality_is_one(first_run):
    out = first_run.out_dir
    for name in ("eval.json", "eval_samples.jsonl", "TOFU_EVAL.json", "TOFU_SUMMARY.json", "config.json"):
        assert (out / name).is_file()
    assert first_run.value("forget_quality") == 1.0
    assert first_run.value("privleak") == pytest.approx(0.0)  # same model: same Min-K% AUC
    summary = json.loads((out / "TOFU_SUMMARY.json").read_text())
    assert set(MODEL_UTILITY_KEYS) <= set(summary) and {"forget_quality", "model_utility", "privleak"} <= set(summary)
    doc = json.loads((out / "eval.json").read_text())
    assert doc["metrics"]["forget_truth_ratio"]["higher_is_better"] is True and doc["meta"]["notes"] == []
    assert len((out / "eval_samples.jsonl").read_text().splitlines()) == 5 * 3


def test_value_by_index_ids_match_sample_ids(first_run):
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
    assert [gens[str(i)]["input"] for i in range(3)] == [s.prompt for s in load_tofu("forget01_perturbed")[:3]]


def test_retain_log_round_trip(first_run, lm, tmp_path):
    trs = [r["truth_ratio"] for r in first_run.rows if r["split"] == "forget"]
    for name in ("eval.json", "TOFU_EVAL.json"):
        assert read_forget_truth_ratios(first_run.out_dir / name) == pytest.approx(trs, rel=1e-12)
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
    assert len(calls) == 5
    with pytest.raises(MrdkitError, match="differs in: max_new_tokens"):
        evaluate(lm, out_dir=out, **{**RUN, "max_new_tokens": 5})


def test_evaluate_argument_errors(lm):
    with pytest.raises(MrdkitError, match="unknown benchmark"):
        evaluate(lm, benchmark="muse")
    with pytest.raises(MrdkitError, match="not both"):
        evaluate(lm, retain_model=lm, retain_log="x.json", **RUN)
    with pytest.raises(MrdkitError, match="tokenizer"):
        evaluate(lm.model, **RUN)
    with pytest.raises(MrdkitError, match="no metric"):
        evaluate(lm, benchmark="ppl", data=[Sample("t:0", "", "some text here", kind="text")]).value("forget_quality")
    assert math.isfinite(evaluate(lm, benchmark="ppl", data=[Sample("t:0", "", "a b c", kind="text")]).value("perplexity"))
    assert np.isfinite(tofu.Reference([1.0], None, "x").as_dict()["forget_truth_ratio"][0])

"""Community (open-unlearning) TOFU_EVAL.json / TOFU_SUMMARY.json writing and reading."""

import json
import math

import pytest

from mrdkit.errors import MrdkitError
from mrdkit.evaluation.community import (
    DEFAULT_METRICS,
    attack_entry,
    read_community,
    read_forget_truth_ratios,
    rouge_entry,
    summarize,
    to_community,
    write_community,
)
from mrdkit.evaluation.metrics import forget_quality, truth_ratio

IDS = ["tofu:3607", "tofu:3612", "tofu:3603"]
INDEX = {"tofu:3607": 7, "tofu:3612": 12, "tofu:3603": 3}  # rows of the forget split


def _doc():
    per_sample = {
        "forget_truth_ratio": {"tofu:3607": 0.5, "tofu:3612": 2.0, "tofu:3603": float("nan")},
        "forget_Q_A_Prob": {sid: 0.1 * i for i, sid in enumerate(IDS)},
        "forget_Q_A_ROUGE": {sid: 1.0 for sid in IDS},
        "extraction_strength": {"tofu:3607": {"score": 0.25, "n_tokens": 4}},
    }
    aggregates = {"forget_truth_ratio": 0.5, "forget_Q_A_Prob": 0.1, "forget_quality": 0.42, "model_utility": 0.6}
    return to_community(per_sample, aggregates, INDEX)


def test_value_by_index_keys_are_the_given_indices():
    doc = _doc()
    vbi = doc["forget_truth_ratio"]["value_by_index"]
    assert list(vbi) == ["3", "7", "12"]  # sorted numerically, strings as json writes them
    assert vbi["7"] == {"score": 0.5} and vbi["12"] == {"score": 2.0} and vbi["3"] == {"score": None}
    assert {int(k) for k in doc["forget_Q_A_Prob"]["value_by_index"]} == set(INDEX.values())
    assert doc["forget_Q_A_Prob"]["value_by_index"]["12"] == {"prob": pytest.approx(0.1)}
    assert doc["forget_Q_A_ROUGE"]["value_by_index"]["3"] == {"rougeL_recall": 1.0}
    assert doc["extraction_strength"]["value_by_index"] == {"7": {"score": 0.25, "n_tokens": 4}}


def test_aggregate_only_metrics_and_sorting():
    doc = _doc()
    assert list(doc) == sorted(doc)
    assert doc["forget_quality"] == {"agg_value": 0.42}
    assert doc["extraction_strength"]["agg_value"] is None
    assert summarize(doc) == {"forget_Q_A_Prob": 0.1, "forget_quality": 0.42, "forget_truth_ratio": 0.5,
                              "model_utility": 0.6}


def test_summary_holds_only_the_configured_default_metrics(tmp_path):
    doc = to_community({}, {"forget_Q_A_PARA_Prob": 0.3, "mia_min_k": 0.7, "forget_quality": None, "privleak": -5.0,
                            "forget_Q_A_Prob": 0.1}, INDEX)
    _, summary_path = write_community(tmp_path, doc)
    text = summary_path.read_text()
    # open-unlearning's tofu.yaml lists 7 metrics; pre-computes (PARA_Prob, mia_min_k) and nulls stay out
    assert json.loads(text) == {"forget_Q_A_Prob": 0.1, "privleak": -5.0}
    assert text == json.dumps({"forget_Q_A_Prob": 0.1, "privleak": -5.0}, indent=4)  # json.dump(indent=4), no newline
    assert DEFAULT_METRICS["TOFU"] == ("forget_truth_ratio", "forget_quality", "forget_Q_A_Prob", "forget_Q_A_ROUGE",
                                       "model_utility", "privleak", "extraction_strength")
    eval_text = (tmp_path / "TOFU_EVAL.json").read_text()
    assert eval_text == json.dumps(dict(sorted(doc.items())), indent=4) and json.loads(eval_text)["forget_quality"] == {
        "agg_value": None}
    assert summarize(doc, ["mia_min_k"]) == {"mia_min_k": 0.7}


def test_rouge_entry_and_attack_entry_layouts():
    entry = rouge_entry("Question: q\nAnswer:", " the cat sat on the mat ", "mat the cat\n")
    assert entry == {"rouge1_recall": 0.5, "rougeL_f1": pytest.approx(4 / 9), "rougeL_recall": pytest.approx(1 / 3),
                     "input": "Question: q\nAnswer:", "ground_truth": "the cat sat on the mat",
                     "generation": "mat the cat"}
    # loss-like scores, forget labelled 0 and holdout 1: holdout 2.0 beats forget 1.0 but not 3.0 -> AUC 1/2
    mia = attack_entry({2: 3.0, 0: 1.0}, {1: 2.0})
    assert mia == {"forget": {"agg_value": 2.0, "value_by_index": {"0": {"score": 1.0}, "2": {"score": 3.0}}},
                   "holdout": {"agg_value": 2.0, "value_by_index": {"1": {"score": 2.0}}}, "auc": 0.5,
                   "agg_value": 0.5}
    assert attack_entry({0: 1.0}, {1: 2.0})["auc"] == 1.0  # holdout less member-like than forget: detected


def test_to_community_errors_and_field_override():
    with pytest.raises(MrdkitError, match="no community index for sample ids tofu:9"):
        to_community({"m": {"tofu:9": 1.0}}, {}, INDEX)
    with pytest.raises(MrdkitError, match="two samples map to community index 7"):
        to_community({"m": {"a": 1.0, "b": 2.0}}, {}, {"a": 7, "b": 7})
    doc = to_community({"forget_verbmem_ROUGE": {"a": 0.3}}, {}, {"a": 0}, fields={"forget_verbmem_ROUGE": "rougeL_f1"})
    assert doc["forget_verbmem_ROUGE"]["value_by_index"] == {"0": {"rougeL_f1": 0.3}}


def test_write_and_read_back(tmp_path):
    eval_path, summary_path = write_community(tmp_path, _doc())
    assert eval_path.name == "TOFU_EVAL.json" and summary_path.name == "TOFU_SUMMARY.json"
    assert json.loads(summary_path.read_text()) == summarize(_doc())
    assert "\n    \"" in eval_path.read_text()  # indent 4, as open-unlearning
    back = read_community(eval_path)
    assert back["forget_truth_ratio"]["value_by_index"]["3"] == {"score": None}
    # the forget-quality reference: scores in index order, null dropped
    assert read_forget_truth_ratios(eval_path) == [0.5, 2.0]
    muse_eval, _ = write_community(tmp_path, _doc(), benchmark="MUSE")
    assert muse_eval.name == "MUSE_EVAL.json"


def test_forget_quality_from_a_published_retain_log(tmp_path):
    retain = {"forget_truth_ratio": {"agg_value": 0.6,
                                     "value_by_index": {str(i): {"score": 0.2 * (i + 1)} for i in range(10)}}}
    path = tmp_path / "retain" / "TOFU_EVAL.json"
    path.parent.mkdir()
    path.write_text(json.dumps(retain))
    ref = read_forget_truth_ratios(path)
    assert ref == pytest.approx([0.2 * (i + 1) for i in range(10)])
    assert forget_quality(ref, ref) == pytest.approx(1.0)


@pytest.mark.parametrize(
    "doc",
    [
        {"metrics": {"forget_truth_ratio": {"agg_value": 0.5,
                                            "per_sample": {"tofu:1": 0.5, "tofu:2": {"score": 2.0}}}}},
        {"forget_truth_ratio": {"values": [0.5, 2.0, None]}},
        {"forget_truth_ratio": [0.5, 2.0]},
        {"forget_truth_ratio": {"0": 0.5, "1": 2.0}},
    ],
)
def test_read_forget_truth_ratios_mrdkit_layouts(tmp_path, doc):
    path = tmp_path / "eval.json"
    path.write_text(json.dumps(doc))
    assert read_forget_truth_ratios(path) == [0.5, 2.0]


def test_read_forget_truth_ratios_original_tofu_log(tmp_path):
    log = {"avg_gt_loss": {"0": 1.0, "1": 2.0},
           "avg_paraphrased_loss": {"1": 2.0, "0": 1.5},
           "average_perturb_loss": {"0": [2.0, 3.0], "1": [1.0, 1.0]}}
    expected = [math.exp(1.5 - 2.5), math.exp(2.0 - 1.0)]  # TR = exp(L_para - mean L_pert)
    (tmp_path / "eval_log_forget.json").write_text(json.dumps(log))
    assert read_forget_truth_ratios(tmp_path / "eval_log_forget.json") == pytest.approx(expected)
    assert expected[0] == pytest.approx(truth_ratio(1.5, [2.0, 3.0]))
    (tmp_path / "aggregated.json").write_text(json.dumps({"eval_log_forget.json": log, "eval_log.json": {}}))
    assert read_forget_truth_ratios(tmp_path / "aggregated.json") == pytest.approx(expected)


def test_read_forget_truth_ratios_errors(tmp_path):
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"forget_quality": {"agg_value": 0.1}}))
    with pytest.raises(MrdkitError, match="no 'forget_truth_ratio' entry.*forget_quality"):
        read_forget_truth_ratios(path)
    path.write_text(json.dumps({"forget_truth_ratio": {"agg_value": 0.1}}))
    with pytest.raises(MrdkitError, match="only an aggregate"):
        read_forget_truth_ratios(path)
    with pytest.raises(MrdkitError, match="does not exist"):
        read_forget_truth_ratios(tmp_path / "missing.json")

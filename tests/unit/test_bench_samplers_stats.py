"""The samplers experiment's paired statistics, checked against numbers worked out by hand."""

import pytest

from mrdkit.bench.samplers import label, mean_ci, paired_vs_random


def test_mean_ci_is_the_student_t_interval():
    # values 1, 2, 3: mean 2, s = 1, t_{0.975, 2} = 4.302652729749464 -> half-width 4.302652729749464 / sqrt(3)
    mean, lo, hi = mean_ci([1.0, 2.0, 3.0])
    assert mean == 2.0
    assert lo == pytest.approx(2 - 2.4841377118) and hi == pytest.approx(2 + 2.4841377118)
    assert mean_ci([5.0]) == (5.0, None, None) and mean_ci([]) == (None, None, None)


def test_paired_differences_pair_each_seed_with_its_own_random_run():
    rows = [{"method": "ga", "sampler": "random", "seed": 0, "retain_Q_A_Prob": 0.5},
            {"method": "ga", "sampler": "random", "seed": 1, "retain_Q_A_Prob": 0.3},
            {"method": "ga", "sampler": "cga", "score": "loss", "seed": 0, "retain_Q_A_Prob": 0.6},
            {"method": "ga", "sampler": "cga", "score": "loss", "seed": 1, "retain_Q_A_Prob": 0.6},
            {"method": "ga", "sampler": "cga", "score": "mrd_antithetic", "seed": 0, "retain_Q_A_Prob": 0.4}]
    paired = {p["score"]: p for p in paired_vs_random(rows)}
    # loss: diffs 0.1 and 0.3 -> mean 0.2, s = 0.1414, t_{0.975,1} = 12.706204736 -> half 12.7062 * 0.1 = 1.27062
    assert paired["loss"]["d_retain_Q_A_Prob"] == pytest.approx(0.2)
    assert paired["loss"]["d_retain_Q_A_Prob_hi"] == pytest.approx(0.2 + 1.2706204736)
    assert paired["loss"]["rel_retain_Q_A_Prob_pct"] == pytest.approx((20 + 100) / 2)
    assert paired["mrd_antithetic"]["n"] == 1 and paired["mrd_antithetic"]["d_retain_Q_A_Prob"] == pytest.approx(-0.1)
    assert paired["mrd_antithetic"]["d_retain_Q_A_Prob_lo"] is None
    assert paired["loss"]["d_forget_Q_A_Prob"] is None  # no such metric in the rows


def test_labels_name_the_driving_score_unless_it_is_mrd():
    assert label({"sampler": "cga", "score": "mrd_antithetic"}) == "cga"
    assert label({"sampler": "random", "score": None}) == "random"
    assert label({"sampler": "curriculum", "score": "lookahead_3"}) == "curriculum@lookahead_3"


def test_reference_metrics_read_the_retain_models_own_eval(tmp_path):
    from mrdkit.bench.samplers import reference_metrics
    from mrdkit.runs import atomic_write_json

    assert reference_metrics(tmp_path / "TOFU_EVAL.json") == {}  # no eval.json beside it
    atomic_write_json(tmp_path / "eval.json", {"metrics": {"model_utility": {"value": 0.358},
                                                           "retain_Q_A_Prob": {"value": 0.878},
                                                           "forget_quality": {"value": None},
                                                           "mia_loss": {"value": 0.5}}})
    assert reference_metrics(tmp_path / "TOFU_EVAL.json") == {"model_utility": 0.358, "retain_Q_A_Prob": 0.878}


def test_the_report_shows_the_reference_row_and_paired_utility(tmp_path):
    from mrdkit.bench.samplers import paired_vs_random, render, summarize

    rows = [{"method": "npo", "sampler": s, "score": d, "seed": seed, "model_utility": u, "forget_Q_A_ROUGE": r,
             "forget_prob_by_id": {}}
            for seed, (u_rand, u_cur) in enumerate([(0.30, 0.34), (0.32, 0.33)])
            for s, d, u, r in (("random", None, u_rand, 0.25), ("curriculum", "lookahead_3", u_cur, 0.20))]
    results = {"methods": ["npo"], "samplers": ["random", "curriculum"], "seeds": 2, "mrd_cost_s": 1.0,
               "scores": ["lookahead_3"], "stop_prob": 0.05, "forget_target": 0.05,
               "reference": {"model_utility": 0.358}, "summary": summarize(rows), "paired": paired_vs_random(rows),
               "quartiles": []}
    text, _ = render(results, tmp_path)
    assert "| - | retain model (reference) | - | - | 0.358 |" in text
    paired_part = text.split("**Paired differences")[1]  # the mean table has a row with the same start
    paired_line = next(line for line in paired_part.splitlines() if line.startswith("| npo | curriculum@lookahead_3 | 2"))
    assert paired_line.split(" | ")[3].startswith("0.025 [")  # utility: (0.04 + 0.01) / 2
    assert paired_line.split(" | ")[7].startswith("-0.05")  # forget ROUGE: 0.20 - 0.25 on both seeds


def test_drop_weights_keeps_the_log_and_removes_model_and_checkpoints(tmp_path):
    from mrdkit.bench.samplers import drop_weights

    for sub in ("model", "checkpoints/step-000030"):
        (tmp_path / sub).mkdir(parents=True)
        (tmp_path / sub / "weights.safetensors").write_bytes(b"x")
    (tmp_path / "train_log.jsonl").write_text("{}\n")
    drop_weights(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train_log.jsonl"]
    drop_weights(tmp_path)  # nothing left to delete is fine

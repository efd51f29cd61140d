"""Bench framework: quick experiments run on the shipped testbed; the report is built from the run files."""

import json

import pytest

from mrdkit.bench.run import experiment_names, render_report, run_experiment
from mrdkit.errors import MrdkitError
from mrdkit.runs import atomic_write_json

SMALL_SAMPLERS = {"eval_limit": 6, "epochs": 1, "skip_generation": True, "seeds": 1}


def _fake(bench, name, results, quick=True):
    atomic_write_json(bench / name / "config.json", {"experiment": name, "quick": quick})
    atomic_write_json(bench / name / "results.json", results)
    atomic_write_json(bench / name / "DONE.json", {})


def _validate_results(rho):
    row = {"score": "mrd_antithetic", "spearman": rho, "spearman_ci_low": rho - 0.1, "spearman_ci_high": rho + 0.1,
           "spearman_p": 0.01, "kendall": rho / 2, "harrell_c": 0.6, "n": 40}
    return {"n_samples": 40, "chunk_size": 4, "truth": {"method": "ga", "lr": 5e-5, "threshold": 0.02, "cap": 60},
            "censored": 0, "censored_chunks": 0, "n_chunks": 10, "median_updates": 14,
            "resolved": {"paper": 3, "antithetic": 40}, "per_sample": [row], "chunked": [row], "wall_s": 1.0}


def test_report_tables_come_from_run_files(tmp_path):
    _fake(tmp_path, "validate", _validate_results(-0.4321))
    report = render_report(tmp_path).read_text()
    assert "-0.432" in report and "## validate (quick run" in report
    assert "| MRD predicts required updates (per sample, antithetic estimator)" in report
    # change the run file: the re-rendered report follows it
    _fake(tmp_path, "validate", _validate_results(0.1234))
    report = render_report(tmp_path).read_text()
    assert "0.123" in report and "-0.432" not in report


def test_unfinished_experiments_are_left_out(tmp_path):
    (tmp_path / "validate").mkdir()
    assert "## validate" not in render_report(tmp_path).read_text()


def test_experiment_registry_has_paper_experiments():
    assert {"validate", "samplers"} <= set(experiment_names())


@pytest.fixture(scope="module")
def validate_quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    return out, run_experiment("validate", out, quick=True, options={"truth_lr": 2e-4})


def test_validate_quick(validate_quick):
    out, results = validate_quick
    scores = {r["score"] for r in results["per_sample"]}
    assert {"mrd_paper", "mrd_antithetic", "loss", "grad_norm"} <= scores
    assert results["n_samples"] == 12
    rows = [json.loads(line) for line in (out / "validate" / "scores.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and all(r["mrd_antithetic"] > 0 for r in rows)
    assert (out / "validate" / "per_sample" / "correlations.json").exists()


def test_finished_experiment_is_skipped_and_config_change_refused(validate_quick):
    out, results = validate_quick
    again = run_experiment("validate", out, quick=True, options={"truth_lr": 2e-4})
    assert again == results  # read back, not recomputed
    (out / "validate" / "DONE.json").unlink()
    with pytest.raises(MrdkitError, match="different config"):
        run_experiment("validate", out, quick=True, options={"truth_lr": 1e-4})


def test_samplers_quick(tmp_path):
    results = run_experiment("samplers", tmp_path, quick=True, options=SMALL_SAMPLERS)
    assert {(r["method"], r["sampler"]) for r in results["runs"]} == {("ga", "random"), ("ga", "cga")}
    assert results["paired"][0]["sampler"] == "cga"
    assert all(r["forget_Q_A_Prob"] is not None for r in results["runs"])
    # the MRD cost is the scoring run's own recorded draw time, also when a later invocation only loads it
    mrd_summary = json.loads((tmp_path / "samplers" / "mrd_forget" / "summary.json").read_text())
    assert results["mrd_cost_s"] == mrd_summary["timing"]["draws_s"] > 0
    report = render_report(tmp_path).read_text()
    assert "CGA improves unlearning completeness" in report
    assert results["stop_prob"] is None and "Every run used the full budget" in report
    # model utility needs generated answers (ROUGE), which SMALL_SAMPLERS skips: no bars for it
    for name in ("curve_forget_ga.png", "curve_retain_ga.png", "bars_forget_Q_A_Prob.png", "bars_forget_quality.png"):
        assert (tmp_path / "samplers" / name).stat().st_size > 0 and f"`samplers/{name}`" in report


def test_samplers_driven_by_another_score_run_beside_the_mrd_driven_ones(tmp_path):
    opts = {**SMALL_SAMPLERS, "scores": ["mrd_antithetic", "loss"], "seeds": 2}
    results = run_experiment("samplers", tmp_path, quick=True, options=opts)
    runs = {(r["sampler"], r["score"], r["seed"]) for r in results["runs"]}
    assert runs == {(s, d, seed) for seed in (0, 1) for s, d in
                    (("random", None), ("cga", "mrd_antithetic"), ("cga", "loss"))}
    assert (tmp_path / "samplers" / "runs" / "ga-cga@loss-s1" / "row.json").is_file()
    assert (tmp_path / "samplers" / "runs" / "ga-cga-s1" / "row.json").is_file()  # MRD-driven keeps its name
    # a finished run keeps its row and train log, not its weights (option keep_models keeps them)
    unlearn_dir = tmp_path / "samplers" / "runs" / "ga-cga-s1" / "unlearn"
    assert (unlearn_dir / "train_log.jsonl").is_file()
    assert not (unlearn_dir / "model").exists() and not (unlearn_dir / "checkpoints").exists()
    paired = {p["score"]: p for p in results["paired"]}
    assert set(paired) == {"mrd_antithetic", "loss"} and paired["loss"]["n"] == 2
    lo, mean, hi = (paired["loss"][f"d_retain_Q_A_Prob{k}"] for k in ("_lo", "", "_hi"))
    assert lo <= mean <= hi
    report = render_report(tmp_path).read_text()
    assert "| ga | cga@loss | 2 |" in report and "95% t-interval" in report


def test_sampler_curves_average_the_seeds_train_logs(tmp_path):
    from mrdkit.bench.samplers import _mean_curve
    from mrdkit.runs import atomic_write_jsonl

    logs = []
    for seed, values in enumerate(([0.9, 0.5, 0.2], [0.7, 0.3, 0.0])):
        rows = [{"step": 2 * i, "forget_prob": v} for i, v in enumerate(values)] + [{"step": 5, "loss": 1.0}]
        logs.append(atomic_write_jsonl(tmp_path / f"s{seed}.jsonl", rows) or tmp_path / f"s{seed}.jsonl")
    steps, mean, std = _mean_curve(logs, "forget_prob")
    assert steps == [0, 2, 4] and mean == pytest.approx([0.8, 0.4, 0.1])
    assert std == pytest.approx([0.1414213562, 0.1414213562, 0.1414213562])


@pytest.mark.parametrize("name, options", [
    ("characteristics", {"n": 6, "draws": 3, "dtype": "float32"}),
    ("sensitivity", {"n": 6, "k_max": 4}),
    ("selection", {"n": 8, "size": 2}),
])
def test_other_experiments_quick(tmp_path, name, options):
    results = run_experiment(name, tmp_path, quick=True, options=options)
    report = render_report(tmp_path).read_text()
    assert f"## {name} (quick run" in report
    if name == "characteristics":  # the draws and dtype options reach the MRD run
        mrd_config = json.loads((tmp_path / name / "mrd" / "config.json").read_text())
        assert mrd_config["mrd"]["draws"] == 3 and mrd_config["model"]["dtype"] == "float32"
        assert {r["feature"] for r in results["table"]} >= {"frequency", "author_association", "loss"}
        by = {r["feature"]: r for r in results["table"]}
        assert by["frequency"]["partial_given"] == "n_tokens+loss" and by["loss"]["partial_given"] == "n_tokens"
        assert "partial_spearman" in report
    if name == "sensitivity":
        assert {r["estimator"] for r in results["rows"]} == {"paper", "antithetic"}
        assert (tmp_path / name / "stability_vs_passes.png").exists()
    if name == "selection":
        assert {r["subset"] for r in results["rows"]} == {"easiest", "hardest", "random"}


def test_characteristics_verdict_accounts_for_length_and_loss():
    from mrdkit.bench.characteristics import _verdict

    def row(lo, hi, partial=None, p=None):
        return {"ci_low": lo, "ci_high": hi, "partial_spearman": partial, "partial_p": p}

    assert _verdict(row(-0.5, -0.2, -0.3, 0.001)) == "yes"
    assert _verdict(row(-0.5, -0.2, -0.05, 0.6)) == "partly (not beyond length and loss)"
    assert _verdict(row(-0.2, 0.1, -0.25, 0.01)) == "partly (only with length and loss held fixed)"
    assert _verdict(row(-0.2, 0.1, 0.1, 0.3)) == "not resolved"
    assert _verdict(row(0.1, 0.4, -0.3, 0.001)) == "no (opposite sign)"
    assert _verdict(row(-0.5, -0.2)) == "yes"  # runs made before partial correlations existed

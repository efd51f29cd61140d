"""``mrd bench run muse --quick`` end to end on a smaller MUSE testbed built from the shared MUSE-News files."""

from __future__ import annotations

import json
import math

import pytest

# A smaller recipe than the quick variant (built in the experiment's folder, not the cache), so the whole
# pipeline runs in about half a minute of CPU time: 8 forget / 8 retain / 8 holdout chunks of 32 tokens.
TESTBED = {"n_forget": 8, "n_retain": 8, "n_holdout": 8, "forget_docs": 6, "retain_docs": 4, "holdout_docs": 4,
           "length": 32, "finetune": {"epochs": 60, "batch_size": 8, "lr": 5e-3, "target_accuracy": 0.95}}
# faster ground truths (tens of updates, not ~60): the pipeline is under test here, not the numbers
OPTIONS = {"testbed": TESTBED, "truth": {"adamw": {"lr": 1e-4}, "sgd": {"lr": 3e-2}}}


@pytest.fixture()
def muse_data():
    from mrdkit.errors import MrdkitError
    from mrdkit.paths import muse_dir

    try:
        path = muse_dir()
    except MrdkitError:
        pytest.skip("shared/data not found")
    if not (path / "raw" / "forget.json").is_file():
        pytest.skip(f"MUSE-News data not found at {path}")
    return path


def test_muse_experiment_quick(tmp_path, monkeypatch, muse_data):
    from mrdkit.bench.run import experiment_names, render_report, run_experiment

    monkeypatch.setenv("MRDKIT_CACHE", str(tmp_path / "cache"))
    results = run_experiment("muse", tmp_path / "bench", quick=True, options=OPTIONS)
    exp = tmp_path / "bench" / "muse"
    assert "muse" in experiment_names() and (exp / "DONE.json").is_file()
    assert (exp / "testbed" / "muse_testbed.json").is_file() and not (tmp_path / "cache" / "testbed").exists()
    assert results["sizes"] == {"forget": 8, "retain": 8, "holdout": 8}
    assert results["mrd"]["n"] == 8 and set(results["truth"]) == {"adamw", "sgd"}
    for name in ("adamw", "sgd"):
        rows = [json.loads(line) for line in (exp / f"updates_{name}.jsonl").read_text().splitlines()]
        assert len(rows) == 8 and all(r["id"].startswith("muse_forget:") for r in rows)
        assert results["correlations"][name][0]["score"] == "mrd"
    truths = {"updates (GA adamw, per chunk)", "updates (GA sgd, per chunk)", "survival (GA, joint)"}
    assert set(results["predictors"]["truth_summary"]) == truths
    survival = [json.loads(line) for line in (exp / "survival_ga.jsonl").read_text().splitlines()]
    assert len(survival) == 8
    for r in (r for r in survival if not r["censored"]):  # the first step at or below log 0.02
        traj, step = r["trajectory"], r["survival_step"]
        assert traj[step] <= math.log(0.02) and all(f > math.log(0.02) for f in traj[:step])
    scored = {r["score"] for r in results["predictors"]["rows"] if r["truth"] == "survival (GA, joint)"}
    assert {"lookahead_3", "loss", "mrd_antithetic", "learned (cheap, CV by article)"} <= scored
    runs = [json.loads(line) for line in (exp / "samplers.jsonl").read_text().splitlines()]
    assert sorted(r["sampler"] for r in runs) == ["cga", "random"]
    target = results["reference"]["target"]
    retain = results["reference"]["retain"]
    assert target["forget_prob"] > retain["forget_prob"] and target["forget_verbmem"] > retain["forget_verbmem"]
    assert all(r["forget_prob"] < target["forget_prob"] for r in runs)  # unlearning lowered it
    report = render_report(tmp_path / "bench").read_text()
    assert "## muse (quick run" in report and "raw/forget.json` rows 0-5" in report
    assert "MRD predicts required updates on raw-text chunks" in report
    assert "**Difficulty scores on the forget chunks**" in report
    again = run_experiment("muse", tmp_path / "bench", quick=True, options=OPTIONS)
    assert again["wall_s"] == results["wall_s"]  # finished: not run again

"""Score evaluation, the grouped cross-validated learned combination and the forecast concordance."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mrdkit.errors import MrdkitError
from mrdkit.evaluation.predictors import evaluate_score, forecast_concordance, learned_scores


def test_evaluate_score_spearman_on_uncensored_and_c_on_all():
    truth = [{"id": f"s{i}", "updates": i + 1, "censored": i >= 8} for i in range(10)]
    easier = {f"s{i}": -float(i) for i in range(10)}  # perfectly ordered: fewer updates = higher score
    out = evaluate_score(easier, truth, truth_col="updates", n_boot=0)
    assert out["spearman"] == pytest.approx(-1.0) and out["harrell_c"] == pytest.approx(1.0)
    assert out["n"] == 10 and out["n_censored"] == 2
    with pytest.raises(MrdkitError, match="only 2 samples"):
        evaluate_score({"s0": 1.0, "s1": 2.0}, truth, truth_col="updates")


def test_partial_spearman_given_length_removes_what_length_explains():
    # truth = length + noise; a score that IS the length (reversed: longer = harder) has a strong plain Spearman
    # and none beyond length; a score that carries the noise part predicts only beyond length
    rng = np.random.default_rng(0)
    length = rng.permutation(40).astype(float)
    noise = rng.normal(size=40)
    truth = [{"id": f"s{i}", "updates": length[i] + 8 * noise[i], "censored": i == 39} for i in range(40)]
    control = {f"s{i}": length[i] for i in range(40)}
    by_length = evaluate_score({f"s{i}": -length[i] for i in range(40)}, truth, truth_col="updates", n_boot=0,
                               control=control)
    by_noise = evaluate_score({f"s{i}": -noise[i] for i in range(40)}, truth, truth_col="updates", n_boot=0,
                              control=control)
    assert by_length["spearman"] < -0.3 and math.isnan(by_length["partial"])  # nothing left once length is fixed
    assert by_noise["partial"] < by_noise["spearman"] < 0  # the noise part predicts better with length held fixed
    # on the 39 uncensored only, by hand: Spearman of the residual ranks
    from mrdkit.evaluation.correlation import partial_spearman

    keep = [i for i in range(40) if i != 39]
    want = partial_spearman([-noise[i] for i in keep], [truth[i]["updates"] for i in keep], [[length[i] for i in keep]])
    assert by_noise["partial"] == pytest.approx(want[0]) and by_noise["partial_p"] == pytest.approx(want[1])
    assert "partial" not in evaluate_score(control, truth, truth_col="updates", n_boot=0)


def test_learned_combination_never_sees_its_test_fold(monkeypatch):
    """Every sample is predicted by a ridge fitted on other groups only (spy on the fitted rows)."""
    from sklearn.linear_model import Ridge

    rng = np.random.default_rng(0)
    ids = [f"s{i}" for i in range(24)]
    groups = {sid: i // 4 for i, sid in enumerate(ids)}  # 6 "authors" of 4 samples
    feat = {sid: float(i) + rng.random() for i, sid in enumerate(ids)}  # a unique value identifies a row
    truth = [{"id": sid, "updates": 3 * i + 1} for i, sid in enumerate(ids)]
    seen: list[set] = []
    real_fit = Ridge.fit

    def spy(self, x, y, *args, **kwargs):
        seen.append(set(np.round(x[:, 0], 6)))  # standardised, but monotone: record order statistics below
        return real_fit(self, x, y, *args, **kwargs)

    monkeypatch.setattr(Ridge, "fit", spy)
    pred = learned_scores({"f": feat}, truth, truth_col="updates", groups=groups, folds=3)
    assert set(pred) == set(ids) and len(seen) == 3
    sizes = sorted(len(s) for s in seen)
    assert sizes == [16, 16, 16]  # each fold trains on 4 of the 6 authors, never on the 2 it predicts
    # the feature is increasing with the updates: the out-of-fold predictions still rank samples the right way
    assert np.corrcoef([pred[s] for s in ids], [t["updates"] for t in truth])[0, 1] < -0.9


def test_learned_combination_refuses_one_group():
    truth = [{"id": f"s{i}", "updates": i} for i in range(5)]
    with pytest.raises(MrdkitError, match="at least 2 groups"):
        learned_scores({"f": {f"s{i}": float(i) for i in range(5)}}, truth, truth_col="updates",
                       groups={f"s{i}": 0 for i in range(5)})


def test_forecast_concordance_improves_with_the_horizon():
    rows = []
    for i in range(12):  # sample i falls at rate 0.5 + 0.1 i per step after a flat start of 2 steps
        rate = 0.5 + 0.1 * i
        traj = [-1.0, -1.0, -1.0] + [-1.0 - rate * k for k in range(1, 30)]
        hit = next(s for s, f in enumerate(traj) if f <= math.log(0.02))
        rows.append({"id": f"s{i}", "trajectory": traj, "survival_step": hit, "censored": False})
    table = forecast_concordance(rows, [1, 4], 0.02)
    assert [r["horizon"] for r in table] == [1, 4]
    assert table[1]["harrell_c"] > 0.9 and table[1]["harrell_c"] > table[0]["harrell_c"]


def test_joint_survival_progress_is_logged_every_ten_steps(tmp_path):
    from mrdkit.bench.predictors import _log_every
    from mrdkit.bench.registry import BenchContext

    seen: list[str] = []
    ctx = BenchContext(dir=tmp_path, progress=seen.append)
    for step in range(1, 26):
        _log_every(ctx, "joint survival (ga)", step, 80)
    assert seen == ["predictors: joint survival (ga) step 10/80", "predictors: joint survival (ga) step 20/80"]

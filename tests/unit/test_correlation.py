"""Rank correlations with bootstrap CIs, Harrell's C with censoring, and the correlation table."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import kendalltau, spearmanr

from mrdkit.errors import MrdkitError
from mrdkit.evaluation.correlation import (
    _boot_spearman,
    concordance_counts,
    correlate,
    correlation_table,
    harrell_c,
)


@pytest.fixture
def xy():
    rng = np.random.default_rng(1)
    x = rng.normal(size=40)
    return x, 0.6 * x + rng.normal(size=40)


def test_correlate_matches_scipy_and_ci_brackets(xy):
    x, y = xy
    for method, fn in (("spearman", spearmanr), ("kendall", kendalltau)):
        res = correlate(x, y, method=method, n_boot=300, seed=0)
        ref = fn(x, y)
        assert res.rho == pytest.approx(ref.statistic) and res.p_value == pytest.approx(ref.pvalue)
        assert res.ci_low < res.rho < res.ci_high and res.n == 40


def test_bootstrap_is_seeded(xy):
    x, y = xy
    a, b = correlate(x, y, n_boot=200, seed=3), correlate(x, y, n_boot=200, seed=3)
    assert (a.ci_low, a.ci_high) == (b.ci_low, b.ci_high)
    c = correlate(x, y, n_boot=200, seed=4)
    assert (a.ci_low, a.ci_high) != (c.ci_low, c.ci_high)
    wider = correlate(x, y, n_boot=200, seed=3, ci=0.99)
    assert wider.ci_low <= a.ci_low and wider.ci_high >= a.ci_high


def test_vectorised_bootstrap_spearman_equals_scipy_with_ties():
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 4, 15).astype(float), rng.integers(0, 5, 15).astype(float)  # many ties
    idx = rng.integers(0, 15, size=(50, 15))
    fast = _boot_spearman(x, y, idx)
    for row, val in zip(idx, fast):
        ref = spearmanr(x[row], y[row]).statistic if len(set(x[row])) > 1 and len(set(y[row])) > 1 else np.nan
        assert (np.isnan(val) and np.isnan(ref)) or val == pytest.approx(ref)


def test_correlate_nan_handling_and_errors():
    x = [1.0, 2.0, float("nan"), 4.0, 5.0]
    y = [2.0, 1.0, 3.0, float("nan"), 6.0]
    res = correlate(x, y, n_boot=50)
    assert res.n == 3 and res.rho == pytest.approx(spearmanr([1, 2, 5], [2, 1, 6]).statistic)
    with pytest.raises(MrdkitError, match="at least 3 pairs"):
        correlate([1.0, float("nan"), 3.0], [1.0, 2.0, float("nan")])
    with pytest.raises(MrdkitError, match="unknown correlation method 'pearson'"):
        correlate([1, 2, 3], [1, 2, 3], method="pearson")
    with pytest.raises(MrdkitError, match="3 values but y has 2"):
        correlate([1, 2, 3], [1, 2])
    no_ci = correlate([1, 2, 3, 4], [1, 3, 2, 4], n_boot=0)
    assert math.isnan(no_ci.ci_low) and math.isnan(no_ci.ci_high)
    perfect = correlate([1, 2, 3, 4, 5], [2, 4, 6, 8, 10], n_boot=100)
    assert perfect.rho == pytest.approx(1.0) and perfect.ci_low == pytest.approx(1.0)
    assert math.isnan(correlate([1, 1, 1], [1, 2, 3], n_boot=20).rho)  # constant input -> NaN, not an error


def test_harrell_c_hand_made_with_censoring():
    # times: steps until forgotten, cap 10; samples 2 and 3 never forgotten (censored at the cap)
    scores = [0.9, 0.5, 0.1, 0.7]
    times = [2, 5, 10, 10]
    events = [True, True, False, False]
    # comparable (i first, event_i): (0,1) c, (0,2) c, (0,3) c, (1,2) c, (1,3) d; censored pairs never lead
    counts = concordance_counts(scores, times, events)
    assert counts == {"comparable": 5, "concordant": 4, "discordant": 1, "tied": 0, "n": 4, "censored": 2}
    assert harrell_c(scores, times, events) == pytest.approx(0.8)
    # treating the capped samples as observed adds pair (2,3) at equal times: not comparable (both events)
    assert concordance_counts(scores, times)["comparable"] == 5


def test_harrell_c_ties():
    # equal times: event vs censored is comparable (the censored one outlived it); both events is not
    assert concordance_counts([0.9, 0.1], [3, 3], [True, False])["comparable"] == 1
    assert harrell_c([0.9, 0.1], [3, 3], [True, False]) == 1.0
    assert math.isnan(harrell_c([0.9, 0.1], [3, 3], [True, True]))
    assert harrell_c([0.5, 0.5], [1, 2]) == 0.5  # tied scores count one half
    assert math.isnan(harrell_c([0.5, 0.4], [1, 2], [False, False]))  # all censored: nothing comparable


def test_harrell_c_without_censoring_is_kendall_reversed(xy):
    x, y = xy
    # higher score = shorter time, so C = (1 - tau) / 2 when nothing is tied or censored
    assert harrell_c(x, y) == pytest.approx((1 - kendalltau(x, y).statistic) / 2)
    assert harrell_c([3, 2, 1], [1, 2, 3]) == 1.0 and harrell_c([1, 2, 3], [1, 2, 3]) == 0.0


def test_harrell_c_drops_nan_and_checks_lengths():
    assert harrell_c([0.9, float("nan"), 0.1], [1, 2, 3]) == 1.0
    with pytest.raises(MrdkitError, match="differ in length"):
        harrell_c([1, 2], [1, 2], [True])


def _table_data():
    rng = np.random.default_rng(2)
    steps = rng.integers(1, 20, 30).astype(float)
    events = steps < 15
    steps[~events] = 15.0  # censored at the cap
    mrd = -steps + rng.normal(size=30)
    loss = rng.normal(size=30)
    loss[:4] = np.nan
    return {"steps": steps, "forgotten": events, "mrd": mrd, "loss": loss}


@pytest.mark.parametrize("as_frame", [False, True])
def test_correlation_table_rows(as_frame):
    data = _table_data()
    rows = correlation_table(pd.DataFrame(data) if as_frame else data, "steps", ["mrd", "loss"],
                             event_col="forgotten", n_boot=100, seed=1)
    assert [r["score"] for r in rows] == ["mrd", "loss"]
    mrd, loss = rows
    assert set(mrd) == {"score", "spearman", "spearman_ci_low", "spearman_ci_high", "spearman_p", "kendall",
                        "kendall_ci_low", "kendall_ci_high", "kendall_p", "harrell_c", "n", "n_censored"}
    ref = correlate(data["mrd"], data["steps"], n_boot=100, seed=1)
    assert (mrd["spearman"], mrd["spearman_ci_low"], mrd["n"]) == (ref.rho, ref.ci_low, 30)
    assert mrd["harrell_c"] == pytest.approx(harrell_c(data["mrd"], data["steps"], data["forgotten"]))
    assert mrd["harrell_c"] > 0.8 and mrd["spearman"] < -0.8  # high MRD = few steps
    assert mrd["n_censored"] == int((~data["forgotten"]).sum())
    assert loss["n"] == 26  # NaN rows dropped for this column only


def test_correlation_table_missing_column():
    with pytest.raises(MrdkitError, match="no column 'mdr'.*steps"):
        correlation_table(_table_data(), "steps", ["mdr"], n_boot=0)


def test_partial_spearman_matches_the_one_control_formula_and_removes_a_confounder():
    import numpy as np
    from scipy import stats

    from mrdkit.evaluation.correlation import partial_spearman

    rng = np.random.default_rng(0)
    z = rng.normal(size=200)
    x, y = z + 0.3 * rng.normal(size=200), z + 0.3 * rng.normal(size=200)  # linked only through z
    rho, p, n = partial_spearman(x, y, [z])
    r = lambda a, b: stats.spearmanr(a, b).statistic  # noqa: E731
    formula = (r(x, y) - r(x, z) * r(y, z)) / np.sqrt((1 - r(x, z) ** 2) * (1 - r(y, z) ** 2))
    assert n == 200 and rho == pytest.approx(formula, abs=1e-12)
    assert r(x, y) > 0.7 and abs(rho) < 0.2 and p > 0.01
    w = x + 0.5 * rng.normal(size=200)  # a real link beyond z survives
    assert partial_spearman(x, w, [z])[0] > 0.3 and partial_spearman(x, w, [z])[1] < 1e-6
    assert np.isnan(partial_spearman([1, 2, 3], [3, 2, 1], [[1, 2, 3]])[0])  # too few points


def test_harrell_c_equals_the_pair_counts_on_random_censored_data():
    """lifelines' routine (harrell_c) and mrdkit's own pair counting agree, ties and censoring included."""
    rng = np.random.default_rng(3)
    scores, times = rng.integers(0, 5, 60).astype(float), rng.integers(1, 12, 60).astype(float)
    events = rng.random(60) > 0.3
    c = concordance_counts(scores, times, events)
    assert harrell_c(scores, times, events) == pytest.approx((c["concordant"] + 0.5 * c["tied"]) / c["comparable"])


def test_partial_spearman_p_value_uses_n_minus_2_minus_k_degrees_of_freedom():
    """Eight points, one control: dof = 8 - 2 - 1 = 5; t = rho sqrt(5 / (1 - rho^2)), p = 2 P(T_5 > |t|). With
    n - 2 = 6 degrees of freedom the p-value would be visibly smaller."""
    from scipy import stats

    from mrdkit.evaluation.correlation import partial_spearman

    x = [1, 2, 3, 4, 5, 6, 7, 8]
    y = [2, 1, 4, 3, 6, 8, 5, 7]
    z = [1, 3, 2, 5, 4, 6, 8, 7]
    rho, p, n = partial_spearman(x, y, [z])
    t = rho * math.sqrt(5 / (1 - rho ** 2))
    assert n == 8 and p == pytest.approx(2 * stats.t.sf(abs(t), 5), rel=1e-12)
    assert abs(p - 2 * stats.t.sf(abs(rho * math.sqrt(6 / (1 - rho ** 2))), 6)) > 1e-3


def _bootstrap_by_hand(x, y, method, n_boot, seed, ci):
    """The percentile bootstrap from its definition: n_boot resamples of the n pairs (indices 0..n-1 with
    replacement, numpy Generator seeded with derive_seed(seed, "bootstrap", method)), the statistic of each by
    scipy, NaNs dropped, the (1 - ci) / 2 and (1 + ci) / 2 percentiles."""
    from scipy import stats

    from mrdkit.seeding import derive_seed

    x, y = np.asarray(x, float), np.asarray(y, float)
    idx = np.random.default_rng(derive_seed(seed, "bootstrap", method)).integers(0, x.size, size=(n_boot, x.size))
    fn = stats.spearmanr if method == "spearman" else stats.kendalltau
    with np.errstate(all="ignore"), __import__("warnings").catch_warnings():
        __import__("warnings").simplefilter("ignore")
        boot = np.array([fn(x[i], y[i]).statistic for i in idx])
    boot = boot[~np.isnan(boot)]
    return tuple(np.percentile(boot, [100 * (1 - ci) / 2, 100 * (1 + ci) / 2]))


@pytest.mark.parametrize("method", ["spearman", "kendall"])
def test_bootstrap_ci_matches_its_definition_with_the_default_seed(method):
    x = [3.0, 1.0, 4.0, 1.5, 5.0, 9.0, 2.0, 6.0, 5.5, 3.5]
    y = [2.0, 1.0, 3.0, 2.5, 6.0, 7.0, 1.5, 4.0, 8.0, 3.0]
    res = correlate(x, y, method=method, n_boot=200, ci=0.9)  # default seed: 0
    low, high = _bootstrap_by_hand(x, y, method, 200, 0, 0.9)
    assert (res.ci_low, res.ci_high) == (pytest.approx(low, abs=1e-12), pytest.approx(high, abs=1e-12))
    assert low < res.rho < high


def test_correlate_refuses_a_negative_bootstrap_count():
    with pytest.raises(MrdkitError, match="n_boot >= 0"):
        correlate([1, 2, 3, 4], [1, 3, 2, 4], n_boot=-1, ci=0.9)


def test_partial_spearman_needs_k_plus_4_points():
    """k controls leave n - 2 - k degrees of freedom: with k = 1, 5 points are the fewest it computes on."""
    from mrdkit.evaluation.correlation import partial_spearman

    x, y, z = [1, 2, 3, 4, 5], [2, 1, 4, 5, 3], [1, 3, 2, 5, 4]
    rho, p, n = partial_spearman(x, y, [z])
    assert n == 5 and np.isfinite(rho) and np.isfinite(p)
    assert np.isnan(partial_spearman(x[:4], y[:4], [z[:4]])[0])


def test_correlation_table_without_events_has_no_censoring():
    table = correlation_table({"s": [1, 2, 3, 4, 5], "t": [2, 1, 4, 3, 5]}, "t", ["s"], n_boot=0)
    assert table[0]["n_censored"] == 0 and table[0]["n"] == 5


def test_correlation_report_writes_its_files_with_the_default_seed(tmp_path):
    from mrdkit.evaluation.correlation import correlation_report

    scores = [{"id": f"s{i}", "mrd": v} for i, v in enumerate([0.3, 0.1, 0.4, 0.2, 0.5, 0.9, 0.6, 0.7])]
    truth = [{"id": f"s{i}", "updates": u, "censored": False} for i, u in enumerate([4, 7, 5, 3, 2, 1, 6, 2.5])]
    table = correlation_report(scores, truth, n_boot=50, out_dir=tmp_path)
    assert table == correlation_report(scores, truth, n_boot=50, seed=0)
    assert table != correlation_report(scores, truth, n_boot=50, seed=1)  # the CIs do depend on the seed
    assert (tmp_path / "correlations.csv").read_text().startswith("score,spearman,")
    assert json.loads((tmp_path / "correlations.json").read_text())["rows"][0]["score"] == "mrd"
    assert -1 < table[0]["spearman"] < 0 and table[0]["n_censored"] == 0


def test_seed1_survivors_default_bootstrap_count_ci_range_harder_columns_and_chunk_means(tmp_path):
    from mrdkit.evaluation.correlation import correlation_report, difficulty_table

    data = _table_data()
    # the documented default is 1000 resamples: equal to an explicit 1000, not to 1001
    default = correlation_table(data, "steps", ["mrd"], event_col="forgotten")[0]
    assert default == correlation_table(data, "steps", ["mrd"], event_col="forgotten", n_boot=1000)[0]
    assert default["spearman_ci_low"] != correlation_table(data, "steps", ["mrd"], event_col="forgotten",
                                                           n_boot=1001)[0]["spearman_ci_low"]
    with pytest.raises(MrdkitError, match="0 < ci < 1"):
        correlate(data["mrd"], data["steps"], ci=1.5)
    # a column declared "harder" is negated before the table: its rho flips sign
    scores = [{"id": f"s{i}", "a": float(i)} for i in range(6)]
    truth = [{"id": f"s{i}", "updates": float(i * i)} for i in range(6)]
    plain = correlation_report(scores, truth, n_boot=0)[0]["spearman"]
    flipped = correlation_report(scores, truth, n_boot=0, harder=["a"])[0]["spearman"]
    assert plain == pytest.approx(1.0) and flipped == pytest.approx(-1.0)
    # a chunk row takes the MEAN of its members' scores: (1 + 3) / 2
    chunk_truth = [{"id": f"c{i}", "ids": [f"s{i}", f"s{i + 2}"], "updates": float(i)} for i in range(3)]
    cols, _ = difficulty_table(scores, chunk_truth)
    assert cols["a"] == [1.0, 2.0, 3.0]

"""How well difficulty scores predict a ground truth: oriented correlations, a cross-validated learned combination
of cheap scores, and the online forecast's concordance as a function of the horizon.

Conventions: every score is first turned so that HIGHER = EASIER (:func:`mrdkit.samplers.orient`, from
the score's declared direction), so that a score that works has a NEGATIVE Spearman with the updates / survival
step and a Harrell's C above 0.5 (:mod:`mrdkit.evaluation.correlation`), whatever its natural units.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from mrdkit.errors import MrdkitError
from mrdkit.evaluation.correlation import correlate, harrell_c, partial_spearman


def _aligned(scores: Mapping[str, float], truth: Sequence[Mapping[str, Any]], truth_col: str):
    rows = [t for t in truth if t["id"] in scores and scores[t["id"]] is not None]
    if len(rows) < 3:
        raise MrdkitError(f"only {len(rows)} samples have both a score and a ground truth")
    x = np.asarray([float(scores[t["id"]]) for t in rows])
    y = np.asarray([float(t[truth_col]) for t in rows])
    events = np.asarray([not t.get("censored", False) for t in rows])
    return x, y, events


def evaluate_score(scores: Mapping[str, float], truth: Sequence[Mapping[str, Any]], *, truth_col: str,
                   n_boot: int = 1000, seed: int = 0, control: Mapping[str, float] | None = None) -> dict[str, Any]:
    """Spearman with a bootstrap 95% CI on the UNCENSORED samples and Harrell's C on all (censoring-aware), of an
    easier-oriented score against a time-like ground truth (updates, survival step).

    ``control`` (e.g. the answer length ``{id: n_tokens}``): also the partial Spearman given it on the uncensored
    samples (``partial``, ``partial_p``: :func:`~mrdkit.evaluation.correlation.partial_spearman`), i.e. what the
    score knows beyond that variable. A probability threshold on the whole answer makes long answers cross it
    sooner, so length alone can predict a survival step; the partial column says whether a score adds to it."""
    x, y, events = _aligned(scores, truth, truth_col)
    c = harrell_c(x, y, events)
    if events.sum() >= 3 and np.unique(x[events]).size > 1:
        sp = correlate(x[events], y[events], method="spearman", n_boot=n_boot, seed=seed)
        spear = {"spearman": sp.rho, "ci_low": sp.ci_low, "ci_high": sp.ci_high, "p": sp.p_value}
    else:
        spear = {"spearman": math.nan, "ci_low": math.nan, "ci_high": math.nan, "p": math.nan}
    out = {**spear, "harrell_c": c, "n": int(x.size), "n_censored": int((~events).sum())}
    if control is not None:
        kept = [t for t in truth if t["id"] in scores and scores[t["id"]] is not None and not t.get("censored")]
        z = [float(control.get(t["id"], math.nan)) for t in kept]
        out["partial"], out["partial_p"], _ = partial_spearman(x[events], y[events], [z])
    return out


def learned_scores(features: Mapping[str, Mapping[str, float]], truth: Sequence[Mapping[str, Any]], *,
                   truth_col: str, groups: Mapping[str, Any], folds: int = 5, alpha: float = 1.0) -> dict[str, float]:
    """Out-of-fold predictions of a ridge regression of ``-log(1 + truth)`` on standardised features (easier-oriented:
    higher = fewer updates), cross-validated with folds grouped so that no group (a TOFU author) is in both the
    training and the test part of a fold (scikit-learn ``GroupKFold``, ``StandardScaler``, ``Ridge``).

    Args:
        features: ``{feature name: {sample id: value}}`` (e.g. the cheap scores, oriented or not).
        truth: ground-truth rows with ``id`` and ``truth_col`` (censored rows count at their cap).
        groups: ``{sample id: group}``; folds never split a group.
        folds: number of folds (at most the number of groups). alpha: ridge penalty.

    Returns:
        ``{sample id: prediction}`` for every sample with all features, each predicted by a model that never saw it
        nor any sample of its group.
    """
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import GroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    names = sorted(features)
    rows = [t for t in truth if all(t["id"] in features[n] for n in names) and t["id"] in groups]
    x = np.asarray([[float(features[n][t["id"]]) for n in names] for t in rows])
    y = -np.log1p(np.asarray([float(t[truth_col]) for t in rows]))
    g = np.asarray([groups[t["id"]] for t in rows])
    n_groups = np.unique(g).size
    if n_groups < 2:
        raise MrdkitError(f"a grouped cross-validation needs at least 2 groups, got {n_groups}")
    pred = np.empty(len(rows))
    for train, test in GroupKFold(n_splits=min(folds, n_groups)).split(x, y, g):
        model = make_pipeline(StandardScaler(), Ridge(alpha=alpha)).fit(x[train], y[train])
        pred[test] = model.predict(x[test])
    return {t["id"]: float(p) for t, p in zip(rows, pred)}


def forecast_concordance(rows: Sequence[Mapping[str, Any]], horizons: Sequence[int], threshold: float,
                         ) -> list[dict[str, Any]]:
    """Harrell's C (and Spearman on the uncensored) of the online forecast from the first m steps of a joint run,
    for each horizon m (:func:`mrdkit.evaluation.survival.forecast_steps`); samples already below the threshold by
    step m are scored by their observed step."""
    from mrdkit.evaluation.survival import forecast_steps

    out = []
    for m in horizons:
        predicted = forecast_steps(rows, m, threshold)
        easier = {k: -v if math.isfinite(v) else -1e12 for k, v in predicted.items()}  # fewer steps = easier
        out.append({"horizon": int(m), **evaluate_score(easier, rows, truth_col="survival_step", n_boot=0)})
    return out

"""How well a difficulty score predicts a ground truth: rank correlations with bootstrap CIs and Harrell's C.

The paper (Feng et al. 2025, arXiv:2504.06658) reports Spearman(MRD, required unlearning updates). Because the
ground truth "updates until forgotten" is capped (censored) for hard samples, paper-notes section 4 asks for a
censoring-aware concordance next to Spearman/Kendall: Harrell's C (Harrell et al. 1982, JAMA 247(18);
Harrell, Lee & Mark 1996, Stat. Med. 15(4)).
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from mrdkit.errors import MrdkitError
from mrdkit.seeding import derive_seed

METHODS = ("spearman", "kendall")


@dataclass(frozen=True)
class CorrelationResult:
    """A rank correlation with its two-sided p-value and percentile-bootstrap confidence interval.

    Attributes:
        rho: Spearman's rho or Kendall's tau-b.
        p_value: scipy's two-sided p-value for no association.
        ci_low: lower bound of the bootstrap CI (NaN when ``n_boot=0`` or every resample is degenerate).
        ci_high: upper bound of the bootstrap CI.
        n: number of (x, y) pairs used after dropping pairs containing NaN.
    """

    rho: float
    p_value: float
    ci_low: float
    ci_high: float
    n: int

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (for JSON)."""
        return asdict(self)


def _column(values: Any) -> np.ndarray:
    """1-D float64 array from a sequence, numpy array or torch tensor."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=np.float64).ravel()


def _paired(x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    """Float arrays of equal length with every pair containing a NaN dropped; at least 3 pairs must remain."""
    x, y = _column(x), _column(y)
    if x.size != y.size:
        raise MrdkitError(f"x has {x.size} values but y has {y.size}")
    keep = ~(np.isnan(x) | np.isnan(y))
    if keep.sum() < 3:
        raise MrdkitError(f"need at least 3 pairs without NaN for a correlation, got {int(keep.sum())}")
    return x[keep], y[keep]


def _statistic(x: np.ndarray, y: np.ndarray, method: str) -> tuple[float, float]:
    """(statistic, p-value) from ``scipy.stats.spearmanr`` or ``kendalltau`` (tau-b); NaN for constant input."""
    from scipy import stats

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConstantInputWarning: the result is NaN, which is what we report
        res = stats.spearmanr(x, y) if method == "spearman" else stats.kendalltau(x, y)
    return float(res.statistic), float(res.pvalue)


def _boot_spearman(x: np.ndarray, y: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Spearman rho of every resample at once: Pearson correlation of average ranks, row by row."""
    from scipy.stats import rankdata

    rx, ry = rankdata(x[idx], axis=1), rankdata(y[idx], axis=1)  # (B, n)
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (rx * ry).sum(1) / np.sqrt((rx * rx).sum(1) * (ry * ry).sum(1))  # (B,); NaN if a row is constant


def _bootstrap(x: np.ndarray, y: np.ndarray, method: str, n_boot: int, seed: int) -> np.ndarray:
    """Statistics of ``n_boot`` paired resamples (rows drawn with replacement), seeded per (seed, method)."""
    rng = np.random.default_rng(derive_seed(seed, "bootstrap", method))
    idx = rng.integers(0, x.size, size=(n_boot, x.size))  # (B, n)
    if method == "spearman":
        return _boot_spearman(x, y, idx)
    return np.array([_statistic(x[i], y[i], method)[0] for i in idx])


def correlate(
    x: Sequence[float], y: Sequence[float], *, method: str = "spearman", n_boot: int = 1000, seed: int = 0,
    ci: float = 0.95,
) -> CorrelationResult:
    """Rank correlation of ``x`` and ``y`` with a percentile-bootstrap confidence interval.

    The CI takes the ``(1-ci)/2`` and ``(1+ci)/2`` percentiles of the statistic over ``n_boot`` resamples of the
    pairs (Efron & Tibshirani 1993), drawn by a numpy Generator seeded with
    ``derive_seed(seed, "bootstrap", method)``: the same seed gives the same CI, and every score column
    correlated with the same seed sees the same resamples. Degenerate (constant) resamples are ignored.

    Args:
        x: one value per sample (e.g. MRD); pairs where ``x`` or ``y`` is NaN are dropped.
        y: one value per sample (e.g. unlearning steps needed).
        method: ``"spearman"`` (rho) or ``"kendall"`` (tau-b).
        n_boot: number of bootstrap resamples; 0 skips the CI (NaN bounds).
        seed: run seed.
        ci: confidence level in (0, 1).

    Returns:
        :class:`CorrelationResult`.

    Raises:
        MrdkitError: unknown method, bad ``ci``/``n_boot``, unequal lengths, or fewer than 3 complete pairs.
    """
    if method not in METHODS:
        raise MrdkitError(f"unknown correlation method {method!r} (known: {', '.join(METHODS)})")
    if not 0.0 < ci < 1.0 or n_boot < 0:
        raise MrdkitError(f"need 0 < ci < 1 and n_boot >= 0, got ci={ci}, n_boot={n_boot}")
    xs, ys = _paired(x, y)
    rho, p = _statistic(xs, ys, method)
    low = high = float("nan")
    if n_boot > 0:
        boot = _bootstrap(xs, ys, method, n_boot, seed)
        boot = boot[~np.isnan(boot)]
        if boot.size:
            low, high = (float(v) for v in np.percentile(boot, [50 * (1 - ci), 50 * (1 + ci)]))
    return CorrelationResult(rho=rho, p_value=p, ci_low=low, ci_high=high, n=int(xs.size))


def concordance_counts(scores: Sequence[float], times: Sequence[float], events: Sequence[bool] | None = None) -> dict:
    """Counts behind :func:`harrell_c`: comparable, concordant, discordant and tied-score pairs.

    Pair (i, j) is comparable when sample i's event is observed and it certainly happened first:
    ``event_i and (t_i < t_j or (t_i == t_j and not event_j))`` (a sample censored at time t outlived an event at
    t). Pairs with equal times and both events, and pairs whose earlier time is censored, are not comparable.
    It is concordant when ``score_i > score_j`` (HIGHER score predicts SHORTER time), tied when equal.
    Samples with a NaN score or time are dropped. Uses O(n^2) memory (fine for a few thousand samples).
    """
    s, t = _column(scores), _column(times)
    e = np.ones(s.size, bool) if events is None else np.asarray(events, dtype=bool).ravel()
    if not s.size == t.size == e.size:
        raise MrdkitError(f"scores ({s.size}), times ({t.size}) and events ({e.size}) differ in length")
    keep = ~(np.isnan(s) | np.isnan(t))
    s, t, e = s[keep], t[keep], e[keep]
    first = (t[:, None] < t[None, :]) | ((t[:, None] == t[None, :]) & ~e[None, :])  # (n, n): i surely before j
    comparable = e[:, None] & first
    concordant = comparable & (s[:, None] > s[None, :])
    tied = comparable & (s[:, None] == s[None, :])
    n_comp, n_conc, n_tied = int(comparable.sum()), int(concordant.sum()), int(tied.sum())
    return {"comparable": n_comp, "concordant": n_conc, "discordant": n_comp - n_conc - n_tied, "tied": n_tied,
            "n": int(s.size), "censored": int((~e).sum())}


def harrell_c(scores: Sequence[float], times: Sequence[float], events: Sequence[bool] | None = None) -> float:
    """Harrell's concordance index with right-censoring, ``C = (concordant + 0.5 * tied) / comparable``.

    Convention: a HIGHER score predicts a SHORTER time, i.e. fewer unlearning updates (high MRD = fragile memory
    = easy to unlearn, Feng et al. 2025). C = 1: perfect ordering, 0.5: random, 0: perfectly reversed. This is
    ``1 -`` the C of survival libraries that treat a higher score as longer survival (e.g. lifelines).

    Args:
        scores: difficulty score per sample (e.g. MRD).
        times: ground-truth time per sample (e.g. steps until the sample's probability fell below a threshold);
            censored samples carry the cap.
        events: True where the event was observed (the sample was forgotten within the cap); False = censored at
            ``times``. None means every event was observed.

    Returns:
        C in [0, 1], or NaN when no pair is comparable. Computed by lifelines' ``concordance_index`` (with the
        scores negated, its convention being "higher = longer"); :func:`concordance_counts` gives the pair counts.
    """
    from lifelines.utils import concordance_index

    s, t = _column(scores), _column(times)
    e = np.ones(s.size, bool) if events is None else np.asarray(events, dtype=bool).ravel()
    if not s.size == t.size == e.size:
        raise MrdkitError(f"scores ({s.size}), times ({t.size}) and events ({e.size}) differ in length")
    keep = ~(np.isnan(s) | np.isnan(t))
    try:
        return float(concordance_index(t[keep], -s[keep], e[keep]))
    except ZeroDivisionError:  # lifelines: "No admissable pairs in the dataset"
        return float("nan")


def _get_column(data: Any, name: str) -> np.ndarray:
    """Column ``name`` of a pandas DataFrame or a mapping of column name -> sequence."""
    columns = list(data.columns) if hasattr(data, "columns") else list(data)
    if name not in columns:
        raise MrdkitError(f"no column {name!r} (columns: {', '.join(map(str, columns))})")
    return np.asarray(data[name])


def correlation_table(
    data: Mapping[str, Sequence[Any]] | Any, truth_col: str, score_cols: Sequence[str], *,
    event_col: str | None = None, n_boot: int = 1000, seed: int = 0, ci: float = 0.95,
) -> list[dict[str, Any]]:
    """One row per score column: Spearman and Kendall with bootstrap CIs and p-values, Harrell's C, n.

    Args:
        data: pandas DataFrame or dict of equal-length columns.
        truth_col: ground-truth column (e.g. ``steps``: updates until forgotten; larger = harder).
        score_cols: score columns to evaluate (e.g. ``mrd``, ``loss``, ``min_k``).
        event_col: optional boolean column, False where the truth is censored at the cap (for Harrell's C).
        n_boot: bootstrap resamples per correlation; seed: run seed; ci: confidence level.

    Returns:
        Rows with keys ``score, spearman, spearman_ci_low, spearman_ci_high, spearman_p, kendall,
        kendall_ci_low, kendall_ci_high, kendall_p, harrell_c, n, n_censored``; rows where the score, truth or
        event is missing are dropped per score column (``n`` counts the rest).
    """
    truth = _get_column(data, truth_col).astype(np.float64)
    events = None if event_col is None else _get_column(data, event_col)
    rows = []
    for col in score_cols:
        score = _get_column(data, col).astype(np.float64)
        keep = ~(np.isnan(score) | np.isnan(truth))
        if events is not None:
            keep &= ~np.asarray([v is None or v != v for v in events])  # None / NaN event = unknown
        ev = None if events is None else events[keep].astype(bool)
        row: dict[str, Any] = {"score": col}
        for method in METHODS:
            res = correlate(score[keep], truth[keep], method=method, n_boot=n_boot, seed=seed, ci=ci)
            row.update({method: res.rho, f"{method}_ci_low": res.ci_low, f"{method}_ci_high": res.ci_high,
                        f"{method}_p": res.p_value})
        row.update(harrell_c=harrell_c(score[keep], truth[keep], ev), n=int(keep.sum()),
                   n_censored=0 if ev is None else int((~ev).sum()))
        rows.append(row)
    return rows


def partial_spearman(x: Sequence[float], y: Sequence[float],
                     controls: Sequence[Sequence[float]]) -> tuple[float, float, int]:
    """Spearman correlation of ``x`` and ``y`` with the ``controls`` partialled out: ``(rho, p, n)``.

    Every variable is rank-transformed (average ranks for ties); ``x`` and ``y`` ranks are regressed by least
    squares on the control ranks plus an intercept, and rho is the Pearson correlation of the two residuals. With
    one control z this equals ``(r_xy - r_xz r_yz) / sqrt((1 - r_xz^2)(1 - r_yz^2))`` on ranks. The p-value is the
    two-sided t-test with ``n - 2 - k`` degrees of freedom (k controls). Used to ask whether MRD's link to a
    sample characteristic survives once length and initial loss (which MRD tracks closely) are held fixed.
    """
    from scipy import stats

    cols = np.column_stack([_column(x), _column(y), *[_column(c) for c in controls]])
    cols = cols[~np.isnan(cols).any(axis=1)]
    n, k = cols.shape[0], len(controls)
    if n < k + 4:
        return float("nan"), float("nan"), n
    ranks = np.column_stack([stats.rankdata(c) for c in cols.T])
    design = np.column_stack([np.ones(n), ranks[:, 2:]])
    resid = ranks[:, :2] - design @ np.linalg.lstsq(design, ranks[:, :2], rcond=None)[0]
    if np.allclose(resid[:, 0], 0) or np.allclose(resid[:, 1], 0):
        return float("nan"), float("nan"), n
    rho = float(np.corrcoef(resid[:, 0], resid[:, 1])[0, 1])
    dof = n - 2 - k
    t = rho * np.sqrt(dof / max(1e-300, 1 - rho ** 2))
    return rho, float(2 * stats.t.sf(abs(t), dof)), n


# ------------------------------------------------------------------- scores vs a ground truth (files)


def _rows(source: str | Path | Sequence[dict]) -> list[dict]:
    """Rows of a JSONL file, or the given rows."""
    if isinstance(source, (str, Path)):
        from mrdkit.runs import read_jsonl

        return read_jsonl(source)
    return list(source)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def difficulty_table(scores: Sequence[dict], truth: Sequence[dict], *, truth_col: str = "updates",
                     score_cols: Sequence[str] | None = None,
                     chunk_members: int | None = None) -> tuple[dict[str, list], list[str]]:
    """Join score rows and ground-truth rows on ``id``.

    A chunk row (with ``ids``) gets the mean of its members' scores, as the reference code averages MRD over a
    chunk; ``chunk_members=N`` averages over its first N members only (the authors' WMDP script scores the first
    3 texts of each chunk: ``chunk_members=3`` reproduces it). ``score_cols=None`` takes every numeric column of the
    score rows. Returns ``(columns, score_cols)``,
    columns = ``{"id", truth_col, "event" (False = censored), <score cols>}``; truth rows without scores are
    dropped.
    """
    by_id = {str(r["id"]): r for r in scores}
    if score_cols is None:
        score_cols = sorted({k for r in scores for k, v in r.items() if _number(v)} - {"id", truth_col, "index"})
    absent = [c for c in score_cols if not any(c in r for r in scores)]
    if absent or not score_cols:
        raise MrdkitError(f"score columns {absent or '(none)'} not found; the score rows have: "
                          f"{', '.join(sorted({k for r in scores for k in r}))}")
    cols: dict[str, list] = {"id": [], truth_col: [], "event": [], **{c: [] for c in score_cols}}
    for t in truth:
        if truth_col not in t:
            raise MrdkitError(f"ground-truth row {t.get('id')!r} has no {truth_col!r} column")
        members = [by_id.get(str(m)) for m in (t.get("ids") or [t["id"]])][:chunk_members]
        if any(m is None for m in members):
            continue
        cols["id"].append(t["id"])
        cols[truth_col].append(float(t[truth_col]))
        cols["event"].append(not t.get("censored", False))
        for c in score_cols:
            vals = [m.get(c) for m in members]
            cols[c].append(sum(vals) / len(vals) if all(_number(v) for v in vals) else float("nan"))
    if len(cols["id"]) < 3:
        raise MrdkitError(f"only {len(cols['id'])} ids in common between the scores and the ground truth")
    return cols, list(score_cols)


def correlation_report(scores: str | Path | Sequence[dict], truth: str | Path | Sequence[dict], *,
                       score_cols: Sequence[str] | None = None, truth_col: str = "updates", n_boot: int = 1000,
                       seed: int = 0, out_dir: str | Path | None = None,
                       chunk_members: int | None = None, harder: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Spearman / Kendall (bootstrap CIs, p-values) and censoring-aware Harrell's C of each score vs the truth.

    Sign convention: MRD predicts EASY samples by HIGH values (Feng et al. 2025), so a working score has a
    negative Spearman with ``updates`` and Harrell's C above 0.5 (:func:`correlation.harrell_c`).

    Args:
        scores: JSONL path or rows with ``id`` and score columns (e.g. ``mrd.jsonl`` of ``mrd score``).
        truth: JSONL path or rows of :func:`required_updates`.
        score_cols: columns to evaluate (default: every numeric column of the score rows).
        truth_col: ground-truth column (``updates``; or ``l1_change`` / ``l2_change``).
        n_boot, seed: bootstrap resamples and seed.
        out_dir: write ``correlations.json``, ``correlations.csv`` and ``scatter_<score>.png`` there.
        chunk_members: chunk scores average only their first N members (:func:`difficulty_table`).
        harder: score columns whose HIGH values predict HARDER samples (e.g. ``n_tokens``, ``newton_steps``; a
            ``mrd difficulty score`` run's ``scores.json`` declares each one's direction): they are negated first,
            so every row of the table reads "higher = easier".

    Returns:
        :func:`mrdkit.evaluation.correlation.correlation_table` rows.
    """
    if chunk_members is not None and chunk_members < 1:
        raise MrdkitError(f"chunk_members must be >= 1, got {chunk_members}")
    cols, score_cols = difficulty_table(_rows(scores), _rows(truth), truth_col=truth_col, score_cols=score_cols,
                                        chunk_members=chunk_members)
    for name in set(harder) & set(score_cols):
        cols[name] = [-v for v in cols[name]]
    table = correlation_table(cols, truth_col, score_cols, event_col="event", n_boot=n_boot, seed=seed)
    if out_dir is not None:
        _write_report(Path(out_dir), cols, table, truth_col)
    return table


def _write_report(out: Path, cols: dict[str, list], table: list[dict], truth_col: str) -> None:
    import csv
    import io
    import re

    from mrdkit.plots import scatter
    from mrdkit.runs import atomic_write_json, atomic_write_text

    censored = [not e for e in cols["event"]]
    atomic_write_json(out / "correlations.json", {"truth_col": truth_col, "n": len(cols["id"]),
                                                  "n_censored": sum(censored), "rows": table})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(table[0]))
    writer.writeheader()
    writer.writerows(table)
    atomic_write_text(out / "correlations.csv", buf.getvalue())
    for row in table:
        name = re.sub(r"[^\w.-]", "_", row["score"])
        scatter(cols[row["score"]], cols[truth_col], out / f"scatter_{name}.png", marked=censored,
                title=f"{row['score']} vs {truth_col} (Spearman {row['spearman']:.2f})", xlabel=row["score"],
                ylabel=truth_col)

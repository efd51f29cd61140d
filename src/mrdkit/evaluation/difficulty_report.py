"""Difficulty scores vs ground truth: join score rows with :func:`~mrdkit.evaluation.difficulty.required_updates`
rows and correlate them (re-exported by :mod:`mrdkit.evaluation.difficulty`).

Sign convention: MRD predicts EASY samples by HIGH values (Feng et al. 2025, arXiv:2504.06658), so a working
score has a negative Spearman with ``updates`` and Harrell's C above 0.5 (:mod:`mrdkit.evaluation.correlation`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from mrdkit.errors import MrdkitError


def _rows(source: str | Path | Sequence[dict]) -> list[dict]:
    """Rows of a JSONL file, or the given rows."""
    if isinstance(source, (str, Path)):
        from mrdkit.runs import read_jsonl

        return read_jsonl(source)
    return list(source)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def difficulty_table(scores: Sequence[dict], truth: Sequence[dict], *, truth_col: str = "updates",
                     score_cols: Sequence[str] | None = None) -> tuple[dict[str, list], list[str]]:
    """Join score rows and ground-truth rows on ``id``.

    A chunk row (with ``ids``) gets the mean of its members' scores, as the reference code averages MRD over a
    chunk. ``score_cols=None`` takes every numeric column of the score rows. Returns ``(columns, score_cols)``,
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
        members = [by_id.get(str(m)) for m in (t.get("ids") or [t["id"]])]
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
                       seed: int = 0, out_dir: str | Path | None = None) -> list[dict[str, Any]]:
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

    Returns:
        :func:`mrdkit.evaluation.correlation.correlation_table` rows.
    """
    from mrdkit.evaluation.correlation import correlation_table

    cols, score_cols = difficulty_table(_rows(scores), _rows(truth), truth_col=truth_col, score_cols=score_cols)
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

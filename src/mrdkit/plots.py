"""Plots written into run directories (matplotlib, Agg backend, PNG, atomic writes)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from mrdkit.runs import atomic_path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def histogram(values: Sequence[float], path: str | Path, *, title: str, xlabel: str, log: bool = False) -> Path:
    """Histogram of ``values`` (log-spaced bins when ``log`` and all values are positive)."""
    import numpy as np

    plt = _pyplot()
    vals = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    if log and vals.size and (vals > 0).all():
        bins = np.logspace(np.log10(vals.min()), np.log10(vals.max()) + 1e-12, 30)
        ax.set_xscale("log")
    else:
        bins = 30
    ax.hist(vals, bins=bins, color="#4C72B0", edgecolor="white")
    ax.set(title=title, xlabel=xlabel, ylabel="samples")
    return _save(fig, path)


def scatter(
    x: Sequence[float],
    y: Sequence[float],
    path: str | Path,
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    logx: bool = False,
    marked: Sequence[bool] | None = None,
    marked_label: str = "censored",
) -> Path:
    """Scatter plot; ``marked`` points (e.g. censored ground truth) are drawn as open markers."""
    import numpy as np

    plt = _pyplot()
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    mark = np.zeros_like(x, dtype=bool) if marked is None else np.asarray(marked, dtype=bool)
    ax.scatter(x[~mark], y[~mark], s=14, color="#4C72B0", label="observed")
    if mark.any():
        ax.scatter(x[mark], y[mark], s=18, facecolors="none", edgecolors="#C44E52", label=marked_label)
        ax.legend(fontsize=8)
    if logx and (x > 0).all():
        ax.set_xscale("log")
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    return _save(fig, path)


def lines(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    path: str | Path,
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    logx: bool = False,
    bands: Mapping[str, Sequence[float]] | None = None,
) -> Path:
    """One line per named series ``{name: (x, y)}``; optional +- band per series."""
    import numpy as np

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.8, 3.8))
    for name, (xs, ys) in series.items():
        ax.plot(xs, ys, marker="o", ms=3, label=name)
        if bands and name in bands:
            ys_, err = np.asarray(ys, dtype=float), np.asarray(bands[name], dtype=float)
            ax.fill_between(xs, ys_ - err, ys_ + err, alpha=0.2)
    if logx:
        ax.set_xscale("log")
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.legend(fontsize=8)
    return _save(fig, path)


def bars(
    groups: Mapping[str, Mapping[str, float]],
    path: str | Path,
    *,
    title: str,
    ylabel: str,
    errors: Mapping[str, Mapping[str, float]] | None = None,
) -> Path:
    """Grouped bars: ``groups[group][series] = value`` (e.g. group = method, series = sampler)."""
    import numpy as np

    plt = _pyplot()
    group_names = list(groups)
    series_names = sorted({s for g in groups.values() for s in g})
    width = 0.8 / max(1, len(series_names))
    fig, ax = plt.subplots(figsize=(max(5.5, 1.4 * len(group_names)), 3.8))
    xs = np.arange(len(group_names))
    for i, s in enumerate(series_names):
        vals = [groups[g].get(s, np.nan) for g in group_names]
        errs = [errors[g].get(s, 0.0) for g in group_names] if errors else None
        ax.bar(xs + i * width, vals, width, yerr=errs, label=s, capsize=2)
    ax.set_xticks(xs + width * (len(series_names) - 1) / 2, group_names)
    ax.set(title=title, ylabel=ylabel)
    ax.legend(fontsize=8)
    return _save(fig, path)

"""Plots of the ``samplers`` experiment, drawn from its run files (so ``mrd bench report`` redraws them).

- ``curves_<method>.png``: forget-set and retain-set mean answer probability against the unlearning step, one
  line per sampler (mean over seeds; the band is +- one std), from each run's ``unlearn/train_log.jsonl``;
- ``bars_<metric>.png``: one bar per (method, sampler), the mean over seeds with a +- std error bar.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

BAR_METRICS = {"forget_quality": "forget quality (KS p-value; higher = closer to retain model)",
               "model_utility": "model utility (higher = better)",
               "forget_Q_A_Prob": "forget P(a|q) (lower = more forgotten)"}


def _curve(log: Path, key: str) -> dict[int, float]:
    """``{step: value}`` of the rows of a train log that carry ``key``."""
    from mrdkit.runs import read_jsonl

    return {int(r["step"]): float(r[key]) for r in read_jsonl(log) if r.get(key) is not None}


def _mean_curve(logs: list[Path], key: str) -> tuple[list[int], list[float], list[float]]:
    """Steps logged by every run, the mean over runs and the std at each."""
    curves = [_curve(log, key) for log in logs]
    steps = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
    values = [[c[s] for c in curves] for s in steps]
    return (steps, [statistics.fmean(v) for v in values],
            [statistics.stdev(v) if len(v) > 1 else 0.0 for v in values])


def curve_plots(results: dict[str, Any], exp_dir: Path) -> list[Path]:
    """One forgetting/retention curve figure pair per method; runs without a train log are skipped."""
    from mrdkit import plots

    written = []
    for method in results["methods"]:
        for key, label in (("forget_prob", "forget"), ("retain_prob", "retain")):
            series, bands = {}, {}
            for sampler in results["samplers"]:
                logs = [exp_dir / "runs" / f"{method}-{sampler}-s{seed}" / "unlearn" / "train_log.jsonl"
                        for seed in range(results["seeds"])]
                logs = [log for log in logs if log.is_file()]
                if logs:
                    steps, mean, std = _mean_curve(logs, key)
                    series[sampler], bands[sampler] = (steps, mean), std
            if series:
                written.append(plots.lines(series, exp_dir / f"curve_{label}_{method}.png", bands=bands,
                                           title=f"{method}: {label}-set P(a|q) during unlearning",
                                           xlabel="update step", ylabel=f"mean {label} P(a|q)"))
    return written


def bar_plots(results: dict[str, Any], exp_dir: Path) -> list[Path]:
    """Sampler comparison bars (mean +- std over seeds) for the headline metrics."""
    from mrdkit import plots

    written = []
    for metric, label in BAR_METRICS.items():
        groups: dict[str, dict[str, float]] = {}
        errors: dict[str, dict[str, float]] = {}
        for row in results["summary"]:
            if row.get(metric) is not None:
                groups.setdefault(row["method"], {})[row["sampler"]] = row[metric]
                errors.setdefault(row["method"], {})[row["sampler"]] = row.get(f"{metric}_std") or 0.0
        if groups:
            written.append(plots.bars(groups, exp_dir / f"bars_{metric}.png", title=label, ylabel=metric,
                                      errors=errors))
    return written

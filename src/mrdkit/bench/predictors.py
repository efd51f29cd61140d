"""Experiment ``predictors``: which difficulty score tells a user, before unlearning, which samples will resist?

MRD does not predict the updates a sample needs on this project's testbeds (``validate``). This experiment puts
every registered difficulty score (:mod:`mrdkit.evaluation.scores`: MRD, the proxies, lookahead-k, curvature along
the gradient, Newton steps) and a cross-validated learned combination of the cheap ones against two ground truths:

- **updates** (per sample): gradient ascent on one sample at a time from the target model until P(a|q) <= 0.02
  (the ``validate`` ground truth, shared with it when both ran with the same settings);
- **survival** (joint, the real use case): GA and NPO unlearn the whole set together, full batch; a sample's
  survival step is the first step at which its P(a|q) <= 0.02, censored at the end
  (:func:`mrdkit.evaluation.survival.joint_survival`).

Every score is oriented so that higher = easier (:func:`mrdkit.samplers.orient`), so a working score has a
negative Spearman (on the uncensored samples, bootstrap 95% CI) and a Harrell's C above 0.5 (all samples,
censoring-aware). The step-based scores run GA at the per-sample ground truth's lr; their rows against NPO
survival are the transfer test (another method, another lr and the joint setting). The online forecast
(:func:`mrdkit.evaluation.predictors.forecast_concordance`) shows how early in a joint run the survival order can
be read off the trajectories.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from mrdkit.bench.common import difficulty_scores, ground_truth, target_model, truth_settings, validation_samples
from mrdkit.bench.registry import BenchContext, experiment
from mrdkit.bench.report import fmt, md_table

CHEAP = ("loss", "n_tokens", "min_k_20", "min_k_40", "zlib", "grad_norm", "lookahead_1")
SCORE_NAMES = ("lookahead_3", "lookahead_1", "newton_steps", "grad_curvature", "grad_norm", "loss", "n_tokens",
               "min_k_20", "min_k_40", "zlib", "mrd_antithetic", "mrd_paper")
SURVIVAL_LR = {"ga": 5e-5, "npo": 2e-4}  # tiny testbed: full-batch runs that forget the set in tens of steps


def _survival(ctx: BenchContext, samples, method: str) -> list[dict[str, Any]]:
    """Joint-survival rows of ``method`` (cached in ``survival_<method>.jsonl`` with its settings)."""
    from mrdkit.evaluation.survival import SurvivalConfig, joint_survival
    from mrdkit.runs import atomic_write_json, atomic_write_jsonl, json_roundtrip, read_json, read_jsonl

    cfg = SurvivalConfig(method=method, lr=float(ctx.options.get(f"{method}_lr", SURVIVAL_LR[method])),
                         max_steps=int(ctx.options.get("max_steps", ctx.size(40, 200))), template="auto")
    key = {"config": cfg.__dict__, "ids": [s.id for s in samples]}
    rows_path, meta_path = Path(ctx.dir) / f"survival_{method}.jsonl", Path(ctx.dir) / f"survival_{method}.json"
    if meta_path.is_file() and read_json(meta_path) == json_roundtrip(key):
        return read_jsonl(rows_path)
    loaded = target_model(ctx, dtype="float32")  # an unlearning run, as a user runs it
    rows = joint_survival(loaded.model, loaded.tokenizer, samples, config=cfg,
                          progress=lambda step, total: _log_every(ctx, f"joint survival ({method})", step, total))
    atomic_write_jsonl(rows_path, rows)
    atomic_write_json(meta_path, key)
    return rows


def _log_every(ctx: BenchContext, what: str, step: int, total: int, every: int = 10) -> None:
    """A progress line every ``every`` steps of a long inner run (a SmolLM2 joint step takes minutes on CPU)."""
    if step % every == 0:
        ctx.log(f"predictors: {what} step {step}/{total}")


def _truths(ctx: BenchContext, loaded, samples) -> dict[str, tuple[list[dict], str]]:
    """``{label: (rows, time column)}`` of the ground truths."""
    updates = ground_truth(ctx, loaded, samples, "updates", **truth_settings(ctx))
    out = {"updates (GA, per sample)": (updates, "updates")}
    for method in ctx.options.get("survival_methods", ["ga", "npo"]):
        ctx.log(f"predictors: joint survival ({method})")
        out[f"survival ({method.upper()}, joint)"] = (_survival(ctx, samples, method), "survival_step")
    return out


def oriented_scores(table) -> dict[str, dict[str, float]]:
    from mrdkit.samplers import orient

    return {name: orient(table.column(name), info["direction"]) for name, info in table.meta["scores"].items()}


def score_table(scores: dict[str, dict[str, float]], costs: dict[str, float], truths, groups, n_boot: int,
                group_name: str = "author") -> list[dict]:
    """One row per (score, ground truth): Spearman [CI] on the uncensored, Harrell's C, the partial Spearman given
    the length (``n_tokens``, when scored), cost; plus the learned combination of the cheap scores, cross-validated
    with folds grouped by ``groups`` (TOFU author, MUSE article) so that no group is in a training and a test fold."""
    from mrdkit.evaluation.predictors import evaluate_score, learned_scores

    rows, n_groups = [], len(set(groups.values()))
    length = scores.get("n_tokens")  # what a score knows beyond the answer length: the partial Spearman
    for label, (truth, col) in truths.items():
        candidates = list(scores.items())
        if n_groups >= 2 and all(k in scores for k in CHEAP):  # a grouped CV needs two groups
            learned = learned_scores({k: scores[k] for k in CHEAP}, truth, truth_col=col, groups=groups,
                                     folds=min(5, n_groups))
            candidates.append((f"learned (cheap, CV by {group_name})", learned))
        for name, values in candidates:
            cost = costs.get(name, sum(costs[k] for k in CHEAP))
            rows.append({"score": name, "truth": label, "cost": cost,
                         **evaluate_score(values, truth, truth_col=col, n_boot=n_boot, control=length)})
    return rows


@experiment("predictors", summary="which difficulty score predicts the updates a sample needs (two ground truths)",
            order=1.5, render=lambda results, d: render(results, d))
def predictors(ctx: BenchContext) -> dict[str, Any]:
    from mrdkit.evaluation.predictors import forecast_concordance

    loaded = target_model(ctx)
    samples = validation_samples(ctx)
    lr = truth_settings(ctx)["lr"]
    ctx.log(f"predictors: difficulty scores on {len(samples)} samples")
    table = difficulty_scores(ctx, loaded, samples, list(ctx.options.get("scores") or SCORE_NAMES), lr)
    ctx.log("predictors: ground truths")
    truths = _truths(ctx, loaded, samples)
    groups = {s.id: s.extra.get("author_id", s.id) for s in samples}
    costs = {n: info["cost"] for n, info in table.meta["scores"].items()}
    rows = score_table(oriented_scores(table), costs, truths, groups, ctx.size(200, 1000))
    horizons = [m for m in (1, 2, 4, 8, 16) if m <= int(ctx.options.get("max_steps", ctx.size(40, 200)))]
    forecast = {label: forecast_concordance(t, horizons, 0.02) for label, (t, col) in truths.items()
                if col == "survival_step"}
    _plots(ctx, table, truths, rows, forecast)
    return {"n_samples": len(samples), "truth": truth_settings(ctx), "lookahead_lr": lr,
            "survival_lr": {m: float(ctx.options.get(f"{m}_lr", SURVIVAL_LR[m])) for m in SURVIVAL_LR},
            "truth_summary": {label: truth_summary(t, col) for label, (t, col) in truths.items()},
            "mrd_draws": table.meta["config"]["draws"], "rows": rows, "forecast": forecast,
            "seconds": {n: info["seconds"] for n, info in table.meta["scores"].items()}}


def truth_summary(rows: list[dict], col: str) -> dict[str, Any]:
    times = sorted(r[col] for r in rows if not r.get("censored"))
    return {"n": len(rows), "censored": sum(bool(r.get("censored")) for r in rows),
            "median": times[len(times) // 2] if times else None, "min": times[0] if times else None,
            "max": times[-1] if times else None}


def best_row(rows: list[dict], truth: str) -> dict[str, Any]:
    """The row with the highest Harrell's C against ``truth`` among the pre-hoc scores (not the learned one)."""
    candidates = [r for r in rows if r["truth"] == truth and not r["score"].startswith("learned")
                  and not math.isnan(r["harrell_c"])]
    return max(candidates, key=lambda r: r["harrell_c"])


def _plots(ctx: BenchContext, table, truths, rows, forecast) -> None:
    from mrdkit import plots

    label = next(iter(truths))
    best = best_row(rows, label)
    truth, col = truths[label]
    values = table.column(best["score"])
    ids = [t["id"] for t in truth if t["id"] in values]
    by_id = {t["id"]: t for t in truth}
    plots.scatter([values[i] for i in ids], [by_id[i][col] for i in ids], Path(ctx.dir) / "scatter_best.png",
                  title=f"{best['score']} vs {label} (Spearman {best['spearman']:.2f})", xlabel=best["score"],
                  ylabel=col, marked=[bool(by_id[i].get("censored")) for i in ids])
    if forecast:
        series = {lab: ([r["horizon"] for r in rs], [r["harrell_c"] for r in rs]) for lab, rs in forecast.items()}
        plots.lines(series, Path(ctx.dir) / "forecast_c.png", title="online forecast: C vs steps seen",
                    xlabel="steps of the joint run seen (m)", ylabel="Harrell's C", logx=True)


def render(results: dict[str, Any], exp_dir: Path) -> tuple[str, list[dict[str, Any]]]:
    """Report section + claims for ``predictors``."""
    cols = ["score", "spearman", "ci_low", "ci_high", "harrell_c", "partial", "n", "n_censored", "cost"]
    text = [f"{results['n_samples']} samples; every score oriented so that higher = easier (a working score: "
            "Spearman < 0 on the uncensored samples, Harrell's C > 0.5 on all). Cost: forward+backward passes per "
            f"sample (MRD at K = {results['mrd_draws']}). Step-based scores: GA (AdamW) at lr "
            f"{fmt(results['lookahead_lr'])}, the per-sample ground truth's. partial: Spearman given the answer length "
            "(n_tokens), what a score knows beyond length.", ""]
    for label, summary in results["truth_summary"].items():
        rows = sorted((r for r in results["rows"] if r["truth"] == label), key=lambda r: -r["harrell_c"])
        text += [f"**{label}**: median {summary['median']} (range {summary['min']}-{summary['max']}), "
                 f"{summary['censored']} of {summary['n']} censored", "", md_table(rows, cols), ""]
    text += _transfer(results)
    for label, rs in results["forecast"].items():
        text += [f"Online forecast, {label}: C after m steps seen: "
                 + ", ".join(f"m={r['horizon']}: {fmt(r['harrell_c'])}" for r in rs), ""]
    text.append("Plots: `predictors/scatter_best.png`, `predictors/forecast_c.png`.")
    return "\n".join(text), _claims(results)


def _transfer(results: dict[str, Any]) -> list[str]:
    """The transfer table: Harrell's C of every score against every ground truth side by side. The step-based
    scores take GA steps at the per-sample truth's lr, so only that column is their own setting; the GA survival
    column changes the protocol (joint, full batch) and lr, the NPO column the method too."""
    truths = list(results["truth_summary"])
    if len(truths) < 2:
        return []
    by = {(r["score"], r["truth"]): r["harrell_c"] for r in results["rows"]}
    names = sorted({r["score"] for r in results["rows"]}, key=lambda n: -by.get((n, truths[-1]), 0.5))
    rows = [{"score": n, **{t: by.get((n, t)) for t in truths}} for n in names]
    return ["**Transfer** (Harrell's C; step-based scores use GA at the first column's lr, so the other columns "
            "test them on another protocol, lr or method; C 0.5 = no better than chance):", "",
            md_table(rows, ["score"] + truths), ""]


def _claims(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One claim per kind of ground truth: the per-sample updates (the paper's) and the first joint survival."""
    labels = list(results["truth_summary"])
    kinds = [labels[0]] + [lab for lab in labels[1:] if lab.startswith("survival")][:1]
    return [_claim(results, label) for label in kinds]


def _claim(results: dict[str, Any], label: str) -> dict[str, Any]:
    best = best_row(results["rows"], label)
    mrd = next((r for r in results["rows"] if r["truth"] == label and r["score"] == "mrd_antithetic"), {})
    works = not math.isnan(best["ci_high"]) and best["ci_high"] < -0.47  # the CI's far end beyond the paper's 0.47
    beyond = best.get("partial")
    return {"claim": f"beyond the paper: a pre-hoc score predicts {label}",
            "paper": "MRD: Spearman up to 0.47",
            "ours": f"{best['score']}: |Spearman| {fmt(-best['spearman'])} [{fmt(-best['ci_high'])}, "
                    f"{fmt(-best['ci_low'])}], C {fmt(best['harrell_c'])}, cost {fmt(best['cost'])}"
                    + (f", given length {fmt(-beyond)}" if beyond is not None and not math.isnan(beyond) else "")
                    + f"; MRD (antithetic) C {fmt(mrd.get('harrell_c'))}",
            "reproduced": "yes" if works else "partly" if best["harrell_c"] > 0.6 else "no"}

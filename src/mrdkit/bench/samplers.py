"""Experiment ``samplers``: does MRD-guided sampling make unlearning better (the paper's CGA claim)?

Paper claim (Feng et al. 2025, arXiv:2504.06658, section on MRD-guided unlearning): weighting easy (high-MRD)
samples first ("curriculum gradient ascent") improves unlearning completeness by +1.12% and model utility by
+2.72% on average over GA / GradDiff / NPO. Here: every {method} x {sampler} x seed unlearns the testbed's forget
set from the same target model with the same budget; each run is evaluated with the TOFU suite against the
retain model; differences are paired with ``random`` on the same seed (mean and a 95% t-interval over seeds).
Every forgetting metric is also broken down by MRD quartile of the forget samples (the paper's open question of
MRD as a normaliser).

Beyond the paper, option ``scores`` names the difficulty scores that drive the score-based samplers
(:data:`mrdkit.evaluation.scores.SCORES`; default ``mrd_antithetic``, the paper's choice): with
``scores=mrd_antithetic,loss`` every score-based sampler runs once per score, so a curriculum driven by the best
predictor (experiment ``predictors``) is compared with the MRD-driven one on the same seeds. Step-based scores take
GA steps at the per-sample ground truth's learning rate.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from mrdkit.bench.common import difficulty_scores, score, splits, target_model, truth_settings
from mrdkit.bench.registry import BenchContext, experiment
from mrdkit.bench.report import fmt, md_table

# lr per method on the tiny testbed (the paper's 7B values, 1e-5 / 7e-6, do not move a 4M-parameter model).
TINY_LR = {"ga": 2e-4, "graddiff": 2e-4, "npo": 5e-4}
FORGET_TARGET = 0.05  # "forgotten": forget-set mean answer probability at or below this
MRD_DRIVER = "mrd_antithetic"  # the paper's score; its values come from the experiment's own MRD run


def _plan(ctx: BenchContext) -> tuple[list[str], list[str], int]:
    methods = ctx.options.get("methods") or ctx.size(["ga"], ["ga", "graddiff", "npo"])
    samplers = ctx.options.get("samplers") or ctx.size(["random", "cga"],
                                                        ["random", "cga", "mrd_weighted", "curriculum",
                                                         "anti_curriculum"])
    seeds = int(ctx.options.get("seeds", 1 if ctx.quick else ctx.seeds))
    return list(methods), list(samplers), seeds


def stop_prob(ctx: BenchContext) -> float | None:
    """Option ``stop_prob``: stop each run once the forget-set mean answer probability is <= this (an
    equal-forgetting comparison: utility at the same forgetting); None = the paper's fixed budget."""
    value = ctx.options.get("stop_prob")
    return None if value is None else float(value)


def eval_settings(ctx: BenchContext) -> dict[str, Any]:
    """TOFU-suite settings for the testbed: forget01, the first ``eval_limit`` rows of every split (the retain
    rows are training rows of both models), greedy generation (shorter in quick runs)."""
    return {"benchmark": "tofu", "forget_split": "forget01", "limit": int(ctx.options.get("eval_limit",
                                                                                          ctx.size(40, 100))),
            "skip_generation": bool(ctx.options.get("skip_generation", False)),
            "max_new_tokens": int(ctx.options.get("max_new_tokens", ctx.size(48, 200))),
            "batch_size": 32, "progress": False}


def reference_log(ctx: BenchContext) -> Path:
    """Evaluate the retain model once; its TOFU_EVAL.json is the forget-quality reference of every run."""
    from mrdkit.evaluation.runner import evaluate

    out = Path(ctx.dir) / "reference"
    if not (out / "TOFU_EVAL.json").exists():
        evaluate(target_model(ctx, "retain", dtype="float32"), out_dir=out, **eval_settings(ctx))
    return out / "TOFU_EVAL.json"


def _steps_to_target(history: list[dict[str, Any]]) -> int | None:
    for row in history:
        if row.get("forget_prob") is not None and row["forget_prob"] <= FORGET_TARGET:
            return int(row["step"])
    return None


def run_name(method: str, sampler: str, driver: str | None, seed: int) -> str:
    """Run folder name: ``ga-cga-s0`` for MRD-driven and score-free samplers (the paper's runs keep their
    names), ``ga-cga@loss-s0`` for a sampler driven by another score."""
    tag = "" if driver in (None, MRD_DRIVER) else f"@{driver}"
    return f"{method}-{sampler}{tag}-s{seed}"


def _one_run(ctx: BenchContext, method: str, sampler: str, seed: int, scores: dict[str, float] | None,
             ref: Path, driver: str | None = None) -> dict[str, Any]:
    from mrdkit.evaluation.runner import evaluate
    from mrdkit.runs import atomic_write_json, read_json
    from mrdkit.unlearning import UnlearnConfig, unlearn

    run_dir = Path(ctx.dir) / "runs" / run_name(method, sampler, driver, seed)
    if (run_dir / "row.json").exists():
        return {**read_json(run_dir / "row.json"), "score": driver}
    data, loaded = splits(ctx), target_model(ctx, dtype="float32")
    cfg = UnlearnConfig(lr=float(ctx.options.get("lr", TINY_LR.get(method, 2e-4))),
                        epochs=int(ctx.options.get("epochs", ctx.size(2, 5))), batch_size=4, seed=seed,
                        stop_check_every=2, monitor_retain=32, checkpoint_every=None, train_mode=False,
                        stop_prob=stop_prob(ctx),
                        method_kwargs={"alpha": 1.0} if method == "npo" else {})
    tic = time.perf_counter()
    res = unlearn(loaded.model, loaded.tokenizer, data["forget"], data["retain"], method=method, sampler=sampler,
                  scores=scores, config=cfg, out_dir=run_dir / "unlearn", overwrite=True)
    wall = time.perf_counter() - tic
    ev = evaluate(res.model, loaded.tokenizer, retain_log=ref, out_dir=run_dir / "eval", overwrite=True,
                  **eval_settings(ctx))
    forget_rows = {r["id"]: r for r in ev.rows if r.get("split") == "forget"}
    row = {"method": method, "sampler": sampler, "score": driver, "seed": seed, "unlearn_s": wall,
           "steps": res.history[-1]["step"], "steps_to_target": _steps_to_target(res.history),
           **{k: _metric(ev, k) for k in METRICS}, "forget_prob_by_id": {k: v.get("prob") for k, v in
                                                                          forget_rows.items()}}
    atomic_write_json(run_dir / "row.json", row)
    if not ctx.options.get("keep_models"):
        drop_weights(run_dir / "unlearn")
    return row


def drop_weights(unlearn_dir: Path) -> None:
    """Delete a finished run's saved model and final checkpoint once its row is written: the experiment needs only
    the row and the train log, and on the smollm2 tier they are 2.1 GB a run (fp32 weights + AdamW state). Option
    ``keep_models`` keeps them; deleting after the row means an interruption can only leave them behind."""
    import shutil

    for name in ("model", "checkpoints"):
        shutil.rmtree(unlearn_dir / name, ignore_errors=True)


METRICS = ["forget_quality", "model_utility", "forget_Q_A_Prob", "forget_Q_A_ROUGE", "forget_truth_ratio",
           "retain_Q_A_Prob", "retain_Truth_Ratio"]
# paired with random: utility and retention (higher = better), forgetting (lower P = more forgotten), effort
PAIRED = ("model_utility", "retain_Q_A_Prob", "retain_Truth_Ratio", "forget_Q_A_Prob", "forget_Q_A_ROUGE",
          "forget_truth_ratio", "forget_quality", "steps_to_target")


def _metric(ev, name: str) -> float | None:
    return ev.metrics[name]["value"] if name in ev.metrics else None


def reference_metrics(ref_log: Path) -> dict[str, float]:
    """The retain model's own values of the experiment's metrics (its ``eval.json`` beside ``TOFU_EVAL.json``):
    what an ideal unlearning run would reach, so a run's utility can be read against it. Empty if absent."""
    from mrdkit.runs import read_json

    path = ref_log.parent / "eval.json"
    if not path.is_file():
        return {}
    metrics = read_json(path).get("metrics", {})
    return {m: metrics[m]["value"] for m in METRICS if isinstance(metrics.get(m), dict)
            and metrics[m].get("value") is not None}


@experiment("samplers", summary="random vs MRD-guided samplers x unlearning methods x seeds (TOFU metrics)",
            order=3, render=lambda results, d: render(results, d))
def samplers(ctx: BenchContext) -> dict[str, Any]:
    from mrdkit.samplers import SAMPLERS

    methods, sampler_names, seeds = _plan(ctx)
    data = splits(ctx)
    tic = time.perf_counter()
    mrd = score(ctx, target_model(ctx), data["forget"], "mrd_forget", estimator="antithetic", proxies=False)
    # a finished MRD run is loaded, not recomputed: its own recorded draw time is the cost, not the load time
    mrd_cost = float(mrd.timing.get("draws_s") or (time.perf_counter() - tic))
    drivers = driver_scores(ctx, data["forget"], mrd.scores())
    ref = reference_log(ctx)
    rows = []
    for method in methods:
        for sampler in sampler_names:
            uses_scores = SAMPLERS.get(sampler).needs_scores
            for driver in (drivers if uses_scores else [None]):
                for seed in range(seeds):
                    ctx.log(f"samplers: {method} x {sampler}{'' if driver is None else f' [{driver}]'} seed {seed}")
                    rows.append(_one_run(ctx, method, sampler, seed, drivers.get(driver), ref,
                                         driver if uses_scores else None))
    return {"methods": methods, "samplers": sampler_names, "seeds": seeds, "mrd_cost_s": mrd_cost,
            "scores": list(drivers), "stop_prob": stop_prob(ctx), "reference": reference_metrics(ref),
            "forget_target": FORGET_TARGET, "runs": [{k: v for k, v in r.items() if k != "forget_prob_by_id"}
                                                     for r in rows],
            "summary": summarize(rows), "paired": paired_vs_random(rows),
            "quartiles": quartile_breakdown(rows, mrd.scores())}


def driver_scores(ctx: BenchContext, forget: list, mrd: dict[str, float]) -> dict[str, dict[str, float]]:
    """``{score name: {id: value oriented so that higher = easier}}`` for option ``scores`` (default: MRD only).
    MRD (antithetic) comes from the experiment's MRD run; other scores from
    :func:`~mrdkit.bench.common.difficulty_scores` on the target model (cached in ``driver_scores.jsonl``)."""
    from mrdkit.evaluation.scores import parse_names
    from mrdkit.samplers import orient

    names = parse_names(ctx.options.get("scores") or [MRD_DRIVER])
    others = [n for n in names if n != MRD_DRIVER]
    out = {MRD_DRIVER: mrd} if MRD_DRIVER in names else {}
    if others:
        table = difficulty_scores(ctx, target_model(ctx), forget, others, truth_settings(ctx)["lr"],
                                  stem="driver_scores")
        out.update({n: orient(table.column(n), table.meta["scores"][n]["direction"]) for n in others})
    return {n: out[n] for n in names}


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    vals = [v for v in values if v is not None]
    if not vals:
        return None, None
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def _key(row: dict[str, Any]) -> tuple[str, str, str]:
    """(method, sampler, score) with score "" for score-free samplers (sortable)."""
    return row["method"], row["sampler"], row.get("score") or ""


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and std over seeds of every metric per (method, sampler, score)."""
    out = []
    for key in sorted({_key(r) for r in rows}):
        group = [r for r in rows if _key(r) == key]
        entry: dict[str, Any] = {"method": key[0], "sampler": key[1], "score": key[2] or None, "n": len(group)}
        for m in METRICS + ["steps_to_target", "unlearn_s"]:
            entry[m], entry[f"{m}_std"] = _mean_std([r.get(m) for r in group])
        out.append(entry)
    return out


def mean_ci(values: list[float], level: float = 0.95) -> tuple[float | None, float | None, float | None]:
    """Mean and the two-sided Student-t interval ``mean +- t_{(1+level)/2, n-1} s / sqrt(n)`` over seeds
    (None bounds for n < 2)."""
    from scipy import stats

    if not values:
        return None, None, None
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, None, None
    half = stats.t.ppf((1 + level) / 2, len(values) - 1) * statistics.stdev(values) / len(values) ** 0.5
    return mean, mean - half, mean + half


def paired_vs_random(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (method, sampler != random, score): over seeds, (sampler - random) on the same seed: mean, 95% t-CI,
    std, and the mean relative difference in %."""
    base = {(r["method"], r["seed"]): r for r in rows if r["sampler"] == "random"}
    out = []
    for key in sorted({_key(r) for r in rows if r["sampler"] != "random"}):
        group = [r for r in rows if _key(r) == key and (r["method"], r["seed"]) in base]
        entry: dict[str, Any] = {"method": key[0], "sampler": key[1], "score": key[2] or None, "n": len(group)}
        for m in PAIRED:
            pairs = [(r.get(m), base[(r["method"], r["seed"])].get(m)) for r in group]
            pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
            diffs = [a - b for a, b in pairs]
            entry[f"d_{m}"], entry[f"d_{m}_lo"], entry[f"d_{m}_hi"] = mean_ci(diffs)
            entry[f"d_{m}_std"] = _mean_std(diffs)[1]
            entry[f"rel_{m}_pct"] = _mean_std([(a - b) / abs(b) * 100 for a, b in pairs if b])[0]
        out.append(entry)
    return out


def quartile_breakdown(rows: list[dict[str, Any]], scores: dict[str, float]) -> list[dict[str, Any]]:
    """Mean forget-answer probability after unlearning per MRD quartile (Q1 = lowest MRD = hardest)."""
    ranked = sorted(scores, key=lambda i: scores[i])
    quart = {sid: min(3, 4 * pos // len(ranked)) + 1 for pos, sid in enumerate(ranked)}
    out = []
    for key in sorted({_key(r) for r in rows}):
        group = [r for r in rows if _key(r) == key]
        entry: dict[str, Any] = {"method": key[0], "sampler": key[1], "score": key[2] or None}
        for q in range(1, 5):
            vals = [p for r in group for sid, p in r["forget_prob_by_id"].items() if quart.get(sid) == q
                    and p is not None]
            entry[f"Q{q}"] = statistics.fmean(vals) if vals else None
        out.append(entry)
    return out


def label(row: dict[str, Any]) -> str:
    """Sampler label of a summary / paired row: ``cga`` (MRD-driven or score-free), ``cga@loss`` (other score)."""
    score_name = row.get("score")
    return row["sampler"] if score_name in (None, MRD_DRIVER) else f"{row['sampler']}@{score_name}"


def _with_ci(row: dict[str, Any], metric: str) -> str:
    """``mean [lo, hi]`` of a paired difference (just the mean when there is no interval)."""
    mean, lo, hi = row.get(f"d_{metric}"), row.get(f"d_{metric}_lo"), row.get(f"d_{metric}_hi")
    return fmt(mean) if lo is None or hi is None else f"{fmt(mean)} [{fmt(lo)}, {fmt(hi)}]"


def _paired_display(paired: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"method": p["method"], "sampler": label(p), "n": p["n"],
             **{m: _with_ci(p, m) for m in PAIRED if f"d_{m}" in p}} for p in paired]


def render(results: dict[str, Any], exp_dir: Path) -> tuple[str, list[dict[str, Any]]]:
    """Report section + claims for ``samplers``."""
    cols = ["method", "sampler", "n", "forget_quality", "model_utility", "retain_Q_A_Prob", "retain_Truth_Ratio",
            "forget_Q_A_Prob", "forget_Q_A_ROUGE", "steps_to_target", "unlearn_s"]
    pcols = ["method", "sampler", "n", "model_utility", "retain_Q_A_Prob", "retain_Truth_Ratio", "forget_Q_A_Prob",
             "forget_Q_A_ROUGE", "forget_truth_ratio", "forget_quality", "steps_to_target"]
    reference = [{"method": "-", "sampler": "retain model (reference)", **results["reference"]}] \
        if results.get("reference") else []
    drivers = results.get("scores") or [MRD_DRIVER]
    text = [
        f"Methods {', '.join(results['methods'])}; samplers {', '.join(results['samplers'])}; {results['seeds']} "
        f"seed(s); score-based samplers driven by {', '.join(drivers)} (`cga@loss` = CGA driven by `loss`). MRD of "
        f"the forget set (antithetic) cost {fmt(results['mrd_cost_s'])} s once. `steps_to_target`: "
        f"first logged step with forget-set mean probability <= {results['forget_target']}. "
        + (f"Each run stopped once that probability was <= {results['stop_prob']} (equal-forgetting comparison)."
           if results.get("stop_prob") is not None else "Every run used the full budget (the paper's protocol)."),
        "", "**Mean over seeds**", "",
        md_table([{**r, "sampler": label(r)} for r in results["summary"]] + reference, cols), "",
        "**Paired differences vs `random` (same seed)**: sampler - random, mean over seeds [95% t-interval]. "
        "Model utility, retain P and truth ratio: higher = better kept; forget P and ROUGE: lower = more "
        "forgotten; forget quality: higher = closer to the retain model.", "",
        md_table(_paired_display(results["paired"]), pcols), "",
        "**Forget-answer probability after unlearning by MRD quartile** (Q1 = lowest MRD = predicted hardest)", "",
        md_table([{**r, "sampler": label(r)} for r in results["quartiles"]],
                 ["method", "sampler", "Q1", "Q2", "Q3", "Q4"]),
    ]
    figures = curve_plots(results, exp_dir) + bar_plots(results, exp_dir)
    if figures:
        text += ["", "Plots: " + ", ".join(f"`samplers/{p.name}`" for p in figures) + "."]
    claims = []
    cga = [p for p in results["paired"] if p["sampler"] == "cga" and p.get("score") in (None, MRD_DRIVER)]
    if cga:
        util_key = "model_utility" if any(p["rel_model_utility_pct"] is not None for p in cga) else "retain_Q_A_Prob"
        claims.append(_cga_claim("MRD-guided sampling (CGA) improves model utility", "+2.72% (avg)", cga,
                                 f"rel_{util_key}_pct", util_key, better=1))
        claims.append(_cga_claim("CGA improves unlearning completeness (lower forget probability)", "+1.12% (avg)",
                                 cga, "rel_forget_Q_A_Prob_pct", "forget P(a|q)", better=-1))
    rand = [q for q in results["quartiles"] if q["sampler"] == "random" and None not in (q["Q1"], q["Q4"])]
    if rand:
        q1, q4 = statistics.fmean(q["Q1"] for q in rand), statistics.fmean(q["Q4"] for q in rand)
        claims.append({"claim": "Low-MRD samples are harder: more of them survives the same unlearning budget",
                       "paper": "MRD = difficulty (qualitative)",
                       "ours": f"forget P(a|q) after random-order unlearning: lowest-MRD quartile {fmt(q1)} vs "
                               f"highest {fmt(q4)}", "reproduced": "yes" if q1 > q4 else "no"})
    return "\n".join(text), claims


def _cga_claim(claim: str, paper: str, cga: list[dict[str, Any]], key: str, label: str,
               better: int) -> dict[str, Any]:
    """A claim row from the per-method relative differences of CGA vs random: yes = better in every method
    (with a defined difference), partly = better on average only, no = not better on average."""
    per = {p["method"]: p[key] for p in cga if p[key] is not None}
    if not per:
        return {"claim": claim, "paper": paper, "ours": f"{label}: no defined relative difference",
                "reproduced": "not resolved"}
    mean = statistics.fmean(per.values())
    detail = ", ".join(f"{m} {fmt(v)}%" for m, v in per.items())
    verdict = ("yes" if all(better * v > 0 for v in per.values()) else
               "partly (average only)" if better * mean > 0 else "no")
    return {"claim": claim, "paper": paper, "reproduced": verdict,
            "ours": f"{label} {fmt(mean)}% relative, mean of {len(per)} method(s) ({detail})"}


# ------------------------------------------------------------------------------------------------- plots

BAR_METRICS = {"forget_quality": "forget quality (KS p-value; higher = closer to retain model)",
               "model_utility": "model utility (higher = better)",
               "retain_Q_A_Prob": "retain P(a|q) (higher = better kept)",
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
        rows = [r for r in results["summary"] if r["method"] == method]
        for key, which in (("forget_prob", "forget"), ("retain_prob", "retain")):
            series, bands = {}, {}
            for row in rows:
                logs = [exp_dir / "runs" / run_name(method, row["sampler"], row.get("score"), seed) / "unlearn"
                        / "train_log.jsonl" for seed in range(results["seeds"])]
                logs = [log for log in logs if log.is_file()]
                if logs:
                    steps, mean, std = _mean_curve(logs, key)
                    series[label(row)], bands[label(row)] = (steps, mean), std
            if series:
                written.append(plots.lines(series, exp_dir / f"curve_{which}_{method}.png", bands=bands,
                                           title=f"{method}: {which}-set P(a|q) during unlearning",
                                           xlabel="update step", ylabel=f"mean {which} P(a|q)"))
    return written


def bar_plots(results: dict[str, Any], exp_dir: Path) -> list[Path]:
    """Sampler comparison bars (mean +- std over seeds) for the headline metrics."""
    from mrdkit import plots

    written = []
    for metric, title in BAR_METRICS.items():
        groups: dict[str, dict[str, float]] = {}
        errors: dict[str, dict[str, float]] = {}
        for row in results["summary"]:
            if row.get(metric) is not None:
                groups.setdefault(row["method"], {})[label(row)] = row[metric]
                errors.setdefault(row["method"], {})[label(row)] = row.get(f"{metric}_std") or 0.0
        if groups:
            written.append(plots.bars(groups, exp_dir / f"bars_{metric}.png", title=title, ylabel=metric,
                                      errors=errors))
    return written

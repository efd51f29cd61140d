"""Experiment ``muse``: the MRD pipeline on raw text, MUSE-News forget articles cut into token chunks.

The MRD paper (Feng et al. 2025, arXiv:2504.06658) also unlearns raw corpora (WMDP forget corpora, Harry Potter);
MUSE-News (Shi et al. 2024, arXiv:2407.06460) has the same shape and is open. On the MUSE tiny testbed
(:mod:`mrdkit.testbed.muse`: a tiny GPT-2 that learnt a forget subset + a retain substitute), this experiment:

1. scores MRD per forget chunk (antithetic estimator, float64 weights, sigma 1e-5) with the cheap proxies;
2. measures the ground truth per chunk: gradient-ascent updates (AdamW, and plain SGD) from the target model until
   the chunk's length-normalised probability is <= 0.02 (:func:`mrdkit.evaluation.difficulty.required_updates`);
3. correlates the two (high MRD = easy: a working score has Spearman < 0 and Harrell's C > 0.5);
4. compares the forget-set samplers ``random`` and ``cga`` (MRD-weighted, the paper's CGA) under NPO+RT, with
   MUSE-style measures suited to a tiny model (:func:`measure_model`);
5. beyond the paper: every difficulty score of :data:`mrdkit.evaluation.scores.SCORES` (as experiment
   ``predictors``) against both per-chunk ground truths and the joint survival step of full-batch GA on all
   forget chunks, with a learned combination cross-validated by article.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mrdkit.bench.common import difficulty_scores, score
from mrdkit.bench.registry import BenchContext, experiment
from mrdkit.bench.report import fmt, md_table

PROXIES = ["loss", "grad_norm", "min_k_20", "min_k_40", "zlib", "n_tokens"]
SAMPLERS = ("random", "cga")
MEASURES = ["forget_prob", "forget_verbmem", "retain_prob", "retain_verbmem", "holdout_ppl", "auc", "privleak"]


def _variant(ctx: BenchContext) -> str:
    return "quick" if ctx.quick else "full"


def _where(ctx: BenchContext) -> dict[str, Any]:
    """The testbed: the variant's cached one, or (``options["testbed"]``: recipe overrides) a private one built in
    this experiment's folder."""
    from mrdkit.testbed.muse import recipe_for

    overrides = dict(ctx.options.get("testbed") or {})
    if not overrides:
        return {"log": ctx.log}
    return {"log": ctx.log, "recipe": recipe_for(_variant(ctx), **overrides), "path": Path(ctx.dir) / "testbed"}


def chunk_verbmem(model: Any, tokenizer: Any, chunks: list, *, prompt_tokens: int | None = None,
                  batch_size: int = 16) -> dict[str, dict[str, Any]]:
    """VerbMem on raw-text chunks (:mod:`mrdkit.data.chunking`): start token + the chunk's first ``prompt_tokens``
    ids (default: its first half) as prompt, greedy continuation of as many tokens as the rest, ROUGE-L F1 against
    the rest's text."""
    from mrdkit.data import Sample, tokenizer_fingerprint
    from mrdkit.data.chunking import pretokenized_ids
    from mrdkit.evaluation.generation import prompt_ids
    from mrdkit.evaluation.metrics import rouge_l_f1
    from mrdkit.evaluation.muse import generate_rows

    fp, start = tokenizer_fingerprint(tokenizer), prompt_ids([Sample("s", "", "", kind="text")], tokenizer)[0]
    out: dict[str, dict[str, Any]] = {}
    for s in chunks:  # one by one: every chunk has its own continuation length
        ids = pretokenized_ids(s, fp) or list(tokenizer(s.text, add_special_tokens=False)["input_ids"])
        cut = len(ids) // 2 if prompt_tokens is None else prompt_tokens
        head, rest = ids[:cut], ids[cut:]
        if not rest:
            continue
        ref = tokenizer.decode(rest, skip_special_tokens=True)
        gen = generate_rows(model, tokenizer, [start + head], len(rest), batch_size)[0]
        out[s.id] = {"generation": gen, "reference": ref, "rougeL_f1": rouge_l_f1(gen, ref)}
    return out


def measure_model(lm: Any, chunks: dict[str, list], auc_retrain: float | None = None) -> dict[str, float]:
    """MUSE's measures on chunks: forget / retain mean length-normalised probability, VerbMem-style ROUGE-L F1 of
    the continuation of each chunk's first half (x100), held-out perplexity, the Min-40% AUC of forget vs
    holdout chunks in MUSE's convention (forget = 0; ~0 while the forget set is known) and PrivLeak against
    ``auc_retrain`` (the retain model's AUC)."""
    from mrdkit.evaluation.answers import answer_logprobs
    from mrdkit.evaluation.metrics import muse_auc, perplexity
    from mrdkit.evaluation.muse import membership_rows

    out: dict[str, float] = {}
    for split in ("forget", "retain"):
        scores = answer_logprobs(lm.model, lm.tokenizer, chunks[split], token_set="all", batch_size=32)
        out[f"{split}_prob"] = sum(s.probability for s in scores) / len(scores)
        vm = chunk_verbmem(lm.model, lm.tokenizer, chunks[split])
        out[f"{split}_verbmem"] = 100.0 * sum(r["rougeL_f1"] for r in vm.values()) / len(vm) if vm else float("nan")
    mk = {s: list(membership_rows(lm.model, lm.tokenizer, chunks[s], batch_size=32).values())
          for s in ("forget", "holdout")}
    out["holdout_ppl"] = perplexity([r["nll_sum"] for r in mk["holdout"]], [r["n_tokens"] for r in mk["holdout"]])
    out["auc"] = muse_auc([r["min_k"] for r in mk["forget"]], [r["min_k"] for r in mk["holdout"]])
    if auc_retrain is not None:
        out["privleak"] = (out["auc"] - auc_retrain) / auc_retrain * 100.0
    return out


def _eval_chunks(chunks: dict[str, list], n: int) -> dict[str, list]:
    """Forget chunks, and a retain panel / holdout set of the same size (evaluation cost stays bounded)."""
    return {"forget": chunks["forget"], "retain": chunks["retain"][:n], "holdout": chunks["holdout"][:n]}


def _correlations(ctx: BenchContext, mrd_rows: list[dict], truth: list[dict], name: str) -> list[dict[str, Any]]:
    from mrdkit.evaluation.correlation import correlation_report

    cols = [c for c in ["mrd", *PROXIES] if len({r.get(c) for r in mrd_rows}) > 1]  # constant columns say nothing
    return correlation_report(mrd_rows, truth, score_cols=cols, n_boot=ctx.size(200, 1000),
                              out_dir=Path(ctx.dir) / "correlations" / name)


def _unlearn_run(ctx: BenchContext, chunks: dict, scores: dict, sampler: str, seed: int, auc_retrain: float,
                 settings: dict[str, Any]) -> dict[str, Any]:
    """One NPO+RT run from the float32 target; its MUSE-style measures and forget / retain probability curve."""
    from mrdkit.testbed.muse import load_muse_testbed
    from mrdkit.unlearning import unlearn
    from mrdkit.unlearning.config import UnlearnConfig

    lm = load_muse_testbed(_variant(ctx), "target", **_where(ctx))
    cfg = UnlearnConfig(lr=settings["lr"], epochs=settings["epochs"], batch_size=settings["batch_size"], seed=seed,
                        template="raw", token_set="all", monitor_retain=len(chunks["forget"]),
                        stop_check_every=settings["batch_size"], method_kwargs={"alpha": settings["alpha"]})
    res = unlearn(lm.model, lm.tokenizer, chunks["forget"], chunks["retain"], method=settings["method"],
                  sampler=sampler, scores=scores, config=cfg)
    lm.model = res.model
    curve = [{k: h[k] for k in ("step", "forget_prob", "retain_prob") if k in h}
             for h in res.history if "forget_prob" in h]
    return {"sampler": sampler, "seed": seed, **measure_model(lm, _eval_chunks(chunks, len(chunks["forget"])),
                                                                auc_retrain), "curve": curve}


def _sampler_rows(ctx: BenchContext, chunks: dict, scores: dict, auc_retrain: float,
                  settings: dict[str, Any]) -> list[dict[str, Any]]:
    """Every (sampler, seed) run; finished runs are kept in ``samplers.jsonl`` and skipped on a re-run."""
    from mrdkit.runs import atomic_write_jsonl, read_jsonl

    path = Path(ctx.dir) / "samplers.jsonl"
    rows = [r for r in (read_jsonl(path) if path.is_file() else []) if r.get("settings") == settings]
    for seed in range(ctx.size(1, ctx.seeds)):
        for sampler in SAMPLERS:
            if not any(r["sampler"] == sampler and r["seed"] == seed for r in rows):
                ctx.log(f"muse: {settings['method']} with sampler {sampler}, seed {seed}")
                rows.append({**_unlearn_run(ctx, chunks, scores, sampler, seed, auc_retrain, settings),
                             "settings": settings})
                atomic_write_jsonl(path, rows)
    return rows


def _mean_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean of every measure per sampler, with the seed-to-seed standard deviation of forget / retain P."""
    import statistics

    out = []
    for sampler in SAMPLERS:
        runs = [r for r in rows if r["sampler"] == sampler]
        row = {"model": f"{sampler} (mean of {len(runs)})",
               **{m: statistics.fmean(r[m] for r in runs) for m in MEASURES}}
        for m in ("forget_prob", "retain_prob"):
            row[f"{m}_sd"] = statistics.stdev(r[m] for r in runs) if len(runs) > 1 else None
        out.append(row)
    return out


# Ground truths: AdamW (the paper's optimizer) at an lr where chunks need tens of updates (at 1e-3 every chunk of
# the quick testbed is forgotten in 2 updates: no ranking), and plain SGD, whose steps scale with the gradient.
TRUTHS = {"adamw": {"method": "ga", "optimizer": "adamw", "lr": 3e-5, "threshold": 0.02, "token_set": "all"},
          "sgd": {"method": "ga", "optimizer": "sgd", "lr": 1e-2, "threshold": 0.02, "token_set": "all"}}


def _truth(ctx: BenchContext, loaded: Any, forget: list, name: str) -> tuple[dict[str, Any], list[dict]]:
    from mrdkit.evaluation.difficulty import required_updates

    settings = {**TRUTHS[name], "cap": ctx.size(60, 150), **(ctx.options.get("truth") or {}).get(name, {})}
    ctx.log(f"muse: ground truth {name} (updates to forget each chunk)")
    path = Path(ctx.dir) / f"updates_{name}.jsonl"
    rows = required_updates(loaded.model, loaded.tokenizer, forget, checkpoint_path=path, resume=path.exists(),
                            **settings)
    summary = {**settings, "censored": sum(r["censored"] for r in rows),
               "median_updates": sorted(r["updates"] for r in rows)[len(rows) // 2],
               "range": [min(r["updates"] for r in rows), max(r["updates"] for r in rows)]}
    return summary, rows


def _reference(ctx: BenchContext, chunks: dict) -> dict[str, dict[str, float]]:
    """Target and retain model measures; PrivLeak of both relative to the retain model's AUC."""
    from mrdkit.testbed.muse import load_muse_testbed

    ref = {w: measure_model(load_muse_testbed(_variant(ctx), w, **_where(ctx)),
                            _eval_chunks(chunks, len(chunks["forget"]))) for w in ("target", "retain")}
    for row in ref.values():
        row["privleak"] = (row["auc"] - ref["retain"]["auc"]) / ref["retain"]["auc"] * 100.0
    return ref


@experiment("muse", summary="MRD, ground truth and CGA vs random on raw MUSE-News chunks (tiny MUSE testbed)",
            order=10, render=lambda results, d: render(results, d))
def muse(ctx: BenchContext) -> dict[str, Any]:
    """The experiment, on ``options["threads"]`` CPU threads (default 1: for a 0.67M-parameter model a second
    thread costs more in synchronisation than it saves, 11-15x slower on a busy 2-core machine)."""
    from mrdkit.train import pinned_threads

    with pinned_threads(int(ctx.options.get("threads", 1))):
        return _muse(ctx)


def _muse(ctx: BenchContext) -> dict[str, Any]:
    from mrdkit.testbed.muse import load_muse_testbed, muse_testbed_chunks, muse_testbed_info

    variant = _variant(ctx)
    ctx.log(f"muse: MUSE tiny testbed ({variant}; built on first use)")
    info, chunks = muse_testbed_info(variant, **_where(ctx)), muse_testbed_chunks(variant, **_where(ctx))
    ref = _reference(ctx, chunks)
    loaded = load_muse_testbed(variant, "target", dtype=ctx.dtype, **_where(ctx))
    ctx.log(f"muse: MRD on {len(chunks['forget'])} forget chunks")
    mrd = score(ctx, loaded, chunks["forget"], "mrd", estimator="antithetic")
    mrd_rows = mrd.rows()
    truths, tables, truths_rows = {}, {}, {}
    for name in TRUTHS:
        truths[name], truths_rows[name] = _truth(ctx, loaded, chunks["forget"], name)
        tables[name] = _correlations(ctx, mrd_rows, truths_rows[name], name)
    predict = _predictors(ctx, loaded, chunks["forget"], truths_rows)
    settings = {"method": "npo", "alpha": 1.0, "lr": 2e-4, "epochs": 5, "batch_size": 4}
    runs = _sampler_rows(ctx, chunks, mrd.scores(), ref["retain"]["auc"], settings)
    return {"variant": variant, "recipe": info["recipe"], "subset": info["subset"], "sizes": info["sizes"],
            "testbed": info["metrics"], "build_seconds": info["build_seconds"], "reference": ref,
            "mrd": {"n": len(mrd_rows), "resolved": sum(r["resolved"] for r in mrd_rows),
                    "median": sorted(r["mrd"] for r in mrd_rows)[len(mrd_rows) // 2]},
            "truth": truths, "correlations": tables, "predictors": predict, "unlearning": settings, "runs": runs,
            "sampler_means": _mean_rows(runs)}


SURVIVAL = {"method": "ga", "lr": 1e-4}  # joint full-batch GA on all forget chunks (option survival_lr)


def _predictors(ctx: BenchContext, loaded: Any, forget: list, truths_rows: dict[str, list]) -> dict[str, Any]:
    """Every difficulty score against the per-chunk ground truths and the joint GA survival step."""
    from mrdkit.bench.predictors import SCORE_NAMES, oriented_scores, score_table, truth_summary
    from mrdkit.evaluation.survival import SurvivalConfig, joint_survival
    from mrdkit.runs import atomic_write_json, atomic_write_jsonl, json_roundtrip, read_json, read_jsonl
    from mrdkit.testbed.muse import load_muse_testbed

    ctx.log(f"muse: difficulty scores on {len(forget)} forget chunks")
    table = difficulty_scores(ctx, loaded, forget, list(ctx.options.get("scores") or SCORE_NAMES),
                              TRUTHS["adamw"]["lr"])
    cfg = SurvivalConfig(method=SURVIVAL["method"], lr=float(ctx.options.get("survival_lr", SURVIVAL["lr"])),
                         max_steps=int(ctx.options.get("max_steps", ctx.size(60, 200))), template="raw")
    path, key = Path(ctx.dir) / "survival_ga.jsonl", {"config": cfg.__dict__, "ids": [s.id for s in forget]}
    if path.is_file() and (Path(ctx.dir) / "survival_ga.json").is_file() \
            and read_json(Path(ctx.dir) / "survival_ga.json") == json_roundtrip(key):
        survival = read_jsonl(path)
    else:
        ctx.log("muse: joint survival (GA, full batch)")
        start = load_muse_testbed(_variant(ctx), "target", **_where(ctx))  # float32, as a user unlearns
        survival = joint_survival(start.model, start.tokenizer, forget, config=cfg)
        atomic_write_jsonl(path, survival)
        atomic_write_json(Path(ctx.dir) / "survival_ga.json", key)
    truths = {f"updates (GA {name}, per chunk)": (rows, "updates") for name, rows in truths_rows.items()}
    truths["survival (GA, joint)"] = (survival, "survival_step")
    groups = {s.id: s.extra.get("doc", s.id) for s in forget}
    costs = {n: info["cost"] for n, info in table.meta["scores"].items()}
    rows = score_table(oriented_scores(table), costs, truths, groups, ctx.size(200, 1000), group_name="article")
    return {"rows": rows, "survival_lr": cfg.lr, "max_steps": cfg.max_steps, "draws": table.meta["config"]["draws"],
            "truth_summary": {label: truth_summary(t, col) for label, (t, col) in truths.items()}}


# --------------------------------------------------------------------------------------------------- report


def _subset_text(results: dict[str, Any]) -> str:
    r, s, n = results["recipe"], results["subset"], results["sizes"]
    return (f"Corpus subset ({results['variant']} variant): forget = the first {r['per_doc']} windows of "
            f"{r['length']} tokens of each of `raw/forget.json` rows 0-{s['forget'] - 1} ({n['forget']} chunks); "
            f"retain substitute = windows of `privleak/retain2.json` texts 0-{s['retain'] - 1} ({n['retain']} "
            f"chunks; the raw retain articles are not in `shared/data`); holdout = windows of `privleak/holdout.json` "
            f"texts 0-{s['holdout'] - 1} ({n['holdout']} chunks, never trained). Model: GPT-2 "
            f"d{r['model']['d_model']}-l{r['model']['n_layer']}, BPE vocabulary {r['model']['vocab_size']} fitted "
            f"on all three; target = forget + retain chunks, retain model = retain chunks only (built in "
            f"{fmt(results['build_seconds'])} s).")


def _claims(results: dict[str, Any]) -> list[dict[str, Any]]:
    claims = []
    for name, table in results["correlations"].items():
        mrd = next((r for r in table if r["score"] == "mrd"), {})
        rho, hi = mrd.get("spearman"), mrd.get("spearman_ci_high")
        claims.append({"claim": f"MRD predicts required updates on raw-text chunks (MUSE-News, GA with {name})",
                       "paper": "Spearman up to 0.47 (WMDP corpora)",
                       "ours": f"Spearman {fmt(rho)} [{fmt(mrd.get('spearman_ci_low'))}, {fmt(hi)}], n={mrd.get('n')}",
                       "reproduced": "yes" if hi is not None and hi < 0 else "no"})
    means = {r["model"].split()[0]: r for r in _mean_rows(results["runs"])}
    better_f = means["cga"]["forget_prob"] < means["random"]["forget_prob"]
    better_u = means["cga"]["retain_prob"] > means["random"]["retain_prob"]
    claims.append({"claim": "CGA sampler improves forgetting and utility (MUSE-News chunks, NPO+RT)",
                   "paper": "+1.12% completeness, +2.72% utility (average)",
                   "ours": f"forget P {fmt(means['cga']['forget_prob'])} vs {fmt(means['random']['forget_prob'])}, "
                           f"retain P {fmt(means['cga']['retain_prob'])} vs {fmt(means['random']['retain_prob'])}",
                   "reproduced": "yes" if better_f and better_u else ("partly" if better_f or better_u else "no")})
    return claims


def _predictor_text(predict: dict[str, Any] | None) -> list[str]:
    """The difficulty-score table (Harrell's C per ground truth, Spearman [CI] on the joint survival)."""
    if not predict:
        return []
    truths = list(predict["truth_summary"])
    by = {(r["score"], r["truth"]): r for r in predict["rows"]}
    last = truths[-1]
    names = sorted({r["score"] for r in predict["rows"]}, key=lambda n: -by[(n, last)]["harrell_c"])
    rows = [{"score": n, **{t: by[(n, t)]["harrell_c"] for t in truths},
             "survival spearman [CI]": f"{fmt(by[(n, last)]['spearman'])} [{fmt(by[(n, last)]['ci_low'])}, "
                                       f"{fmt(by[(n, last)]['ci_high'])}]", "cost": by[(n, last)]["cost"]}
            for n in names]
    summ = "; ".join(f"{t}: median {s['median']}, {s['censored']} of {s['n']} censored"
                     for t, s in predict["truth_summary"].items())
    return [f"**Difficulty scores on the forget chunks** (Harrell's C, every score oriented higher = easier; 0.5 = "
            f"chance). Joint survival: full-batch GA (AdamW, lr {fmt(predict['survival_lr'])}, up to "
            f"{predict['max_steps']} steps), first step with P(chunk) <= 0.02. MRD scores at K = {predict['draws']}. "
            f"{summ}.", "", md_table(rows, ["score", *truths, "survival spearman [CI]", "cost"]), ""]


def render(results: dict[str, Any], exp_dir: Path) -> tuple[str, list[dict[str, Any]]]:
    """Report section + claims for ``muse``."""
    u, m = results["unlearning"], results["mrd"]
    corr_cols = ["score", "spearman", "spearman_ci_low", "spearman_ci_high", "spearman_p", "kendall", "harrell_c",
                 "n"]
    ref_rows = [{"model": f"{w} model (before unlearning)", **results["reference"][w]} for w in ("target", "retain")]
    text = [_subset_text(results), "",
            f"MRD: antithetic estimator, float64, sigma 1e-5, on all {m['n']} forget chunks ({m['resolved']} "
            f"resolved at 2 stderr; median {fmt(m['median'])}). Ground truth: gradient ascent on one chunk at a time "
            f"from the target until P(chunk) <= 0.02 (all tokens). High MRD = easy: expect Spearman < 0, "
            f"Harrell's C > 0.5.", ""]
    for name, t in results["truth"].items():
        text += [f"**GA with {name}, lr {fmt(t['lr'])}** (cap {t['cap']}; {t['censored']} censored; median "
                 f"{t['median_updates']} updates, range {t['range'][0]}-{t['range'][1]})", "",
                 md_table(results["correlations"][name], corr_cols), ""]
    text += [f"Sampler comparison: `{u['method']}` + retain term (alpha {u['alpha']}), lr {fmt(u['lr'])}, "
             f"{u['epochs']} epochs, batch {u['batch_size']}; forget / retain P = mean length-normalised chunk "
             f"probability; VerbMem = ROUGE-L F1 x100 of the greedy continuation of each chunk's first half; "
             f"AUC = Min-40% forget vs holdout in MUSE's convention; PrivLeak relative to the retain model's AUC "
             f"({fmt(results['reference']['retain']['auc'])}).", "",
             md_table(ref_rows + _mean_rows(results["runs"]), ["model", "forget_prob", "forget_prob_sd",
                                                                 *MEASURES[1:3], "retain_prob_sd", *MEASURES[3:]]),
             "", *_predictor_text(results.get("predictors")),
             "Scatter plots: `muse/correlations/<truth>/scatter_*.png`; runs: `muse/samplers.jsonl`."]
    return "\n".join(text), _claims(results)

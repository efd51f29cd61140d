"""Experiment ``validate``: does MRD predict how many updates a sample really needs to be forgotten?

Paper claim (Feng et al. 2025, arXiv:2504.06658): MRD correlates with the required unlearning updates, Spearman
up to 0.47 (WMDP, chunks of samples). Ground truth here (:func:`mrdkit.evaluation.difficulty.required_updates`):
gradient ascent from the target model on one sample (or one chunk) until its length-normalised answer
probability is <= 0.02, counting updates (censored at the cap). High MRD = easy, so a working score has a
NEGATIVE Spearman with the updates and a Harrell's C above 0.5.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mrdkit.bench.common import ground_truth, score, target_model, truth_settings, validation_samples
from mrdkit.bench.registry import BenchContext, experiment
from mrdkit.bench.report import fmt, md_table

PROXY_COLUMNS = ["loss", "n_tokens", "grad_norm", "min_k_20", "min_k_40", "zlib"]


def _score_rows(ctx: BenchContext, loaded, samples) -> list[dict[str, Any]]:
    """One row per sample: both MRD estimators, their resolution flags, and the proxies."""
    paper = score(ctx, loaded, samples, "mrd_paper", estimator="paper", proxies=False)
    anti = score(ctx, loaded, samples, "mrd_antithetic", estimator="antithetic")
    rows = []
    for p_row, a_row in zip(paper.rows(), anti.rows()):
        row = {"id": a_row["id"], "mrd_paper": p_row["mrd"], "mrd_antithetic": a_row["mrd"],
               "paper_resolved": p_row["resolved"], "antithetic_resolved": a_row["resolved"]}
        row.update({k: a_row[k] for k in PROXY_COLUMNS if k in a_row})
        rows.append(row)
    return rows


def chunk_settings(ctx: BenchContext, truth: dict[str, Any], chunk: int) -> dict[str, Any]:
    """Ground-truth settings of the chunked variant: one update per epoch on the mean gradient of a whole chunk
    moves each member about ``1/chunk`` as far as a per-sample step, so chunks get a larger lr (``chunk_lr``,
    default 1e-4) and a cap of ``chunk_cap`` (default 30) epochs. At the per-sample lr (2e-5) all 24 chunks of
    the full run were censored at 20 epochs, which leaves nothing to correlate."""
    return {**truth, "lr": float(ctx.options.get("chunk_lr", 1e-4)),
            "cap": int(ctx.options.get("chunk_cap", 30)), "chunk_size": chunk}


@experiment("validate", summary="MRD and proxies vs required unlearning updates (per sample and chunked)",
            order=1, render=lambda results, d: render(results, d))
def validate(ctx: BenchContext) -> dict[str, Any]:
    from mrdkit.evaluation.correlation import correlation_report
    from mrdkit.runs import atomic_write_jsonl

    loaded = target_model(ctx)
    samples = validation_samples(ctx)
    ctx.log(f"validate: MRD (paper + antithetic) on {len(samples)} samples")
    rows = _score_rows(ctx, loaded, samples)
    atomic_write_jsonl(Path(ctx.dir) / "scores.jsonl", rows)
    truth = truth_settings(ctx)
    ctx.log("validate: ground truth (updates to forget each sample)")
    per_sample = ground_truth(ctx, loaded, samples, "updates", **truth)
    chunk = int(ctx.options.get("chunk_size", ctx.size(4, 5)))
    chunked = ground_truth(ctx, loaded, samples, "updates_chunked", **chunk_settings(ctx, truth, chunk))
    cols = ["mrd_paper", "mrd_antithetic", *[c for c in PROXY_COLUMNS if c in rows[0]]]
    n_boot = ctx.size(200, 1000)
    table = correlation_report(rows, per_sample, score_cols=cols, n_boot=n_boot, out_dir=Path(ctx.dir) / "per_sample")
    table_chunk = correlation_report(rows, chunked, score_cols=cols, n_boot=n_boot,
                                     out_dir=Path(ctx.dir) / "chunked")
    return {"n_samples": len(samples), "chunk_size": chunk, "truth": truth,
            "truth_chunked": chunk_settings(ctx, truth, chunk),
            "censored": sum(r["censored"] for r in per_sample),
            "censored_chunks": sum(r["censored"] for r in chunked), "n_chunks": len(chunked),
            "median_updates": sorted(r["updates"] for r in per_sample)[len(per_sample) // 2],
            "resolved": {"paper": sum(r["paper_resolved"] for r in rows),
                         "antithetic": sum(r["antithetic_resolved"] for r in rows)},
            "per_sample": table, "chunked": table_chunk}


def _row(table: list[dict[str, Any]], score: str) -> dict[str, Any]:
    return next((r for r in table if r["score"] == score), {})


def render(results: dict[str, Any], exp_dir: Path) -> tuple[str, list[dict[str, Any]]]:
    """Report section + claims for ``validate``."""
    cols = ["score", "spearman", "spearman_ci_low", "spearman_ci_high", "spearman_p", "kendall", "harrell_c", "n"]
    truth = results["truth"]
    chunked = results.get("truth_chunked", {"lr": truth["lr"], "cap": 20})  # runs made before chunk_lr existed
    text = [
        f"Ground truth: `{truth['method']}` at lr {fmt(truth['lr'])} on one sample at a time from the target model "
        f"until P(answer) <= {truth['threshold']} (cap {truth['cap']} updates; {results['censored']} of "
        f"{results['n_samples']} censored; median {results['median_updates']} updates). Chunked: chunks of "
        f"{results['chunk_size']} samples at lr {fmt(chunked['lr'])}, epochs until the chunk mean <= "
        f"{truth['threshold']} (cap {chunked['cap']}; "
        f"{results['censored_chunks']} of {results['n_chunks']} censored).",
        "",
        "High MRD = easy, so a working score has a negative Spearman with the updates and Harrell's C > 0.5. "
        f"Resolved MRD scores (|mean| >= 2 stderr): paper {results['resolved']['paper']}, antithetic "
        f"{results['resolved']['antithetic']} of {results['n_samples']}.",
        "",
        "**Per sample**", "", md_table(results["per_sample"], cols), "",
        "**Chunked**", "", md_table(results["chunked"], cols), "",
        "Scatter plots: `validate/per_sample/scatter_*.png`, `validate/chunked/scatter_*.png`.",
    ]
    claims = []
    for label, table in (("per sample", results["per_sample"]), ("chunked", results["chunked"])):
        for est in ("mrd_paper", "mrd_antithetic"):
            r = _row(table, est)
            rho, lo, hi = r.get("spearman"), r.get("spearman_ci_low"), r.get("spearman_ci_high")
            reproduced = "yes" if (hi is not None and hi < 0 and rho is not None and rho <= -0.3) else (
                "partly" if (hi is not None and hi < 0) else "no")
            claims.append({"claim": f"MRD predicts required updates ({label}, {est.split('_')[1]} estimator)",
                           "paper": "Spearman up to 0.47 (WMDP)",
                           "ours": f"Spearman {fmt(rho)} [{fmt(lo)}, {fmt(hi)}], n={r.get('n')}",
                           "reproduced": reproduced})
    return "\n".join(text), claims

"""The numbers ``mrd_speed.py`` reports: value agreement of mrdkit and the reference loop, timing ratios per clock,
and the printed table.

Loaded by the entry scripts through ``common.load("speed_analysis")``.
"""

from __future__ import annotations

from typing import Any

import mrdkit_benchmarks_common as common  # registered by the entry script (see common.load)

reference = common.load("reference_loop")

REL_TOL = 1e-9  # fp64: the two implementations may only differ by rounding of the padded batched forward
TARGETS = {0: ">= 5", 3: "<= 1.15"}


# ------------------------------------------------------------------------------------- value checks


def compare_values(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-sample relative differences of MRD and of the raw per-draw r_k, reference vs every mrdkit run.

    Besides the maximum: quantiles, the number of samples over :data:`REL_TOL`, and the largest MRD difference
    in units of the median MRD (a rounding difference on a sample whose MRD is tiny is not an error in a ranking).
    """
    import numpy as np

    ref_mrd = np.array([v for r in rows for v in r["reference"]["mrd"]])
    ref_raw = np.array([v for r in rows for v in r["reference"]["raw"]])
    mk_mrd = np.array([r["mrdkit"]["mrd"] for r in rows])  # (runs, N)
    mk_raw = np.array([r["mrdkit"]["raw"] for r in rows])  # (runs, N, K)

    def rel(a, b):
        scale = np.maximum(np.abs(a), np.abs(b))
        return np.where(scale > 0, np.abs(a - b) / np.where(scale > 0, scale, 1), 0.0)

    d_mrd = rel(ref_mrd[None], mk_mrd).max(axis=0)  # (N,) worst over runs
    d_raw = rel(ref_raw[None], mk_raw).max(axis=(0, 2))  # (N,)
    return {"max_rel_diff_mrd": float(d_mrd.max()), "max_rel_diff_draws": float(d_raw.max()),
            "rel_diff_mrd_quantiles": {q: float(np.quantile(d_mrd, float(q))) for q in ("0.5", "0.9", "0.99")},
            "max_abs_diff_mrd_over_median_mrd": float(np.abs(ref_mrd[None] - mk_mrd).max() / np.median(ref_mrd)),
            "n_samples": len(ref_mrd), "tolerance": REL_TOL, "equal": bool(max(d_mrd.max(), d_raw.max()) <= REL_TOL),
            "samples_over_tolerance": int((np.maximum(d_mrd, d_raw) > REL_TOL).sum()),
            "worst_samples": [{"index": int(i), "rel_diff_mrd": float(d_mrd[i]), "rel_diff_draws": float(d_raw[i])}
                              for i in np.argsort(-np.maximum(d_mrd, d_raw))[:5]]}


def exact_check(model, batches: list[dict], rows: list[dict[str, Any]], args, device) -> dict[str, Any]:
    """mrdkit at the reference's shapes (batch size 1, no padding): are its per-draw r_k BITWISE the reference's?

    This separates the estimator from the forward pass: a padded batch of several samples rounds differently
    from a lone unpadded one in the last bits, and ``(l_t - l'_t) / l_t`` magnifies that for tokens with
    ``l_t`` near 0 (confidently predicted tokens of a trained model).
    """
    import torch

    from mrdkit.scoring.engine import score_batches

    inputs = reference.reference_inputs(batches, device)[:args.exact_samples]
    ones = [{"input_ids": i, "attention_mask": torch.ones_like(i), "labels": lab, "ids": [str(n)]}
            for n, (i, lab) in enumerate(inputs)]
    res = score_batches(model, ones, draws=args.draws, sigma=args.sigma, estimator="paper", scheme="reference",
                        width_multiple=None)
    ref_raw = [v for r in rows for v in r["reference"]["raw"]][:len(inputs)]
    got = res.estimate.values.tolist()
    diffs = [abs(a - b) / max(abs(a), abs(b), 1e-300) for ra, rb in zip(ref_raw, got) for a, b in zip(ra, rb)]
    return {"n_samples": len(inputs), "bitwise_equal": ref_raw == got, "max_rel_diff_draws": max(diffs, default=0.0)}


# -------------------------------------------------------------------------------- ratios and report


def summarise(rows: list[dict[str, Any]], draws: int, clock: str = "_s") -> dict[str, Any]:
    """Ratios on the wall (``_s``) or CPU (``_cpu_s``) clock: per slot (median reported) and of the totals.

    Per slot, the reference time is scaled from its chunk to all N samples (its cost is per sample).
    """
    def t(run: dict[str, Any], key: str) -> float:
        return run.get(f"{key}{clock}", 0.0)

    def per_slot(fn):
        return common.median([fn(r["reference"], r["mrdkit"], r["forward"]) for r in rows])

    def mean(runner, key):
        return sum(t(r[runner], key) for r in rows) / len(rows)

    n = sum(r["reference"]["samples"] for r in rows)
    ref_total, mk_total, mk_draws = sum(t(r["reference"], "total") for r in rows), mean("mrdkit", "total"), \
        mean("mrdkit", "draws")
    return {
        "clock": "wall" if clock == "_s" else "cpu",
        "speedup": per_slot(lambda ref, mk, fw: t(ref, "total") * n / ref["samples"] / t(mk, "total")),
        "speedup_of_totals": ref_total / mk_total,
        "speedup_per_draw": ref_total / mk_draws,
        "per_draw_over_forward": per_slot(lambda ref, mk, fw: t(mk, "draws") / draws / t(fw, "pass")),
        "total_over_forward_passes": per_slot(lambda ref, mk, fw: t(mk, "total") / t(fw, "total")),
        "noise_restore_share": (mean("mrdkit", "noise") + mean("mrdkit", "restore")) / mk_total,
        "noise_share": mean("mrdkit", "noise") / mk_total,
        "restore_share": mean("mrdkit", "restore") / mk_total,
        "base_pass_share": mean("mrdkit", "base") / mk_total,
        "draw_breakdown": {key: mean("mrdkit", key) / mk_draws for key in ("forward", "reduce", "noise", "restore")},
        "reference_breakdown": {key: sum(t(r["reference"], key) for r in rows) / ref_total
                                for key in ("forward", "noise", "reload")},
        "reference_ms_per_sample_draw": 1e3 * ref_total / (n * draws),
        "mrdkit_ms_per_sample_draw": 1e3 * mk_total / (n * draws),
        "forward_ms_per_sample": 1e3 * mean("forward", "pass") / n,
    }



def _summary_rows(s: dict[str, Any]) -> list[list[Any]]:
    """(label, value) rows of one clock's summary, in print order."""
    b = s["draw_breakdown"]
    return [["speed-up, reference / mrdkit (median over slots)", s["speedup"]],
            ["speed-up of the totals", s["speedup_of_totals"]],
            ["speed-up per draw (large K): reference / mrdkit draw loop", s["speedup_per_draw"]],
            ["mrdkit time per draw / forward-only pass", s["per_draw_over_forward"]],
            ["mrdkit total / (K+1) forward-only passes", s["total_over_forward_passes"]],
            ["share of mrdkit time: noise + restore", s["noise_restore_share"]],
            ["  noise (Perturber.apply) / restore", f"{s['noise_share']:.3f} / {s['restore_share']:.3f}"],
            ["share of mrdkit time: base pass (+ re-batching)", s["base_pass_share"]],
            ["draw loop: forward / reduction / noise / restore", " / ".join(f"{v:.3f}" for v in b.values())],
            ["reference: forward / noise / state-dict reload",
             " / ".join(f"{v:.3f}" for v in s["reference_breakdown"].values())],
            ["ms per sample-draw: reference / mrdkit",
             f"{s['reference_ms_per_sample_draw']:.1f} / {s['mrdkit_ms_per_sample_draw']:.1f}"],
            ["forward-only ms per sample", s["forward_ms_per_sample"]]]


def report(result: dict[str, Any]) -> str:
    """The tables printed to stdout."""
    c, env = result["check"], result["environment"]
    rows = [[label, cpu, wall, TARGETS.get(i, "")] for i, ((label, cpu), (_, wall)) in
            enumerate(zip(_summary_rows(result["summary_cpu"]), _summary_rows(result["summary_wall"])))]
    q = c["rel_diff_mrd_quantiles"]
    rows.append(["max rel. diff MRD / per-draw r_k", f"{c['max_rel_diff_mrd']:.2g} / {c['max_rel_diff_draws']:.2g}",
                 "", f"<= {c['tolerance']:g}: {'OK' if c['equal'] else 'FAIL'}"])
    rows.append(["rel. diff MRD: median / 90% / 99%; samples over tolerance",
                 f"{q['0.5']:.2g} / {q['0.9']:.2g} / {q['0.99']:.2g}; "
                 f"{c['samples_over_tolerance']} of {c['n_samples']}",
                 "", ""])
    rows.append(["max |diff MRD| / median MRD", f"{c['max_abs_diff_mrd_over_median_mrd']:.2g}", "", ""])
    b1 = c["batch_size_1"]
    rows.append([f"mrdkit at batch size 1, no padding ({b1['n_samples']} samples): r_k bitwise equal",
                 str(b1["bitwise_equal"]), "", f"max rel. diff {b1['max_rel_diff_draws']:.2g}"])
    lines = [f"model {result['model']} ({result['n_params']:,} params), {result['config']['dtype']}, device "
             f"{env['device']}, {env['threads']} thread(s); {c['n_samples']} samples x {result['config']['draws']} "
             f"draws; primary clock: {result['summary']['clock']}",
             common.table(rows, ["measure", "CPU time", "wall time", "target"])]
    return "\n\n".join(lines)

"""MRD rank stability vs compute: split-half Spearman of two independent seeds (arXiv 2504.06658; paper-notes 2).

For each estimator (``paper``: K independent draws, one forward pass each; ``antithetic``: K/2 pairs
(+delta, -delta)), every seed is scored ONCE at the largest budget; smaller budgets are prefixes of the raw
per-draw values (``EngineResult.estimate.values``), which is exactly what a run with fewer draws returns because
draw k's noise depends only on (seed, k, parameter name). At each budget the MRD rankings of two seeds are
compared with Spearman's rho (averaged over all seed pairs when more than two seeds are given); the script
reports the smallest number of forward passes per sample that reaches rho >= 0.9.

    python benchmarks/mrd_variance.py                    # 80 TOFU forget10 samples, fp64, sigma 1e-5
    python benchmarks/mrd_variance.py --dtype float32 --sigma 1e-4
    python benchmarks/mrd_variance.py --quick --json /tmp/var.json --plot /tmp/var.png
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

if "mrdkit_benchmarks_common" not in sys.modules:  # benchmarks/ is no package: common.py by path, as common.load
    _spec = importlib.util.spec_from_file_location("mrdkit_benchmarks_common",
                                                   Path(__file__).resolve().with_name("common.py"))
    _spec.loader.exec_module(sys.modules.setdefault(_spec.name, importlib.util.module_from_spec(_spec)))
import mrdkit_benchmarks_common as common  # noqa: E402

ESTIMATOR_NAMES = ("paper", "antithetic")


def passes_per_draw(estimator: str) -> int:
    """Forward passes one draw of ``estimator`` costs (from the estimator registry: paper 1, antithetic 2)."""
    from mrdkit.scoring.estimators import ESTIMATORS

    return int(ESTIMATORS.entry(estimator).meta["passes_per_draw"])


def score_values(model, batches, estimator: str, seed: int, max_passes: int, sigma: float):
    """(N, K) per-draw values of one run with ``max_passes`` forward passes per sample (paper r_k, antithetic
    c_k), in the input order of the samples."""
    from mrdkit.scoring.engine import score_batches

    draws = max_passes // passes_per_draw(estimator)
    res = score_batches(model, batches, draws=draws, sigma=sigma, estimator=estimator, seed=seed)
    return res.estimate.values


def prefix_stats(values, draws: int) -> dict[str, Any]:
    """MRD ``|mean|`` of the first ``draws`` columns, with the median ``|mean| / stderr`` and the resolved share."""
    from mrdkit.scoring.estimators import mean_and_stderr

    mean, stderr = mean_and_stderr(values[:, :draws])
    snr = (mean.abs() / stderr)
    return {"mrd": mean.abs(), "median_snr": float(snr.median()) if draws > 1 else float("nan"),
            "resolved": float((mean.abs() >= 2 * stderr).double().mean())}


def spearman(a, b) -> float:
    """Spearman's rho of two score vectors (NaN when either is constant)."""
    import numpy as np
    from scipy.stats import spearmanr

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def curve(values_by_seed: Sequence[Any], passes: Sequence[int], per_draw: int) -> list[dict[str, Any]]:
    """Split-half Spearman and resolution per budget, for one estimator."""
    out = []
    for p in passes:
        draws = p // per_draw
        stats = [prefix_stats(v, draws) for v in values_by_seed]
        rhos = [spearman(a["mrd"], b["mrd"]) for a, b in itertools.combinations(stats, 2)]
        out.append({"passes": p, "draws": draws, "spearman": sum(rhos) / len(rhos),
                    "spearman_pairs": rhos, "median_snr": common.median([s["median_snr"] for s in stats]),
                    "resolved": common.median([s["resolved"] for s in stats])})
    return out


def passes_to(points: Sequence[dict[str, Any]], threshold: float) -> Optional[int]:
    """Fewest forward passes per sample whose split-half Spearman reaches ``threshold`` (None: not reached)."""
    return next((pt["passes"] for pt in points if pt["spearman"] >= threshold), None)


def budgets(args) -> list[int]:
    """The forward-pass budgets, each a multiple of every estimator's passes per draw."""
    passes = sorted({int(p) for p in args.passes.split(",")})
    step = max(passes_per_draw(e) for e in args.estimators)
    bad = [p for p in passes if p < step or p % step]
    if bad:
        raise SystemExit(f"--passes must be multiples of {step} (antithetic pairs): {bad}")
    return passes


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--samples", type=int, default=80, help="TOFU samples (default 80)")
    p.add_argument("--passes", default="4,8,16,32", help="forward passes per sample to evaluate (default "
                   "4,8,16,32; the largest sets the cost: estimators x seeds x (largest + 1) passes)")
    p.add_argument("--seeds", default="0,1", help="independent noise seeds (default 0,1)")
    p.add_argument("--sigma", type=float, default=1e-5, help="noise scale (default 1e-5, the paper's)")
    p.add_argument("--dtype", default="float64", help="model weights: float64 (default) or float32")
    p.add_argument("--estimators", default=",".join(ESTIMATOR_NAMES))
    p.add_argument("--threshold", type=float, default=0.9, help="Spearman to reach (default 0.9)")
    p.add_argument("--model", default=None, help="auto (default: testbed if present, else tiny) | "
                   "tiny[-llama][:sizes] | model dir; --quick: a 1-layer tiny GPT-2")
    p.add_argument("--split", default="forget10")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=1, help="CPU threads (default 1; 0 = torch's default)")
    p.add_argument("--quick", action="store_true", help="tiny sizes for a smoke test")
    p.add_argument("--json", default=str(common.RESULTS / "mrd_variance.json"))
    p.add_argument("--plot", default=None, help="PNG of Spearman vs passes (default: beside the JSON)")
    args = p.parse_args(argv)
    args.model = args.model or (common.QUICK_MODEL if args.quick else "auto")
    if args.quick:
        args.samples, args.passes, args.split = min(args.samples, 8), "2,4", common.QUICK_SPLIT
    args.estimators = [e for e in args.estimators.split(",") if e]
    args.seeds = [int(s) for s in args.seeds.split(",")]
    if len(args.seeds) < 2:
        raise SystemExit("--seeds needs at least two seeds")
    if args.plot is None and args.json:
        args.plot = str(Path(args.json).with_suffix(".png"))
    return args


def plot(results: dict[str, Any], threshold: float, path: str, title: str) -> None:
    """Spearman vs forward passes, one line per estimator, plus the threshold."""
    from mrdkit import plots

    series = {name: ([pt["passes"] for pt in r["curve"]], [pt["spearman"] for pt in r["curve"]])
              for name, r in results.items()}
    xs = sorted({x for xs_, _ in series.values() for x in xs_})
    series[f"rho = {threshold:g}"] = ([xs[0], xs[-1]], [threshold, threshold])
    plots.lines(series, path, title=title, xlabel="forward passes per sample", ylabel="split-half Spearman",
                logx=True)


def report(result: dict[str, Any]) -> str:
    """Printed summary: one row per budget, one column group per estimator, then passes to the threshold."""
    res, cfg = result["results"], result["config"]
    names = list(res)
    rows = [[pt["passes"]] + [c for n in names for c in (res[n]["curve"][i]["spearman"],
                                                          res[n]["curve"][i]["median_snr"])]
            for i, pt in enumerate(res[names[0]]["curve"])]
    header = ["passes"] + [h for n in names for h in (f"{n} rho", f"{n} median |mean|/se")]
    reached = ", ".join(f"{n}: {res[n]['passes_to_threshold'] or 'not reached'}" for n in names)
    return (f"model {result['model']}, {cfg['dtype']}, sigma {cfg['sigma']:g}, {result['n_samples']} samples, "
            f"seeds {cfg['seeds']}\n\n{common.table(rows, header)}\n\n"
            f"forward passes per sample for Spearman >= {cfg['threshold']:g}: {reached}")


def main(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """Run the benchmark; print the table, write JSON and PNG, return the result dict."""
    args = parse_args(argv)
    device = common.setup_torch(args.threads)
    passes = budgets(args)
    lm, what, samples, batches = common.load_bench_inputs(args.model, args.dtype, device, args.split, args.samples,
                                                          args.batch_size)
    common.log(f"mrd_variance: {what}, {len(samples)} samples, passes {passes}, seeds {args.seeds}")
    results, timing = {}, {}
    for est in args.estimators:
        tic = time.perf_counter()
        values = [score_values(lm.model, batches, est, seed, passes[-1], args.sigma) for seed in args.seeds]
        timing[est] = time.perf_counter() - tic
        points = curve(values, passes, passes_per_draw(est))
        results[est] = {"curve": points, "passes_to_threshold": passes_to(points, args.threshold)}
        common.log(f"  {est}: {timing[est]:.0f} s, rho at {passes[-1]} passes = {points[-1]['spearman']:.3f}")
    result = {"config": vars(args), "model": what, "n_params": lm.n_params, "n_samples": len(samples),
              "environment": common.environment(device), "results": results, "seconds": timing}
    print(report(result))
    common.write_json(args.json, result)
    if args.plot:
        plot(results, args.threshold, args.plot, f"MRD split-half stability ({args.dtype}, sigma {args.sigma:g})")
    return result


if __name__ == "__main__":
    main()

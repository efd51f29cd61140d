"""``mrd demo``: the main job on the embedded testbed, in a few minutes on a laptop CPU.

Steps (each a bench experiment with demo-sized options, resumable, into one directory):
1. ``validate``: MRD (paper and antithetic estimators) on the 40 forget samples, the ground-truth updates per
   sample and per chunk, correlations with bootstrap CIs.
   ``predictors``: the cheap difficulty scores (lookahead, Newton steps, proxies) next to MRD against the same
   ground truth and a joint GA run's survival steps (mrdkit.bench.predictors).
2. ``samplers``: gradient ascent with ``random`` vs MRD-guided ``cga`` sampling, evaluated with the TOFU suite
   against the retain model.
3. ``report.md`` with the paper-claim table, printed at the end.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Optional

DEMO_OPTIONS = {
    "validate": {"demo": True},
    "predictors": {"demo": True, "survival_methods": ["ga"],
                   "scores": ["lookahead_3", "lookahead_1", "newton_steps", "loss", "n_tokens", "min_k_20", "min_k_40",
                              "zlib", "grad_norm", "mrd_antithetic"]},
    "samplers": {"methods": ["ga"], "samplers": ["random", "cga"], "seeds": 1, "eval_limit": 40},
}


def run_demo(out: str | Path = "runs/demo", *, overwrite: bool = False,
             progress: Optional[Callable[[str], None]] = None) -> Path:
    """Run the demo into ``out`` and return the report path; prints the headline table."""
    from mrdkit.bench.run import render_report, run_experiment
    from mrdkit.train import pinned_threads

    with pinned_threads(demo_threads()):  # the caller's thread count comes back afterwards
        for name, options in DEMO_OPTIONS.items():
            if progress:
                progress(f"== demo step: {name}")
            run_experiment(name, out, quick=True, overwrite=overwrite, options=options, progress=progress)
    report = render_report(out)
    _print_headline(report)
    return report


def demo_threads() -> int:
    """Torch threads of the demo: ``OMP_NUM_THREADS`` when set (one thread is faster on a machine whose cores are
    busy with other jobs), else up to 2. Measured on the project's quiet 2-core machine (2026-12-05): 1 thread
    5 min 46 s, 2 threads 4 min 1 s, with the same numbers in the report."""
    env = os.environ.get("OMP_NUM_THREADS")
    return int(env) if env else min(2, os.cpu_count() or 1)


def _print_headline(report: Path) -> None:
    """Print the claims table and the report location."""
    text = report.read_text()
    start = text.find("## Paper claims and our results")
    end = text.find("\n## ", start + 5)
    print(text[start:end].strip())
    print(f"\nfull report: {report}")

"""Running the registered experiments and rendering ``report.md`` from their run files.

:func:`run_experiment` runs one experiment into ``<bench dir>/<name>`` under the run contract of
:mod:`mrdkit.runs` (a finished run with the same settings is reused, an unfinished one resumed, one made with other
settings started afresh unless refused); :func:`render_report` rebuilds the report from the run files alone
(``mrd bench report DIR``), so it can always be re-rendered and its tables are checkable against the JSON/JSONL
next to it. Importing this module registers every experiment.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Optional

from mrdkit.bench import (  # noqa: F401 (importing registers the experiments)
    characteristics,
    muse,
    predictors,
    samplers,
    selection,
    sensitivity,
    validate,
)
from mrdkit.bench.registry import EXPERIMENTS, BenchContext
from mrdkit.bench.report import claims_table, fmt
from mrdkit.runs import RunDir, atomic_write_text, read_json


def run_experiment(name: str, out_root: str | Path, *, quick: bool = False, seeds: int = 3, tier: str = "tiny",
                   overwrite: bool = False, options: Optional[dict[str, Any]] = None,
                   progress: Optional[Callable[[str], None]] = None) -> dict[str, Any]:
    """Run experiment ``name`` into ``out_root/name`` (skipped when already finished) and return its results."""
    entry = EXPERIMENTS.entry(name)
    config = {"experiment": name, "quick": quick, "seeds": seeds, "tier": tier, "options": options or {}}
    target = Path(out_root) / name
    if overwrite:
        run = RunDir(target, config, overwrite=True)
    else:  # a finished run is reused, an unfinished one continues, one made with other settings starts afresh
        run, state = RunDir.open(target, config)
        if state == "finished":
            return read_json(target / "results.json")
    # option dtype: the MRD scoring precision (float64 default; float32 halves the cost on a larger tier's model)
    ctx = BenchContext(dir=run.path, quick=quick, seeds=seeds, tier=tier, options=dict(options or {}),
                       progress=progress, dtype=str((options or {}).get("dtype", "float64")))
    tic = time.perf_counter()
    results = entry.obj(ctx)
    results["wall_s"] = time.perf_counter() - tic
    run.write_json("results.json", results)
    run.mark_finished({"wall_s": results["wall_s"]})
    return results


def experiment_names() -> list[str]:
    """Registered experiments in report order."""
    return [e.name for e in sorted(EXPERIMENTS.entries(), key=lambda e: e.meta["order"])]


def render_report(bench_dir: str | Path) -> Path:
    """Write ``bench_dir/report.md`` from the finished experiments in ``bench_dir`` and return its path."""
    bench_dir = Path(bench_dir)
    sections, claims = [], []
    for name in experiment_names():
        exp_dir = bench_dir / name
        if not (exp_dir / "DONE.json").exists():
            continue
        results = read_json(exp_dir / "results.json")
        text, exp_claims = EXPERIMENTS.entry(name).meta["render"](results, exp_dir)
        mode = "quick" if read_json(exp_dir / "config.json").get("quick") else "full"
        # a re-run reuses finished MRD / ground-truth files, so its wall time covers only what it recomputed
        sections.append(f"## {name} ({mode} run, last invocation {fmt(results.get('wall_s'))} s)\n\n"
                        f"{text.strip()}\n")
        claims.extend({**c, "experiment": name} for c in exp_claims)
    body = [
        "# mrdkit report: sample-level unlearning difficulty (MRD)",
        "",
        "Paper: Feng et al., *A Neuro-inspired Interpretation of Unlearning in Large Language Models through "
        "Sample-level Unlearning Difficulty*, arXiv:2504.06658. Every number below is read from the run files "
        "in this directory; `mrd bench report DIR` re-renders this page.",
        "",
        "## Paper claims and our results",
        "",
        claims_table(claims),
        "",
        *sections,
    ]
    path = bench_dir / "report.md"
    atomic_write_text(path, "\n".join(body))
    return path

"""The paper's experiments as registered functions (``mrd bench run NAME``).

An experiment is ``fn(ctx: BenchContext) -> dict``: it reads the testbed, writes its files into
``ctx.dir`` and returns a JSON-ready results dict (saved as ``results.json``). A report renderer
``render(results, dir) -> (markdown, claims)`` turns those files into a report section; ``claims`` are rows of the
"paper claim / our result" table. Experiments are resumable: a finished one (``DONE.json``) is skipped unless
``overwrite``; long inner loops keep their own checkpoints.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from mrdkit.registry import Registry

EXPERIMENTS: Registry = Registry("experiment")

Renderer = Callable[[dict[str, Any], Path], tuple[str, list[dict[str, Any]]]]


@dataclass
class BenchContext:
    """What an experiment gets: its directory, the size tier, seeds, the testbed and a progress hook."""

    dir: Path
    quick: bool = False
    seeds: int = 3
    tier: str = "tiny"
    dtype: str = "float64"
    options: dict[str, Any] = field(default_factory=dict)
    progress: Optional[Callable[[str], None]] = None

    def log(self, message: str) -> None:
        """One status line (the CLI prints it; tests stay quiet)."""
        if self.progress is not None:
            self.progress(message)

    def size(self, quick: Any, full: Any) -> Any:
        """Pick the quick or the full value of a setting."""
        return quick if self.quick else full


def experiment(name: str, *, summary: str, order: int, render: Renderer):
    """Register an experiment with its report renderer and its position in the report."""
    return EXPERIMENTS.register(name, summary=summary, order=order, render=render)


def run_experiment(name: str, out_root: str | Path, *, quick: bool = False, seeds: int = 3, tier: str = "tiny",
                   overwrite: bool = False, options: Optional[dict[str, Any]] = None,
                   progress: Optional[Callable[[str], None]] = None) -> dict[str, Any]:
    """Run experiment ``name`` into ``out_root/name`` (skipped when already finished) and return its results."""
    from mrdkit.runs import RunDir, json_roundtrip, read_json

    _load_all()
    entry = EXPERIMENTS.entry(name)
    config = {"experiment": name, "quick": quick, "seeds": seeds, "tier": tier, "options": options or {}}
    target = Path(out_root) / name
    if (target / "DONE.json").exists() and not overwrite and read_json(target / "config.json") == json_roundtrip(config):
        return read_json(target / "results.json")
    # an unfinished run continues (RunDir refuses it if the config changed); --overwrite starts afresh
    run = RunDir(target, config, resume=not overwrite, overwrite=True)
    # option dtype: the MRD scoring precision (float64 default; float32 halves the cost on a larger tier's model)
    ctx = BenchContext(dir=run.path, quick=quick, seeds=seeds, tier=tier, options=dict(options or {}),
                       progress=progress, dtype=str((options or {}).get("dtype", "float64")))
    tic = time.perf_counter()
    results = entry.obj(ctx)
    results["wall_s"] = time.perf_counter() - tic
    run.write_json("results.json", results)
    run.mark_finished({"wall_s": results["wall_s"]})
    return results


def _load_all() -> None:
    """Import the modules that register experiments."""
    import importlib

    for module in ("mrdkit.bench.validate", "mrdkit.bench.samplers_exp", "mrdkit.bench.sensitivity",
                   "mrdkit.bench.characteristics", "mrdkit.bench.selection", "mrdkit.bench.muse_exp"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise


def experiment_names() -> list[str]:
    """Registered experiments in report order."""
    _load_all()
    return [e.name for e in sorted(EXPERIMENTS.entries(), key=lambda e: e.meta["order"])]

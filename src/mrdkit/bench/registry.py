"""The registry of the paper's experiments (``mrd bench run NAME``); :mod:`mrdkit.bench.run` runs them.

An experiment is ``fn(ctx: BenchContext) -> dict``: it reads the testbed, writes its files into
``ctx.dir`` and returns a JSON-ready results dict (saved as ``results.json``). A report renderer
``render(results, dir) -> (markdown, claims)`` turns those files into a report section; ``claims`` are rows of the
"paper claim / our result" table. Experiments are resumable: a finished one (``DONE.json``) is skipped unless
``overwrite``; long inner loops keep their own checkpoints.
"""

from __future__ import annotations

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

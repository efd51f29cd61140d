"""Experiment trackers for ``mrd unlearn --report-to tensorboard|wandb``, through accelerate's tracker API.

Every train-log row also goes to the trackers people already watch: the loss and its parts (``loss``,
``parts/forget``, ``parts/retain``, ...), ``lr``, ``grad_norm``, ``forget_prob`` / ``retain_prob`` (mean P(a|q),
whenever measured) and numeric evaluation-callback results (``eval/<name>``), at the optimizer step as x-axis.
``train_log.jsonl`` stays the record; trackers are a view of it.

- TensorBoard: events under ``<run>/tensorboard/mrdkit/``; watch with ``tensorboard --logdir <run>`` (or a
  folder of runs).
  The resolved config goes to TensorBoard's hparams tab (flattened, lists as text).
- Weights & Biases: ``wandb.init(project="mrdkit", name=<run folder>, dir=<run>)``; set ``WANDB_MODE=offline`` to
  write the run locally (``wandb sync`` uploads it later). Used only when the ``wandb`` package is installed.

Only the main process logs (accelerate's ``init_trackers`` / ``log`` run there). A resumed run appends to the same
tracker folder, so the steps between its checkpoint and the interruption appear twice in TensorBoard (the later
points are the ones the train log keeps).
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from typing import Any, Mapping

from mrdkit.errors import MrdkitError

TRACKERS = ("tensorboard", "wandb")
PROJECT = "mrdkit"  # accelerate's project name: the wandb project, and TensorBoard's folder under TB_DIR
TB_DIR = "tensorboard"  # accelerate's logging_dir inside the run directory


def tracker_names(report_to: str | None) -> list[str]:
    """``"tensorboard,wandb"`` -> ``["tensorboard", "wandb"]``; ``"none"`` / empty -> ``[]``; unknown names fail."""
    names = [n.strip().lower() for n in (report_to or "none").split(",") if n.strip()]
    names = [n for n in names if n != "none"]
    unknown = [n for n in names if n not in TRACKERS]
    if unknown:
        raise MrdkitError(f"unknown tracker {unknown[0]!r} in report_to={report_to!r} (known: none, "
                          f"{', '.join(TRACKERS)})")
    return list(dict.fromkeys(names))


def check_available(names: list[str], out_dir: Any) -> None:
    """One-line errors for a tracker without its package, or trackers without a run directory to write into."""
    if names and out_dir is None:
        raise MrdkitError(f"report_to={','.join(names)} needs a run directory (out_dir / --out) for the tracker files")
    for name in names:
        if importlib.util.find_spec(name) is None:
            extra = "pip install 'mrdkit[trackers]'" if name == "tensorboard" else "pip install wandb"
            raise MrdkitError(f"report_to={name} needs the {name} package: {extra}")


def accelerator_kwargs(names: list[str], out_dir: Any) -> dict[str, Any]:
    """``log_with`` / ``project_config`` for ``Accelerator(...)`` (nothing when no tracker is asked for)."""
    if not names:
        return {}
    from accelerate.utils import ProjectConfiguration

    config = ProjectConfiguration(project_dir=str(out_dir), logging_dir=str(Path(out_dir) / TB_DIR))
    return {"log_with": names, "project_config": config}


def _hparam(value: Any) -> Any:
    """TensorBoard's hparams take bool / int / float / str: anything else (lists, None) is shown as text."""
    return value if isinstance(value, (bool, int, float, str)) else str(value)


def start(acc: Any, names: list[str], run_dir: Path, config: Mapping[str, Any], resume: bool) -> None:
    """Start the trackers with the flattened run config; a fresh run first drops an earlier run's TensorBoard
    events (a resumed one keeps them)."""
    if not names:
        return
    from mrdkit.runs import flatten

    if not resume and acc.is_main_process:
        shutil.rmtree(run_dir / TB_DIR, ignore_errors=True)
    hparams = {k: _hparam(v) for k, v in flatten(dict(config)).items()}
    init = {"wandb": {"name": run_dir.name, "dir": str(run_dir)}}
    acc.init_trackers(PROJECT, config=hparams, init_kwargs=init)


def scalars(row: Mapping[str, Any]) -> dict[str, float]:
    """The numbers of one train-log row, named as the trackers show them (module docstring)."""
    out: dict[str, float] = {}
    for key in ("loss", "lr", "grad_norm", "forget_prob", "retain_prob", "epoch"):
        if isinstance(row.get(key), (int, float)):
            out[key] = float(row[key])
    for group in ("parts", "eval"):
        for key, value in (row.get(group) or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out[f"{group}/{key}"] = float(value)
    return out


def log(acc: Any, row: Mapping[str, Any]) -> None:
    """Send one train-log row to the trackers (a no-op without trackers or off the main process)."""
    if getattr(acc, "trackers", None):
        acc.log(scalars(row), step=int(row["step"]))


def finish(acc: Any) -> None:
    """Close the trackers (flush TensorBoard, end the wandb run) without accelerate's ``end_training``, which
    would also tear down the process group the caller may still use."""
    for tracker in getattr(acc, "trackers", []):
        tracker.finish()
    if getattr(acc, "trackers", None):
        acc.trackers = []

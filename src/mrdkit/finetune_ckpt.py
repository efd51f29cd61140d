"""Epoch checkpoints of :func:`mrdkit.finetune.finetune`, so a long fine-tune (the smollm2 testbed: ~5 min per
epoch per model on 2 CPU cores) resumes where it stopped instead of starting over.

Layout of a checkpoint folder::

    latest.json              {"epoch": e, "fingerprint": {...}}  - written last: the commit point
    epoch-<e>/model.safetensors   every parameter of the model after epoch e
    epoch-<e>/trainer.pt          AdamW + LR-scheduler state, the dropout RNG state and the history rows

A crash while epoch e+1's files are written leaves ``latest.json`` at epoch e, whose folder is complete; older
epoch folders are removed only after ``latest.json`` moved on. Resuming restores the optimizer moments, the
scheduler step and the RNG state exactly, so an interrupted and resumed run gives bitwise the same weights as an
uninterrupted one (same machine and thread count, as for :mod:`mrdkit.finetune` itself).
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from mrdkit.errors import MrdkitError
from mrdkit.runs import atomic_path, atomic_write_json, differing_keys, json_roundtrip, read_json

LATEST = "latest.json"


def fingerprint(cfg_dict: dict[str, Any], sample_ids: Sequence[str], n_batches: int,
                monitor_ids: Sequence[str] = ()) -> dict[str, Any]:
    """What a checkpoint must match to be resumed: the recipe, the training and monitor samples (hashed ids), the
    batching."""
    return {"config": cfg_dict, "samples": _digest(sample_ids), "n_samples": len(sample_ids),
            "monitor": _digest(monitor_ids), "n_batches": n_batches}


def _digest(ids: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]


@dataclass
class TrainerState:
    """What :func:`load_checkpoint` hands back to the training loop."""

    history: list[dict[str, Any]]  # one row per completed epoch
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng: torch.Tensor


def save_checkpoint(folder: Path, model: torch.nn.Module, optimizer, scheduler, history: list[dict[str, Any]],
                    print_: dict[str, Any]) -> None:
    """Write epoch ``len(history)``'s checkpoint, then point ``latest.json`` at it, then drop older epochs."""
    from safetensors.torch import save_file

    epoch = len(history)
    where = folder / f"epoch-{epoch}"
    where.mkdir(parents=True, exist_ok=True)
    # named_parameters lists a tied tensor once (safetensors refuses shared storage); buffers are not trained
    weights = {k: v.detach().contiguous().cpu() for k, v in model.named_parameters()}
    with atomic_path(where / "model.safetensors") as tmp:
        save_file(weights, str(tmp))
    with atomic_path(where / "trainer.pt") as tmp:
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "rng": torch.get_rng_state(), "history": history}, tmp)
    atomic_write_json(folder / LATEST, {"epoch": epoch, "fingerprint": print_})
    for old in folder.glob("epoch-*"):
        if old.name != where.name:
            shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(folder: Path, model: torch.nn.Module, print_: dict[str, Any]) -> TrainerState | None:
    """Load the latest checkpoint's weights into ``model``; None when ``folder`` has none.

    Raises :class:`MrdkitError` when it was written for another recipe, data or batching (naming what differs),
    so a run is never continued from someone else's state."""
    latest = folder / LATEST
    if not latest.is_file():
        return None
    saved = read_json(latest)
    diff = differing_keys(_flatten(saved.get("fingerprint", {})), _flatten(json_roundtrip(print_)))
    if diff:
        raise MrdkitError(f"fine-tune checkpoint {folder} was written for another run (differs in: "
                          f"{', '.join(diff)}); delete it to start afresh")
    from safetensors.torch import load_file

    where = folder / f"epoch-{saved['epoch']}"
    weights = load_file(str(where / "model.safetensors"))
    params = dict(model.named_parameters())
    if set(params) != set(weights):
        raise MrdkitError(f"fine-tune checkpoint {where} does not hold this model's parameters")
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(weights[name])
    trainer = torch.load(where / "trainer.pt", weights_only=True)
    return TrainerState(trainer["history"], trainer["optimizer"], trainer["scheduler"], trainer["rng"])


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"config": {"lr": 1}}`` -> ``{"config.lr": 1}``, so a refusal names the nested field that differs."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out

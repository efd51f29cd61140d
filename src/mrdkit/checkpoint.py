"""Training checkpoints: safetensors + JSON only (no pickle), written atomically. The one checkpoint format of
mrdkit: the unlearning loop saves one every ``checkpoint_every`` steps, the testbed fine-tune one per epoch.

A checkpoint is a folder ``checkpoints/step-000012/`` holding

- ``trainable.safetensors``: the trainable parameters by name (LoRA: the adapter weights only);
- ``optimizer.safetensors`` + ``optimizer.json``: the optimizer state's tensors (AdamW ``exp_avg``,
  ``exp_avg_sq``, ``step``) keyed ``<param index>.<name>``, and its param groups / scalars;
- ``scheduler.json``: ``LambdaLR.state_dict()`` (numbers only: the schedule is a plain callable object);
- ``state.json``: whatever the trainer needs to continue (unlearning: loop position and, for re-scoring
  samplers, the epoch's scores; fine-tuning: the epoch history and the run's fingerprint).

There is no RNG state to store: every random stream is derived from (seed, component, step) (house rule 5).
The folder is written under a temporary name and renamed into place, ``state.json`` last, so a killed job
leaves either the previous checkpoint or the new one, never a half-written one. Older checkpoints are deleted
once the new one is in place.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Mapping

import torch

from mrdkit.errors import MrdkitError
from mrdkit.runs import dumps

CHECKPOINTS = "checkpoints"
_STEP_DIR = re.compile(r"step-(\d+)")


def _write(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _write_json(path: Path, obj: Any) -> None:
    _write(path, (dumps(obj) + "\n").encode())


def _save_tensors(path: Path, tensors: Mapping[str, torch.Tensor]) -> None:
    from safetensors.torch import save

    _write(path, save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}))


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if not path.is_file():
        raise MrdkitError(f"checkpoint file {path} is missing")
    return load_file(str(path))


def optimizer_to_files(optimizer: torch.optim.Optimizer | Mapping[str, Any]) -> tuple[dict[str, torch.Tensor],
                                                                                     dict[str, Any]]:
    """Split ``optimizer.state_dict()`` (or such a state dict itself, e.g. one gathered from FSDP shards) into
    tensors (``"<index>.<name>"``) and a JSON-ready rest."""
    sd = optimizer if isinstance(optimizer, Mapping) else optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, state in sd["state"].items():
        for name, value in state.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{name}"] = value
            else:
                scalars[f"{index}.{name}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_files(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`optimizer_to_files`: a ``state_dict`` for ``optimizer.load_state_dict``."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in [*tensors.items(), *meta["scalars"].items()]:
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(root: Path, step: int, *, params: Mapping[str, torch.Tensor],
                    optimizer: torch.optim.Optimizer | Mapping[str, Any], scheduler: Any,
                    state: Mapping[str, Any]) -> Path:
    """Write checkpoint ``root/checkpoints/step-<step>`` atomically and delete the older ones; returns its path.

    ``params`` and ``optimizer`` (an optimizer or its ``state_dict()``) are whole tensors: a sharded run gathers
    them first (:mod:`mrdkit.unlearning.sharding`), so every checkpoint has the same format whatever wrote it."""
    base = root / CHECKPOINTS
    base.mkdir(parents=True, exist_ok=True)
    final = base / f"step-{step:06d}"
    tmp = base / f".tmp-step-{step:06d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    _save_tensors(tmp / "trainable.safetensors", params)
    opt_tensors, opt_meta = optimizer_to_files(optimizer)
    _save_tensors(tmp / "optimizer.safetensors", opt_tensors)
    _write_json(tmp / "optimizer.json", opt_meta)
    _write_json(tmp / "scheduler.json", scheduler.state_dict())
    _write_json(tmp / "state.json", {**state, "step": step})  # last: its presence marks a complete folder
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in base.iterdir():
        if old != final and (old.name.startswith(".tmp-") or _STEP_DIR.fullmatch(old.name)):
            shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(root: Path) -> Path | None:
    """The complete checkpoint with the highest step under ``root/checkpoints``, or None."""
    base = root / CHECKPOINTS
    if not base.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in base.iterdir()
             if (m := _STEP_DIR.fullmatch(p.name)) and (p / "state.json").is_file()]
    return max(found)[1] if found else None


def read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any], dict[str, Any]]:
    """``(trainable tensors by name, optimizer state_dict, scheduler state_dict, state.json)`` of a checkpoint."""
    saved = _load_tensors(path / "trainable.safetensors")
    meta = json.loads((path / "optimizer.json").read_text())
    optimizer = optimizer_from_files(_load_tensors(path / "optimizer.safetensors"), meta)
    scheduler = json.loads((path / "scheduler.json").read_text())
    return saved, optimizer, scheduler, json.loads((path / "state.json").read_text())


def check_names(path: Path, saved: Mapping[str, Any], params: Mapping[str, Any]) -> None:
    """Raise :class:`MrdkitError` when the checkpoint's parameter names differ from the model's trainable ones."""
    if set(saved) != set(params):
        extra, missing = sorted(set(saved) - set(params)), sorted(set(params) - set(saved))
        raise MrdkitError(f"checkpoint {path} does not match the model's trainable parameters "
                          f"(unexpected: {extra[:3]}, missing: {missing[:3]}); was it made with other LoRA settings?")


def load_checkpoint(path: Path, *, params: Mapping[str, torch.nn.Parameter], optimizer: torch.optim.Optimizer,
                    scheduler: Any) -> dict[str, Any]:
    """Copy a checkpoint into ``params`` / ``optimizer`` / ``scheduler`` (bit-exact); returns its ``state.json``.

    Raises:
        MrdkitError: the checkpoint's parameter names differ from the model's trainable parameters.
    """
    saved, optimizer_state, scheduler_state, state = read_checkpoint(path)
    check_names(path, saved, params)
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(saved[name].to(device=p.device, dtype=p.dtype))
    optimizer.load_state_dict(optimizer_state)
    scheduler.load_state_dict(scheduler_state)
    return state

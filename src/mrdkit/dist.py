"""Process-group plumbing for multi-process runs (sharded MRD scoring, DDP unlearning): launch detection,
gloo/NCCL init and teardown, object collectives.

Every collective here is called by all ranks at the same point; a failure on one rank is shared (``agree``,
``on_rank0``) so no rank is left waiting in a collective its peers will never reach.
"""

from __future__ import annotations

import atexit
import os
from typing import Any, Callable, Optional

import torch
import torch.distributed as dist

from mrdkit.errors import MrdkitError

_OBJECT_GROUPS: dict[int, Any] = {}
_EXIT_HOOK: list[Callable[[], None]] = []  # the registered hook, so it is registered once per process


def env_world_size() -> int:
    """``WORLD_SIZE`` as set by torchrun / accelerate launch (1 when absent)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def wants_distributed(flag: Optional[bool] = None) -> bool:
    """``flag`` if given, else True inside an initialised multi-process group or when ``WORLD_SIZE > 1``."""
    if flag is not None:
        return bool(flag)
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size() > 1
    return env_world_size() > 1


def init_distributed(device: Optional[torch.device] = None) -> tuple[int, int]:
    """(rank, world size), initialising the default process group from the launcher's env if needed.

    Backend: NCCL when the model is on CUDA (after ``torch.cuda.set_device(LOCAL_RANK)``), gloo otherwise. Without
    a launcher (``WORLD_SIZE`` unset or 1) nothing is initialised and this is rank 0 of 1."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if env_world_size() <= 1:
        return 0, 1
    if not dist.is_available():
        raise MrdkitError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    backend = "nccl" if device is not None and torch.device(device).type == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)
    destroy_group_at_exit()
    return dist.get_rank(), dist.get_world_size()


def destroy_group_at_exit() -> None:
    """Register (once) an exit hook that destroys the default process group if it is still up.

    Why: a rank that reaches interpreter teardown with gloo's worker threads alive dies with SIGABRT ("terminate
    called without an active exception"), which the launcher reports as a failed run although the work was done.
    """
    if not _EXIT_HOOK:
        _EXIT_HOOK.append(_destroy_group)
        atexit.register(_destroy_group)


def _destroy_group() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _object_group():
    """A gloo group for pickled-object collectives (CPU tensors), whatever the default backend is."""
    if dist.get_backend() == "gloo":
        return None
    key = id(dist.group.WORLD)
    if key not in _OBJECT_GROUPS:  # collective: every rank reaches this at the same call
        _OBJECT_GROUPS[key] = dist.new_group(backend="gloo")
    return _OBJECT_GROUPS[key]


def gather_objects(obj: Any, world: int) -> list[Any]:
    """``all_gather_object``: every rank's ``obj`` in rank order (no communication when world == 1)."""
    if world == 1:
        return [obj]
    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj, group=_object_group())
    return out


def agree(error: Optional[str], world: int) -> None:
    """Raise the same :class:`MrdkitError` on every rank if any rank reports an error (no rank left waiting)."""
    errors = [(r, e) for r, e in enumerate(gather_objects(error, world)) if e]
    if errors:
        raise MrdkitError("; ".join(f"rank {r}: {e}" for r, e in errors))


def on_rank0(fn: Callable[[], Any], rank: int, world: int, share: bool = True) -> Any:
    """Run ``fn`` on rank 0 only, return its result on every rank (if ``share``); a failure raises on all ranks."""
    value, error = None, None
    if rank == 0:
        try:
            value = fn()
        except Exception as exc:  # noqa: BLE001 - re-raised below, after the other ranks have been told
            error = exc
    message = None if error is None else f"{type(error).__name__}: {error}"
    shared = gather_objects((value if share else None, message), world)[0]
    if error is not None:
        raise error
    if shared[1]:
        raise MrdkitError(f"rank 0 failed: {shared[1]}")
    return value if rank == 0 else shared[0]

"""Multi-process MRD on ``torch.distributed`` (torchrun / ``accelerate launch --multi_gpu``; gloo on CPU, NCCL on GPU).

MRD (arXiv 2504.06658) costs one forward pass per sample per draw (two for the antithetic estimator), and draws
and samples are independent, so both split across processes without changing a single bit:

* ``draws`` (default): rank r runs the draws k with ``k % world == r`` on every sample. Draw k's noise comes from
  per-(seed, draw, parameter) generators (:mod:`mrdkit.scoring.perturb`), so it is the same on any rank.
* ``samples``: rank r takes a contiguous slice of the samples and runs every draw on it (for forget sets too
  large for one process's passes). Each sample is padded to its own width (``canonical_batches``), and a CPU
  forward is bitwise independent of the other rows of its batch, so a slice gives the same per-sample values.

Ranks do not talk while they score. At the end every rank's (S, n_r, K_r) values are gathered and fed to one
accumulator in draw order, the sequence a single process adds, so MRD, raw draws and standard errors are bitwise
equal to a 1-process run. Each rank checkpoints its values atomically to ``state/rank{r}.safetensors``; resume
needs the same world size and shard mode. Only rank 0 writes the run directory's outputs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch

from mrdkit.dist import agree, gather_objects, init_distributed
from mrdkit.errors import MrdkitError
from mrdkit.logprob import model_device
from mrdkit.scoring.config import SHARDS, MRDConfig
from mrdkit.scoring.engine import (
    EngineResult,
    base_pass,
    batch_ids,
    draw_values,
    engine_config,
    resolve_config,
    run_meta,
)
from mrdkit.scoring.estimators import ESTIMATORS, make_accumulator
from mrdkit.scoring.perturb import eval_mode, make_perturber, select_parameters

STATE = "rank{rank}.safetensors"


@dataclass
class ShardPlan:
    """What one rank scores: input rows ``[lo, hi)`` under the draws ``draws``."""

    shard: str
    rank: int
    world: int
    lo: int  # rows [lo, hi) in input order
    hi: int
    draws: list[int]


def plan_shard(shard: str, rank: int, world: int, n: int, draws: int) -> ShardPlan:
    """Round-robin draws (``draws``) or contiguous sample slices (``samples``) for ``rank`` of ``world``."""
    if shard == "draws":
        return ShardPlan(shard, rank, world, 0, n, list(range(rank, draws, world)))
    if shard == "samples":
        return ShardPlan(shard, rank, world, n * rank // world, n * (rank + 1) // world, list(range(draws)))
    raise MrdkitError(f"unknown shard mode {shard!r} (known: {', '.join(SHARDS)})")


def slice_rows(batches: Sequence[dict[str, Any]], lo: int, hi: int) -> list[dict[str, Any]]:
    """Rows ``[lo, hi)`` (input order) of ``batches``, with explicit ids so they keep their global names."""
    ids, out, start = batch_ids(list(batches)), [], 0
    for batch in batches:
        n = batch["input_ids"].shape[0]
        a, z = max(lo - start, 0), min(hi - start, n)
        if a < z:
            out.append({k: v[a:z] for k, v in batch.items() if torch.is_tensor(v)} | {"ids": ids[start + a:start + z]})
        start += n
    return out


def save_shard(path: Path, done: dict[int, torch.Tensor], meta: dict[str, Any]) -> None:
    """Atomically write this rank's per-draw values: ``raw`` (S, n_r, K_r) and ``draws`` (K_r,)."""
    from safetensors.torch import save_file

    from mrdkit.runs import atomic_path, dumps

    keys = sorted(done)
    raw = torch.stack([done[k] for k in keys], dim=2) if keys else torch.zeros(0)
    with atomic_path(path) as tmp:
        save_file({"raw": raw.contiguous(), "draws": torch.tensor(keys, dtype=torch.int64)}, str(tmp),
                  metadata={"meta": dumps(meta, indent=None)})


def load_shard(path: Path, meta: dict[str, Any]) -> dict[int, torch.Tensor]:
    """This rank's saved ``{draw: (S, n_r) values}``; refuses a file made by another plan or settings."""
    from safetensors import safe_open

    from mrdkit.runs import refuse_if_differs

    if not path.exists():
        return {}
    with safe_open(str(path), framework="pt") as fh:
        saved, raw, keys = json.loads(fh.metadata()["meta"]), fh.get_tensor("raw"), fh.get_tensor("draws")
    refuse_if_differs(saved, meta, f"{path} was written by another run or layout",
                      "resume with the same world size, shard mode and settings, or start afresh")
    return {int(k): raw[:, :, j].clone() for j, k in enumerate(keys.tolist())}


def _run_shard(model, batches, plan: ShardPlan, done: dict[int, torch.Tensor], save: Callable[[bool], None],
               progress, cfg: MRDConfig, width_multiple):
    """Score this rank's draws (skipping those in ``done``) on its rows; returns (base, names, n_elements, passes)."""
    signs = ESTIMATORS.get(cfg.estimator).signs
    params = select_parameters(model, cfg.param_pattern)
    with eval_mode(model), make_perturber(cfg.perturb_mode, model, params, cfg.torch_compute_dtype(),
                                          **cfg.noise()) as pert:
        base = base_pass(model, batches, width_multiple)
        passes = len(base.batches)
        for i, k in enumerate(plan.draws):
            if k in done:
                continue
            done[k] = torch.stack(draw_values(model, base, pert, k, signs)).cpu()  # (S, n_r)
            passes += len(signs) * len(base.batches)
            save(i + 1 == len(plan.draws))
            if progress is not None:  # approximate draws done by all ranks (they run in step)
                progress(min((i + 1) * plan.world, cfg.draws) if plan.shard == "draws" else i + 1, cfg.draws)
    return base, pert.names, pert.n_elements, passes


def _assemble(parts: list[dict[str, Any]], n: int, cfg: MRDConfig, meta):
    """Put every rank's values back at (rows, draws) and feed one accumulator in draw order 0..K-1."""
    draws = cfg.draws
    full = torch.zeros(len(ESTIMATORS.get(cfg.estimator).signs), n, draws, dtype=torch.float64)
    seen = torch.zeros(n, draws, dtype=torch.bool)
    base, n_tokens = torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.int64)
    for part in parts:
        rows, cols = slice(part["lo"], part["hi"]), torch.tensor(part["draws"], dtype=torch.int64)
        full[:, rows, cols] = part["raw"]
        seen[rows, cols] = True
        base[rows], n_tokens[rows] = part["base"], part["n_tokens"]
    if not bool(seen.all()):  # a plan bug, never silently zeros
        raise MrdkitError("distributed MRD: some (sample, draw) values are missing after the gather")
    acc = make_accumulator(cfg.estimator, n, meta=meta)
    for k in range(draws):
        acc.add(k, *full[:, :, k])
    return acc.finalize(cfg.clip), base, n_tokens


def score_batches_distributed(model: torch.nn.Module, batches: Sequence[dict[str, Any]],
                              cfg: Optional[MRDConfig] = None, *, width_multiple: Optional[int] = 8,
                              state_dir: str | Path | None = None, resume: bool = False,
                              progress: Optional[Callable[[int, int], None]] = None, **overrides: Any) -> EngineResult:
    """:func:`mrdkit.scoring.engine.score_batches` split over the ranks of the default process group.

    Call it on every rank with the same arguments. ``cfg.shard`` picks the split (``draws`` or ``samples``).
    Returns the full :class:`EngineResult` on every rank, bitwise equal to the 1-process result
    (``forward_passes`` counts all ranks). ``state_dir``: where each rank saves ``rank{r}.safetensors`` every
    ``cfg.checkpoint_every`` new draws; ``resume`` continues from those files.
    """
    cfg = resolve_config(cfg, overrides)
    rank, world = init_distributed(model_device(model))
    batches, ids = list(batches), batch_ids(list(batches))
    plan = plan_shard(cfg.shard, rank, world, len(ids), cfg.draws)
    mine = slice_rows(batches, plan.lo, plan.hi)
    meta = {k: v for k, v in run_meta(cfg, ids, width_multiple).items() if k != "ids"}
    shard_meta = meta | {"shard": cfg.shard, "rank": rank, "world": world, "lo": plan.lo, "hi": plan.hi,
                         "ids": ids[plan.lo:plan.hi]}
    path = Path(state_dir) / STATE.format(rank=rank) if state_dir is not None else None
    done, error = {}, None
    try:
        done = load_shard(path, shard_meta) if (resume and path is not None) else {}
    except MrdkitError as exc:
        error = str(exc)
    agree(error, world)  # a rank that cannot resume stops them all
    done = {k: v for k, v in done.items() if k in plan.draws}  # resuming with another K keeps the draws that fit
    new = []

    def save(last: bool) -> None:  # every checkpoint_every new draws and after this rank's last draw
        new.append(1)
        if path is not None and (last or len(new) % cfg.checkpoint_every == 0):
            save_shard(path, done, shard_meta)

    base, names, n_elements, passes = _run_shard(model, mine, plan, done, save, progress, cfg, width_multiple)
    keys = sorted(done)
    part = {"lo": plan.lo, "hi": plan.hi, "draws": keys, "passes": passes, "base": base.sequence_logprob(),
            "n_tokens": base.n_tokens(), "raw": torch.stack([done[k] for k in keys], dim=2) if keys else torch.zeros(0)}
    parts = gather_objects(part, world)
    est, base_lp, n_tokens = _assemble(parts, len(ids), cfg, meta)
    config = engine_config(cfg, meta, shard=cfg.shard, world_size=world)
    return EngineResult(ids, est, base_lp, n_tokens, config, names, n_elements, sum(p["passes"] for p in parts))

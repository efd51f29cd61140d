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
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch

from mrdkit.errors import MrdkitError
from mrdkit.logprob import model_device
from mrdkit.scoring.dist_comm import (  # noqa: F401 - re-exported: the public names live here too
    agree, env_world_size, gather_objects, init_distributed, on_rank0, wants_distributed)
from mrdkit.scoring.engine import EngineResult, base_pass, batch_ids, draw_values
from mrdkit.scoring.estimators import ESTIMATORS, make_accumulator
from mrdkit.scoring.lowmem import make_perturber
from mrdkit.scoring.perturb import eval_mode, select_parameters

SHARDS = ("draws", "samples")
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

    from mrdkit.runs import differing_keys

    if not path.exists():
        return {}
    with safe_open(str(path), framework="pt") as fh:
        saved, raw, keys = json.loads(fh.metadata()["meta"]), fh.get_tensor("raw"), fh.get_tensor("draws")
    diff = differing_keys(saved, meta)
    if diff:
        raise MrdkitError(f"{path} was written by another run or layout (differs in: {', '.join(diff)}); resume "
                          "with the same world size, shard mode and settings, or start afresh")
    return {int(k): raw[:, :, j].clone() for j, k in enumerate(keys.tolist())}


def _run_shard(model, batches, plan: ShardPlan, done: dict[int, torch.Tensor], save: Callable[[bool], None],
               progress, *, estimator: str, draws: int, perturb_mode: str, width_multiple, param_pattern, **noise):
    """Score this rank's draws (skipping those in ``done``) on its rows; returns (base, names, n_elements, passes)."""
    signs = ESTIMATORS.get(estimator).signs
    params = select_parameters(model, param_pattern)
    with eval_mode(model), make_perturber(perturb_mode, model, params, **noise) as pert:
        base = base_pass(model, batches, width_multiple)
        passes = len(base.batches)
        for i, k in enumerate(plan.draws):
            if k in done:
                continue
            done[k] = torch.stack(draw_values(model, base, pert, k, signs)).cpu()  # (S, n_r)
            passes += len(signs) * len(base.batches)
            save(i + 1 == len(plan.draws))
            if progress is not None:  # approximate draws done by all ranks (they run in step)
                progress(min((i + 1) * plan.world, draws) if plan.shard == "draws" else i + 1, draws)
    return base, pert.names, pert.n_elements, passes


def _assemble(parts: list[dict[str, Any]], n: int, draws: int, estimator: str, clip, meta):
    """Put every rank's values back at (rows, draws) and feed one accumulator in draw order 0..K-1."""
    full = torch.zeros(len(ESTIMATORS.get(estimator).signs), n, draws, dtype=torch.float64)
    seen = torch.zeros(n, draws, dtype=torch.bool)
    base, n_tokens = torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.int64)
    for part in parts:
        rows, cols = slice(part["lo"], part["hi"]), torch.tensor(part["draws"], dtype=torch.int64)
        full[:, rows, cols] = part["raw"]
        seen[rows, cols] = True
        base[rows], n_tokens[rows] = part["base"], part["n_tokens"]
    if not bool(seen.all()):  # a plan bug, never silently zeros
        raise MrdkitError("distributed MRD: some (sample, draw) values are missing after the gather")
    acc = make_accumulator(estimator, n, meta=meta)
    for k in range(draws):
        acc.add(k, *full[:, :, k])
    return acc.finalize(clip), base, n_tokens


def score_batches_distributed(model: torch.nn.Module, batches: Sequence[dict[str, Any]], *, draws: int, sigma: float,
                              estimator: str = "antithetic", seed: int = 0, scheme: str = "mrdkit",
                              param_pattern: Optional[str] = None, relative: bool = False, clip: Optional[float] = None,
                              width_multiple: Optional[int] = 8, perturb_mode: str = "copy", shard: str = "draws",
                              state_dir: str | Path | None = None, resume: bool = False, checkpoint_every: int = 1,
                              progress: Optional[Callable[[int, int], None]] = None) -> EngineResult:
    """:func:`mrdkit.scoring.engine.score_batches` split over the ranks of the default process group.

    Call it on every rank with the same arguments. Returns the full :class:`EngineResult` on every rank, bitwise
    equal to the 1-process result (``forward_passes`` counts all ranks). ``state_dir``: where each rank saves
    ``rank{r}.safetensors`` every ``checkpoint_every`` new draws; ``resume`` continues from those files.
    """
    if draws < 1:
        raise MrdkitError(f"need draws >= 1 (got {draws})")
    rank, world = init_distributed(model_device(model))
    batches, ids = list(batches), batch_ids(list(batches))
    plan = plan_shard(shard, rank, world, len(ids), draws)
    mine = slice_rows(batches, plan.lo, plan.hi)
    meta = {"estimator": estimator, "sigma": float(sigma), "seed": int(seed), "scheme": scheme,
            "relative": bool(relative), "param_pattern": param_pattern, "width_multiple": width_multiple}
    shard_meta = meta | {"shard": shard, "rank": rank, "world": world, "lo": plan.lo, "hi": plan.hi,
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
        if path is not None and (last or len(new) % checkpoint_every == 0):
            save_shard(path, done, shard_meta)

    base, names, n_elements, passes = _run_shard(
        model, mine, plan, done, save, progress, estimator=estimator, draws=draws, perturb_mode=perturb_mode,
        width_multiple=width_multiple, param_pattern=param_pattern, sigma=sigma, seed=seed, relative=relative,
        scheme=scheme)
    keys = sorted(done)
    part = {"lo": plan.lo, "hi": plan.hi, "draws": keys, "passes": passes, "base": base.sequence_logprob(),
            "n_tokens": base.n_tokens(), "raw": torch.stack([done[k] for k in keys], dim=2) if keys else torch.zeros(0)}
    parts = gather_objects(part, world)
    est, base_lp, n_tokens = _assemble(parts, len(ids), draws, estimator, clip, meta)
    config = meta | {"draws": int(draws), "clip": clip, "perturb_mode": perturb_mode, "shard": shard,
                     "world_size": world}
    return EngineResult(ids, est, base_lp, n_tokens, config, names, n_elements, sum(p["passes"] for p in parts))


def score_mrd_distributed(module: torch.nn.Module, samples: Sequence[Any], tokenizer: Any, cfg: Any, *,
                          out_dir: str | Path | None = None, resume: bool = False, overwrite: bool = False,
                          progress: Optional[Callable[[int, int], None]] = None):
    """The distributed body of :func:`mrdkit.scoring.mrd.score_mrd` (same outputs; only rank 0 writes them).

    Rank 0 opens the run directory, computes proxies and the floating-point floor check and shares them; every
    rank scores its shard (``cfg.shard``) with per-rank state in ``<out_dir>/state``. Returns the full
    :class:`~mrdkit.scoring.mrd.MRDResult` on every rank.
    """
    from mrdkit.scoring import mrd as m

    rank, world = init_distributed(model_device(module))
    from mrdkit.models import model_fingerprint

    run = on_rank0(lambda: m._open_run(out_dir, cfg, samples, resume, overwrite, model=model_fingerprint(module),
                                       world_size=world), rank, world, share=False)
    batches = m.make_batches(samples, tokenizer, cfg, module)

    def rank0_work(timing: dict[str, float]) -> tuple[Any, Any, dict[str, float]]:
        proxies = m._proxies(module, batches, samples, cfg, run, timing)
        return proxies, m._floor_diagnostics(module, batches, cfg), timing

    proxies, diagnostics, timing = on_rank0(lambda: rank0_work({}), rank, world)
    tic = time.perf_counter()
    result = score_batches_distributed(
        module, batches, draws=cfg.draws, sigma=cfg.sigma, estimator=cfg.estimator, seed=cfg.seed,
        scheme=cfg.scheme, param_pattern=cfg.param_pattern, relative=cfg.relative, clip=cfg.clip,
        perturb_mode=cfg.perturb_mode, shard=cfg.shard, resume=resume, checkpoint_every=cfg.checkpoint_every,
        state_dir=Path(out_dir) / "state" if out_dir is not None else None, progress=progress)
    timing.update(draws_s=time.perf_counter() - tic, forward_passes=float(result.forward_passes))
    out = m._to_result(result, proxies, cfg, timing, run)
    out.diagnostics, out.out_dir = diagnostics, Path(out_dir) if out_dir is not None else None
    if run is not None:
        m.write_outputs(run, out, result.estimate.first_order_values)
    gather_objects(None, world)  # barrier: every rank returns after rank 0 has written the outputs
    return out

"""The interleaved timed runs of ``mrd_speed.py``: the reference loop, mrdkit's engine (with per-phase timers
wrapped around the library) and forward-only passes, slot by slot in rotating order.

Loaded by the entry scripts through ``common.load("speed_timing")``.
"""

from __future__ import annotations

import argparse
from contextlib import contextmanager
from typing import Any, Iterator

import mrdkit_benchmarks_common as common  # registered by the entry script (see common.load)

reference = common.load("reference_loop")

RUNNERS = ("reference", "mrdkit", "forward")


# ----------------------------------------------------------------------------- instrumenting mrdkit


@contextmanager
def instrument(device: str) -> Iterator[dict[str, float]]:
    """Time ``Perturber.__init__`` (the clone), ``apply`` (noise), ``restore``, the engine's ``base_pass`` and, on
    CPU, its per-batch ``token_logprobs`` (forward) and ``relative_change`` (reduction) calls of the draws.

    The library is wrapped, not modified; a call made from inside a timed call counts as the outer call's time
    (a ``restore`` inside ``apply`` is noise time, the forward inside ``base_pass`` is base time).
    """
    from mrdkit.scoring import engine
    from mrdkit.scoring.perturb import Perturber

    stats: dict[str, float] = {}
    depth = [0]
    originals = {name: getattr(Perturber, name) for name in ("__init__", "apply", "restore")}

    def wrap(fn, key):
        def timed_call(*args, **kwargs):
            if depth[0]:
                return fn(*args, **kwargs)
            depth[0] += 1
            try:
                with common.timed(device, stats, key):
                    return fn(*args, **kwargs)
            finally:
                depth[0] -= 1
        return timed_call

    keys = {"__init__": "setup_s", "apply": "noise_s", "restore": "restore_s"}
    for name, fn in originals.items():
        setattr(Perturber, name, wrap(fn, keys[name]))
    # Engine functions are looked up in the engine's globals at call time, so patching the module attribute
    # reaches them. Per-batch calls are timed on CPU only: a per-batch GPU sync would serialise the pipeline.
    engine_keys = {"base_pass": "base_s"}
    if not device.startswith("cuda"):
        engine_keys.update(token_logprobs="forward_s", relative_change="reduce_s")
    engine_originals = {name: getattr(engine, name) for name in engine_keys}
    for name, fn in engine_originals.items():
        setattr(engine, name, wrap(fn, engine_keys[name]))
    try:
        yield stats
    finally:
        for name, fn in originals.items():
            setattr(Perturber, name, fn)
        for name, fn in engine_originals.items():
            setattr(engine, name, fn)


# --------------------------------------------------------------------------------------- timed runs


def run_reference(model, inputs, args, device) -> dict[str, Any]:
    """Time :func:`reference_loop.reference_loop` on per-sample ``inputs`` (from
    :func:`reference_loop.reference_inputs`)."""
    times: dict[str, float] = {}
    stats = {} if device == "cpu" else None  # per-phase GPU syncs would distort the GPU timing
    with common.timed(device, times, "total_s"):
        mrd, raw = reference.reference_loop(model, inputs, args.draws, args.sigma, stats, device)
    return {**times, **(stats or {}), "mrd": mrd, "raw": raw, "samples": len(inputs)}


def run_mrdkit(model, batches, args, device) -> dict[str, Any]:
    """Time ``score_batches(estimator="paper", scheme="reference")`` with the per-phase timers of :func:`instrument`."""
    from mrdkit.scoring.engine import score_batches

    times: dict[str, float] = {}
    with instrument(device) as stats, common.timed(device, times, "total_s"):
        res = score_batches(model, batches, draws=args.draws, sigma=args.sigma, estimator="paper",
                            scheme="reference")
    times.update(stats)
    for clock in ("_s", "_cpu_s"):  # the draw loop: everything after the clone and the base pass
        once = stats.get(f"base{clock}", 0.0) + stats.get(f"setup{clock}", 0.0)
        times[f"draws{clock}"] = times[f"total{clock}"] - once
    return {**times, "mrd": res.estimate.mrd.tolist(), "raw": res.estimate.values.tolist(),
            "forward_passes": res.forward_passes}


def forward_batches(model, batches, device) -> list[dict]:
    """mrdkit's canonical batches (the ones its draws evaluate), already on the device."""
    from mrdkit.models import context_length
    from mrdkit.scoring.engine import canonical_batches

    return [{k: v.to(device) if hasattr(v, "to") else v for k, v in b.items()}
            for b in canonical_batches(batches, 8, context_length(model))[0]]


def run_forward(model, canon, passes: int, device) -> dict[str, Any]:
    """The limit: ``passes`` plain passes of ``token_logprobs`` over the canonical batches, no noise."""
    from mrdkit.logprob import token_logprobs

    times: dict[str, float] = {}
    with common.timed(device, times, "total_s"):
        for _ in range(passes):
            for batch in canon:
                token_logprobs(model, batch)
    times["pass_s"], times["pass_cpu_s"] = times["total_s"] / passes, times["total_cpu_s"] / passes
    return times


def measure(model, batches: list[dict], args, device) -> list[dict[str, Any]]:
    """Interleave: slot c runs the reference on sample chunk c, mrdkit on ALL samples, and K + 1 forward-only
    passes over all samples (as many as mrdkit's base pass + K draws), in an order rotating from slot to slot.

    Why mrdkit always runs on all samples: its noise is drawn once per draw for the whole set, so a chunk-sized
    mrdkit run would overstate its per-sample overhead. The reference has no shared work, so its chunks add up
    to exactly one full run.
    """
    inputs = reference.reference_inputs(batches, device)
    canon = forward_batches(model, batches, device)
    warm = argparse.Namespace(draws=1, sigma=args.sigma)
    # untimed warm-up: the first passes of a process pay for allocator and kernel set-up
    run_reference(model, inputs[:1], warm, device)
    run_mrdkit(model, batches[:1], warm, device)
    run_forward(model, canon[:1], 1, device)
    rows = []
    for slot, part in enumerate(common.chunks(inputs, args.chunks)):
        order = RUNNERS[slot % 3:] + RUNNERS[:slot % 3]
        row: dict[str, Any] = {"slot": slot, "order": list(order)}
        for name in order:
            row[name] = (run_reference(model, part, args, device) if name == "reference" else
                         run_mrdkit(model, batches, args, device) if name == "mrdkit" else
                         run_forward(model, canon, args.draws + 1, device))
        common.log(f"  slot {slot}: reference on {len(part)} samples {row['reference']['total_s']:.1f} s, mrdkit "
                   f"on {len(inputs)} {row['mrdkit']['total_s']:.1f} s, forward pass {row['forward']['pass_s']:.2f} s")
        rows.append(row)
    return rows

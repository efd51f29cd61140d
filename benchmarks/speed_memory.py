"""Peak memory of MRD scoring for ``mrd_speed.py --memory`` / ``--memory-only``: forward-only passes, mrdkit (copy and
low-memory perturbation) and the reference loop, each mode measured in a fresh subprocess of the speed script.

Loaded by the entry scripts through ``common.load("speed_memory")``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
from typing import Any

import mrdkit_benchmarks_common as common  # registered by the entry script (see common.load)

reference = common.load("reference_loop")
timing = common.load("speed_timing")

MEMORY_MODES = ("forward", "mrdkit", "lowmem", "reference")


def lowmem_available() -> bool:
    """Does this mrdkit have the per-module low-memory perturbation (``score_batches(perturb_mode="lowmem")``)?"""
    import inspect

    from mrdkit.scoring.engine import score_batches

    return "perturb_mode" in inspect.signature(score_batches).parameters


def _memory_run(mode: str, model, batches, draws: int, sigma: float, device: str):
    """A zero-argument callable running ``mode`` (engine modes use mrdkit's default noise scheme)."""
    from mrdkit.scoring.engine import score_batches

    if mode == "forward":
        return lambda: timing.run_forward(model, timing.forward_batches(model, batches, device), draws + 1, device)
    if mode == "reference":
        inputs = reference.reference_inputs(batches, device)
        return lambda: timing.run_reference(model, inputs, argparse.Namespace(draws=draws, sigma=sigma), device)
    kwargs = {"perturb_mode": "lowmem"} if mode == "lowmem" else {}
    return lambda: score_batches(model, batches, draws=draws, sigma=sigma, estimator="paper", **kwargs)


def _param_bytes(model) -> dict[str, float]:
    """Parameter MiB, largest tensor MiB (the noise buffer) and, where available, the low-memory mode's
    analytic clone size (shared parameters + the largest module's own parameters)."""
    params = list(model.parameters())
    out = {"params_mib": sum(p.numel() * p.element_size() for p in params) / 2**20,
           "largest_param_mib": max(p.numel() * p.element_size() for p in params) / 2**20}
    try:
        from mrdkit.scoring.perturb import largest_group_bytes

        out["lowmem_clone_mib"] = largest_group_bytes(model)["lowmem"] / 2**20
    except ImportError:
        pass
    return out


def memory_probe(spec: str, dtype: str, split: str, n: int, draws: int, mode: str, batch_size: int,
                 sigma: float = 1e-5, device: str = "auto") -> dict[str, Any]:
    """Peak memory of one mode above the RSS after loading model and data: ``forward`` (draws + 1 plain passes),
    ``mrdkit`` (``score_batches``, one clone of the weights), ``lowmem`` (``perturb_mode="lowmem"``) or
    ``reference`` (the reference loop, which keeps a saved state dict).

    Meant to run in a fresh process (:func:`memory_section`), so that no other run's peak or allocator cache
    counts; ``peak_extra_mib`` also includes allocator slack, so compare modes with each other.
    """
    import torch

    from mrdkit.models import resolve_device

    device = str(resolve_device(device))
    lm, _, _, batches = common.load_bench_inputs(spec, dtype, device, split, n, batch_size)
    run = _memory_run(mode, lm.model, batches, draws, sigma, device)
    gc.collect()
    before, reset = common.rss_mib(), common.reset_peak_rss()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        cuda_before = torch.cuda.memory_allocated()
    run()
    out = {"mode": mode, "model": lm.spec, "dtype": dtype, **_param_bytes(lm.model), "rss_before_mib": before,
           "peak_extra_mib": common.peak_rss_mib() - before, "hwm_reset": reset}
    if device.startswith("cuda"):
        out["cuda_peak_extra_mib"] = (torch.cuda.max_memory_allocated() - cuda_before) / 2**20
    return out


def memory_section(args, script: str) -> list[dict[str, Any]]:
    """Run :func:`memory_probe` for every (model, mode) in its own subprocess of ``script`` (``mrd_speed.py``,
    whose hidden ``--memory-child`` flag runs one probe); one row per model."""
    modes = [m for m in MEMORY_MODES if m != "lowmem" or lowmem_available()]
    rows = []
    for spec in dict.fromkeys(m for m in args.memory_model.split(",") if m):
        row: dict[str, Any] = {}
        for mode in modes:
            # the small packaged split keeps each child's tokenizer fit and data load cheap
            n = min(args.memory_samples, 4) if mode == "reference" else args.memory_samples  # peaks on sample 1
            cfg = dict(spec=spec, dtype=args.dtype, split=common.QUICK_SPLIT, n=n,
                       draws=args.draws, mode=mode, batch_size=args.memory_batch_size, sigma=args.sigma)
            proc = subprocess.run([sys.executable, script, "--memory-child", json.dumps(cfg),
                                   "--threads", str(args.threads)], capture_output=True, text=True, check=True,
                                  env={**os.environ, "HF_HUB_OFFLINE": "1"})
            probe = json.loads(proc.stdout.strip().splitlines()[-1])
            row.update({k: v for k, v in probe.items() if k.endswith("_mib") and "extra" not in k
                        and k != "rss_before_mib"}, model=probe["model"], hwm_reset=probe["hwm_reset"])
            row[f"{mode}_extra_mib"] = probe["peak_extra_mib"]
            if "cuda_peak_extra_mib" in probe:
                row[f"{mode}_cuda_extra_mib"] = probe["cuda_peak_extra_mib"]
            common.log(f"  memory {spec} {mode}: +{probe['peak_extra_mib']:.1f} MiB")
        for mode in modes[1:]:
            row[f"{mode}_minus_forward_mib"] = row[f"{mode}_extra_mib"] - row["forward_extra_mib"]
        row["mrdkit_minus_forward_in_params"] = row["mrdkit_minus_forward_mib"] / row["params_mib"]
        rows.append(row)
    return rows


def memory_table(rows: list[dict[str, Any]]) -> str:
    """Peak RSS above the loaded model per mode, and the difference to forward-only in MiB and weight copies."""
    modes = [m for m in MEMORY_MODES if f"{m}_extra_mib" in rows[0]]
    body = [[r["model"], r["params_mib"], r["largest_param_mib"], r.get("lowmem_clone_mib", "")]
            + [r[f"{m}_extra_mib"] for m in modes] + [r[f"{m}_minus_forward_mib"] for m in modes[1:]]
            + [r["mrdkit_minus_forward_in_params"]] for r in rows]
    header = (["model", "params MiB", "largest param MiB", "lowmem clone MiB"] + [f"{m} +MiB" for m in modes]
              + [f"{m} - forward" for m in modes[1:]] + ["mrdkit - forward, in weight copies"])
    return common.table(body, header)

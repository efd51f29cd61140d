"""MRD scoring speed: mrdkit's engine vs a faithful re-implementation of the reference loop (arXiv 2504.06658).

The reference code scores one sample at a time (batch size 1) and, for every sample and every draw k, reloads the
saved state dict, re-runs the unperturbed forward, seeds the global RNG with ``42 + k`` and adds
``randn_like(p) * sigma`` to every parameter in ``named_parameters`` order. mrdkit
(``score_batches(..., estimator="paper", scheme="reference")``) draws the same noise from a private generator,
runs ONE unperturbed pass and perturbs once per draw for all batches (paper-notes section 1).

Runs are interleaved slot by slot (reference, mrdkit, forward-only in rotating order) so that drifting machine
speed hits all three alike; the script reports ratios (medians over slots) and checks that both give the same
MRD in float64. ``--memory`` / ``--memory-only`` add the peak RSS of scoring vs forward-only passes, each mode in
a fresh subprocess.

    python benchmarks/mrd_speed.py                      # defaults: 400 TOFU forget10 samples, 2 draws, fp64
    python benchmarks/mrd_speed.py --memory-only        # peak RSS: forward / mrdkit / lowmem / reference
    python benchmarks/mrd_speed.py --quick --json /tmp/speed.json
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import subprocess
import sys
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence


def _load_common():
    """``benchmarks/common.py`` under a unique module name (benchmarks/ is not a package, and a bare
    ``import common`` could pick up another project's module of that name)."""
    name = "mrdkit_benchmarks_common"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().with_name("common.py"))
        module = sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return sys.modules[name]


common = _load_common()

REL_TOL = 1e-9  # fp64: the two implementations may only differ by rounding of the padded batched forward
RUNNERS = ("reference", "mrdkit", "forward")


# ------------------------------------------------------------------------------------ the reference loop


def reference_inputs(batches: Sequence[dict], device: str) -> list[tuple[Any, Any]]:
    """Per-sample unpadded ``(input_ids, labels)`` of shape (1, L), cut from mrdkit's right-padded batches so both
    implementations score exactly the same tokens."""
    out = []
    for batch in batches:
        for i in range(batch["input_ids"].shape[0]):
            length = int(batch["attention_mask"][i].sum())
            out.append((batch["input_ids"][i:i + 1, :length].to(device), batch["labels"][i:i + 1, :length].to(device)))
    return out


def _reference_logprobs(model, input_ids, labels):
    """Scored token log-probs of one unpadded sample, (n,) float64.

    The log-softmax is taken in float64 as mrdkit does (with float64 weights the logits already are), so the
    value check compares the estimator, not two log-softmax precisions.
    """
    import torch

    with torch.no_grad():
        logits = model(input_ids=input_ids, use_cache=False).logits  # (1, L, V)
    logp = torch.log_softmax(logits[0, :-1].to(torch.float64), dim=-1)  # (L-1, V)
    targets = labels[0, 1:]  # (L-1,)
    mask = targets != -100
    return logp.gather(-1, targets.clamp(min=0)[:, None])[:, 0][mask]


def reference_loop(model, inputs: Sequence[tuple[Any, Any]], draws: int, sigma: float,
                   stats: Optional[dict[str, float]] = None, device: str = "cpu") -> tuple[list, list]:
    """The reference estimator, loop for loop: ``MRD = |(1/K) sum_k sum_t (l_t - l'_t) / l_t|`` per sample.

    ``stats`` (CPU only) receives the time spent reloading the state dict, in forward passes and adding noise.

    Returns:
        (mrd per sample, per-sample lists of the K per-draw relative changes r_k).
    """
    import torch

    def phase(key: str):
        return common.timed(device, stats, key) if stats is not None else nullcontext()

    saved_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    mrds, raws = [], []
    with torch.random.fork_rng(devices=devices):  # the reference seeds the global RNG; leave it as it was
        for input_ids, labels in inputs:
            rs = []
            for k in range(draws):
                with phase("reload_s"):
                    model.load_state_dict(saved_state)
                with phase("forward_s"):
                    base = _reference_logprobs(model, input_ids, labels)  # re-run for every draw, as the reference
                with phase("noise_s"):
                    torch.manual_seed(42 + k)
                    with torch.no_grad():
                        for _, p in model.named_parameters():
                            p.add_(torch.randn_like(p) * sigma)
                with phase("forward_s"):
                    perturbed = _reference_logprobs(model, input_ids, labels)
                valid = base != 0  # the reference skips tokens with l_t == 0
                rs.append(((base[valid] - perturbed[valid]) / base[valid]).sum().item())
            raws.append(rs)
            mrds.append(abs(sum(rs) / draws))
    model.load_state_dict(saved_state)
    return mrds, raws


# ------------------------------------------------------------------------------ instrumenting mrdkit


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


# ------------------------------------------------------------------------------------------ timed runs


def run_reference(model, inputs, args, device) -> dict[str, Any]:
    """Time :func:`reference_loop` on per-sample ``inputs`` (from :func:`reference_inputs`)."""
    times: dict[str, float] = {}
    stats = {} if device == "cpu" else None  # per-phase GPU syncs would distort the GPU timing
    with common.timed(device, times, "total_s"):
        mrd, raw = reference_loop(model, inputs, args.draws, args.sigma, stats, device)
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
    from mrdkit.scoring.engine import canonical_batches, max_positions

    return [{k: v.to(device) if hasattr(v, "to") else v for k, v in b.items()}
            for b in canonical_batches(batches, 8, max_positions(model))[0]]


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
    inputs = reference_inputs(batches, device)
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


# ----------------------------------------------------------------------------------------- analysis


def compare_values(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-sample relative differences of MRD and of the raw per-draw r_k, reference vs every mrdkit run.

    Besides the maximum: quantiles, the number of samples over :data:`REL_TOL`, and the largest MRD difference
    in units of the median MRD (a rounding difference on a sample whose MRD is tiny is not an error in a ranking).
    """
    import numpy as np

    ref_mrd = np.array([v for r in rows for v in r["reference"]["mrd"]])
    ref_raw = np.array([v for r in rows for v in r["reference"]["raw"]])
    mk_mrd = np.array([r["mrdkit"]["mrd"] for r in rows])  # (runs, N)
    mk_raw = np.array([r["mrdkit"]["raw"] for r in rows])  # (runs, N, K)

    def rel(a, b):
        scale = np.maximum(np.abs(a), np.abs(b))
        return np.where(scale > 0, np.abs(a - b) / np.where(scale > 0, scale, 1), 0.0)

    d_mrd = rel(ref_mrd[None], mk_mrd).max(axis=0)  # (N,) worst over runs
    d_raw = rel(ref_raw[None], mk_raw).max(axis=(0, 2))  # (N,)
    return {"max_rel_diff_mrd": float(d_mrd.max()), "max_rel_diff_draws": float(d_raw.max()),
            "rel_diff_mrd_quantiles": {q: float(np.quantile(d_mrd, float(q))) for q in ("0.5", "0.9", "0.99")},
            "max_abs_diff_mrd_over_median_mrd": float(np.abs(ref_mrd[None] - mk_mrd).max() / np.median(ref_mrd)),
            "n_samples": len(ref_mrd), "tolerance": REL_TOL, "equal": bool(max(d_mrd.max(), d_raw.max()) <= REL_TOL),
            "samples_over_tolerance": int((np.maximum(d_mrd, d_raw) > REL_TOL).sum()),
            "worst_samples": [{"index": int(i), "rel_diff_mrd": float(d_mrd[i]), "rel_diff_draws": float(d_raw[i])}
                              for i in np.argsort(-np.maximum(d_mrd, d_raw))[:5]]}


def exact_check(model, batches: list[dict], rows: list[dict[str, Any]], args, device) -> dict[str, Any]:
    """mrdkit at the reference's shapes (batch size 1, no padding): are its per-draw r_k BITWISE the reference's?

    This separates the estimator from the forward pass: a padded batch of several samples rounds differently
    from a lone unpadded one in the last bits, and ``(l_t - l'_t) / l_t`` magnifies that for tokens with
    ``l_t`` near 0 (confidently predicted tokens of a trained model).
    """
    import torch

    from mrdkit.scoring.engine import score_batches

    inputs = reference_inputs(batches, device)[:args.exact_samples]
    ones = [{"input_ids": i, "attention_mask": torch.ones_like(i), "labels": lab, "ids": [str(n)]}
            for n, (i, lab) in enumerate(inputs)]
    res = score_batches(model, ones, draws=args.draws, sigma=args.sigma, estimator="paper", scheme="reference",
                        width_multiple=None)
    ref_raw = [v for r in rows for v in r["reference"]["raw"]][:len(inputs)]
    got = res.estimate.values.tolist()
    diffs = [abs(a - b) / max(abs(a), abs(b), 1e-300) for ra, rb in zip(ref_raw, got) for a, b in zip(ra, rb)]
    return {"n_samples": len(inputs), "bitwise_equal": ref_raw == got, "max_rel_diff_draws": max(diffs, default=0.0)}


def summarise(rows: list[dict[str, Any]], draws: int, clock: str = "_s") -> dict[str, Any]:
    """Ratios on the wall (``_s``) or CPU (``_cpu_s``) clock: per slot (median reported) and of the totals.

    Per slot, the reference time is scaled from its chunk to all N samples (its cost is per sample).
    """
    def t(run: dict[str, Any], key: str) -> float:
        return run.get(f"{key}{clock}", 0.0)

    def per_slot(fn):
        return common.median([fn(r["reference"], r["mrdkit"], r["forward"]) for r in rows])

    def mean(runner, key):
        return sum(t(r[runner], key) for r in rows) / len(rows)

    n = sum(r["reference"]["samples"] for r in rows)
    ref_total, mk_total, mk_draws = sum(t(r["reference"], "total") for r in rows), mean("mrdkit", "total"), \
        mean("mrdkit", "draws")
    return {
        "clock": "wall" if clock == "_s" else "cpu",
        "speedup": per_slot(lambda ref, mk, fw: t(ref, "total") * n / ref["samples"] / t(mk, "total")),
        "speedup_of_totals": ref_total / mk_total,
        "speedup_per_draw": ref_total / mk_draws,
        "per_draw_over_forward": per_slot(lambda ref, mk, fw: t(mk, "draws") / draws / t(fw, "pass")),
        "total_over_forward_passes": per_slot(lambda ref, mk, fw: t(mk, "total") / t(fw, "total")),
        "noise_restore_share": (mean("mrdkit", "noise") + mean("mrdkit", "restore")) / mk_total,
        "noise_share": mean("mrdkit", "noise") / mk_total,
        "restore_share": mean("mrdkit", "restore") / mk_total,
        "base_pass_share": mean("mrdkit", "base") / mk_total,
        "draw_breakdown": {key: mean("mrdkit", key) / mk_draws for key in ("forward", "reduce", "noise", "restore")},
        "reference_breakdown": {key: sum(t(r["reference"], key) for r in rows) / ref_total
                                for key in ("forward", "noise", "reload")},
        "reference_ms_per_sample_draw": 1e3 * ref_total / (n * draws),
        "mrdkit_ms_per_sample_draw": 1e3 * mk_total / (n * draws),
        "forward_ms_per_sample": 1e3 * mean("forward", "pass") / n,
    }


# -------------------------------------------------------------------------------------------- memory


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
        return lambda: run_forward(model, forward_batches(model, batches, device), draws + 1, device)
    if mode == "reference":
        inputs = reference_inputs(batches, device)
        return lambda: run_reference(model, inputs, argparse.Namespace(draws=draws, sigma=sigma), device)
    kwargs = {"perturb_mode": "lowmem"} if mode == "lowmem" else {}
    return lambda: score_batches(model, batches, draws=draws, sigma=sigma, estimator="paper", **kwargs)


def _param_bytes(model) -> dict[str, float]:
    """Parameter MiB, largest tensor MiB (the noise buffer) and, where available, the low-memory mode's
    analytic clone size (shared parameters + the largest module's own parameters)."""
    params = list(model.parameters())
    out = {"params_mib": sum(p.numel() * p.element_size() for p in params) / 2**20,
           "largest_param_mib": max(p.numel() * p.element_size() for p in params) / 2**20}
    try:
        from mrdkit.scoring.lowmem import largest_group_bytes

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
    lm, _ = common.load_bench_model(spec, dtype, device, split)
    batches = common.encode(common.tofu_samples(split, n), lm.tokenizer, batch_size)
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


def memory_section(args) -> list[dict[str, Any]]:
    """Run :func:`memory_probe` for every (model, mode) in its own subprocess; one row per model."""
    modes = [m for m in MEMORY_MODES if m != "lowmem" or lowmem_available()]
    rows = []
    for spec in dict.fromkeys(m for m in args.memory_model.split(",") if m):
        row: dict[str, Any] = {}
        for mode in modes:
            # the small packaged split keeps each child's tokenizer fit and data load cheap
            n = min(args.memory_samples, 4) if mode == "reference" else args.memory_samples  # peaks on sample 1
            cfg = dict(spec=spec, dtype=args.dtype, split=common.QUICK_SPLIT, n=n,
                       draws=args.draws, mode=mode, batch_size=args.memory_batch_size, sigma=args.sigma)
            proc = subprocess.run([sys.executable, __file__, "--memory-child", json.dumps(cfg),
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


# ---------------------------------------------------------------------------------------------- main


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--samples", type=int, default=400, help="TOFU samples (default 400)")
    p.add_argument("--draws", type=int, default=2, help="noise draws K (default 2: the reference loop is slow)")
    p.add_argument("--sigma", type=float, default=1e-5)
    p.add_argument("--dtype", default="float64", help="model weights: float64 (default; value check) or float32")
    p.add_argument("--model", default=None, help="auto (default: testbed if present, else tiny) | "
                   "tiny[-llama][:sizes] | model dir; --quick: a 1-layer tiny GPT-2")
    p.add_argument("--split", default="forget10", help="TOFU split (default forget10)")
    p.add_argument("--batch-size", type=int, default=16, help="mrdkit batch size (default 16, as score_mrd)")
    p.add_argument("--exact-samples", type=int, default=40, help="samples re-scored by mrdkit at batch size 1 "
                   "for the bitwise check (default 40)")
    p.add_argument("--chunks", type=int, default=2, help="interleaving slots: the reference runs on this many "
                   "sample chunks; mrdkit and K + 1 forward-only passes run on all samples in every slot (default 2)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (default 1: steady timings; 0 = torch's)")
    p.add_argument("--memory", action="store_true", help="also measure peak RSS per mode (subprocesses, ~3 min)")
    p.add_argument("--memory-only", action="store_true", help="only the memory check, no timing")
    p.add_argument("--memory-model", default="tiny-gpt2:d512-l8-h8-v2048",
                   help="model(s) for the memory check, comma-separated (default: a 26M-parameter tiny GPT-2, "
                        "whose weights outweigh a batch's activations; 'auto' = the benchmark model)")
    p.add_argument("--memory-samples", type=int, default=32, help="samples per memory run (reference: 4)")
    p.add_argument("--memory-batch-size", type=int, default=4, help="small: activations stay below one weight copy")
    p.add_argument("--quick", action="store_true", help="tiny sizes for a smoke test")
    p.add_argument("--json", default=None, help="where to write the results (default runs/benchmarks/"
                   "mrd_speed.json, or mrd_memory.json with --memory-only)")
    p.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.model = args.model or (common.QUICK_MODEL if args.quick else "auto")
    args.json = args.json or str(common.RESULTS / ("mrd_memory.json" if args.memory_only else "mrd_speed.json"))
    if args.quick:
        args.samples, args.draws, args.chunks = min(args.samples, 6), min(args.draws, 2), 2
        args.split = common.QUICK_SPLIT
    return args


def _summary_rows(s: dict[str, Any]) -> list[list[Any]]:
    """(label, value) rows of one clock's summary, in print order."""
    b = s["draw_breakdown"]
    return [["speed-up, reference / mrdkit (median over slots)", s["speedup"]],
            ["speed-up of the totals", s["speedup_of_totals"]],
            ["speed-up per draw (large K): reference / mrdkit draw loop", s["speedup_per_draw"]],
            ["mrdkit time per draw / forward-only pass", s["per_draw_over_forward"]],
            ["mrdkit total / (K+1) forward-only passes", s["total_over_forward_passes"]],
            ["share of mrdkit time: noise + restore", s["noise_restore_share"]],
            ["  noise (Perturber.apply) / restore", f"{s['noise_share']:.3f} / {s['restore_share']:.3f}"],
            ["share of mrdkit time: base pass (+ re-batching)", s["base_pass_share"]],
            ["draw loop: forward / reduction / noise / restore", " / ".join(f"{v:.3f}" for v in b.values())],
            ["reference: forward / noise / state-dict reload",
             " / ".join(f"{v:.3f}" for v in s["reference_breakdown"].values())],
            ["ms per sample-draw: reference / mrdkit",
             f"{s['reference_ms_per_sample_draw']:.1f} / {s['mrdkit_ms_per_sample_draw']:.1f}"],
            ["forward-only ms per sample", s["forward_ms_per_sample"]]]


TARGETS = {0: ">= 5", 3: "<= 1.15"}


def memory_table(rows: list[dict[str, Any]]) -> str:
    """Peak RSS above the loaded model per mode, and the difference to forward-only in MiB and weight copies."""
    modes = [m for m in MEMORY_MODES if f"{m}_extra_mib" in rows[0]]
    body = [[r["model"], r["params_mib"], r["largest_param_mib"], r.get("lowmem_clone_mib", "")]
            + [r[f"{m}_extra_mib"] for m in modes] + [r[f"{m}_minus_forward_mib"] for m in modes[1:]]
            + [r["mrdkit_minus_forward_in_params"]] for r in rows]
    header = (["model", "params MiB", "largest param MiB", "lowmem clone MiB"] + [f"{m} +MiB" for m in modes]
              + [f"{m} - forward" for m in modes[1:]] + ["mrdkit - forward, in weight copies"])
    return common.table(body, header)


def report(result: dict[str, Any]) -> str:
    """The tables printed to stdout."""
    c, env = result["check"], result["environment"]
    rows = [[label, cpu, wall, TARGETS.get(i, "")] for i, ((label, cpu), (_, wall)) in
            enumerate(zip(_summary_rows(result["summary_cpu"]), _summary_rows(result["summary_wall"])))]
    q = c["rel_diff_mrd_quantiles"]
    rows.append(["max rel. diff MRD / per-draw r_k", f"{c['max_rel_diff_mrd']:.2g} / {c['max_rel_diff_draws']:.2g}",
                 "", f"<= {c['tolerance']:g}: {'OK' if c['equal'] else 'FAIL'}"])
    rows.append(["rel. diff MRD: median / 90% / 99%; samples over tolerance",
                 f"{q['0.5']:.2g} / {q['0.9']:.2g} / {q['0.99']:.2g}; "
                 f"{c['samples_over_tolerance']} of {c['n_samples']}",
                 "", ""])
    rows.append(["max |diff MRD| / median MRD", f"{c['max_abs_diff_mrd_over_median_mrd']:.2g}", "", ""])
    b1 = c["batch_size_1"]
    rows.append([f"mrdkit at batch size 1, no padding ({b1['n_samples']} samples): r_k bitwise equal",
                 str(b1["bitwise_equal"]), "", f"max rel. diff {b1['max_rel_diff_draws']:.2g}"])
    lines = [f"model {result['model']} ({result['n_params']:,} params), {result['config']['dtype']}, device "
             f"{env['device']}, {env['threads']} thread(s); {c['n_samples']} samples x {result['config']['draws']} "
             f"draws; primary clock: {result['summary']['clock']}",
             common.table(rows, ["measure", "CPU time", "wall time", "target"])]
    return "\n\n".join(lines)


def speed_section(args, device: str) -> dict[str, Any]:
    """Load model and data, run the interleaved timing and the value checks."""
    lm, what = common.load_bench_model(args.model, args.dtype, device, args.split)
    samples = common.tofu_samples(args.split, args.samples)
    common.log(f"mrd_speed: {what}, {len(samples)} samples, {args.draws} draws, {args.dtype}, {device}")
    batches = common.encode(samples, lm.tokenizer, args.batch_size)
    rows = measure(lm.model, batches, args, device)
    result = {"model": what, "n_params": lm.n_params,
              "summary_cpu": summarise(rows, args.draws, "_cpu_s"), "summary_wall": summarise(rows, args.draws),
              "check": compare_values(rows) | {"batch_size_1": exact_check(lm.model, batches, rows, args, device)},
              "slots": [{k: ({kk: vv for kk, vv in v.items() if kk not in ("mrd", "raw")} if isinstance(v, dict)
                              else v) for k, v in row.items()} for row in rows]}
    # CPU time is the steadier clock for one thread on a shared CPU; with more threads (which may spin) or a GPU
    # only the wall clock means what a user waits for.
    steady = device == "cpu" and common.environment(device)["threads"] == 1
    result["summary"] = result["summary_cpu" if steady else "summary_wall"]
    return result


def main(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """Run the benchmark; print the tables, write the JSON, return the result dict."""
    args = parse_args(argv)
    device = common.setup_torch(args.threads)
    if args.memory_child:
        out = memory_probe(**json.loads(args.memory_child))
        print(json.dumps(out))
        return out
    result = {"config": {k: v for k, v in vars(args).items() if k != "memory_child"},
              "environment": common.environment(device)}
    if not args.memory_only:
        result.update(speed_section(args, device))
        print(report(result))
    if args.memory or args.memory_only:
        result["memory"] = memory_section(args)
        print("\n" + memory_table(result["memory"]))
    common.write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()

"""One prepared GPU check for mrdkit's MRD engine (arXiv 2504.06658); finishes in a few minutes on one GPU.

On a ~1.1B-parameter Llama-style model built from config (TinyLlama shape: hidden 2048, 22 layers, vocab 32000,
random init, fp32) it measures, on TOFU forget01 + holdout01 samples from the embedded subset:

* tokens/s of a forward-only pass vs of the MRD draws (antithetic, copy and lowmem perturbation modes), with the
  peak extra GPU memory of each mode and whether lowmem gives bitwise the copy-mode numbers;
* the share of time spent generating noise + restoring weights (copy: ``apply`` + ``restore`` vs forward time;
  lowmem: the extra time of a pass with the per-module hooks armed);
* how many weights a sigma = 1e-5 perturbation leaves unchanged in bf16 / fp16 / fp32 / fp64 (two matrices).

Usage (only the repo travels to the GPU machine; no network there):

    PYTHONPATH=src python benchmarks/gpu_check.py --out "$OUT/gpu_check.json"
    PYTHONPATH=src python benchmarks/gpu_check.py --tiny --out /tmp/gpu_check.json   # CPU smoke test, seconds
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Callable

import torch

BIG = dict(hidden=2048, intermediate=5632, layers=22, heads=32, kv_heads=4, vocab=32000, samples=64, draws=4,
           batch_size=16)
TINY = dict(hidden=64, intermediate=128, layers=2, heads=4, kv_heads=2, vocab=512, samples=4, draws=1, batch_size=4)
SIGMA = 1e-5


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="JSON report path")
    parser.add_argument("--tiny", action="store_true", help="tiny model and 4 samples (CPU smoke test)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--seed", type=int, default=0)
    for key, value in BIG.items():
        parser.add_argument(f"--{key.replace('_', '-')}", type=int, default=None, help=f"default {value} ({TINY[key]} "
                            "with --tiny)")
    args = parser.parse_args(argv)
    for key in BIG:
        if getattr(args, key) is None:
            setattr(args, key, (TINY if args.tiny else BIG)[key])
    return args


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, fn: Callable[[], Any]) -> tuple[Any, float]:
    """(fn(), wall seconds) with the device synchronised on both sides."""
    sync(device)
    tic = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - tic


def build_model(args: argparse.Namespace, device: torch.device) -> torch.nn.Module:
    """A randomly initialised fp32 LlamaForCausalLM made directly on ``device`` (seeded, global RNG restored)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
                         num_hidden_layers=args.layers, num_attention_heads=args.heads,
                         num_key_value_heads=args.kv_heads, max_position_embeddings=2048, tie_word_embeddings=False,
                         bos_token_id=0, eos_token_id=0, pad_token_id=1)
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.device(device):
        torch.manual_seed(args.seed)
        model = LlamaForCausalLM(config)
    return model.to(torch.float32).eval()


def make_data(args: argparse.Namespace):
    """TOFU forget01 + holdout01 (embedded subset) and a byte-level BPE fitted on them (ids < vocab)."""
    from mrdkit.data import load_tofu
    from mrdkit.tiny import build_tiny_tokenizer

    samples = (load_tofu("forget01") + load_tofu("holdout01"))[: args.samples]
    tokenizer = build_tiny_tokenizer([s.text for s in samples], vocab_size=min(args.vocab, 8192))
    return samples, tokenizer


def forward_check(model, base, device, repeats: int) -> dict[str, float]:
    """Forward-only throughput: full passes over the canonical batches (what one MRD draw-sign costs)."""
    from mrdkit.scoring.engine import relative_changes

    relative_changes(model, base)  # warm-up (kernels, allocator)
    _, seconds = timed(device, lambda: [relative_changes(model, base) for _ in range(repeats)])
    tokens = sum(int(b["attention_mask"].sum()) for b in base.batches)
    padded = sum(b["input_ids"].numel() for b in base.batches)
    return {"tokens_per_pass": tokens, "padded_tokens_per_pass": padded, "pass_s": seconds / repeats,
            "forward_tokens_per_s": tokens * repeats / seconds}


def noise_share(model, base, device, draws: int) -> dict[str, float]:
    """Time of noise + restore vs forward per draw-sign, for copy mode (apply/restore) and lowmem (armed hooks)."""
    from mrdkit.scoring.engine import relative_changes
    from mrdkit.scoring.perturb import LowMemPerturber, Perturber

    t_apply = t_restore = t_fwd = t_low = 0.0
    with Perturber(model, sigma=SIGMA) as pert:
        for k in range(draws):
            t_apply += timed(device, lambda: pert.apply(k, 1))[1]
            t_fwd += timed(device, lambda: relative_changes(model, base))[1]
            t_restore += timed(device, pert.restore)[1]
        n_elements = pert.n_elements
    with LowMemPerturber(model, sigma=SIGMA) as low:
        for k in range(draws):
            low.apply(k, 1)
            t_low += timed(device, lambda: relative_changes(model, base))[1]
            low.restore()
    noise = t_apply + t_restore
    return {"copy_apply_s": t_apply / draws, "copy_restore_s": t_restore / draws, "forward_s": t_fwd / draws,
            "noise_restore_share": noise / (noise + t_fwd), "noise_values_per_s": n_elements * draws / t_apply,
            "lowmem_pass_s": t_low / draws, "lowmem_overhead_share": max(t_low - t_fwd, 0.0) / t_low}


def mrd_check(model, batches, device, draws: int, tokens: int, n_batches: int) -> dict[str, Any]:
    """MRD draws in copy and lowmem mode: throughput, peak extra memory, bitwise agreement (and repeatability)."""
    from mrdkit.scoring.engine import score_batches

    out, results = {}, {}
    for mode in ("copy", "lowmem", "copy"):
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
        res, seconds = timed(device, lambda: score_batches(model, batches, draws=draws, sigma=SIGMA,
                                                           perturb_mode=mode))
        key = mode if mode not in results else "copy_repeat"
        results[key] = res
        out[key] = {"seconds": seconds, "forward_passes": res.forward_passes,
                    "tokens_per_s": tokens * res.forward_passes / n_batches / seconds}
        if device.type == "cuda":
            out[key]["peak_extra_bytes"] = torch.cuda.max_memory_allocated(device) - before
    same = {k: _same(results["copy"], results[k]) for k in ("lowmem", "copy_repeat")}
    out.update(lowmem_equals_copy=same["lowmem"], copy_repeat_equal=same["copy_repeat"])
    out["mrd_median"] = float(results["copy"].estimate.mrd.median())
    return out


def _same(a, b) -> bool:
    return bool(torch.equal(a.estimate.values, b.estimate.values)
                and torch.equal(a.estimate.first_order_values, b.estimate.first_order_values))


def unchanged_check(model, device, seed: int) -> dict[str, Any]:
    """Fraction of weights ``w + sigma * z == w`` (sigma = 1e-5) per dtype, over two weight matrices."""
    from mrdkit.seeding import make_generator

    names = [n for n, _ in model.named_parameters() if n.endswith(("q_proj.weight", "down_proj.weight"))][:2]
    out: dict[str, Any] = {"params": names}
    for dtype in (torch.bfloat16, torch.float16, torch.float32, torch.float64):
        same = total = 0
        for name in names:
            w = model.get_parameter(name).detach().to(dtype)
            gen = make_generator(seed, "gpu-check", name, device=str(w.device))
            z = torch.empty_like(w).normal_(generator=gen)
            same += int((w + z.mul_(SIGMA) == w).sum())  # the engine's rounding: delta rounded, then added
            total += w.numel()
        out[str(dtype).replace("torch.", "")] = {"unchanged": same, "total": total, "fraction": same / total}
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    import transformers

    from mrdkit.models import resolve_device
    from mrdkit.scoring.config import MRDConfig
    from mrdkit.scoring.engine import base_pass
    from mrdkit.scoring.mrd import make_batches
    from mrdkit.scoring.perturb import largest_group_bytes

    tic = time.perf_counter()
    device = resolve_device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = False  # true fp32 matmuls: the precision MRD is specified in
    model, init_s = timed(device, lambda: build_model(args, device))
    samples, tokenizer = make_data(args)
    batches = make_batches(samples, tokenizer, MRDConfig(batch_size=args.batch_size, max_length=512))
    base = base_pass(model, batches)
    report: dict[str, Any] = {
        "env": {"torch": torch.__version__, "transformers": transformers.__version__, "device": str(device),
                "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None},
        "model": {"params": sum(p.numel() for p in model.parameters()), "dtype": "float32", "init_s": init_s,
                  **{k: getattr(args, k) for k in BIG}},
        "memory_analytic_bytes": largest_group_bytes(model),
    }
    throughput = forward_check(model, base, device, repeats=2)
    throughput.update(noise_share(model, base, device, draws=args.draws))
    report["throughput"] = throughput
    report["mrd"] = mrd_check(model, batches, device, args.draws, throughput["tokens_per_pass"], len(base.batches))
    report["throughput"]["mrd_tokens_per_s"] = report["mrd"]["copy"]["tokens_per_s"]
    report["unchanged"] = unchanged_check(model, device, args.seed)
    report["total_s"] = time.perf_counter() - tic
    return report


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    report = run(args)
    from mrdkit.runs import atomic_write_json

    atomic_write_json(Path(args.out), report)
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()

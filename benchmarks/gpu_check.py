"""One prepared GPU check for mrdkit's MRD engine (arXiv 2504.06658); finishes in a few minutes on one GPU.

On a ~1.1B-parameter Llama-style model built from config (TinyLlama shape: hidden 2048, 22 layers, vocab 32000,
random init, fp32) it measures, on TOFU forget01 + holdout01 samples from the embedded subset:

* tokens/s of a forward-only pass vs of the MRD draws (antithetic, copy and lowmem perturbation modes), with the
  peak extra GPU memory of each mode and whether lowmem gives bitwise the copy-mode numbers;
* the share of time spent generating noise + restoring weights (copy: ``apply`` + ``restore`` vs forward time;
  lowmem: the extra time of a pass with the per-module hooks armed);
* how many weights a sigma = 1e-5 perturbation leaves unchanged in bf16 / fp16 / fp32 / fp64 (two matrices).

On random-init models of the testbed's size (GPT-2, d 256, 4 layers, vocabulary 4096) and of SmolLM2-135M's size
(Llama, d 576, 30 layers, 9 heads / 3 key-value heads, vocabulary 49152), built from config (issue 16):

* MRD speed against the reference loop (``benchmarks/reference_loop.py``: one sample at a time, state-dict reload,
  ``randn_like`` noise) on the GPU, with the largest relative difference of the MRD values (``--sections reference``);
* unlearning (NPO, 3 steps, batch 8 x 128 tokens) in fp32, with bf16 autocast, bf16 + gradient checkpointing and
  LoRA + bf16 + checkpointing: losses (bf16 against fp32), seconds per step, peak GPU memory
  (``torch.cuda.max_memory_allocated``) against ``mrd plan``'s prediction for the same run (``--sections unlearn``).

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
    parser.add_argument("--sections", default="mrd,reference,unlearn", help="comma list of mrd, reference, unlearn")
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


# ------------------------------------------------------------------------------- sized models (issue 16)

SIZED = {  # the testbed's and SmolLM2-135M's shapes (config.json of each); random init, built on the device
    "testbed": dict(arch="gpt2", hidden=256, intermediate=1024, layers=4, heads=4, kv_heads=4, vocab=4096),
    "smollm2": dict(arch="llama", hidden=576, intermediate=1536, layers=30, heads=9, kv_heads=3, vocab=49152),
}
SIZED_TINY = {
    "testbed": dict(arch="gpt2", hidden=32, intermediate=128, layers=1, heads=2, kv_heads=2, vocab=512),
    "smollm2": dict(arch="llama", hidden=32, intermediate=64, layers=2, heads=4, kv_heads=2, vocab=512),
}
VARIANTS = {  # unlearning runs compared with mrd plan: (UnlearnConfig overrides, LoRA)
    "fp32": ({}, False),
    "bf16": ({"mixed_precision": "bf16"}, False),
    "bf16+ckpt": ({"mixed_precision": "bf16", "gradient_checkpointing": True}, False),
    "lora+bf16+ckpt": ({"mixed_precision": "bf16", "gradient_checkpointing": True}, True),
}


def sized_config(shape: dict[str, Any]):
    """The GPT-2 or Llama config of a ``SIZED`` entry (tied embeddings, as both real models)."""
    from transformers import GPT2Config, LlamaConfig

    ids = dict(bos_token_id=0, eos_token_id=0, pad_token_id=1)
    if shape["arch"] == "gpt2":
        return GPT2Config(vocab_size=shape["vocab"], n_embd=shape["hidden"], n_inner=shape["intermediate"],
                          n_layer=shape["layers"], n_head=shape["heads"], n_positions=512, **ids)
    return LlamaConfig(vocab_size=shape["vocab"], hidden_size=shape["hidden"], intermediate_size=shape["intermediate"],
                       num_hidden_layers=shape["layers"], num_attention_heads=shape["heads"],
                       num_key_value_heads=shape["kv_heads"], max_position_embeddings=2048, tie_word_embeddings=True,
                       **ids)


def sized_model(config, device: torch.device, seed: int) -> torch.nn.Module:
    """A seeded random-init fp32 model of ``config`` made on ``device`` (global RNG restored)."""
    from transformers import AutoModelForCausalLM

    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.device(device):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    return model.eval()


def long_samples(n: int, prefix: str) -> list:
    """QA samples far longer than 128 tokens: each is cut to exactly the run's length (as plan_check.py)."""
    from mrdkit.data import Sample

    words = "river lantern garden mirror harbor winter orchard compass letter bridge forest signal".split()
    return [Sample(f"{prefix}:{i}", f"What did writer {i} describe?",
                   " ".join(words[(i + j) % len(words)] + str(j % 10) for j in range(400))) for i in range(n)]


def benchmark_common():
    """``benchmarks/common.py`` registered as ``mrdkit_benchmarks_common`` (as ``mrd_speed.py`` loads it: benchmarks/
    is no package), also when this script runs under ``runpy``."""
    import importlib.util
    import sys

    name = "mrdkit_benchmarks_common"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().with_name("common.py"))
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


def reference_check(model, tokenizer, device, draws: int, n: int) -> dict[str, Any]:
    """Seconds of the reference loop and of mrdkit (paper estimator, reference noise) on the same ``n`` samples;
    the MRD values' largest relative difference (fp32 on a GPU: rounding, not bitwise)."""
    common = benchmark_common()

    from mrdkit.scoring.config import MRDConfig
    from mrdkit.scoring.engine import score_batches
    from mrdkit.scoring.mrd import make_batches

    reference = common.load("reference_loop")
    samples = long_samples(n, "s")
    batches = make_batches(samples, tokenizer, MRDConfig(batch_size=16, max_length=128, template="plain"))
    inputs = reference.reference_inputs(batches, str(device))
    (ref_mrd, _), ref_s = timed(device, lambda: reference.reference_loop(model, inputs, draws, SIGMA,
                                                                        device=str(device)))
    ours, ours_s = timed(device, lambda: score_batches(model, batches, draws=draws, sigma=SIGMA, estimator="paper",
                                                       scheme="reference"))
    mrd = ours.estimate.mrd.tolist()
    rel = max(abs(a - b) / max(abs(b), 1e-30) for a, b in zip(mrd, ref_mrd))
    return {"samples": n, "draws": draws, "reference_s": ref_s, "mrdkit_s": ours_s, "speedup": ref_s / ours_s,
            "max_rel_diff_mrd": rel}


def unlearn_check(name: str, config, tokenizer, device, seed: int, steps: int = 3) -> dict[str, Any]:
    """NPO under each of :data:`VARIANTS`: losses, seconds per step, peak GPU memory vs ``mrd plan``."""
    from mrdkit.plan import GIB, PlanSettings, plan
    from mrdkit.unlearning.config import LoraSettings, UnlearnConfig
    from mrdkit.unlearning.loop import unlearn

    forget, out = long_samples(8, "f"), {}
    for label, (overrides, lora) in VARIANTS.items():
        model = sized_model(config, device, seed)
        cfg = UnlearnConfig(lr=1e-4, max_steps=steps, batch_size=8, max_length=128, template="plain",
                            device=device.type, monitor_retain=0, eval_batch_size=8, warmup_ratio=0.0,
                            lora=LoraSettings() if lora else None, **overrides)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        result, seconds = timed(device, lambda m=model, c=cfg: unlearn(m, tokenizer, forget, method="npo", config=c))
        settings = PlanSettings(method="npo", lora=lora, device=device.type, batch_size=8, seq_len=128,
                                eval_batch_size=8, **overrides)
        predicted = plan(name, settings, tasks=("unlearn",), config=config)["unlearn"]["peak"]
        row = {"losses": [r["loss"] for r in result.history[1:]], "s_per_step": seconds / steps,
               "predicted_gib": predicted / GIB}
        if device.type == "cuda":
            row["peak_gib"] = torch.cuda.max_memory_allocated(device) / GIB
            row["predicted_over_measured"] = predicted / torch.cuda.max_memory_allocated(device)
        out[label] = row
        del model, result
    base = out["fp32"]["losses"]
    for label in ("bf16", "bf16+ckpt"):
        out[label]["max_rel_loss_diff_vs_fp32"] = max(abs(a - b) / abs(b) for a, b in zip(out[label]["losses"], base))
    return out


def sized_checks(args: argparse.Namespace, sections: set[str]) -> dict[str, Any]:
    """The issue-16 sections on the testbed-sized and SmolLM2-sized models."""
    from mrdkit.models import resolve_device
    from mrdkit.tiny import build_tiny_tokenizer

    device = resolve_device(args.device)
    report: dict[str, Any] = {}
    tic = time.perf_counter()
    for name, shape in (SIZED_TINY if args.tiny else SIZED).items():
        config = sized_config(shape)
        texts = [s.prompt + " " + s.answer for s in long_samples(16, "t")]
        tokenizer = build_tiny_tokenizer(texts, vocab_size=min(shape["vocab"], 2048))
        entry: dict[str, Any] = {"params": sum(p.numel() for p in sized_model(config, device, args.seed).parameters())}
        if "reference" in sections:
            model = sized_model(config, device, args.seed)
            entry["reference"] = reference_check(model, tokenizer, device, draws=1 if args.tiny else 2,
                                                 n=2 if args.tiny else 16)
            del model
        if "unlearn" in sections:
            entry["unlearn"] = unlearn_check(name, config, tokenizer, device, args.seed, steps=2 if args.tiny else 3)
        report[name] = entry
    report["total_s"] = time.perf_counter() - tic
    return report


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    sections = set(args.sections.split(","))
    report = run(args) if "mrd" in sections else {}
    if sections & {"reference", "unlearn"}:
        report["sized"] = sized_checks(args, sections)
    from mrdkit.runs import atomic_write_json

    atomic_write_json(Path(args.out), report)
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()

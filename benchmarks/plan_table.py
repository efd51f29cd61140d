"""The Llama-2 7B / 13B / 70B rows of ``docs/scaling.md``: ``mrd plan`` for typical runs, from the public configs
(``mrdkit.plan.PUBLIC_CONFIGS``; no weights). Prints a markdown table (peak GiB per device, and whether it fits
one 80 GB device) and writes the numbers as JSON.

    HF_HUB_OFFLINE=1 PYTHONPATH=src python benchmarks/plan_table.py            # ~1 min on 2 CPU cores
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

MODELS = ("llama-2-7b", "llama-2-13b", "llama-2-70b")
# (label, task, PlanSettings overrides); unlearning: NPO, batch 4 x 512 tokens per device, stop-rule batch 16
RUNS: list[tuple[str, str, dict[str, Any]]] = [
    ("score, fp32, copy (+ gradient-norm proxy)", "score", {}),
    ("score, fp32, lowmem, no proxies", "score", {"perturb_mode": "lowmem", "grad_norm": False}),
    ("score, bf16 weights in fp32 module by module", "score",
     {"score_dtype": "bfloat16", "compute_dtype": "float32", "perturb_mode": "lowmem", "grad_norm": False}),
    ("score, bf16 weights in fp32, device_map over 2 GPUs", "score",
     {"score_dtype": "bfloat16", "compute_dtype": "float32", "perturb_mode": "lowmem", "grad_norm": False,
      "gpus": 2}),
    ("NPO full, fp32", "unlearn", {}),
    ("NPO full, bf16 autocast + checkpointing", "unlearn", {"mixed_precision": "bf16",
                                                             "gradient_checkpointing": True}),
    ("NPO LoRA r8, bf16 autocast + checkpointing", "unlearn", {"lora": True, "mixed_precision": "bf16",
                                                                "gradient_checkpointing": True}),
    ("NPO LoRA r8, bf16 weights + autocast + checkpointing", "unlearn",
     {"lora": True, "mixed_precision": "bf16", "weights_dtype": "bfloat16", "gradient_checkpointing": True}),
    ("NPO full, FSDP over 8 GPUs, bf16 autocast + checkpointing", "unlearn",
     {"fsdp": True, "gpus": 8, "mixed_precision": "bf16", "gradient_checkpointing": True}),
    ("NPO full, FSDP over 32 GPUs, bf16 autocast + checkpointing", "unlearn",
     {"fsdp": True, "gpus": 32, "mixed_precision": "bf16", "gradient_checkpointing": True}),
]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from mrdkit.plan import GIB, PlanSettings, plan
    from mrdkit.runs import atomic_write_json

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", default="runs/benchmarks/plan_table.json")
    parser.add_argument("--gpu-memory", type=float, default=80.0)
    args = parser.parse_args(argv)
    out: dict[str, Any] = {}
    print("| run | " + " | ".join(MODELS) + " |")
    print("|---|" + "---|" * len(MODELS))
    for label, task, overrides in RUNS:
        cells = []
        for model in MODELS:
            settings = PlanSettings(method="npo", gpu_memory_gib=args.gpu_memory, **overrides)
            budget = plan(model, settings, tasks=(task,))[task]
            out.setdefault(label, {})[model] = {"peak_gib": budget["peak"] / GIB, "fits": budget["fits"]}
            cells.append(f"{budget['peak'] / GIB:.1f}{'' if budget['fits'] else ' (no)'}")
        print(f"| {label} | " + " | ".join(cells) + " |", flush=True)
    atomic_write_json(Path(args.json), out)
    return out


if __name__ == "__main__":
    main()

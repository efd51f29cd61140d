"""Check ``mrd plan`` against measured peaks: CPU peak RSS of real unlearning / scoring runs on the local models.

Each case runs in a fresh subprocess with ``MALLOC_MMAP_THRESHOLD_=65536`` (glibc then maps every tensor larger
than 64 KiB on its own and returns it on free, so the resident set follows the live tensors instead of keeping
freed heap). After the model is loaded the peak (``VmHWM``) is reset through ``/proc/self/clear_refs``; the measured
peak is ``VmHWM - (VmRSS after loading - the weights' bytes)``: everything the run holds at its worst moment,
weights included, without the interpreter and the libraries (weights that transformers maps lazily from a
safetensors file are first copied into memory, so that the baseline holds them). The prediction is ``mrdkit.plan`` with
``device="cpu"`` for the same model, settings, batch and length (every sample is cut to exactly ``--seq-len``
tokens, so every batch has that width). Runs unlearn without a run directory (no checkpoint files).

    HF_HUB_OFFLINE=1 PYTHONPATH=src python benchmarks/plan_check.py                 # all cases (~10 min here)
    HF_HUB_OFFLINE=1 PYTHONPATH=src python benchmarks/plan_check.py --cases tiny-npo-full --quick
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

CASES: dict[str, dict[str, Any]] = {
    # model, task, plan settings (those that differ from PlanSettings' defaults besides device / batch / length)
    "tiny-npo-full": dict(model="tiny-llama:d256-l4-h4-v8192", task="unlearn", batch=8, seq=128,
                          settings=dict(method="npo")),
    "tiny-npo-lora": dict(model="tiny-llama:d256-l4-h4-v8192", task="unlearn", batch=8, seq=128,
                          settings=dict(method="npo", lora=True)),
    "testbed-graddiff-full": dict(model="testbed", task="unlearn", batch=8, seq=128,
                                  settings=dict(method="graddiff")),
    "testbed-npo-bf16-ckpt": dict(model="testbed", task="unlearn", batch=8, seq=128,
                                  settings=dict(method="npo", mixed_precision="bf16", gradient_checkpointing=True)),
    "testbed-score-copy": dict(model="testbed", task="score", batch=16, seq=128, settings=dict()),
    "smollm2-npo-full": dict(model="smollm2", task="unlearn", batch=2, seq=128, settings=dict(method="npo")),
    "smollm2-npo-lora": dict(model="smollm2", task="unlearn", batch=4, seq=128,
                             settings=dict(method="npo", lora=True)),
    "smollm2-score-copy": dict(model="smollm2", task="score", batch=8, seq=128, settings=dict(grad_norm=False)),
    "smollm2-score-bf16-lowmem": dict(model="smollm2", task="score", batch=8, seq=128,
                                      settings=dict(grad_norm=False, score_dtype="bfloat16",
                                                    compute_dtype="float32", perturb_mode="lowmem")),
}
QUICK = {"tiny-npo-full": dict(batch=2, seq=32), "testbed-score-copy": dict(batch=2, seq=32)}


def status(key: str) -> int:
    """``VmRSS`` / ``VmHWM`` of this process in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{key} not in /proc/self/status")


def samples_of(n: int, prefix: str) -> list:
    """``n`` QA samples with answers far longer than any tested length (each is cut to exactly ``seq`` tokens)."""
    from mrdkit.data import Sample

    words = "river lantern garden mirror harbor winter orchard compass letter bridge forest signal".split()
    return [Sample(f"{prefix}:{i}", f"What did writer {i} describe?",
                   " ".join(words[(i + j) % len(words)] + str(j % 10) for j in range(400))) for i in range(n)]


def load(spec: str, dtype: str, texts: list[str]):
    from mrdkit import load_model

    kwargs = {"tiny_texts": texts} if spec.startswith("tiny") else {}
    return load_model(spec, dtype=dtype, device="cpu", **kwargs)


def child(case: dict[str, Any]) -> dict[str, Any]:
    """Run one case in this process and return its measured peak (bytes)."""
    import gc

    import torch

    torch.set_num_threads(1)
    settings = case["settings"]
    forget, retain = samples_of(max(8, case["batch"]), "f"), samples_of(8, "r")  # scoring: one full batch
    dtype = settings.get("score_dtype", "float32")
    lm = load(case["model"], dtype, [s.prompt + s.answer for s in forget + retain])
    with torch.no_grad():  # transformers maps fp32 safetensors lazily: make the weights resident before the baseline
        for p in lm.model.parameters():
            p.data = p.data.clone()
    weights = sum(p.numel() * p.element_size() for p in lm.model.parameters())
    gc.collect()
    base = status("VmRSS") - weights
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    tic = time.perf_counter()
    if case["task"] == "unlearn":
        run_unlearn(lm, forget, retain, case)
    else:
        run_score(lm, forget, case)
    return {"measured": status("VmHWM") - base, "weights": weights, "seconds": time.perf_counter() - tic}


def run_unlearn(lm, forget, retain, case) -> None:
    from mrdkit.unlearning.config import LoraSettings, UnlearnConfig
    from mrdkit.unlearning.loop import unlearn

    s = case["settings"]
    cfg = UnlearnConfig(lr=1e-4, max_steps=2, batch_size=case["batch"], max_length=case["seq"], template="plain",
                        device="cpu", monitor_retain=0, eval_batch_size=case["batch"], warmup_ratio=0.0,
                        lora=LoraSettings() if s.get("lora") else None,
                        mixed_precision=s.get("mixed_precision", "no"),
                        gradient_checkpointing=s.get("gradient_checkpointing", False))
    unlearn(lm.model, lm.tokenizer, forget, retain, method=s.get("method", "npo"), config=cfg)


def run_score(lm, samples, case) -> None:
    from mrdkit.scoring import score_mrd

    s = case["settings"]
    extra = {k: s[k] for k in ("compute_dtype", "perturb_mode") if k in s}
    score_mrd(lm, samples, draws=1, batch_size=case["batch"], max_length=case["seq"], template="plain",
              grad_norm=s.get("grad_norm", True), diagnostics=False, **extra)


def predict(case: dict[str, Any]) -> dict[str, Any]:
    from mrdkit.plan import PlanSettings, plan

    settings = PlanSettings(device="cpu", batch_size=case["batch"], seq_len=case["seq"],
                            eval_batch_size=case["batch"], score_batch_size=case["batch"], **case["settings"])
    return plan(case["model"], settings, tasks=(case["task"],))


def run_case(name: str, case: dict[str, Any]) -> dict[str, Any]:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1", "MRDKIT_PROGRESS": "0"}
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(case)], capture_output=True, text=True,
                          env=env, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"case {name} failed:\n{proc.stderr[-3000:]}")
    measured = json.loads(proc.stdout.strip().splitlines()[-1])
    predicted = predict(case)[case["task"]]
    peak = predicted["peak"]
    return {"case": name, "model": case["model"], "task": case["task"], "batch": case["batch"], "seq": case["seq"],
            **case["settings"], "measured_mib": measured["measured"] / 2**20, "predicted_mib": peak / 2**20,
            "ratio": peak / measured["measured"], "weights_mib": measured["weights"] / 2**20,
            "phase": max(predicted["phases"], key=predicted["phases"].get), "seconds": measured["seconds"]}


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default=",".join(CASES), help="comma list of " + ", ".join(CASES))
    parser.add_argument("--quick", action="store_true", help="smaller batches (smoke test)")
    parser.add_argument("--json", default="runs/benchmarks/plan_check.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return []
    rows = []
    for name in args.cases.split(","):
        case = dict(CASES[name], **(QUICK.get(name, {}) if args.quick else {}))
        row = run_case(name, case)
        rows.append(row)
        print(f"{name:28s} measured {row['measured_mib']:9.1f} MiB  predicted {row['predicted_mib']:9.1f} MiB  "
              f"ratio {row['ratio']:.3f}  ({row['phase']}; {row['seconds']:.0f} s)", flush=True)
    from mrdkit.runs import atomic_write_json

    atomic_write_json(Path(args.json), {"rows": rows})
    return rows


if __name__ == "__main__":
    main()

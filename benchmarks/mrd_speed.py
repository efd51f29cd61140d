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

The parts live beside this file: ``reference_loop.py`` (the baseline), ``speed_timing.py`` (the interleaved timed
runs), ``speed_analysis.py`` (value checks, ratios, the printed table) and ``speed_memory.py`` (peak memory).

    python benchmarks/mrd_speed.py                      # defaults: 400 TOFU forget10 samples, 2 draws, fp64
    python benchmarks/mrd_speed.py --memory-only        # peak RSS: forward / mrdkit / lowmem / reference
    python benchmarks/mrd_speed.py --quick --json /tmp/speed.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

if "mrdkit_benchmarks_common" not in sys.modules:  # benchmarks/ is no package: common.py by path, as common.load
    _spec = importlib.util.spec_from_file_location("mrdkit_benchmarks_common",
                                                   Path(__file__).resolve().with_name("common.py"))
    _spec.loader.exec_module(sys.modules.setdefault(_spec.name, importlib.util.module_from_spec(_spec)))
import mrdkit_benchmarks_common as common  # noqa: E402

timing = common.load("speed_timing")  # the interleaved runs (the reference loop is in reference_loop.py)
analysis = common.load("speed_analysis")  # value checks, ratios, the printed table
memory = common.load("speed_memory")  # --memory / --memory-only


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


def speed_section(args, device: str) -> dict[str, Any]:
    """Load model and data, run the interleaved timing and the value checks."""
    lm, what, samples, batches = common.load_bench_inputs(args.model, args.dtype, device, args.split, args.samples,
                                                          args.batch_size)
    common.log(f"mrd_speed: {what}, {len(samples)} samples, {args.draws} draws, {args.dtype}, {device}")
    rows = timing.measure(lm.model, batches, args, device)
    result = {"model": what, "n_params": lm.n_params,
              "summary_cpu": analysis.summarise(rows, args.draws, "_cpu_s"),
              "summary_wall": analysis.summarise(rows, args.draws),
              "check": analysis.compare_values(rows)
              | {"batch_size_1": analysis.exact_check(lm.model, batches, rows, args, device)},
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
        out = memory.memory_probe(**json.loads(args.memory_child))
        print(json.dumps(out))
        return out
    result = {"config": {k: v for k, v in vars(args).items() if k != "memory_child"},
              "environment": common.environment(device)}
    if not args.memory_only:
        result.update(speed_section(args, device))
        print(analysis.report(result))
    if args.memory or args.memory_only:
        result["memory"] = memory.memory_section(args, __file__)
        print("\n" + memory.memory_table(result["memory"]))
    common.write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()

"""Sharded full-parameter unlearning with torch FSDP2 on CPU (2 processes, gloo), against one process.

One ``torchrun --nproc_per_node 2`` launch runs, with ``fsdp=True``:

1. NPO with the MRD-weighted ``cga`` sampler and the stop rule measured every step: its final weights, losses and
   forget probabilities match a single-process run over the same samples (batch 2 per rank = 4 in one process)
   within fp32 reduction-order tolerance, the same samples train at each step and the stop rule fires at the same
   step;
2. the same run killed by an exception after its step-2 checkpoint, then resumed: bitwise the uninterrupted run;
3. GradDiff (retain pairing seeded per rank) under FSDP and under DDP in the same processes: the same weights.

Checkpoints and the final ``model/`` hold whole tensors (the format of a single-process run).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mrdkit.data import Sample
from mrdkit.unlearning.config import UnlearnConfig

FORGET = [Sample(f"f:{i}", f"Where was author {i} born?", f"{i}7-9{i}3/5{i}8 #{i}{i}4") for i in range(8)]
RETAIN = [Sample(f"r:{i}", f"What does writer {i} collect?", "Maps, stamps and old clocks.") for i in range(6)]
SCORES = {s.id: float(i % 5) + 1.0 for i, s in enumerate(FORGET)}
TINY = dict(vocab_size=300, n_layer=2, d_model=32, n_head=2, max_position=64)
# no dropout (train_mode=False): a rank's dropout stream differs from the single process's by design
BASE = UnlearnConfig(lr=1e-2, max_steps=4, batch_size=2, schedule="constant", warmup_ratio=0.0, template="plain",
                     device="cpu", train_mode=False, checkpoint_every=2, stop_check_every=1, eval_every=1,
                     monitor_retain=4)
# The two runs differ only in the order of fp32 gradient sums (a reduce-scatter over 2 ranks vs one batch of 4).
# AdamW divides by sqrt(v): for a weight whose gradient is ~0 a last-bit difference becomes a visible fraction of
# lr, so the bound is per weight 1% of one step (lr 1e-2), with most weights required to agree to the fp32 ulp.
ATOL = 1e-2 * BASE.lr

DRIVER = '''
import dataclasses, json, sys
sys.path.insert(0, {here!r})
import torch
from test_fsdp_unlearn import BASE, FORGET, RETAIN, SCORES, TINY
from mrdkit.models import build_tiny_model
from mrdkit.unlearning.loop import unlearn

root, stop_prob = sys.argv[1], float(sys.argv[2])
texts = [s.prompt + s.answer for s in FORGET + RETAIN]

def fresh():
    return build_tiny_model(texts, **TINY)  # seeded: the same start model in every call and process

def crash_at(step):
    def callback(state):
        if state.step == step:
            raise RuntimeError("simulated crash")
        return {{}}
    return callback

def run(name, method="npo", crash=None, resume=False, **cfg):
    lm = fresh()
    config = dataclasses.replace(BASE, **cfg)
    res = unlearn(lm.model, lm.tokenizer, FORGET, RETAIN, method=method, sampler="cga", scores=SCORES,
                  config=config, out_dir=f"{{root}}/{{name}}", resume=resume, callbacks=[crash_at(crash)])
    return [{{k: row.get(k) for k in ("step", "loss", "forget_prob", "forget_ids")}} for row in res.history]

out = {{"npo": run("npo", fsdp=True, stop_prob=stop_prob)}}
try:
    run("resumed", fsdp=True, stop_prob=stop_prob, crash=3)
except RuntimeError:
    out["crashed"] = True
out["resumed"] = run("resumed", fsdp=True, stop_prob=stop_prob, resume=True)
out["graddiff_fsdp"] = run("graddiff_fsdp", method="graddiff", fsdp=True)
out["graddiff_ddp"] = run("graddiff_ddp", method="graddiff")
print("RESULT", torch.distributed.get_rank(), json.dumps(out), flush=True)
'''


def weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path / "model" / "model.safetensors"))


def single_process_npo(tmp_path: Path, stop_prob: float):
    from mrdkit.models import build_tiny_model
    from mrdkit.unlearning.loop import unlearn

    lm = build_tiny_model([s.prompt + s.answer for s in FORGET + RETAIN], **TINY)
    cfg = dataclasses.replace(BASE, batch_size=4, stop_prob=stop_prob)  # 2 ranks x 2 = the same 4 samples a step
    return unlearn(lm.model, lm.tokenizer, FORGET, RETAIN, method="npo", sampler="cga", scores=SCORES, config=cfg,
                   out_dir=tmp_path / "single", callbacks=[lambda state: {}])


@pytest.mark.distributed
def test_two_process_fsdp_matches_one_process_and_resumes_bitwise(tmp_path):
    probe = single_process_npo(tmp_path / "probe", stop_prob=None)
    probs = [row["forget_prob"] for row in probe.history]
    stop_prob = (probs[2] + probs[3]) / 2  # reached at step 3, not before: the rule must fire at the same step
    single = single_process_npo(tmp_path, stop_prob)
    assert single.stop_step == 3

    script = tmp_path / "driver.py"
    script.write_text(DRIVER.format(here=str(Path(__file__).parent)))
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "MRDKIT_PROGRESS": "0", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(script), str(tmp_path / "fsdp"), repr(stop_prob)], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = {int(line.split()[1]): json.loads(line.split(" ", 2)[2]) for line in proc.stdout.splitlines()
               if line.startswith("RESULT")}
    assert sorted(results) == [0, 1] and results[0] == results[1]  # every rank saw the same run
    out = results[0]

    # 1. FSDP vs one process: same samples per step, same stop step, losses / probabilities / weights within fp32
    fsdp, one = out["npo"], [{k: row.get(k) for k in ("step", "loss", "forget_prob", "forget_ids")}
                             for row in single.history]
    assert [row["step"] for row in fsdp] == [row["step"] for row in one] == [0, 1, 2, 3]  # stopped at step 3
    for a, b in zip(fsdp[1:], one[1:]):
        assert sorted(a["forget_ids"]) == sorted(b["forget_ids"])
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert a["forget_prob"] == pytest.approx(b["forget_prob"], rel=1e-5)
    sharded, whole = weights(tmp_path / "fsdp/npo"), weights(tmp_path / "single")
    assert sharded.keys() == whole.keys()
    diffs = torch.cat([(sharded[n] - whole[n]).abs().flatten() for n in whole])
    # measured: median 3.7e-9 (an fp32 ulp), 0.15% of the 37k weights above 1e-6, largest 1.1e-5
    assert float(diffs.median()) < 1e-7 and float((diffs > 1e-6).float().mean()) < 0.01
    assert float(diffs.max()) < ATOL
    from mrdkit.models import build_tiny_model

    start = build_tiny_model([s.prompt + s.answer for s in FORGET + RETAIN], **TINY).model.state_dict()
    moved = max(float((whole[n] - start[n]).abs().max()) for n in whole)
    assert moved > 10 * ATOL  # the tolerance is far below what training moved

    # 2. killed after the step-2 checkpoint, resumed: bitwise the uninterrupted run
    assert out.get("crashed") and out["resumed"] == out["npo"]
    resumed = weights(tmp_path / "fsdp/resumed")
    assert all(torch.equal(resumed[n], sharded[n]) for n in sharded)
    ckpt = json.loads((tmp_path / "fsdp/npo/checkpoints/step-000003/state.json").read_text())
    assert ckpt["step"] == 3

    # 3. retain pairing: GradDiff sharded (FSDP) and replicated (DDP) train the same weights
    a, b = weights(tmp_path / "fsdp/graddiff_fsdp"), weights(tmp_path / "fsdp/graddiff_ddp")
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=ATOL)
    assert max(float((a[n] - start[n]).abs().max()) for n in a) > 10 * ATOL  # graddiff did train
    assert [r["forget_ids"] for r in out["graddiff_fsdp"]] == [r["forget_ids"] for r in out["graddiff_ddp"]]


def test_fsdp_without_a_multi_process_launch_is_a_clear_error():
    from mrdkit.errors import MrdkitError
    from mrdkit.models import build_tiny_model
    from mrdkit.unlearning.loop import unlearn

    lm = build_tiny_model([s.prompt + s.answer for s in FORGET], **TINY)
    with pytest.raises(MrdkitError, match="fsdp needs a multi-process launch"):
        unlearn(lm.model, lm.tokenizer, FORGET, method="ga", config=dataclasses.replace(BASE, fsdp=True))


@pytest.mark.distributed
def test_cli_fsdp_launch_with_the_documented_cpu_config_file(tmp_path):
    """``accelerate launch --config_file docs/accelerate/cpu-2proc.yaml -m mrdkit unlearn --fsdp`` with bf16 autocast
    and gradient checkpointing: the run finishes, rank 0 writes one run directory and a whole model that loads."""
    import shutil

    from helpers import SMALL_MODEL, cli_env

    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    if accelerate is None:
        pytest.skip("accelerate's launcher is not installed")
    root = Path(__file__).resolve().parents[2]
    data = tmp_path / "forget.jsonl"
    data.write_text("".join(json.dumps({"question": s.prompt, "answer": s.answer}) + "\n" for s in FORGET))
    out = tmp_path / "run"
    proc = subprocess.run([accelerate, "launch", "--config_file", str(root / "docs/accelerate/cpu-2proc.yaml"),
                           "-m", "mrdkit", "unlearn", "--model", SMALL_MODEL, "--forget", str(data), "--method",
                           "npo", "--lr", "1e-2", "--batch-size", "2", "--max-steps", "2", "--device", "cpu",
                           "--fsdp", "--mixed-precision", "bf16", "--gradient-checkpointing", "--out", str(out),
                           "--set", "checkpoint_every=1"],
                          capture_output=True, text=True, env=cli_env(CUDA_VISIBLE_DEVICES=""), timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    config = json.loads((out / "config.json").read_text())["unlearn"]
    assert config["fsdp"] and config["mixed_precision"] == "bf16" and config["gradient_checkpointing"]
    rows = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [0, 1, 2] and len(rows[1]["forget_ids"]) == 4  # 2 ranks x 2
    from mrdkit.models import load_model

    model = load_model(out / "model", device="cpu").model
    assert sum(p.numel() for p in model.parameters()) > 0
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-000002"]

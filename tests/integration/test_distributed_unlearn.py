"""``mrd unlearn`` under ``accelerate launch --multi_gpu --num_processes 2`` (DDP; gloo on CPU), the launch that
docs/unlearning.md documents: each rank draws its own slice of the MRD-weighted (``cga``) forget stream and its own
retain pairing, both replicas end bitwise identical, and a second run with the same world size and seed (under a
different global RNG state) gives the same model and log byte for byte.

``test_unlearn_loop.py::test_two_processes_shard_the_sampler_and_stay_in_sync`` covers the library call under
torchrun; this test covers the command line and checks WHICH samples each rank trained on. DeepSpeed and Megatron-LM are
refused with a pointer to FSDP (tests/integration/test_fsdp_unlearn.py); that check is a unit test here.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import SMALL_MODEL, cli_env

FORGET = [(f"Where was writer {i} born?", f"Writer {i} was born in {c}.") for i, c in
          enumerate(["Lima", "Oslo", "Kyoto", "Porto", "Quito", "Riga", "Accra", "Hanoi"])]
RETAIN = [(f"What does painter {i} paint?", f"Painter {i} paints {t}.") for i, t in
          enumerate(["rivers", "clocks", "harbors", "winter", "towers", "orchards"])]
SEED, BATCH, ACCUM, STEPS = 0, 2, 2, 3

DRIVER = '''
import hashlib, json, os, sys
import torch
from mrdkit.cli.app import main
from mrdkit.unlearning import feed, loop

rank, record = int(os.environ["RANK"]), {"retain": [], "digest": []}
real_retain, real_finish = feed.Feed.retain_batch, loop.finish_run

def retain_batch(self, step, micro, size):  # the real pairing, recorded
    batch = real_retain(self, step, micro, size)
    record["retain"][-1][f"{step}.{micro}"] = batch["ids"]
    return batch

def finish(r, wall):  # this replica's final weights
    digest = hashlib.sha256()
    for _, p in sorted(r.raw.named_parameters()):
        digest.update(p.detach().cpu().contiguous().numpy().tobytes())
    record["digest"].append(digest.hexdigest())
    return real_finish(r, wall)

feed.Feed.retain_batch, loop.finish_run = retain_batch, finish
root, args = sys.argv[1], sys.argv[2:]
for run, global_seed in (("a", 1), ("b", 12345)):  # the global RNG must not matter
    torch.manual_seed(global_seed)
    record["retain"].append({})
    try:
        main(["unlearn", *args, "--out", os.path.join(root, run)])
    except SystemExit as exc:
        assert exc.code in (0, None), exc.code
print("RESULT", rank, json.dumps(record), flush=True)
'''


def write_jsonl(path: Path, pairs) -> Path:
    path.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in pairs))
    return path


@pytest.mark.distributed
def test_two_process_cli_run_shards_the_sampler_and_is_reproducible(tmp_path):
    import torch

    from mrdkit.samplers import build
    from mrdkit.seeding import make_generator

    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    if accelerate is None:
        pytest.skip("accelerate's launcher is not installed")
    forget, retain = write_jsonl(tmp_path / "forget.jsonl", FORGET), write_jsonl(tmp_path / "retain.jsonl", RETAIN)
    scores = [0.9, 0.1, 0.5, 0.3, 0.8, 0.2, 0.7, 0.4]
    (tmp_path / "mrd.jsonl").write_text("".join(json.dumps({"id": f"forget:{i}", "mrd": m}) + "\n"
                                                for i, m in enumerate(scores)))
    (tmp_path / "driver.py").write_text(DRIVER)
    args = ["--model", SMALL_MODEL, "--forget", forget, "--retain", retain, "--method", "graddiff", "--sampler",
            "cga", "--mrd", tmp_path / "mrd.jsonl", "--lr", "1e-2", "--batch-size", BATCH, "--grad-accum", ACCUM,
            "--max-steps", STEPS, "--seed", SEED, "--device", "cpu", "--set", "checkpoint_every=2"]
    launch = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0"]
    proc = subprocess.run([*launch, str(tmp_path / "driver.py"), str(tmp_path), *map(str, args)],
                          capture_output=True, text=True, env=cli_env(CUDA_VISIBLE_DEVICES=""), timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = {}
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT"):
            _, rank, payload = line.split(" ", 2)
            results[int(rank)] = json.loads(payload)
    assert sorted(results) == [0, 1], proc.stdout[-2000:]

    # 1. both replicas identical (DDP), and the second run identical to the first (same world size and seed)
    digests = {d for r in results.values() for d in r["digest"]}
    assert len(digests) == 1 and all(len(r["digest"]) == 2 for r in results.values())
    for name in ("model/model.safetensors", "train_log.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    config = json.loads((tmp_path / "a/config.json").read_text())
    assert config["unlearn"]["seed"] == SEED and config["sampler"] == "cga"

    # 2. each rank trained on ITS slice global[r::2] of the one MRD-weighted stream (gathered in rank order)
    rows = [json.loads(line) for line in (tmp_path / "a/train_log.jsonl").read_text().splitlines()][1:]
    per_step = BATCH * ACCUM
    shards = {}
    for r in (0, 1):
        sampler = build("cga", scores, seed=SEED, num_replicas=2, rank=r)
        shards[r] = []
        for epoch in range(STEPS):  # 8 samples / 2 ranks = one step of 2 x 2 per epoch
            sampler.set_epoch(epoch)
            shards[r] += [f"forget:{i}" for i in sampler]
    assert len(rows) == STEPS
    for s, row in enumerate(rows):
        expected = shards[0][s * per_step:(s + 1) * per_step] + shards[1][s * per_step:(s + 1) * per_step]
        assert row["forget_ids"] == expected, (s, row["forget_ids"], expected)

    # 3. retain pairing seeded per (step, micro-batch, rank): the ranks draw different retain rows
    for run in (0, 1):
        for r in (0, 1):
            pairs = results[r]["retain"][run]
            assert sorted(pairs) == [f"{s}.{m}" for s in range(1, STEPS + 1) for m in range(ACCUM)]
            for key, ids in pairs.items():
                step, micro = map(int, key.split("."))
                g = make_generator(SEED, "retain-pairing", step, micro, r)
                want = torch.randperm(len(RETAIN), generator=g)[:BATCH].tolist()
                assert ids == [f"retain:{i}" for i in want], (r, key)
    assert any(results[0]["retain"][0][k] != results[1]["retain"][0][k] for k in results[0]["retain"][0])


@pytest.mark.parametrize("kind, refused", [("NO", False), ("MULTI_CPU", False), ("MULTI_GPU", False),
                                           ("FSDP", False), ("DEEPSPEED", True), ("MEGATRON_LM", True)])
def test_deepspeed_and_megatron_are_refused_with_a_pointer_to_fsdp(kind, refused):
    from accelerate.utils import DistributedType

    from mrdkit.errors import MrdkitError
    from mrdkit.unlearning.setup import check_distributed_type

    if refused:
        with pytest.raises(MrdkitError, match=f"DDP or FSDP2.*{kind}.*use FSDP.*--fsdp.*docs/scaling.md"):
            check_distributed_type(DistributedType[kind])
    else:
        check_distributed_type(DistributedType[kind])


def test_a_launch_that_accelerate_runs_as_one_process_is_refused(monkeypatch):
    """Under a 2-process launcher, an accelerate state set up earlier as a single process (what ``mrd unlearn``
    used to do on CPU by creating ``PartialState()`` first) would make every rank train alone and race on --out."""
    from accelerate import PartialState

    from mrdkit.errors import MrdkitError
    from mrdkit.unlearning.config import UnlearnConfig
    from mrdkit.unlearning.methods import build_method
    from mrdkit.unlearning.setup import make_accelerator

    PartialState(cpu=True)  # this process: one process, state initialised before the launcher's env is read
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(MrdkitError, match="launched as 2 processes but accelerate runs 1"):
        make_accelerator(UnlearnConfig(device="cpu"), build_method("ga"))

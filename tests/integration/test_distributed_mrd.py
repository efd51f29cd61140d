"""Multi-process MRD (mrdkit.scoring.distributed): 2 CPU ranks on gloo give bitwise the 1-process numbers.

One spawn of 2 processes (importing torch + transformers costs ~10 s per process here) runs every scenario and
leaves run directories behind; the tests compare them with 1-process runs made in this process.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mrdkit.data import Sample
from mrdkit.errors import MrdkitError
from mrdkit.scoring.config import MRDConfig
from mrdkit.scoring.mrd import score_mrd

SAMPLES = [Sample(f"s{i}", f"Question: who is author {i}?", f" Author {i} writes {'novels ' * (i % 3 + 1)}.")
           for i in range(7)]  # 7 rows: uneven sample slices (3 + 4) and uneven draw split (3 + 2 for K=5)
REPO = Path(__file__).resolve().parents[2]
BASE = dict(draws=5, sigma=1e-3, batch_size=3, grad_norm=False, diagnostics=False, checkpoint_every=1)
RUNS = {"draws": dict(shard="draws"), "samples": dict(shard="samples", perturb_mode="lowmem"),
        "killed": dict(shard="draws", draws=6)}


class Killed(Exception):
    pass


def build_model():
    from mrdkit.models import build_tiny_model

    return build_tiny_model([s.text for s in SAMPLES], vocab_size=300, n_layer=1, d_model=32, n_head=2,
                            dtype="float64", seed=1)


def _draw_counts(state_dir: Path) -> dict[str, int]:
    from safetensors import safe_open

    counts = {}
    for path in sorted(state_dir.glob("rank*.safetensors")):
        with safe_open(str(path), framework="pt") as fh:
            counts[path.stem] = int(fh.get_tensor("draws").numel())
    return counts


def _worker(rank: int, world: int, store: str, root: str, loaded) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    root_path = Path(root)
    for name in ("draws", "samples"):  # auto-detected: the default group is initialised with 2 ranks
        result = score_mrd(loaded, SAMPLES, config=MRDConfig(**{**BASE, **RUNS[name]}), out_dir=root_path / name)
        torch.save({"draws": result.draws, "mrd": result.mrd}, root_path / f"{name}-rank{rank}.pt")

    def die_after_four(done, total):  # both ranks stop after their own 2nd draw (draws 0-3 saved)
        if done >= 4:
            raise Killed

    cfg = MRDConfig(**{**BASE, **RUNS["killed"]})
    try:
        score_mrd(loaded, SAMPLES, config=cfg, out_dir=root_path / "killed", progress=die_after_four)
    except Killed:
        pass
    dist.barrier()
    report = {"after_kill": _draw_counts(root_path / "killed" / "state"), "refused": ""}
    try:  # another sigma: rank 0 refuses the run directory and every rank must hear of it (no hang)
        score_mrd(loaded, SAMPLES, config=MRDConfig(**{**BASE, **RUNS["killed"], "sigma": 2e-3}),
                  out_dir=root_path / "killed", resume=True)
    except MrdkitError as exc:
        report["refused"] = str(exc)
    resumed = score_mrd(loaded, SAMPLES, config=cfg, out_dir=root_path / "killed", resume=True)
    report["resumed_passes"] = resumed.timing["forward_passes"]
    (root_path / f"killed-rank{rank}.json").write_text(json.dumps(report))
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def loaded():
    return build_model()


@pytest.fixture(scope="module")
def spawned(tmp_path_factory, loaded):
    import torch.multiprocessing as mp

    root = tmp_path_factory.mktemp("dist")
    # fork: the children inherit the imported libraries and the model (spawning re-imports transformers and
    # rebuilds the model: ~15 s per process here); safe because tests run torch with one intra-op thread
    # (conftest), so no OpenMP pool is forked
    mp.start_processes(_worker, args=(2, str(root / "store"), str(root), loaded), nprocs=2, join=True,
                       start_method="fork")
    return root


def single(loaded, name, tmp_path):
    return score_mrd(loaded, SAMPLES, config=MRDConfig(**{**BASE, **RUNS[name]}), out_dir=tmp_path / name,
                     distributed=False)


def _draws_file(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run / "draws.safetensors"))


@pytest.mark.parametrize("name", ["draws", "samples"])
def test_two_ranks_bitwise_equal_one_process(spawned, loaded, tmp_path, name):
    ref = single(loaded, name, tmp_path)
    for rank in (0, 1):  # every rank returns the full result
        got = torch.load(spawned / f"{name}-rank{rank}.pt")
        assert torch.equal(got["draws"], ref.draws) and torch.equal(got["mrd"], ref.mrd)
    want, have = _draws_file(tmp_path / name), _draws_file(spawned / name)
    assert want.keys() == have.keys() == {"values", "first_order_values"}
    assert all(torch.equal(want[k], have[k]) for k in want)
    assert (tmp_path / name / "mrd.jsonl").read_text() == (spawned / name / "mrd.jsonl").read_text()
    assert sorted(p.name for p in (spawned / name / "state").iterdir()) == ["rank0.safetensors", "rank1.safetensors"]
    assert json.loads((spawned / name / "config.json").read_text())["world_size"] == 2


def test_kill_and_resume_across_ranks(spawned, loaded, tmp_path):
    reports = [json.loads((spawned / f"killed-rank{r}.json").read_text()) for r in (0, 1)]
    # each rank had checkpointed its own 2 draws when it died; on resume each ran only its one missing draw
    assert reports[0]["after_kill"] == {"rank0": 2, "rank1": 2}
    assert all("different config" in r["refused"] for r in reports)
    ref = single(loaded, "killed", tmp_path)
    n_batches = ref.timing["forward_passes"] / (1 + 2 * 6)  # base pass + 6 antithetic draws of 2 passes
    assert reports[0]["resumed_passes"] == 2 * 3 * n_batches  # per rank: base pass + 1 draw of 2 passes
    have = _draws_file(spawned / "killed")
    assert torch.equal(have["values"], ref.draws)
    assert (tmp_path / "killed" / "mrd.jsonl").read_text() == (spawned / "killed" / "mrd.jsonl").read_text()


def test_torchrun_cli_matches_single_process(tmp_path):
    """``torchrun -m mrdkit score`` (env:// init, gloo) writes the same MRD as the in-process command."""
    from mrdkit.cli.app import main

    args = ["score", "--model", "tiny:d32-l1-h2-v512", "--data", "tofu:forget01", "--limit", "6", "--draws", "3",
            "--batch-size", "4", "--sigma", "1e-3", "--no-proxies", "--dtype", "float64", "--set", "diagnostics=false"]
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    env = {**os.environ, "MRDKIT_PROGRESS": "0", "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", "-m", "mrdkit", *args, "--shard",
                           "samples", "--out", str(tmp_path / "two")], env=env, capture_output=True, text=True,
                          timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("median MRD") == 1  # only rank 0 prints
    with pytest.raises(SystemExit) as exc:
        main([*args, "--out", str(tmp_path / "one")])
    assert exc.value.code == 0
    assert (tmp_path / "one" / "mrd.jsonl").read_text() == (tmp_path / "two" / "mrd.jsonl").read_text()
    assert sorted(p.name for p in (tmp_path / "two" / "state").iterdir()) == ["rank0.safetensors", "rank1.safetensors"]


def test_gpu_check_tiny_smoke(tmp_path):
    """benchmarks/gpu_check.py --tiny runs on CPU and writes its JSON report."""
    import runpy

    out = tmp_path / "gpu_check.json"
    module = runpy.run_path(str(REPO / "benchmarks" / "gpu_check.py"))
    module["main"](["--tiny", "--sections", "mrd", "--out", str(out)])
    report = json.loads(out.read_text())
    assert report["mrd"]["lowmem_equals_copy"] is True
    assert report["throughput"]["forward_tokens_per_s"] > 0 and 0 < report["throughput"]["noise_restore_share"] < 1
    fp32, bf16 = report["unchanged"]["float32"], report["unchanged"]["bfloat16"]
    assert bf16["fraction"] > 0.5 > fp32["fraction"]


def test_gpu_check_sized_sections_smoke(tmp_path):
    """The issue-16 sections of benchmarks/gpu_check.py (reference loop, unlearning vs mrd plan) run on CPU."""
    import math
    import runpy

    out = tmp_path / "gpu_check.json"
    module = runpy.run_path(str(REPO / "benchmarks" / "gpu_check.py"))
    module["main"](["--tiny", "--device", "cpu", "--sections", "reference,unlearn", "--out", str(out)])
    sized = json.loads(out.read_text())["sized"]
    for name in ("testbed", "smollm2"):
        assert sized[name]["reference"]["max_rel_diff_mrd"] <= 1e-6  # fp32 CPU: the same numbers as the loop
        runs = sized[name]["unlearn"]
        assert set(runs) == {"fp32", "bf16", "bf16+ckpt", "lora+bf16+ckpt"}
        assert all(math.isfinite(x) for run in runs.values() for x in run["losses"])
        assert all(run["predicted_gib"] > 0 for run in runs.values())
        assert runs["bf16"]["max_rel_loss_diff_vs_fp32"] < 0.02


@pytest.mark.parametrize("shard", ["draws", "samples"])
def test_plans_cover_every_sample_draw_once(shard):
    from mrdkit.scoring.distributed import plan_shard

    for world in (1, 2, 3, 5):
        cells = [(i, k) for r in range(world) for p in [plan_shard(shard, r, world, 7, 4)]
                 for i in range(p.lo, p.hi) for k in p.draws]
        assert sorted(cells) == [(i, k) for i in range(7) for k in range(4)]


def test_single_rank_path_and_stale_state_refused(loaded, tmp_path):
    """``distributed=True`` without a launcher is rank 0 of 1: same numbers, own state file, guarded resume."""
    from mrdkit.scoring.distributed import score_batches_distributed
    from mrdkit.scoring.engine import score_batches
    from mrdkit.scoring.mrd import make_batches

    got = score_mrd(loaded, SAMPLES, config=MRDConfig(**BASE), out_dir=tmp_path / "one", distributed=True)
    assert torch.equal(got.draws, single(loaded, "draws", tmp_path).draws)
    assert [p.name for p in (tmp_path / "one" / "state").iterdir()] == ["rank0.safetensors"]
    batches = make_batches(SAMPLES, loaded.tokenizer, MRDConfig(**BASE))
    kw = dict(draws=3, sigma=1e-3, state_dir=tmp_path / "state")
    full = score_batches_distributed(loaded.model, batches, **kw)
    assert torch.equal(full.estimate.values, score_batches(loaded.model, batches, draws=3, sigma=1e-3).estimate.values)
    resumed = score_batches_distributed(loaded.model, batches, resume=True, **kw)  # all draws saved: no draw runs
    assert resumed.forward_passes == full.forward_passes / 7 and torch.equal(resumed.estimate.mrd, full.estimate.mrd)
    more = score_batches_distributed(loaded.model, batches, resume=True, **{**kw, "draws": 4})  # K grows: 1 draw
    assert more.forward_passes == full.forward_passes / 7 * 3
    assert torch.equal(more.estimate.values, score_batches(loaded.model, batches, draws=4, sigma=1e-3).estimate.values)
    with pytest.raises(MrdkitError, match="differs in: seed"):
        score_batches_distributed(loaded.model, batches, resume=True, seed=1, **kw)


def test_launcher_group_is_torn_down_at_exit(monkeypatch):
    """A group ``init_distributed`` opens is destroyed by an exit hook (gloo threads alive at exit abort a rank)."""
    import atexit

    import torch.distributed as dist

    from mrdkit import dist as dist_comm

    hooks, real_init = [], dist.init_process_group
    monkeypatch.setattr(atexit, "register", hooks.append)
    monkeypatch.setattr(dist_comm, "_EXIT_HOOK", [])
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert dist_comm.init_distributed() == (0, 1) and hooks == []  # no launcher: nothing opened, nothing to close
    # a launcher says 2 ranks; this process stands in for rank 0 of a 1-rank group on an in-memory store
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(dist, "init_process_group",
                        lambda backend: real_init(backend, store=dist.HashStore(), rank=0, world_size=1))
    try:
        assert dist_comm.init_distributed() == (0, 1) and dist.is_initialized()
        assert len(hooks) == 1
        dist_comm.destroy_group_at_exit()
        assert len(hooks) == 1  # registered once per process
        hooks[0]()
        assert not dist.is_initialized()
        hooks[0]()  # a second call (group already gone) is harmless
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()

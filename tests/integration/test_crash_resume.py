"""Crash safety: ``mrd score``, ``mrd unlearn`` and the ground-truth runner (``mrd difficulty truth``) killed with
SIGKILL mid-run, then re-run with ``--resume``, end with exactly the outputs of an uninterrupted run; the killed run
leaves no half-written output (every JSON / JSONL / safetensors file there reads back whole) and the finished run
leaves no temp files.

The killed run is a real ``python -m mrdkit`` subprocess; the uninterrupted reference and the resumed run go
through the same entry point in-process (:func:`mrdkit.cli.main`), which keeps each test well under 30 s.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

from helpers import SMALL_MODEL, assert_ok, cli_env, run_cli_inprocess

QUESTIONS = [(f"Where did author {i} grow up?", f"Author {i} grew up in {city} and wrote {n} novels.")
             for i, (city, n) in enumerate(zip(["Lima", "Oslo", "Kyoto", "Porto", "Quito", "Riga", "Accra",
                                                "Hanoi", "Dakar", "Bergen", "Cusco", "Izmir"], range(3, 15)))]


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def data(tmp_path):
    forget = write_jsonl(tmp_path / "forget.jsonl", [{"question": q, "answer": a} for q, a in QUESTIONS[:8]])
    retain = write_jsonl(tmp_path / "retain.jsonl", [{"question": q, "answer": a} for q, a in QUESTIONS[8:]])
    scores = write_jsonl(tmp_path / "mrd.jsonl", [{"id": f"forget:{i}", "mrd": 0.1 * (i % 5)} for i in range(8)])
    return forget, retain, scores


def is_temp(path: Path, root: Path) -> bool:
    """A temp file or folder of an atomic writer (``.<name>.<random>.tmp``, ``.tmp-*``) or something inside one."""
    parts = path.relative_to(root).parts
    return any(p.startswith(".tmp-") for p in parts) or (parts[-1].startswith(".") and parts[-1].endswith(".tmp"))


def assert_no_partial_outputs(root: Path) -> None:
    """Every output file that exists reads back whole: JSON, each JSONL line, safetensors headers and tensors."""
    from safetensors import safe_open

    checked = 0
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not is_temp(p, root)):
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".jsonl":
            text = path.read_text()
            assert text.endswith("\n"), f"{path} ends inside a line"
            [json.loads(line) for line in text.splitlines()]
        elif path.suffix == ".safetensors":
            with safe_open(str(path), framework="pt") as fh:
                [fh.get_tensor(k) for k in fh.keys()]
        else:
            continue
        checked += 1
    assert checked >= 2, f"nothing written in {root} before the kill"


def assert_no_temp_files(root: Path) -> None:
    left = [str(p.relative_to(root)) for p in root.rglob("*") if is_temp(p, root)]
    assert not left, f"temp files left behind: {left}"


def kill_mid_run(args: list, ready: Callable[[], bool], out: Path, linger: float = 0.15) -> None:
    """Start ``mrd ARGS``; SIGKILL it ``linger`` s after ``ready()`` turns true (while it is still working)."""
    log = out.parent / f"{out.name}.stderr"
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "mrdkit", *map(str, args)], env=cli_env(),
                                stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 120
        while not ready():
            assert proc.poll() is None, f"finished (exit {proc.returncode}) before it could be killed: " \
                                        f"{log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, "never reached the kill point"
            time.sleep(0.005)
        time.sleep(linger)
        assert proc.poll() is None, "finished before the kill: make the run longer"
        proc.send_signal(signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "DONE.json").exists()


def without(obj: dict, *keys: str) -> dict:
    return {k: v for k, v in obj.items() if k not in keys}


def test_score_killed_and_resumed_matches_an_uninterrupted_run(data, tmp_path):
    forget, _, _ = data
    def args(out):  # noqa: E306
        return ["score", "--model", SMALL_MODEL, "--data", forget, "--draws", "60", "--batch-size", "4",
                "--set", "checkpoint_every=1", "--out", out]

    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert_ok(run_cli_inprocess(*args(straight)))
    kill_mid_run(args(killed), lambda: (killed / "state/accumulator.safetensors").exists(), killed)
    assert_no_partial_outputs(killed)
    assert_ok(run_cli_inprocess(*args(killed), "--resume"))
    for name in ("mrd.jsonl", "draws.safetensors", "proxies.json", "config.json"):
        assert (killed / name).read_bytes() == (straight / name).read_bytes(), name
    a, b = (json.loads((d / "summary.json").read_text()) for d in (straight, killed))
    assert without(a, "timing") == without(b, "timing")
    assert_no_temp_files(killed)


def test_unlearn_killed_and_resumed_matches_an_uninterrupted_run(data, tmp_path):
    forget, retain, scores = data
    def args(out):  # noqa: E306
        return ["unlearn", "--model", SMALL_MODEL, "--forget", forget, "--retain", retain, "--method", "graddiff",
                "--sampler", "cga", "--mrd", scores, "--lr", "1e-3", "--batch-size", "2", "--max-steps", "20",
                "--device", "cpu", "--set", "checkpoint_every=1", "--set", "stop_check_every=5", "--out", out]

    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert_ok(run_cli_inprocess(*args(straight)))
    kill_mid_run(args(killed), lambda: any((killed / "checkpoints").glob("step-*/state.json")), killed)
    assert_no_partial_outputs(killed)
    with open(killed / "train_log.jsonl", "a") as fh:  # as if the power went off inside an append
        fh.write('{"step": 999, "loss": 0.12')
    assert_ok(run_cli_inprocess(*args(killed), "--resume"))
    for name in ("model/model.safetensors", "train_log.jsonl", "config.json"):
        assert (killed / name).read_bytes() == (straight / name).read_bytes(), name
    a, b = (json.loads((d / "summary.json").read_text()) for d in (straight, killed))
    assert without(a, "wall_s", "model_dir") == without(b, "wall_s", "model_dir")
    assert [p.name for p in (killed / "checkpoints").iterdir()] == ["step-000020"]
    assert_no_temp_files(killed)


def test_ground_truth_runner_killed_and_resumed_matches_an_uninterrupted_run(tmp_path):
    # 12 samples, ~26 updates each until the answer log-prob is 1.5x the start (a random tiny model's P(a|q) is
    # already below the 0.02 threshold); required_updates checkpoints every 5 samples
    samples = write_jsonl(tmp_path / "all.jsonl", [{"question": q, "answer": a} for q, a in QUESTIONS])
    def args(out):  # noqa: E306
        return ["difficulty", "truth", "--model", SMALL_MODEL, "--data", samples, "--lr", "2e-3", "--relative",
                "1.5", "--cap", "40", "--device", "cpu", "--out", out]

    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert_ok(run_cli_inprocess(*args(straight)))
    kill_mid_run(args(killed), lambda: (killed / "updates.jsonl").exists(), killed, linger=0.1)
    assert_no_partial_outputs(killed)
    assert 0 < len((killed / "updates.jsonl").read_text().splitlines()) < 12
    assert_ok(run_cli_inprocess(*args(killed), "--resume"))
    assert (killed / "updates.jsonl").read_bytes() == (straight / "updates.jsonl").read_bytes()
    assert (killed / "DONE.json").read_bytes() == (straight / "DONE.json").read_bytes()
    assert_no_temp_files(killed)


def test_bench_experiment_killed_and_rerun_matches_an_uninterrupted_run(tmp_path):
    # `mrd bench run` resumes an unfinished experiment by itself: finished MRD runs are loaded, the ground truth
    # continues from its checkpoint (written every 5 samples); the kill lands inside the per-sample ground truth
    def args(out):  # noqa: E306
        return ["bench", "run", "validate", "--quick", "--out", out, "--set", "n=12", "--set", "truth_lr=2e-4"]

    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert_ok(run_cli_inprocess(*args(straight)))
    exp = killed / "validate"
    killed.mkdir()
    kill_mid_run(args(killed), lambda: (exp / "updates.jsonl").exists(), exp, linger=0.05)
    assert_no_partial_outputs(exp)
    assert (exp / "mrd_antithetic" / "DONE.json").exists() and not (exp / "updates_chunked.jsonl").exists()
    assert_ok(run_cli_inprocess(*args(killed)))
    for name in ("scores.jsonl", "updates.jsonl", "updates_chunked.jsonl", "mrd_paper/mrd.jsonl",
                 "per_sample/correlations.json", "chunked/correlations.json"):
        assert (exp / name).read_bytes() == (straight / "validate" / name).read_bytes(), name
    a, b = (json.loads((d / "validate" / "results.json").read_text()) for d in (straight, killed))
    assert without(a, "wall_s") == without(b, "wall_s")
    assert (killed / "report.md").exists()
    assert_no_temp_files(killed)

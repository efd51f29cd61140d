"""``mrd unlearn --report-to``: TensorBoard event files (and wandb offline, when installed), the probability curve
PNG next to the log, and the on-the-fly MRD scoring's own progress bar naming K."""

from __future__ import annotations

import contextlib
import io
import json

import pytest

from helpers import SMALL_MODEL, assert_ok, assert_user_error, run_cli_inprocess
from mrdkit.data import Sample
from mrdkit.errors import MrdkitError
from mrdkit.unlearning import UnlearnConfig
from mrdkit.unlearning.trackers import scalars, tracker_names

FORGET = [{"question": f"Who is person {i}?", "answer": f"Person {i} is a baker in town {i}."} for i in range(6)]
RETAIN = [{"question": f"What is thing {i}?", "answer": f"Thing {i} is a red box number {i}."} for i in range(6)]


@pytest.fixture
def data(tmp_path):
    paths = {}
    for name, rows in (("forget", FORGET), ("retain", RETAIN)):
        paths[name] = tmp_path / f"{name}.json"
        paths[name].write_text(json.dumps(rows))
    return paths


def _unlearn(data, out, *extra):
    return run_cli_inprocess("unlearn", "--model", SMALL_MODEL, "--forget", data["forget"], "--retain",
                             data["retain"], "--method", "npo", "--out", out, "--lr", "1e-3", "--max-steps", "3",
                             "--batch-size", "2", "--device", "cpu", "--set", "stop_check_every=1", *extra)


def test_tensorboard_event_file_holds_the_log_rows(data, tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard is the optional 'trackers' extra (in 'test' for CI)")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    proc = _unlearn(data, out, "--report-to", "tensorboard")
    assert_ok(proc)
    assert f"tensorboard --logdir {out}" in proc.stdout
    events = list((out / "tensorboard" / "mrdkit").glob("events.out.tfevents.*"))
    assert events, list((out / "tensorboard").rglob("*"))
    acc = EventAccumulator(str(out / "tensorboard" / "mrdkit"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"loss", "lr", "grad_norm", "forget_prob", "retain_prob", "parts/forget_loss", "parts/total"} <= tags
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [e.step for e in acc.Scalars("forget_prob")] == [row["step"] for row in log] == [0, 1, 2, 3]
    assert [e.value for e in acc.Scalars("loss")] == pytest.approx([row["loss"] for row in log[1:]], rel=1e-6)
    assert json.loads((out / "config.json").read_text())["unlearn"].get("report_to") is None  # not the identity
    assert json.loads((out / "summary.json").read_text())["report_to"] == ["tensorboard"]


def test_probability_curve_png_next_to_the_log(data, tmp_path):
    out = tmp_path / "run"
    assert_ok(_unlearn(data, out))
    png = out / "prob_curve.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (out / "train_log.jsonl").is_file()
    assert not (out / "tensorboard").exists()  # no tracker unless asked


def test_wandb_offline_run_is_written_into_the_run_directory(data, tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="wandb is not installed (optional: pip install wandb); tensorboard is "
                                        "the tracker CI tests")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "run"
    assert_ok(_unlearn(data, out, "--report-to", "wandb"))
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))


def test_bad_tracker_options_are_one_line(data, tmp_path):
    assert_user_error(_unlearn(data, tmp_path / "a", "--report-to", "tensorbord"), "unknown tracker 'tensorbord'")
    with pytest.raises(MrdkitError, match="needs a run directory"):
        from mrdkit.models import build_tiny_model
        from mrdkit.unlearning.loop import unlearn

        lm = build_tiny_model(["a b c d e f"] * 3, vocab_size=260, d_model=16, n_layer=1, n_head=2)
        unlearn(lm.model, lm.tokenizer, [Sample("f:0", "q", "a")], config=UnlearnConfig(report_to="tensorboard"))


def test_tracker_names_and_scalars():
    assert tracker_names("none") == [] and tracker_names(None) == []
    assert tracker_names("TensorBoard, wandb,tensorboard") == ["tensorboard", "wandb"]
    row = {"step": 3, "epoch": 0.5, "loss": 1.5, "parts": {"forget": 1.0, "retain": 0.5}, "lr": 1e-3,
           "grad_norm": 2.0, "forget_ids": ["f:0"], "eval": {"acc": 0.25, "stop": False}, "forget_prob": None}
    assert scalars(row) == {"loss": 1.5, "lr": 1e-3, "grad_norm": 2.0, "epoch": 0.5, "parts/forget": 1.0,
                            "parts/retain": 0.5, "eval/acc": 0.25}


def test_on_the_fly_mrd_scoring_shows_its_own_bar_naming_k(monkeypatch):
    from mrdkit.models import build_tiny_model
    from mrdkit.unlearning.loop import unlearn

    monkeypatch.setenv("MRDKIT_PROGRESS", "1")
    forget = [Sample(f"f:{i}", r["question"], r["answer"]) for i, r in enumerate(FORGET)]
    lm = build_tiny_model([s.text for s in forget], vocab_size=300, d_model=16, n_layer=1, n_head=2)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        unlearn(lm.model, lm.tokenizer, forget, method="ga", sampler="cga",
                config=UnlearnConfig(lr=1e-3, max_steps=1, mrd_draws=3, device="cpu"))
    assert "on-the-fly MRD for cga: K=3 draws, 6 samples" in err.getvalue()

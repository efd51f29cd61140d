"""Nothing lost, nothing silently wrong (docs/robustness.md, "Output-folder safety and honest results"): one test
per item of the matrix, through the ``mrd`` entry point in this process (a subprocess only where a second process
is the point).

Each of these failed before its fix: a model folder given as ``--out`` lost its config.json, a second writer of a
run folder went through, ``mrd eval`` served rows computed for other weights, float32 MRD below the rounding floor
was marked resolved, nonsense sigma / clip values gave "results", a one-step unlearning run trained at lr 0, damaged
weights and mismatched tokenizers raised tracebacks, and ``mrd unlearn`` / ``mrd eval`` had no data-field options.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import SMALL_MODEL, assert_ok, assert_user_error, cli_env, run_cli_inprocess

QA = [("Where was Ana Silva born?", "Ana Silva was born in Porto in 1931."),
      ("What does Ben Okafor write?", "Ben Okafor writes mystery novels about rivers."),
      ("Who raised Chen Wu?", "Chen Wu was raised by a baker and a nurse in Lima."),
      ("When did Dora Lind start?", "Dora Lind started writing poems at the age of nine.")]
DATA_COMMANDS = [["score"], ["unlearn"], ["eval"], ["data", "inspect"], ["difficulty", "truth"],
                 ["difficulty", "score"], ["difficulty", "survival"]]
DATA_OPTIONS = ["--question-key", "--answer-key", "--text-key", "--id-key", "--field", "--format"]


def qa_file(tmp_path: Path, name: str = "qa.jsonl", pairs=QA, keys=("question", "answer")) -> Path:
    path = tmp_path / name
    path.write_text("".join(json.dumps({keys[0]: q, keys[1]: a}) + "\n" for q, a in pairs))
    return path


def score(data: Path, out: Path, *args: str, model: str = SMALL_MODEL):
    return run_cli_inprocess("score", "--model", model, "--data", data, "--draws", "2", "--no-proxies", "--out", out,
                             *args)


def unlearn(data: Path, out: Path, *args: str, model: str = SMALL_MODEL):
    return run_cli_inprocess("unlearn", "--model", model, "--forget", data, "--out", out, "--max-steps", "1",
                             "--lr", "1e-3", "--device", "cpu", *args)


def perplexity(model: str, data: Path, out: Path, *args: str):
    return run_cli_inprocess("eval", "--model", model, "--benchmark", "ppl", "--data", data, "--out", out,
                             "--device", "cpu", *args)


def save_tiny(path: Path, seed: int = 0) -> Path:
    """A tiny GPT-2 saved with save_pretrained (tokenizer fitted on QA), as a user's own model folder."""
    from mrdkit.models import load_model

    load_model(SMALL_MODEL, tiny_texts=[q + a for q, a in QA], seed=seed, device="cpu").save(path)
    return path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("model") / "m")


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


# ------------------------------------------------------------------------------ 1. --out that is not a run


def test_out_at_a_model_folder_is_refused_and_the_model_survives(tmp_path, model_dir):
    model = tmp_path / "m"
    model.mkdir()
    for path in model_dir.iterdir():
        (model / path.name).write_bytes(path.read_bytes())
    before, data = snapshot(model), qa_file(tmp_path)
    for run in (score(data, model, model=str(model)), score(data, model, "--overwrite", model=str(model)),
                unlearn(data, model, "--overwrite", model=str(model)),
                perplexity(str(model), data, model, "--overwrite")):
        assert_user_error(run, f"{model} is not an mrdkit run folder and is not empty", "config.json")
    assert snapshot(model) == before  # the model's config.json and weights are untouched


def test_out_at_a_folder_of_user_files_is_refused(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "summary.json").write_text('{"mine": true}')
    (mine / "mrd.jsonl").write_text('{"id": "x", "mrd": 1.0}\n')
    before, data = snapshot(mine), qa_file(tmp_path)
    assert_user_error(score(data, mine), "is not an mrdkit run folder", "mrd.jsonl, summary.json")
    assert_user_error(unlearn(data, mine), "is not an mrdkit run folder")
    assert snapshot(mine) == before
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_ok(score(data, empty))  # an empty folder is a fine place for a new run


# ------------------------------------------------------------------------------ 2. one writer at a time

HOLDER = """
import sys
from mrdkit.runs import RunDir
RunDir(sys.argv[1], {"kind": "holder"})
print("ready", flush=True)
sys.stdin.read()
"""


def test_a_second_writer_of_the_same_out_is_refused(tmp_path):
    out, data = tmp_path / "run", qa_file(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env=cli_env())
    try:
        assert holder.stdout.readline().strip() == "ready"
        assert_user_error(score(data, out), f"{out} is in use by another mrdkit process", "choose another --out")
        assert_user_error(unlearn(data, out), "is in use by another mrdkit process")
    finally:
        holder.kill()  # SIGKILL: the OS drops the lock, no stale lock file blocks the next run
        holder.wait()
    assert_ok(score(data, out))
    assert json.loads((out / "config.json").read_text())["kind"] == "mrd"


# ------------------------------------------------------------------------------ 3. eval reuse keyed on weights


def test_eval_reuse_is_keyed_on_the_weights(tmp_path):
    model, data, out = save_tiny(tmp_path / "m", seed=0), qa_file(tmp_path), tmp_path / "eval"
    assert_ok(perplexity(str(model), data, out))
    first = json.loads((out / "eval.json").read_text())["metrics"]["perplexity"]["value"]
    save_tiny(model, seed=1)  # other weights saved at the same path
    assert_user_error(perplexity(str(model), data, out), "holds an evaluation with other settings",
                      "differs in: model_weights")
    assert_ok(perplexity(str(model), data, out, "--overwrite"))
    second = json.loads((out / "eval.json").read_text())["metrics"]["perplexity"]["value"]
    fresh = tmp_path / "fresh"
    assert_ok(perplexity(str(model), data, fresh))
    assert second != first and second == json.loads((fresh / "eval.json").read_text())["metrics"]["perplexity"]["value"]


# ------------------------------------------------------------------------------ 4. the rounding floor


def test_float32_below_the_rounding_floor(tmp_path):
    """The 1-layer tiny model at sigma 1e-5: the float32 curvature is ~0.5x its rounding floor (needs 100x)."""
    data = qa_file(tmp_path)
    assert_user_error(score(data, tmp_path / "f32", "--dtype", "float32"), "floor check failed",
                      "float32 rounding floor", "--allow-floor")
    assert not (tmp_path / "f32").exists()  # refused before the run folder was made
    kept = score(data, tmp_path / "kept", "--dtype", "float32", "--allow-floor")
    assert_ok(kept)
    rows = [json.loads(line) for line in (tmp_path / "kept" / "mrd.jsonl").read_text().splitlines()]
    assert rows and not any(r["resolved"] for r in rows)
    summary = json.loads((tmp_path / "kept" / "summary.json").read_text())
    assert summary["floor_ok"] is False and summary["unresolved"] == len(rows)
    assert "FAILED, every sample unresolved" in kept.stdout and "rounding" in kept.stdout
    auto = score(data, tmp_path / "auto")  # the default --dtype auto moves to float64
    assert_ok(auto)
    assert "float64 (auto: float32 is not enough" in " ".join(auto.stdout.split())
    summary = json.loads((tmp_path / "auto" / "summary.json").read_text())
    assert summary["dtype"] == "float64" and summary["floor_ok"] is True


# ------------------------------------------------------------------------------ 5. nonsense settings


@pytest.mark.parametrize("args, fragments", [
    (["--sigma", "1e300"], ["sigma=1e+300 is above 0.1"]),
    (["--sigma", "1"], ["sigma=1 is above 0.1", "no longer the local measure"]),
    (["--sigma", "1e-30"], ["sigma=1e-30 is below 1e-09", "sigma^2"]),
    (["--clip", "-1"], ["clip must be a positive number", "would replace every MRD"]),
    (["--clip", "0"], ["clip must be a positive number"]),
    (["--max-length", "1"], ["max_length must be >= 2 tokens"]),
])
def test_nonsense_mrd_settings_are_refused(tmp_path, args, fragments):
    assert_user_error(score(qa_file(tmp_path), tmp_path / "run", *args), *fragments)
    assert not (tmp_path / "run").exists()


def test_a_sigma_too_large_for_the_model_fails_the_locality_check(tmp_path):
    """In range, but on this model the curvature no longer grows 4x when sigma doubles: refused, with the reason."""
    assert_user_error(score(qa_file(tmp_path), tmp_path / "run", "--sigma", "0.05", "--dtype", "float64"),
                      "floor check failed", "from sigma to 2 sigma")


# ------------------------------------------------------------------------------ 6. unlearning that changes nothing


def test_one_epoch_on_four_samples_changes_the_weights(tmp_path):
    """One optimizer step (4 samples, batch 4, default warmup_ratio 0.2): the warmup may not take that step."""
    out = tmp_path / "run"
    run = run_cli_inprocess("unlearn", "--model", SMALL_MODEL, "--forget", qa_file(tmp_path), "--out", out,
                            "--epochs", "1", "--lr", "1e-3", "--device", "cpu")
    assert_ok(run)
    assert not [w for w in run.warnings if "did not change" in w]
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [0, 1] and log[1]["lr"] == 1e-3  # the full lr, not warmup's 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["weights_changed"] is True and summary["forget_prob_end"] < summary["forget_prob_start"]


def test_a_run_that_changes_nothing_warns(tmp_path, monkeypatch):
    from mrdkit.train import StepResult
    from mrdkit.unlearning import loop

    monkeypatch.setattr(loop, "train_step", lambda *a, **k: StepResult({"total": 0.0, "forget_loss": 0.0}, 0.0))
    run = unlearn(qa_file(tmp_path), tmp_path / "run")
    assert_ok(run)
    assert any("the weights did not change in 1 optimizer step(s)" in w and "nothing was unlearned" in w
               for w in run.warnings)
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["weights_changed"] is False


# ------------------------------------------------------------------------------ 7. damaged models


def test_truncated_weights_give_one_line_errors(tmp_path, model_dir):
    model = tmp_path / "m"
    model.mkdir()
    for path in model_dir.iterdir():
        data = path.read_bytes()
        (model / path.name).write_bytes(data[: len(data) // 2] if path.name == "model.safetensors" else data)
    data = qa_file(tmp_path)
    for run, out in ((score(data, tmp_path / "s", model=str(model)), "s"),
                     (unlearn(data, tmp_path / "u", model=str(model)), "u"),
                     (perplexity(str(model), data, tmp_path / "e"), "e")):
        assert_user_error(run, "cannot read the weights of model", "truncated or damaged model.safetensors")
        assert not (tmp_path / out).exists()
    inspect = run_cli_inprocess("data", "inspect", data, "--model", str(model), "--json")
    assert_ok(inspect)  # only the tokenizer is read
    assert json.loads(inspect.stdout)["tokens"]["answer"]["max"] > 0


def test_tokenizer_larger_than_the_embedding_is_refused_before_the_run_folder(tmp_path, model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    lm = AutoModelForCausalLM.from_pretrained(model_dir)
    lm.resize_token_embeddings(len(tok) - 5)
    lm.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    rows = len(tok) - 5
    for run, out in ((score(qa_file(tmp_path), tmp_path / "s", model=str(tmp_path / "m")), "s"),
                     (unlearn(qa_file(tmp_path), tmp_path / "u", model=str(tmp_path / "m")), "u")):
        assert_user_error(run, f"its tokenizer has {len(tok)} tokens but the model's embedding has {rows} rows")
        assert not (tmp_path / out).exists()


# ------------------------------------------------------------------------------ 8. one data-option vocabulary


@pytest.mark.parametrize("command", DATA_COMMANDS, ids=" ".join)
def test_every_data_command_takes_the_data_options(command):
    help_text = run_cli_inprocess(*command, "--help").stdout
    assert all(option in help_text for option in DATA_OPTIONS), help_text


def test_a_csv_with_its_own_field_names_scores_unlearns_and_evaluates(tmp_path):
    csv = tmp_path / "mine.csv"
    csv.write_text("frage,antwort\n" + "".join(f'"{q}","{a}"\n' for q, a in QA))
    keys = ["--question-key", "frage", "--answer-key", "antwort"]
    assert_user_error(score(csv, tmp_path / "no"), "pass --question-key and --answer-key")
    assert_ok(score(csv, tmp_path / "s", *keys))
    assert_ok(unlearn(csv, tmp_path / "u", *keys))
    assert_ok(perplexity(SMALL_MODEL, csv, tmp_path / "e", *keys))
    assert json.loads((tmp_path / "e" / "eval.json").read_text())["metrics"]["perplexity"]["n"] == len(QA)


# ------------------------------------------------------------------------------ 10. empty answers, duplicates


def test_empty_answers_and_duplicates_warn_in_every_command(tmp_path):
    data = qa_file(tmp_path, pairs=QA + [("What is left?", ""), QA[0]])
    expected = ["6 samples have an empty answer", "6 samples repeat an earlier sample's prompt and answer"]
    for run in (score(data, tmp_path / "s"), unlearn(data, tmp_path / "u"),
                perplexity(SMALL_MODEL, data, tmp_path / "e"), run_cli_inprocess("data", "inspect", data)):
        assert_ok(run)
        for fragment in expected:
            assert sum(fragment in w for w in run.warnings) == 1, run.stderr


# ------------------------------------------------------------------------------ smaller items


def test_version():
    from importlib import metadata

    run = run_cli_inprocess("--version")
    assert_ok(run)
    assert run.stdout.strip() == f"mrdkit {metadata.version('mrdkit')}"


def test_ctrl_c_prints_how_to_resume(tmp_path, monkeypatch):
    from mrdkit.scoring import mrd

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(mrd, "score_mrd", interrupted)
    run = score(qa_file(tmp_path), tmp_path / "run")
    assert run.returncode == 130
    assert "interrupted; to continue from the last checkpoint, run: mrd score" in run.stderr
    assert run.stderr.strip().endswith("--resume")


def test_outputs_are_readable_by_the_group(tmp_path):
    old = os.umask(0o022)
    try:
        data = qa_file(tmp_path)
        assert_ok(score(data, tmp_path / "s"))
        assert_ok(unlearn(data, tmp_path / "u"))
    finally:
        os.umask(old)
    files = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != "qa.jsonl"]
    assert any(p.name == "model.safetensors" for p in files) and any(p.name == "mrd.jsonl" for p in files)
    modes = {str(p.relative_to(tmp_path)): oct(p.stat().st_mode & 0o777) for p in files}
    assert set(modes.values()) == {"0o644"}, modes


def test_out_and_max_length_are_checked_before_the_model_loads(tmp_path, monkeypatch):
    from mrdkit.cli import options

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(options, "load_model_for", no_loading)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    data = qa_file(tmp_path)
    assert_user_error(score(data, mine), "is not an mrdkit run folder")
    assert_user_error(unlearn(data, mine), "is not an mrdkit run folder")
    assert_user_error(perplexity(SMALL_MODEL, data, mine), "is not an mrdkit run folder")
    assert_user_error(score(data, tmp_path / "s", "--max-length", "0"), "max_length must be >= 2")
    assert_user_error(unlearn(data, tmp_path / "u", "--set", "max_length=0"), "max_length must be > 0")
    assert_user_error(perplexity(SMALL_MODEL, data, tmp_path / "e", "--max-length", "1"), "--max-length must be >= 2")


def test_auto_template_and_settings_are_recorded(tmp_path):
    data = qa_file(tmp_path)
    assert_ok(score(data, tmp_path / "s"))
    assert_ok(unlearn(data, tmp_path / "u"))
    assert_ok(perplexity(SMALL_MODEL, data, tmp_path / "e"))
    for run in ("s", "u", "e"):
        assert json.loads((tmp_path / run / "config.json").read_text())["template_used"] == "plain"
    import pandas as pd

    settings = {"estimator": "antithetic", "sigma": 1e-5, "draws": 2, "dtype": "float64",
                "model": "tiny-gpt2:d32-l1-h2-v300-p512"}
    rows = [json.loads(line) for line in (tmp_path / "s" / "mrd.jsonl").read_text().splitlines()]
    frame = pd.read_parquet(tmp_path / "s" / "mrd.parquet")
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    for key, value in settings.items():
        assert all(r[key] == value for r in rows) and set(frame[key]) == {value} and summary[key] == value


@pytest.mark.parametrize("command", [[], ["score"], ["unlearn"], ["eval"], ["data", "inspect"], ["demo"],
                                     ["difficulty", "truth"], ["bench", "run"]], ids=lambda c: " ".join(c) or "mrd")
def test_help_is_readable_at_80_columns(command, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    run = run_cli_inprocess(*command, "--help")
    assert_ok(run)
    lines = run.stdout.splitlines()
    assert len(lines) > 3 and max(map(len, lines)) <= 80 and "…" not in run.stdout

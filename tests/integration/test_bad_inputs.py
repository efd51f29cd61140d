"""The bad-input matrix of docs/robustness.md, one test per row, through the ``mrd`` command line.

Each bad input gives ONE ``error:`` line naming the problem and exit code 2 (or a ``warning:`` line where the run
can continue), never a traceback, and never damages what an earlier run wrote. Commands run in-process through
:func:`mrdkit.cli.main` (the ``mrd`` entry point) to skip a 5-10 s interpreter start per case.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from helpers import SMALL_MODEL, assert_ok, assert_user_error, run_cli_inprocess

QA = [("Where was Ana Silva born?", "Ana Silva was born in Porto in 1931."),
      ("What does Ben Okafor write?", "Ben Okafor writes mystery novels about rivers."),
      ("Who raised Chen Wu?", "Chen Wu was raised by a baker and a nurse in Lima.")]
RETAIN = [("What is the capital of Peru?", "Lima is the capital of Peru."),
          ("Which city is on the Douro?", "Porto lies on the Douro river.")]
NOT_ROOT = pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                              reason="root ignores file permissions")


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def qa_file(tmp_path: Path, name: str = "forget.jsonl", pairs=QA) -> Path:
    return write_jsonl(tmp_path / name, [{"question": q, "answer": a} for q, a in pairs])


def score(tmp_path: Path, *args: str, data=None, out=None):
    """``mrd score`` with the small tiny model, one draw, no proxies."""
    data = data if data is not None else qa_file(tmp_path)
    return run_cli_inprocess("score", "--model", SMALL_MODEL, "--data", data, "--draws", "1", "--no-proxies",
                             "--out", out or tmp_path / "score", *args)


def unlearn(tmp_path: Path, *args: str, forget=None, out=None):
    """``mrd unlearn`` (GA, one step) with the small tiny model on CPU."""
    forget = forget if forget is not None else qa_file(tmp_path)
    return run_cli_inprocess("unlearn", "--model", SMALL_MODEL, "--forget", forget, "--out",
                             out or tmp_path / "unlearn", "--max-steps", "1", "--lr", "1e-3", "--device", "cpu",
                             *args)


def run(command: str, tmp_path: Path, data: Path, *args: str):
    return score(tmp_path, *args, data=data) if command == "score" else unlearn(tmp_path, *args, forget=data)


BOTH = pytest.mark.parametrize("command", ["score", "unlearn"])


# ------------------------------------------------------------------------------------------ data files


@BOTH
def test_missing_data_file(command, tmp_path):
    assert_user_error(run(command, tmp_path, tmp_path / "missing.jsonl"), "missing.jsonl", "no such file")
    assert not (tmp_path / command).exists()  # rejected before a run directory is made


@BOTH
def test_empty_data_file(command, tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n \n")
    assert_user_error(run(command, tmp_path, tmp_path / "empty.jsonl"), "empty.jsonl", "empty")


@pytest.mark.parametrize("kind, fragment", [("folder", "is a folder"), ("broken link", "broken symbolic link"),
                                            ("not utf-8", "not UTF-8"),
                                            pytest.param("no permission", "Permission denied", marks=NOT_ROOT)])
def test_unreadable_data_file(kind, fragment, tmp_path):
    path = tmp_path / "data.jsonl"
    if kind == "folder":
        path.mkdir()
    elif kind == "broken link":
        path.symlink_to(tmp_path / "gone.jsonl")
    else:
        path.write_bytes(b'{"question": "caf\xe9?", "answer": "yes"}\n')  # latin-1, not UTF-8
        if kind == "no permission":
            path.chmod(0)
    assert_user_error(score(tmp_path, data=path), "data.jsonl", fragment)


@pytest.mark.parametrize("name, text, line", [
    ("bad.jsonl", '{"question": "q1", "answer": "a1"}\n{"question": "q2", "answer": "a2"}\n{"question": "q3",\n', 3),
    ("bad.json", '[{"question": "q1", "answer": "a1"},\n {"question": "q2" "answer": "a2"}]\n', 2),
])
def test_malformed_json_names_the_line(name, text, line, tmp_path):
    (tmp_path / name).write_text(text)
    assert_user_error(score(tmp_path, data=tmp_path / name), name, f"line {line}")


@pytest.mark.parametrize("rows, fragments", [
    ([{"question": "q1", "answer": "a1"}, {"question": "q2"}], ["missing field 'answer' in row 1"]),
    ([{"question": "q1", "answer": 42}], ["field 'answer' in row 0 is int", "expected str"]),
    ([{"id": ["x"], "question": "q1", "answer": "a1"}], ["field 'id' in row 0 is list"]),
])
def test_missing_or_wrongly_typed_data_field(rows, fragments, tmp_path):
    assert_user_error(score(tmp_path, data=write_jsonl(tmp_path / "d.jsonl", rows)), "d.jsonl", *fragments)


@pytest.mark.parametrize("command, args, fragments", [
    ("score", ["--set", "draws=abc"], ["'draws'", "cannot read 'abc' as int"]),
    ("score", ["--set", "draws=2.5"], ["'draws'", "as int"]),
    ("score", ["--set", "draws=0x_"], ["'draws'", "as int"]),
    ("score", ["--set", "draws=true"], ["'draws'", "as int"]),
    ("score", ["--set", "batch_size=null"], ["'batch_size' cannot be null"]),
    ("unlearn", ["--set", "method_kwargs=5"], ["'method_kwargs' must be a mapping"]),
    ("unlearn", ["--set", "betas=fast"], ["'betas'", "cannot read 'fast' as float"]),
])
def test_wrongly_typed_config_value(command, args, fragments, tmp_path):
    assert_user_error(run(command, tmp_path, qa_file(tmp_path), *args), *fragments)


@pytest.mark.parametrize("role", ["data", "forget", "retain"])
def test_duplicate_sample_ids(role, tmp_path):
    dup = write_jsonl(tmp_path / "dup.jsonl", [{"id": "s1", "question": "q1", "answer": "a1"},
                                               {"id": "s2", "question": "q2", "answer": "a2"},
                                               {"id": "s1", "question": "q3", "answer": "a3"}])
    if role == "data":
        proc = score(tmp_path, data=dup)
    elif role == "forget":
        proc = unlearn(tmp_path, forget=dup)
    else:
        proc = unlearn(tmp_path, "--retain", dup, "--method", "graddiff")
    assert_user_error(proc, "duplicate id 's1'", "dup.jsonl", "samples 0 and 2")


def test_samples_longer_than_the_context_are_cut_with_a_warning(tmp_path):
    long = " ".join(f"word{i}" for i in range(60))  # > 64 tokens with a 300-token vocabulary
    data = qa_file(tmp_path, pairs=QA + [("Tell me everything about Dora.", long)])
    model = SMALL_MODEL + "-p64"  # a position table of 64: the default max_length 512 would index past it
    proc = run_cli_inprocess("score", "--model", model, "--data", data, "--draws", "1", "--no-proxies",
                             "--out", tmp_path / "score")
    assert_ok(proc)
    assert any("1 of 4 samples truncated to 64 tokens" in w for w in proc.warnings), proc.stderr
    rows = [json.loads(line) for line in (tmp_path / "score/mrd.jsonl").read_text().splitlines()]
    assert max(r["n_tokens"] for r in rows) == 63  # 64 positions, the first token is not scored
    proc = run_cli_inprocess("unlearn", "--model", model, "--forget", data, "--out", tmp_path / "unlearn",
                             "--max-steps", "1", "--lr", "1e-3", "--device", "cpu")
    assert_ok(proc)
    assert any("1 of 4 samples truncated to 64 tokens" in w for w in proc.warnings), proc.stderr


def test_forget_set_overlapping_the_retain_set_warns(tmp_path):
    retain = qa_file(tmp_path, "retain.jsonl", pairs=RETAIN + QA[1:2])  # QA[1] is also a forget sample
    proc = unlearn(tmp_path, "--retain", retain, "--method", "graddiff")
    assert_ok(proc)
    assert any("1 of 3 forget samples are also in the retain set" in w and "'forget:1'" in w
               for w in proc.warnings), proc.stderr
    assert (tmp_path / "unlearn/DONE.json").is_file()


# ------------------------------------------------------------------------------------------ MRD settings


@pytest.mark.parametrize("command, args", [
    ("score", ["--sigma", "0"]), ("score", ["--sigma", "-1e-5"]), ("score", ["--sigma", "nan"]),
    ("score", ["--sigma", "inf"]),
    ("unlearn", ["--sampler", "cga", "--set", "mrd_sigma=nan"]), ("unlearn", ["--set", "mrd_sigma=0"]),
])
def test_non_finite_or_non_positive_sigma(command, args, tmp_path):
    assert_user_error(run(command, tmp_path, qa_file(tmp_path), *args), "sigma", "finite positive")


@pytest.mark.parametrize("command, args, fragment", [
    ("score", ["--draws", "0"], "draws (K) must be >= 1, got 0"),
    ("score", ["--draws", "-3"], "draws (K) must be >= 1, got -3"),
    ("unlearn", ["--sampler", "cga", "--set", "mrd_draws=0"], "mrd_draws and rescore_draws"),
    ("unlearn", ["--sampler", "refresh", "--set", "rescore_draws=0"], "mrd_draws and rescore_draws"),
])
def test_k_below_one(command, args, fragment, tmp_path):
    assert_user_error(run(command, tmp_path, qa_file(tmp_path), *args), fragment)


@pytest.mark.parametrize("argv, fragments", [
    (["unlearn", "--method", "nop"], ["unknown method 'nop'", "did you mean 'npo'"]),
    (["unlearn", "--sampler", "cgaa"], ["unknown sampler 'cgaa'", "did you mean 'cga'"]),
    (["unlearn", "--set", "mrd_estimator=antithetc"], ["did you mean 'antithetic'"]),
    (["score", "--estimator", "antithetc"], ["did you mean 'antithetic'"]),
    (["score", "--template", "plian"], ["did you mean 'plain'"]),
    (["bench", "run", "samplrs"], ["unknown experiment 'samplrs'", "did you mean 'samplers'"]),
    # no did-you-mean here yet (evaluation/runner.py), but one line naming the value and the known names
    (["eval", "--benchmark", "tofo"], ["unknown benchmark 'tofo'", "known: tofu"]),
])
def test_unknown_names_did_you_mean(argv, fragments, tmp_path):
    data = qa_file(tmp_path)
    extra = {"unlearn": ["--model", SMALL_MODEL, "--forget", data, "--out", tmp_path / "u"],
             "score": ["--model", SMALL_MODEL, "--data", data, "--draws", "1", "--out", tmp_path / "s"],
             "bench": ["--out", tmp_path / "b", "--quick"],
             "eval": ["--model", SMALL_MODEL, "--out", tmp_path / "e"]}[argv[0]]
    assert_user_error(run_cli_inprocess(*argv, *extra), *fragments)


# ------------------------------------------------------------------------------------------------ models


@pytest.mark.parametrize("kind, fragment", [("missing", "does not exist"), ("no config", "has no config.json"),
                                            ("a file", "is not a directory")])
def test_missing_model_directory(kind, fragment, tmp_path):
    path = tmp_path / "model"
    if kind == "no config":
        path.mkdir()
    elif kind == "a file":
        path.write_text("not a model")
    for proc in (score(tmp_path, "--model", path), unlearn(tmp_path, "--model", path)):
        assert_user_error(proc, str(path), fragment)


@pytest.fixture(scope="module")
def no_pad_model(tmp_path_factory):
    """A saved tiny model whose tokenizer has no pad token (GPT-2 / Llama checkpoints often have none)."""
    from mrdkit.models import build_tiny_model

    texts = [q + a for q, a in QA + RETAIN]
    lm = build_tiny_model(texts, vocab_size=300, n_layer=1, d_model=32, n_head=2, max_position=64)
    lm.tokenizer.pad_token = None
    lm.model.config.pad_token_id = None
    path = tmp_path_factory.mktemp("nopad") / "model"
    lm.save(path)
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(path).pad_token is None
    return path


def test_tokenizer_without_pad_token_is_handled(no_pad_model, tmp_path):
    proc = score(tmp_path, "--model", no_pad_model)
    assert_ok(proc)
    assert len((tmp_path / "score/mrd.jsonl").read_text().splitlines()) == 3
    assert_ok(unlearn(tmp_path, "--model", no_pad_model))
    assert (tmp_path / "unlearn/model/model.safetensors").is_file()


@pytest.mark.parametrize("dtype, name", [("bfloat16", "bfloat16"), ("bf16", "bfloat16"), ("float16", "float16")])
def test_half_precision_weights_refused_for_mrd(dtype, name, tmp_path):
    line = assert_user_error(score(tmp_path, "--dtype", dtype), f"MRD needs float32 or float64 weights, not {name}")
    assert "sigma=1e-5 perturbation is below" in line and "resolution" in line  # the reason, not just a refusal
    assert not (tmp_path / "score").exists()


# ------------------------------------------------------------------------------------------- run directories


def _files(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_resume_with_a_different_config_is_refused(tmp_path):
    assert_ok(score(tmp_path))
    before = _files(tmp_path / "score")
    assert_user_error(score(tmp_path, "--resume", "--sigma", "2e-5"), "--resume refused", "differs in: mrd")
    assert_user_error(score(tmp_path), "already holds a finished run")  # no flag: the finished run is kept
    assert _files(tmp_path / "score") == before
    assert_ok(unlearn(tmp_path))
    before = _files(tmp_path / "unlearn")
    assert_user_error(unlearn(tmp_path, "--resume", "--lr", "2e-3"), "--resume refused", "differs in: unlearn")
    assert _files(tmp_path / "unlearn") == before


@pytest.mark.parametrize("kind", ["under a file", pytest.param("read-only folder", marks=NOT_ROOT)])
def test_output_directory_not_writable(kind, tmp_path):
    if kind == "under a file":
        (tmp_path / "taken").write_text("a file, not a folder")
        out, fragment = tmp_path / "taken" / "run", "cannot create output directory"
    else:
        (tmp_path / "ro").mkdir()
        (tmp_path / "ro").chmod(0o555)
        out, fragment = tmp_path / "ro", "is not writable"
    assert_user_error(score(tmp_path, out=out), str(out), fragment)
    assert_user_error(unlearn(tmp_path, out=out), str(out), fragment)
    if kind == "under a file":
        assert (tmp_path / "taken").read_text() == "a file, not a folder"


def test_diverging_unlearning_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    # lr 1e30: step 1 is warmup (lr 0), step 2 blows the weights up, step 3's loss is NaN
    proc = unlearn(tmp_path, "--lr", "1e30", "--max-steps", "6", "--set", "checkpoint_every=1",
                   "--set", "warmup_steps=1")
    line = assert_user_error(proc, "non-finite loss at step 3", "step-000002", "lower the lr")
    assert "nan" in line
    run_dir = tmp_path / "unlearn"
    assert [p.name for p in (run_dir / "checkpoints").iterdir()] == ["step-000002"]
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "non_finite"
    assert not (run_dir / "DONE.json").exists()
    rows = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2]


def test_testbed_build_refuses_an_unfinished_build_of_other_settings(tmp_path):
    part = tmp_path / ".partial-tb"
    part.mkdir()
    (part / "build.json").write_text('{"tier": "tiny", "seed": 7, "recipe": {}}')
    proc = run_cli_inprocess("testbed", "build", "--out", tmp_path / "tb")
    assert_user_error(proc, ".partial-tb", "differs in: recipe, seed", "--restart")
    assert (part / "build.json").is_file()  # nothing of the unfinished build was touched

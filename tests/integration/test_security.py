"""Security defaults (docs/robustness.md): everything mrdkit writes is safetensors / JSON / parquet / PNG (no pickle),
no pickle is ever read, a model's own Python code runs only with --trust-remote-code, and run names cannot leave
the output root."""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path

import pytest

from helpers import SMALL_MODEL, assert_ok, assert_user_error, run_cli_inprocess
from mrdkit.runs import LOCK_FILE

SRC = Path(__file__).resolve().parents[2] / "src" / "mrdkit"
ALLOWED = {".json", ".jsonl", ".safetensors", ".parquet", ".png", ".csv", ".md", ".txt", ".model", ".stderr"}
PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".npy", ".npz", ".joblib"}


def _qa(tmp_path: Path) -> Path:
    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps({"question": f"Who is person {i}?", "answer": f"Person {i} is a baker."})
                            + "\n" for i in range(4)))
    return path


def test_everything_written_is_safetensors_json_or_data(tmp_path):
    data = _qa(tmp_path)
    assert_ok(run_cli_inprocess("score", "--model", SMALL_MODEL, "--data", data, "--draws", "2",
                                "--out", tmp_path / "runs/score"))
    for extra in ([], ["--lora", "--set", "lora.r=2"]):  # full fine-tuning and a LoRA adapter
        out = tmp_path / "runs" / ("lora" if extra else "full")
        assert_ok(run_cli_inprocess("unlearn", "--model", SMALL_MODEL, "--forget", data, "--out", out, "--lr", "1e-3",
                                    "--max-steps", "2", "--device", "cpu", "--set", "checkpoint_every=1", *extra))
    files = [p for p in (tmp_path / "runs").rglob("*") if p.is_file()]
    assert any(p.name == "model.safetensors" for p in files) and any(p.name == "adapter_model.safetensors"
                                                                      for p in files)
    assert any(p.name == "optimizer.safetensors" for p in files)
    for path in files:
        if path.name == LOCK_FILE:  # the run folder's OS lock (mrdkit.runs.lock_run_dir): an empty file
            assert path.stat().st_size == 0, path
            continue
        assert path.suffix not in PICKLE_SUFFIXES and path.suffix in ALLOWED, path
        head = path.read_bytes()[:2]
        assert head != b"\x80\x04" and head != b"\x80\x02" and head != b"PK", f"{path} looks like a pickle / zip"


def test_no_pickle_is_read_anywhere_in_the_source():
    bad = []
    for path in SRC.rglob("*.py"):
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if re.search(r"\btorch\.load\(", code) and "weights_only=True" not in code:
                bad.append(f"{path.name}:{lineno}: torch.load without weights_only=True")
            if re.search(r"\b(pickle|dill|joblib|cloudpickle)\.loads?\(|allow_pickle\s*=\s*True", code):
                bad.append(f"{path.name}:{lineno}: {code.strip()}")
            if re.search(r"trust_remote_code\s*=\s*True", code):
                bad.append(f"{path.name}:{lineno}: trust_remote_code=True hard-coded")
    assert not bad, bad


def _custom_code_model(root: Path) -> Path:
    """A saved model whose config asks for its own Python code; running that code leaves ``root/RAN``."""
    from mrdkit.models import build_tiny_model

    path = root / "model"
    build_tiny_model(None, vocab_size=300, n_layer=1, d_model=32, n_head=2, max_position=64).save(path)
    config = json.loads((path / "config.json").read_text())
    config.update(model_type="mrdkit-custom", auto_map={"AutoConfig": "configuration_custom.CustomConfig",
                                                        "AutoModelForCausalLM": "modeling_custom.CustomModel"})
    (path / "config.json").write_text(json.dumps(config))
    for name in ("configuration_custom.py", "modeling_custom.py"):
        (path / name).write_text(f"open({str(root / 'RAN')!r}, 'w').write('remote code ran')\n")
    return path


@pytest.fixture(scope="module")
def custom_code_model(tmp_path_factory):
    return _custom_code_model(tmp_path_factory.mktemp("remote"))


def test_model_code_runs_only_with_trust_remote_code(custom_code_model, tmp_path):
    data = _qa(tmp_path)
    for proc in (run_cli_inprocess("score", "--model", custom_code_model, "--data", data, "--out", tmp_path / "s"),
                 run_cli_inprocess("unlearn", "--model", custom_code_model, "--forget", data, "--out",
                                   tmp_path / "u"),
                 run_cli_inprocess("eval", "--model", custom_code_model, "--benchmark", "ppl", "--data", data,
                                   "--out", tmp_path / "e"),
                 run_cli_inprocess("eval", "--model", SMALL_MODEL, "--retain-model", custom_code_model,
                                   "--limit", "2", "--skip-generation", "--out", tmp_path / "r"),
                 run_cli_inprocess("difficulty", "truth", "--model", custom_code_model, "--data", data, "--out",
                                   tmp_path / "t")):
        assert_user_error(proc, "ships its own Python code", "--trust-remote-code")
    assert not (custom_code_model.parent / "RAN").exists()


@pytest.mark.parametrize("command", [["eval", "--benchmark", "ppl", "--data", "{data}"],
                                     ["difficulty", "truth", "--data", "{data}"]])
def test_trust_remote_code_reaches_the_loader(tmp_path, command):
    # with the flag the model's own code is imported (the marker appears); what it then does is its own business
    model = _custom_code_model(tmp_path)
    data = str(_qa(tmp_path))
    args = [a.replace("{data}", data) for a in command]
    with contextlib.suppress(Exception):  # the marker-only module then lacks the classes transformers wants
        run_cli_inprocess(*args, "--model", model, "--out", tmp_path / "out", "--trust-remote-code")
    assert (tmp_path / "RAN").exists()


def test_run_names_cannot_escape_the_output_root(tmp_path):
    from mrdkit.errors import MrdkitError
    from mrdkit.runs import RunDir

    run = RunDir(tmp_path / "root", {"kind": "test"})
    for name in ("../outside.json", "/etc/passwd", "a/../../outside.json"):
        with pytest.raises(MrdkitError, match="escapes the output root"):
            run.write_json(name, {})
    assert run.file("sub/ok.json").parent == (tmp_path / "root/sub").resolve()
    # experiment names (the run names of `mrd bench`) come from a registry: a path is just an unknown name
    assert_user_error(run_cli_inprocess("bench", "run", "../../escape", "--out", tmp_path / "bench"),
                      "unknown experiment '../../escape'")
    assert not (tmp_path.parent / "escape").exists() and not list(tmp_path.parent.glob("escape*"))

"""``mrd unlearn`` end to end on real TOFU (forget01 + a slice of retain99) with a tiny model: the documented
example runs as written, scores from an ``mrd.jsonl`` file and LoRA work, and bad input is one line, exit 2."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from helpers import run_cli

DOCS = Path(__file__).resolve().parents[2] / "docs" / "unlearning.md"
SMALL = "tiny:d32-l1-h2-v512"  # the documented default tiny model works too; this one keeps the test fast


def documented_command() -> list[str]:
    """The first ``mrd unlearn`` command of docs/unlearning.md, as argv after ``mrd``."""
    blocks = re.findall(r"```bash\n(.*?)```", DOCS.read_text(), flags=re.S)
    text = next(b for b in blocks if b.lstrip().startswith("mrd unlearn")).replace("\\\n", " ")
    argv = shlex.split(text)
    assert argv[0] == "mrd"
    return argv[1:]


def set_option(argv: list[str], name: str, value: str) -> list[str]:
    i = argv.index(name)
    return argv[:i + 1] + [value] + argv[i + 2:]


def test_documented_example_runs_on_real_tofu(tofu_dir, tmp_path):
    argv = set_option(set_option(documented_command(), "--out", str(tmp_path / "run")), "--model", SMALL)
    proc = run_cli(*argv, "--max-steps", "2", "--set", "mrd_draws=2")  # the doc's run, shortened
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "run"
    config = json.loads((run / "config.json").read_text())
    assert config["data"]["forget"]["n"] == 40 and config["data"]["retain"]["n"] == 200
    assert config["method"]["method"] == "npo" and config["method"]["alpha"] == 1.0 and config["sampler"] == "cga"
    rows = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2] and all(i.startswith("tofu:") for i in rows[1]["forget_ids"])
    summary = json.loads((run / "summary.json").read_text())
    assert summary["scores"] == "on-the-fly" and summary["forget_prob_end"] < summary["forget_prob_start"]
    assert (run / "model/model.safetensors").is_file() and (run / "DONE.json").is_file()
    assert "forget P(a|q)" in proc.stdout


def test_scores_from_an_mrd_file_with_lora(tofu_dir, tmp_path):
    from mrdkit.data import load_samples

    mrd = tmp_path / "mrd.jsonl"
    mrd.write_text("".join(json.dumps({"id": s.id, "mrd": i / 40}) + "\n"
                           for i, s in enumerate(load_samples("tofu:forget01"))))
    args = ["unlearn", "--model", SMALL, "--forget", "tofu:forget01", "--retain", "tofu:retain99",
            "--retain-limit", "20", "--method", "graddiff", "--sampler", "cga", "--mrd", str(mrd), "--lora",
            "--set", "lora.r=2", "--lr", "1e-3", "--max-steps", "2", "--out", str(tmp_path / "run")]
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "run/model/adapter_model.safetensors").is_file()
    summary = json.loads((tmp_path / "run/summary.json").read_text())
    assert summary["scores"] == "file" and summary["lora_targets"] == ["c_attn"]


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--method", "nop"], "did you mean 'npo'"),
        (["--method", "npo", "--hp", "betta=0.2"], "no hyper-parameter 'betta'"),
        (["--set", "lrr=0.1"], "did you mean 'lr'"),
    ],
)
def test_bad_input_is_one_line_with_exit_code_2(args, fragment, tmp_path, capsys):
    from mrdkit.cli.app import main  # in-process: the same entry point as `mrd`, without a 10 s interpreter start

    with pytest.raises(SystemExit) as exit_:
        main(["unlearn", "--model", SMALL, "--forget", "tofu:forget01", "--out", str(tmp_path / "x"), *args])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and fragment in errors[0], err
    assert not (tmp_path / "x").exists()  # rejected before any model, data or run directory

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


def _score_files(tmp_path, direction="harder"):
    """A ``mrd difficulty score``-style output: scores.jsonl (newton_steps = i, so s0 is predicted easiest under
    direction "harder") and the scores.json that declares the direction."""
    from mrdkit.data import load_samples

    forget = load_samples("tofu:forget01")[:6]
    path = tmp_path / "scores.jsonl"
    path.write_text("".join(json.dumps({"id": s.id, "newton_steps": float(i), "loss": 1.0}) + "\n"
                            for i, s in enumerate(forget)))
    (tmp_path / "scores.json").write_text(json.dumps({"scores": {"newton_steps": {"direction": direction}}}))
    return path, [s.id for s in forget]


def test_a_sampler_follows_any_score_of_a_score_file(tofu_dir, tmp_path):
    """curriculum = easiest first: with newton_steps declared "harder", the lowest predicted steps come first."""
    path, ids = _score_files(tmp_path)
    args = ["unlearn", "--model", SMALL, "--forget", "tofu:forget01", "--forget-limit", "6", "--method", "ga",
            "--sampler", "curriculum", "--sampler-arg", "start_frac=1", "--scores", str(path), "--score-key",
            "newton_steps", "--batch-size", "6", "--max-steps", "1", "--lr", "1e-3", "--out", str(tmp_path / "run")]
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "run/train_log.jsonl").read_text().splitlines()]
    assert rows[1]["forget_ids"] == ids  # 0, 1, ..., 5 predicted steps: easiest first
    config = json.loads((tmp_path / "run/config.json").read_text())
    assert config["unlearn"]["score_key"] == "newton_steps" and config["scores"]["source"] == "file"
    flipped = run_cli(*args[:-1], str(tmp_path / "run2"), "--score-direction", "easier")
    assert flipped.returncode == 0, flipped.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "run2/train_log.jsonl").read_text().splitlines()]
    assert rows[1]["forget_ids"] == ids[::-1]


@pytest.mark.parametrize("extra, fragment", [
    (["--score-key", "lookahead_3"], "no 'lookahead_3' column"),
    (["--score-key", "loss", "--forget-limit", "7"], "have no score in"),
    (["--score-key", "loss", "--score-direction", "up"], "score_direction must be easier or harder"),
])
def test_score_file_errors_are_one_line(tofu_dir, tmp_path, extra, fragment):
    from helpers import assert_user_error

    path, _ = _score_files(tmp_path)
    args = ["unlearn", "--model", SMALL, "--forget", "tofu:forget01", "--forget-limit", "6", "--method", "ga",
            "--sampler", "cga", "--scores", str(path), "--max-steps", "1", "--out", str(tmp_path / "run"), *extra]
    assert_user_error(run_cli(*args), fragment)

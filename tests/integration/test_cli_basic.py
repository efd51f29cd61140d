"""The mrd CLI: fast help, registries, data inspect, and one-line errors with exit code 2 for bad input."""

import json
import subprocess
import sys

import pytest

from helpers import assert_user_error, run_cli


def test_help_does_not_import_torch():
    code = "import sys; from mrdkit import cli; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    assert "score" in run_cli("--help").stdout


def test_ls_lists_registries():
    out = run_cli("ls").stdout
    for name in ("antithetic", "cga", "npo", "plain", "forget_quality"):
        assert name in out
    experiments = out.split("experiments", 1)[1]  # the section is not empty: every experiment registers
    for name in ("validate", "samplers", "sensitivity", "characteristics", "selection", "muse"):
        assert name in experiments


def test_data_inspect_json(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text('{"question": "q1", "answer": "a one"}\n{"question": "q2", "answer": "a two two"}\n')
    proc = run_cli("data", "inspect", str(path), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["count"] == 2


@pytest.mark.parametrize(
    "content, fragments",
    [
        (None, ["no such file"]),
        ("", ["empty"]),
        ('{"question": "q", "answer": "a"}\n{"question": \n', ["line 2"]),
        ('{"question": "q"}\n', ["answer"]),
    ],
)
def test_data_errors(tmp_path, content, fragments):
    path = tmp_path / "d.jsonl"
    if content is not None:
        path.write_text(content)
    assert_user_error(run_cli("data", "inspect", str(path)), str(path.name), *fragments)


def test_unknown_format(tmp_path):
    path = tmp_path / "d.xyz"
    path.write_text("x")
    assert_user_error(run_cli("data", "inspect", str(path)), "d.xyz")


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--sigma", "0"], ["sigma"]),
        (["--sigma", "nan"], ["sigma"]),
        (["--draws", "0"], ["draws"]),
        (["--estimator", "antithetc"], ["did you mean 'antithetic'"]),
        (["--dtype", "bfloat16"], ["bf"]),
        (["--model", "/nonexistent/model"], ["/nonexistent/model"]),
        (["--data", "tofu:forget11"], ["did you mean"]),
    ],
)
def test_score_bad_input(tmp_path, args, fragments):
    proc = run_cli("score", "--limit", "2", "--draws", "1", "--out", str(tmp_path / "r"), *args)
    assert_user_error(proc, *fragments)

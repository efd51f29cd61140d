"""``mrd eval`` and ``mrd difficulty`` end to end on a tiny model and real TOFU forget01 (in-process CLI)."""

from __future__ import annotations

import json

import pytest

from mrdkit.cli.app import main

TINY = "tiny-gpt2:d32-l1-h2-v512"


def run(capsys, *args):
    """Invoke ``mrd`` in this process; returns (exit code, stdout, stderr)."""
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


def test_eval_tofu_then_forget_quality_against_its_own_log(capsys, tmp_path):
    first = tmp_path / "first"
    common = ["eval", "--model", TINY, "--forget-split", "forget01", "--limit", "3", "--max-new-tokens", "2",
              "--batch-size", "8"]
    code, out, err = run(capsys, *common, "--out", str(first))
    assert code == 0, err
    assert "forget_truth_ratio" in out and "model_utility" in out and "note: forget_quality omitted" in out
    for name in ("eval.json", "eval_samples.jsonl", "TOFU_EVAL.json", "TOFU_SUMMARY.json"):
        assert (first / name).is_file()
    # no retain log: forget_quality is null in TOFU_EVAL.json, so the summary has the other 6 default metrics
    assert json.loads((first / "TOFU_EVAL.json").read_text())["forget_quality"] == {"agg_value": None}
    assert set(json.loads((first / "TOFU_SUMMARY.json").read_text())) == {
        "forget_truth_ratio", "forget_Q_A_Prob", "forget_Q_A_ROUGE", "model_utility", "privleak", "extraction_strength"}
    assert "note: mia_reference omitted" in out
    code, out, err = run(capsys, *common, "--out", str(tmp_path / "second"), "--retain-log",
                         str(first / "TOFU_EVAL.json"), "--skip-generation", "--reference-model", TINY)
    assert code == 0, err
    second = json.loads((tmp_path / "second" / "eval.json").read_text())
    assert second["metrics"]["forget_quality"]["value"] == 1.0
    assert "ROUGE omitted" in out and "mia_reference" in out
    # the reference is the same seeded tiny model: target minus reference loss is 0 everywhere, AUC 1/2
    assert second["metrics"]["mia_reference"]["value"] == 0.5 and second["meta"]["reference_model"].startswith(TINY)
    community = json.loads((tmp_path / "second" / "TOFU_EVAL.json").read_text())
    assert community["mia_reference"]["auc"] == 0.5 and community["forget_quality"]["agg_value"] == 1.0
    assert {v["score"] for v in community["mia_reference"]["forget"]["value_by_index"].values()} == {0.0}


def test_eval_user_errors_are_one_line(capsys, tmp_path):
    code, _, err = run(capsys, "eval", "--model", TINY, "--forget-split", "forget20", "--out", str(tmp_path / "x"))
    assert code == 2 and err.startswith("error:") and "forget01" in err and "Traceback" not in err
    code, _, err = run(capsys, "difficulty", "--scores", str(tmp_path / "s.jsonl"))
    assert code == 2 and "both --scores and --truth" in err


def test_difficulty_truth_then_correlate(capsys, tmp_path):
    out = tmp_path / "truth"
    code, stdout, err = run(capsys, "difficulty", "truth", "--model", TINY, "--data", "tofu:forget01", "--limit", "4",
                            "--lr", "0.02", "--relative", "1.3", "--cap", "20", "--out", str(out))
    assert code == 0, err
    rows = [json.loads(line) for line in (out / "updates.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(r["updates"] >= 1 for r in rows) and (out / "DONE.json").is_file()
    assert "median" in stdout
    scores = tmp_path / "mrd.jsonl"
    scores.write_text("".join(json.dumps({"id": r["id"], "mrd": 1.0 / (1 + r["updates"] + i), "length": i})
                              + "\n" for i, r in enumerate(rows)))
    code, stdout, err = run(capsys, "difficulty", "--scores", str(scores), "--truth", str(out / "updates.jsonl"),
                            "--n-boot", "20", "--out", str(tmp_path / "corr"))
    assert code == 0, err
    assert "spearman" in stdout and (tmp_path / "corr" / "scatter_mrd.png").is_file()
    table = json.loads((tmp_path / "corr" / "correlations.json").read_text())["rows"]
    assert {r["score"] for r in table} == {"mrd", "length"}
    code, stdout, err = run(capsys, "difficulty", "correlate", "--scores", str(scores), "--truth",
                            str(out / "updates.jsonl"), "--score-cols", "mrd", "--n-boot", "0")
    assert code == 0, err
    assert "mrd" in stdout


@pytest.mark.parametrize("args", [["difficulty"], ["difficulty", "--help"], ["eval", "--help"]])
def test_help(capsys, args):
    code, out, _ = run(capsys, *args)
    assert code == 0 and ("truth" in out or "--forget-split" in out)

"""``mrd eval --benchmark lm-eval`` offline: a local lm-eval task (WMDP's prompt) on fixture data, a tiny model."""

from __future__ import annotations

import json
import math

import pytest

from helpers import SMALL_MODEL, assert_ok, assert_user_error, run_cli_inprocess

pytest.importorskip("lm_eval", reason="lm-eval is the optional 'lmeval' extra (in the 'test' extra for CI)")

# lm-eval's wmdp task, pointed at a local JSON-lines file in cais/wmdp's columns (answer, question, choices)
TASK_YAML = """task: fixture_wmdp
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question.strip()}}}}\\nA. {{{{choices[0]}}}}\\nB. {{{{choices[1]}}}}\\nC. {{{{choices[2]}}}}\\nD. {{{{choices[3]}}}}\\nAnswer:"
doc_to_choice: ["A", "B", "C", "D"]
doc_to_target: answer
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1
"""


@pytest.fixture
def local_task(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-datasets")  # keep the user's cache clean
    data = tmp_path / "wmdp_fixture.jsonl"
    rows = [{"answer": i % 4, "question": f"Which made-up element is number {i}?",
             "choices": [f"element {j + i}" for j in range(4)]} for i in range(10)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "fixture_wmdp.yaml").write_text(TASK_YAML.format(data=data))
    return tasks


def test_lm_eval_runs_a_local_task_offline(tmp_path, local_task):
    out = tmp_path / "ev"
    proc = run_cli_inprocess("eval", "--benchmark", "lm-eval", "--tasks", "fixture_wmdp", "--include-path", local_task,
                             "--model", SMALL_MODEL, "--out", out, "--device", "cpu", "--batch-size", "4")
    assert_ok(proc)
    assert "lm_eval_results.json" in proc.stdout
    doc = json.loads((out / "lm_eval_results.json").read_text())
    assert doc["results"]["fixture_wmdp"]["sample_len"] == 10 and "configs" in doc and "samples" not in doc
    metrics = json.loads((out / "eval.json").read_text())["metrics"]
    acc = metrics["fixture_wmdp/acc"]
    assert acc["n"] == 10 and acc["higher_is_better"] is True
    rows = [json.loads(line) for line in (out / "eval_samples.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [f"fixture_wmdp:{i}" for i in range(10)]
    hits = [r["acc"] for r in rows]
    assert acc["value"] == pytest.approx(sum(hits) / 10)
    mean = sum(hits) / 10  # lm-eval's stderr: sample standard deviation over sqrt(n)
    assert acc["stderr"] == pytest.approx(math.sqrt(sum((h - mean) ** 2 for h in hits) / 9 / 10))
    assert all(len(r["loglikelihoods"]) == 4 and r["target"] in (0, 1, 2, 3) for r in rows)
    pred = [max(range(4), key=lambda j: r["loglikelihoods"][j]) for r in rows]
    assert [float(p == r["target"]) for p, r in zip(pred, rows)] == hits


def test_lm_eval_bad_input_is_one_line(tmp_path, local_task):
    common = ("--model", SMALL_MODEL, "--out", tmp_path / "x", "--device", "cpu")
    assert_user_error(run_cli_inprocess("eval", "--benchmark", "lm-eval", *common), "needs --tasks")
    assert_user_error(run_cli_inprocess("eval", "--benchmark", "lm-eval", "--tasks", "fixture_wmpd", "--include-path",
                                        local_task, *common), "unknown lm-eval task 'fixture_wmpd'", "fixture_wmdp")
    assert_user_error(run_cli_inprocess("eval", "--benchmark", "lm-eval", "--tasks", "x", "--include-path",
                                        tmp_path / "nope", *common), "not a folder")

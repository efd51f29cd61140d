"""Smoke tests of the benchmark scripts in benchmarks/: each main() runs with --quick sizes and writes its JSON.

The scripts are not part of the package, so they are loaded from their files. --quick uses the TOFU split shipped
inside the package (forget01), so these tests need no shared data.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def load_script(name: str):
    """Import ``benchmarks/<name>.py`` as a module."""
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses with postponed annotations look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def speed():
    return load_script("mrd_speed")


def test_mrd_speed_quick_matches_reference_and_writes_json(speed, tmp_path):
    import torch

    on_cpu = not torch.cuda.is_available()  # the script runs on device "auto"
    out = tmp_path / "speed.json"
    result = speed.main(["--quick", "--json", str(out)])
    saved = json.loads(out.read_text())
    check = saved["check"]
    # mrdkit's paper estimator with reference noise is the reference loop, up to batched-forward rounding ...
    assert check["equal"] and check["max_rel_diff_mrd"] <= 1e-9 and check["max_rel_diff_draws"] <= 1e-9
    assert check["n_samples"] == 6
    # ... and bit for bit when it runs at the reference's shapes (batch size 1, no padding; CPU kernels)
    assert check["batch_size_1"]["bitwise_equal"] or not on_cpu
    for clock in ("summary_cpu", "summary_wall"):
        s = saved[clock]
        assert s["speedup"] > 0 and s["per_draw_over_forward"] > 0 and 0 <= s["noise_restore_share"] <= 1
    # one thread on CPU: process CPU time is the steadier clock and the primary one; on a GPU, the wall clock
    assert result["summary"]["clock"] == ("cpu" if on_cpu else "wall")


def test_reference_loop_leaves_weights_and_global_rng_alone(speed):
    import torch

    from mrdkit.models import load_model

    reference = speed.common.load("reference_loop")  # benchmarks/reference_loop.py, as mrd_speed loads it

    lm = load_model("tiny-gpt2:d32-l1-h2-v300", dtype="float64", device="cpu",
                    tiny_texts=["Question: who?\nAnswer: an author from Lima."] * 4)
    before = {k: v.clone() for k, v in lm.model.state_dict().items()}
    state = torch.random.get_rng_state()
    ids = lm.tokenizer("Question: who?\nAnswer: an author", return_tensors="pt")["input_ids"]
    labels = ids.clone()
    labels[:, 0] = -100
    mrd, raw = reference.reference_loop(lm.model, [(ids, labels)], draws=2, sigma=1e-3)
    assert len(raw[0]) == 2 and mrd[0] == pytest.approx(abs(sum(raw[0]) / 2))
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(v, before[k]) for k, v in lm.model.state_dict().items())


def test_memory_probe_reports_peak_above_loaded_model(speed):
    memory = speed.common.load("speed_memory")  # benchmarks/speed_memory.py, as mrd_speed loads it
    out = memory.memory_probe(spec="tiny-gpt2:d32-l1-h2-v300", dtype="float64", split="forget01", n=4, draws=1,
                              mode="mrdkit", batch_size=2, device="cpu")
    assert out["params_mib"] > 0 and out["largest_param_mib"] <= out["params_mib"]
    assert out["peak_extra_mib"] >= 0


def test_mrd_variance_quick_writes_json_and_plot(tmp_path):
    variance = load_script("mrd_variance")
    out, png = tmp_path / "variance.json", tmp_path / "variance.png"
    variance.main(["--quick", "--json", str(out), "--plot", str(png)])
    saved = json.loads(out.read_text())
    assert set(saved["results"]) == {"paper", "antithetic"}
    for name, res in saved["results"].items():
        assert [pt["passes"] for pt in res["curve"]] == [2, 4]
        assert [pt["draws"] for pt in res["curve"]] == ([2, 4] if name == "paper" else [1, 2])
        assert all(math.isnan(pt["spearman"]) or -1 <= pt["spearman"] <= 1 for pt in res["curve"])
        assert res["passes_to_threshold"] in (None, 2, 4)
    assert png.stat().st_size > 0


def test_variance_prefixes_equal_shorter_runs():
    """Taking the first k draws of a long run is what a run with k draws returns (the script relies on it)."""
    import torch

    from mrdkit.models import load_model
    from mrdkit.scoring.engine import score_batches

    variance = load_script("mrd_variance")
    lm = load_model("tiny-gpt2:d32-l1-h2-v300", dtype="float64", device="cpu",
                    tiny_texts=["Question: who?\nAnswer: an author from Lima."] * 4)
    common = variance.common
    batches = common.encode(common.tofu_samples("forget01", 3), lm.tokenizer, 2)
    long = variance.score_values(lm.model, batches, "antithetic", 0, 8, 1e-5)
    short = score_batches(lm.model, batches, draws=2, sigma=1e-5, estimator="antithetic", seed=0).estimate.values
    assert long.shape[1] == 4 and torch.equal(long[:, :2], short)


def test_mutation_check_plans_one_node_changes_without_running_tests(capsys):
    """benchmarks/mutation_check.py stays runnable: --list draws the mutants (no test runs, under a second); each
    mutant differs from the module in exactly the line it names."""
    import ast

    check = load_script("mutation_check")
    assert check.main(["--list", "--per-module", "2"]) == {"mutants": 2 * len(check.TARGETS)}
    assert len(capsys.readouterr().out.splitlines()) == 2 * len(check.TARGETS)
    source = (BENCHMARKS.parent / "src" / "mrdkit" / "scoring" / "estimators.py").read_text()
    original = ast.unparse(ast.parse(source)).splitlines()
    for index in range(len(check.candidates(ast.parse(source)))):
        mutated = check.apply(source, index)[0].splitlines()
        assert len(mutated) == len(original)
        assert sum(a != b for a, b in zip(original, mutated)) == 1

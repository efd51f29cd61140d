"""``mrd plan`` (issue 16, item 5): model sizes from configs on the meta device, activation probes that reproduce
the bytes autograd saves, the issue's two verdicts for Llama-2-7B on one 80 GB GPU, a measured CPU peak within 15%,
and the command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from helpers import assert_user_error, run_cli_inprocess
from mrdkit.plan import GIB, PlanSettings, model_shape, plan, probe_activations

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name, n_params", [("llama-2-7b", 6_738_415_616), ("llama-2-13b", 13_015_864_320),
                                            ("llama-2-70b", 68_976_648_192)])
def test_public_configs_count_the_published_parameters(name, n_params):
    shape = model_shape(name, PlanSettings(lora=True))
    assert shape.n_params == n_params  # the sizes of meta-llama/Llama-2-*-hf
    assert shape.lora_targets == ["q_proj", "v_proj"]
    hidden, kv = shape.hidden, shape.kv_heads * shape.hidden // shape.heads
    assert shape.lora_params == 8 * shape.layers * ((hidden + hidden) + (hidden + kv))  # r (d_in + d_out) each


def test_tied_embeddings_count_once_on_the_meta_device():
    shape = model_shape("tiny", PlanSettings())  # GPT-2 ties wte and lm_head
    assert shape.tied and shape.shared == shape.vocab * shape.hidden


@pytest.mark.parametrize("arch, settings", [
    ("gpt2", {}), ("llama", {}), ("llama", {"mixed_precision": "bf16"}), ("llama", {"attn_implementation": "eager"}),
])
def test_the_activation_probe_extrapolates_the_saved_bytes_of_a_larger_model(arch, settings):
    import torch
    from transformers import GPT2Config, LlamaConfig

    from mrdkit import plan as P

    config = (GPT2Config(vocab_size=1000, n_embd=192, n_layer=3, n_head=6) if arch == "gpt2" else
              LlamaConfig(vocab_size=1000, hidden_size=192, intermediate_size=512, num_hidden_layers=3,
                          num_attention_heads=6, num_key_value_heads=2))
    s = PlanSettings(seq_len=80, **settings)
    shape = model_shape(arch, s, config=config)
    predicted = probe_activations(shape, s).bytes(3, 2 * 80)
    model = P._probe_model(config, s, checkpointing=False)
    autocast = s.mixed_precision if s.mixed_precision != "no" else None
    with torch.random.fork_rng(devices=[]):
        measured = P._saved_bytes(model, 3, 80, 1000, autocast) - P._saved_bytes(model, 1, 80, 1000, autocast)
    assert predicted == pytest.approx(measured, rel=0.05)  # a size none of the probes ran


def test_llama2_7b_lora_bf16_checkpointing_fits_one_80gb_gpu_and_full_fp32_npo_does_not():
    lora = plan("llama-2-7b", PlanSettings(method="npo", lora=True, mixed_precision="bf16",
                                           gradient_checkpointing=True), tasks=("unlearn",))["unlearn"]
    assert lora["fits"] and lora["reference_mode"] == "adapters" and lora["parts"]["reference"] == 0
    full = plan("llama-2-7b", PlanSettings(method="npo"), tasks=("unlearn",))["unlearn"]
    assert not full["fits"] and full["peak"] > 112e9  # fp32 weights + grads + AdamW alone are 108 GB
    changes = [option["change"] for option in full["fits_with"]]
    assert "--lora" in changes and any(change.startswith("--fsdp on") for change in changes)
    assert all(option["peak_gib"] <= 80 for option in full["fits_with"])


def test_fsdp_divides_the_per_device_state_and_scoring_splits_over_a_device_map():
    one = plan("llama-2-70b", PlanSettings(method="ga", mixed_precision="bf16", gradient_checkpointing=True),
               tasks=("unlearn",))["unlearn"]
    eight = plan("llama-2-70b", PlanSettings(method="ga", mixed_precision="bf16", gradient_checkpointing=True,
                                             fsdp=True, gpus=8), tasks=("unlearn",))["unlearn"]
    assert eight["parts"]["adamw"] == pytest.approx(one["parts"]["adamw"] / 8)
    assert eight["parts"]["gradients"] == pytest.approx(one["parts"]["gradients"] / 8)
    half = plan("llama-2-70b", PlanSettings(score_dtype="bfloat16", compute_dtype="float32", perturb_mode="lowmem",
                                            grad_norm=False), tasks=("score",))["score"]
    assert half["parts"]["weights"] == pytest.approx(68_976_648_192 * 2)  # bf16 weights, no fp32 copy
    assert half["parts"]["perturbation"] < 2 * GIB


def test_the_prediction_is_within_15_percent_of_a_measured_cpu_peak():  # ~15 s: a real run in a subprocess
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import plan_check

    row = plan_check.run_case("testbed-graddiff-full", plan_check.CASES["testbed-graddiff-full"])
    assert 0.85 <= row["ratio"] <= 1.15, row


def test_cli_prints_the_plan_and_writes_json(tmp_path):
    proc = run_cli_inprocess("plan", "--model", "tiny", "--task", "unlearn", "--gpu-memory", "0.01",
                             "--json", tmp_path / "plan.json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "unlearn:" in proc.stdout and "does NOT fit in 0.01 GiB" in proc.stdout
    result = json.loads((tmp_path / "plan.json").read_text())
    assert result["unlearn"]["fits"] is False and result["model"]["model_type"] == "gpt2"
    assert_user_error(run_cli_inprocess("plan", "--model", "no/such-model-here"), "plan: no config")
    assert_user_error(run_cli_inprocess("plan", "--model", "tiny", "--task", "train"), "--task must be")

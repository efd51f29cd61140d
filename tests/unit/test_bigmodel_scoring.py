"""MRD for models that do not fit as fp32 copies (issue 16, item 4):

- a bf16 checkpoint scored in fp32 one module at a time (``compute_dtype``) gives bitwise the MRD, raw draws, base
  log-probs and proxies of the same weights converted to fp32, leaves the bf16 weights untouched, and never holds
  more widened weights than the tied parameters plus the largest module;
- a model placed with a ``device_map`` scores like the same model moved to one device; offloaded (meta) weights,
  half weights without ``compute_dtype`` and ``compute_dtype`` in copy mode are one-line errors.
"""

from __future__ import annotations

import copy

import pytest
import torch

from helpers import assert_user_error, run_cli_inprocess
from mrdkit.data import Sample
from mrdkit.errors import MrdkitError
from mrdkit.models import build_tiny_model, load_model
from mrdkit.scoring import score_mrd
from mrdkit.scoring.perturb import LowMemPerturber, Upcaster, largest_group_bytes

SAMPLES = [Sample(f"s:{i}", f"Where was author {i} born?", f"In town {i}7, by the river {i}{i}.") for i in range(6)]
# allow_floor: a random tiny model in fp32 fails the rounding-floor check; these tests compare dtype paths bitwise
KW = dict(draws=3, grad_norm=False, diagnostics=True, allow_floor=True)


def tiny(arch: str):
    return build_tiny_model([s.prompt + s.answer for s in SAMPLES], arch=arch, vocab_size=300, n_layer=2,
                            d_model=32, n_head=2, max_position=64)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])  # GPT-2 ties its embeddings, the tiny Llama does not
def test_bf16_weights_scored_in_fp32_module_by_module_equal_the_fp32_conversion_bitwise(arch):
    lm = tiny(arch)
    half = copy.deepcopy(lm.model).to(torch.bfloat16)
    converted = copy.deepcopy(half).to(torch.float32)
    before = {n: p.detach().clone() for n, p in half.named_parameters()}
    want = score_mrd(converted, SAMPLES, tokenizer=lm.tokenizer, **KW)
    got = score_mrd(half, SAMPLES, tokenizer=lm.tokenizer, compute_dtype="float32", perturb_mode="lowmem", **KW)
    for key in ("mrd", "draws", "base_logprob", "stderr"):
        assert torch.equal(getattr(got, key), getattr(want, key)), key
    assert got.proxies == want.proxies  # loss, Min-K%, zlib also in fp32
    assert got.diagnostics["floor"] == want.diagnostics["floor"]
    assert all(p.dtype == torch.bfloat16 and torch.equal(p, before[n]) for n, p in half.named_parameters())
    assert got.config["compute_dtype"] == "float32"


def test_the_upcaster_never_holds_more_than_tied_weights_plus_the_largest_module():
    lm = tiny("gpt2")
    half = copy.deepcopy(lm.model).to(torch.bfloat16)
    ids = torch.arange(12).reshape(2, 6)
    bound = largest_group_bytes(half)  # in bf16 bytes; widened to fp32 they are twice that
    with Upcaster(half, torch.float32) as up:
        assert up.wide_bytes == 2 * bound["shared"]  # the tied embedding stays widened for the whole context
        logits = half(input_ids=ids).logits
        assert up.peak_wide_bytes == 2 * (bound["shared"] + bound["largest_group"])
        assert up.wide_bytes == 2 * bound["shared"] and logits.dtype == torch.float32
    total = sum(p.numel() * 4 for p in half.parameters())
    assert up.peak_wide_bytes < total / 2  # far from a full fp32 copy
    assert all(p.dtype == torch.bfloat16 for p in half.parameters())


def test_half_weights_copy_mode_and_offloaded_weights_are_refused():
    lm = tiny("llama")
    half = copy.deepcopy(lm.model).to(torch.bfloat16)
    with pytest.raises(MrdkitError, match="float32 or float64"):
        score_mrd(half, SAMPLES, tokenizer=lm.tokenizer, **KW)
    with pytest.raises(MrdkitError, match="needs perturb_mode lowmem"):
        score_mrd(half, SAMPLES, tokenizer=lm.tokenizer, compute_dtype="float32", **KW)
    with pytest.raises(MrdkitError, match="compute_dtype must be float32 or float64"):
        score_mrd(half, SAMPLES, tokenizer=lm.tokenizer, compute_dtype="bfloat16", perturb_mode="lowmem", **KW)
    from accelerate import cpu_offload

    offloaded = cpu_offload(copy.deepcopy(lm.model), execution_device=torch.device("cpu"))
    with pytest.raises(MrdkitError, match="offloaded .*meta device"):
        LowMemPerturber(offloaded, sigma=1e-5)


def test_a_device_map_model_scores_like_the_plain_load(tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    lm = tiny("llama")
    lm.save(tmp_path / "m")
    plain = load_model(tmp_path / "m", device="cpu", for_mrd=True)
    seen, real = [], AutoModelForCausalLM.from_pretrained
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained",
                        lambda *a, **kw: seen.append(kw.get("device_map")) or real(*a, **kw))
    layers = {f"model.layers.{i}": "cpu" for i in range(2)}
    device_map = {"model.embed_tokens": "cpu", **layers, "model.norm": "cpu", "model.rotary_emb": "cpu",
                  "lm_head": "cpu"}
    placed = load_model(tmp_path / "m", device_map=device_map, for_mrd=True)
    assert seen == [device_map]  # transformers / accelerate placed the layers (one device here: the CPU)
    a = score_mrd(plain, SAMPLES, **KW)
    for mode in ("copy", "lowmem"):
        assert torch.equal(score_mrd(placed, SAMPLES, perturb_mode=mode, **KW).draws, a.draws), mode
    with pytest.raises(MrdkitError, match="tiny model fits one device"):
        load_model("tiny", device_map="auto")


def test_cli_scores_a_bf16_checkpoint_with_compute_dtype_and_a_device_map(tmp_path):
    import json

    lm = tiny("gpt2")
    lm.model.to(torch.bfloat16)
    lm.save(tmp_path / "m")
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"question": s.prompt, "answer": s.answer}) + "\n" for s in SAMPLES))
    common = ["score", "--model", tmp_path / "m", "--data", data, "--draws", "2", "--device", "cpu",
              "--no-proxies", "--allow-floor"]
    proc = run_cli_inprocess(*common, "--out", tmp_path / "run", "--dtype", "bfloat16", "--compute-dtype",
                             "float32", "--device-map", "auto")
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = json.loads((tmp_path / "run/config.json").read_text())["mrd"]
    assert (config["compute_dtype"], config["perturb_mode"]) == ("float32", "lowmem")
    assert_user_error(run_cli_inprocess(*common, "--out", tmp_path / "bad", "--dtype", "bfloat16"),
                      "MRD needs float32 or float64")

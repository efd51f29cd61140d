"""Precision and memory switches of the unlearning loop (issue 16) on tiny models built from config:

- bf16 autocast through accelerate: the forward really runs in bf16, the run completes, and its loss follows the
  fp32 run (first step within one bf16 ulp, 4 steps at lr 1e-3 within 2%);
- gradient checkpointing recomputes each block and gives the same gradients (with dropout on);
- the LoRA reference with adapters disabled gives bitwise the NPO / IdkDPO losses of an independent frozen copy;
  the CPU and offloaded references bitwise those of the on-device copy;
- ``trainable_params`` trains only what it matches and the reference copy shares every other weight;
- half-precision frozen weights (``weights_dtype``) keep fp32 adapters and leave the base weights untouched.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from helpers import SMALL_MODEL, assert_user_error, run_cli_inprocess
from mrdkit.data import Sample, collate, encode_samples, pad_id
from mrdkit.errors import MrdkitError
from mrdkit.models import build_tiny_model, clone_frozen
from mrdkit.train import seeded_dropout
from mrdkit.unlearning import reference as R
from mrdkit.unlearning.config import LoraSettings, UnlearnConfig
from mrdkit.unlearning.loop import unlearn
from mrdkit.unlearning.lora import apply_lora
from mrdkit.unlearning.methods import build_method
from mrdkit.unlearning.setup import enable_checkpointing
from mrdkit.unlearning.step import method_loss

FORGET = [Sample(f"f:{i}", f"Where was author {i} born?", f"{i}7-9{i}3/5{i}8 #{i}{i}4") for i in range(8)]
RETAIN = [Sample(f"r:{i}", f"What does writer {i} collect?", "Maps, stamps and old clocks.") for i in range(6)]
IDK = ["I have no idea.", "That is not something I know."]
FAST = UnlearnConfig(lr=1e-2, max_steps=3, batch_size=4, schedule="constant", warmup_ratio=0.0, monitor_retain=4,
                     device="cpu", template="plain")
BF16_ULP = 2.0 ** -8  # bf16 keeps 8 significant bits: a relative rounding step of 2^-8 = 3.9e-3


@pytest.fixture(scope="module")
def tiny():
    texts = [s.prompt + s.answer for s in FORGET + RETAIN] + IDK
    return build_tiny_model(texts, vocab_size=300, n_layer=2, d_model=32, n_head=2, max_position=64)


def run(tiny, model=None, **kw):
    cfg = dataclasses.replace(FAST, **kw.pop("cfg", {}))
    kw.setdefault("idk", IDK)
    return unlearn(model if model is not None else copy.deepcopy(tiny.model), tiny.tokenizer, FORGET, RETAIN,
                   config=cfg, **kw)


def losses(result):
    return [row["parts"] for row in result.history[1:]]


# --------------------------------------------------------------------------------------------------- precision


@pytest.mark.parametrize("method", ["ga", "npo"])
def test_bf16_autocast_run_completes_and_its_loss_follows_fp32(tiny, method):
    dtypes = []
    model = copy.deepcopy(tiny.model)
    model.transformer.h[0].attn.c_attn.register_forward_hook(lambda m, i, out: dtypes.append(out.dtype))
    cfg = {"lr": 1e-3, "max_steps": 4}
    half = run(tiny, model, method=method, cfg={**cfg, "mixed_precision": "bf16"})
    full = run(tiny, method=method, cfg=cfg)
    assert torch.bfloat16 in dtypes  # the training forwards ran under bf16 autocast
    assert all(p.dtype == torch.float32 for p in half.model.parameters())  # fp32 master weights
    a, b = [row["loss"] for row in full.history[1:]], [row["loss"] for row in half.history[1:]]
    assert len(a) == len(b) == 4 and all(map(torch.isfinite, torch.tensor(b)))
    assert abs(a[0] - b[0]) <= BF16_ULP * abs(a[0])  # same weights: bf16 rounding only
    assert max(abs(x - y) / abs(x) for x, y in zip(a, b)) < 0.02  # 4 steps later, still the same trajectory
    assert a != b  # bf16 did change the numbers (the comparison is not of two fp32 runs)


def test_fp16_on_cpu_and_half_frozen_weights_without_autocast_are_refused(tiny):
    with pytest.raises(MrdkitError, match="fp16 needs a GPU"):
        run(tiny, method="ga", cfg={"mixed_precision": "fp16"})
    with pytest.raises(MrdkitError, match="weights_dtype=bfloat16 needs mixed_precision"):
        run(tiny, method="ga", cfg={"weights_dtype": "bfloat16"})


def test_half_frozen_weights_keep_fp32_adapters_and_untouched_base_weights(tiny):
    start = {n: p.detach().to(torch.bfloat16) for n, p in tiny.model.named_parameters()}
    result = run(tiny, method="npo", cfg={"lora": LoraSettings(), "mixed_precision": "bf16",
                                          "weights_dtype": "bfloat16"})
    named = dict(result.model.named_parameters())
    adapters = {n: p for n, p in named.items() if "lora_" in n}
    base = {n.replace("base_model.model.", "").replace(".base_layer", ""): p for n, p in named.items()
            if "lora_" not in n}
    assert adapters and all(p.dtype == torch.float32 for p in adapters.values())
    assert all(p.dtype == torch.bfloat16 for p in base.values())
    assert all(torch.equal(base[n], start[n]) for n in base)  # LoRA never touches the (bf16) base weights
    assert all(torch.isfinite(torch.tensor(row["loss"])) for row in result.history[1:])


# ------------------------------------------------------------------------------------- gradient checkpointing


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_gradient_checkpointing_recomputes_blocks_and_gives_the_same_gradients(arch):
    tiny = build_tiny_model([s.prompt + s.answer for s in FORGET], arch=arch, vocab_size=300, n_layer=2,
                            d_model=32, n_head=2, max_position=64)
    batch = collate(encode_samples(FORGET[:4], tiny.tokenizer, template="plain"), pad_id(tiny.tokenizer))
    grads, calls = [], []
    for checkpointing in (False, True):
        model = copy.deepcopy(tiny.model).train()  # GPT-2: dropout on, seeded
        if checkpointing:
            enable_checkpointing(model)
        # the block's attention (torch's non-reentrant checkpoint stops the recompute once the saved tensors are
        # rebuilt, so the block's own output hook may not fire twice; its attention always does)
        attention = model.get_decoder().layers[0].self_attn if arch == "llama" else model.transformer.h[0].attn
        count = []
        attention.register_forward_hook(lambda *_: count.append(1))
        with seeded_dropout(0, 1, 0, 0):
            loss, _ = method_loss(build_method("ga"), model, None, batch)
            loss.backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
        calls.append(len(count))
    assert calls == [1, 2]  # with checkpointing the block runs again in the backward pass
    plain, recomputed = grads
    for name in plain:  # recomputation replays the forward with its RNG state: equal within fp32 rounding
        torch.testing.assert_close(recomputed[name], plain[name], rtol=1e-6, atol=1e-8)


def test_a_run_with_gradient_checkpointing_follows_the_plain_run(tiny):
    plain = run(tiny, method="graddiff")
    ckpt = run(tiny, method="graddiff", cfg={"gradient_checkpointing": True})
    for a, b in zip(losses(plain), losses(ckpt)):
        assert a.keys() == b.keys() and all(abs(a[k] - b[k]) <= 1e-6 * max(1.0, abs(a[k])) for k in a)


# ------------------------------------------------------------------------------------------------ references


def test_disabled_adapters_give_bitwise_the_npo_loss_of_a_frozen_copy(tiny):
    batch = collate(encode_samples(FORGET[:4], tiny.tokenizer, template="plain"), pad_id(tiny.tokenizer))
    start = copy.deepcopy(tiny.model)
    frozen = clone_frozen(start)  # an independent copy: the reference mrdkit built before
    peft_model, _ = apply_lora(start, LoraSettings(), seed=0)
    with torch.no_grad():  # move the adapters off zero, so that "disabled" differs from "enabled"
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(1))
    peft_model.train()
    method = build_method("npo")
    with seeded_dropout(0, 1, 0, 0):
        via_adapters, _ = method_loss(method, peft_model, R.AdaptersOff(peft_model), batch)
    with seeded_dropout(0, 1, 0, 0):
        via_copy, _ = method_loss(method, peft_model, frozen, batch)
    assert torch.equal(via_adapters, via_copy)
    assert peft_model.training and all(m.training for m in peft_model.modules())  # the reference left the mode


@pytest.mark.parametrize("method", ["npo", "idkdpo", "kl"])
def test_lora_runs_with_the_adapters_reference_equal_runs_with_a_frozen_copy(tiny, method):
    lora = {"lora": LoraSettings(), "lr": 5e-2}
    free = run(tiny, method=method, cfg=lora)  # reference="auto" -> adapters disabled
    copied = run(tiny, method=method, cfg=lora, ref_model=clone_frozen(tiny.model))
    assert losses(free) == losses(copied)
    a, b = dict(free.model.named_parameters()), dict(copied.model.named_parameters())
    assert all(torch.equal(a[n], b[n]) for n in a)


@pytest.mark.parametrize("mode", ["cpu", "offload"])
def test_references_in_host_memory_give_bitwise_the_device_copy_losses(tiny, mode):
    on_device = run(tiny, method="npo", cfg={"reference": "copy"})
    assert losses(run(tiny, method="npo", cfg={"reference": mode})) == losses(on_device)


def test_an_offloaded_reference_keeps_its_weights_off_the_model_and_runs_on_the_execution_device(tiny):
    cfg = dataclasses.replace(FAST, reference="offload")
    ref = R.before_lora(copy.deepcopy(tiny.model), cfg, torch.device("cpu"))
    assert {p.device.type for p in ref.parameters()} == {"meta"}  # weights live in accelerate's CPU map
    batch = collate(encode_samples(FORGET[:2], tiny.tokenizer, template="plain"), pad_id(tiny.tokenizer))
    from mrdkit.logprob import token_logprobs

    torch.testing.assert_close(token_logprobs(ref, batch).values, token_logprobs(tiny.model, batch).values,
                               rtol=0, atol=0)


def test_trainable_params_trains_only_matches_and_the_reference_shares_the_rest(tiny):
    pattern = r"h\.1\.mlp\.c_proj"  # GPT-2's down-projection of block 1, as WMDP's RMU trains down_proj
    start = {n: p.detach().clone() for n, p in tiny.model.named_parameters()}
    result = run(tiny, method="npo", cfg={"trainable_params": pattern})
    changed = {n for n, p in result.model.named_parameters() if not torch.equal(p, start[n])}
    assert changed == {"transformer.h.1.mlp.c_proj.weight", "transformer.h.1.mlp.c_proj.bias"}

    model = copy.deepcopy(tiny.model)
    from mrdkit.unlearning.lora import select_trainable

    select_trainable(model, pattern)
    ref = R.before_lora(model, dataclasses.replace(FAST, trainable_params=pattern), torch.device("cpu"))
    own = sum(p.numel() * p.element_size() for p in ref.parameters())
    copied = sum(start[n].numel() * 4 for n in changed)
    assert R.shared_bytes(model, ref) == own - copied  # only the two trained tensors were duplicated
    with pytest.raises(MrdkitError, match="matches no trainable parameter"):
        run(tiny, method="ga", cfg={"trainable_params": "no_such_layer"})


@pytest.mark.parametrize("overrides, message", [
    ({"reference": "adapters"}, "reference=adapters needs LoRA"),
    ({"reference": "elsewhere"}, "reference must be one of"),
    ({"mixed_precision": "fp8"}, "mixed_precision must be one of"),
    ({"fsdp": True, "lora": LoraSettings()}, "with LoRA use DDP"),
    ({"fsdp": True, "reference": "cpu"}, "not available under fsdp"),
    ({"gradient_checkpointing": True, "train_mode": False}, "needs train_mode=True"),
    ({"trainable_params": "("}, "not a regular expression"),
])
def test_memory_options_are_checked_before_any_work(overrides, message):
    with pytest.raises(MrdkitError, match=message):
        dataclasses.replace(FAST, **overrides).check()


def test_cli_runs_lora_with_bf16_frozen_weights_and_checkpointing(tmp_path):
    import json

    data = tmp_path / "forget.jsonl"
    data.write_text("".join(json.dumps({"question": s.prompt, "answer": s.answer}) + "\n" for s in FORGET))
    common = ["unlearn", "--model", SMALL_MODEL, "--forget", data, "--method", "npo", "--lr", "1e-2",
              "--max-steps", "2", "--device", "cpu"]
    proc = run_cli_inprocess(*common, "--out", tmp_path / "run", "--lora", "--mixed-precision", "bf16",
                             "--weights-dtype", "bfloat16", "--gradient-checkpointing")
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = json.loads((tmp_path / "run/config.json").read_text())["unlearn"]
    assert (config["mixed_precision"], config["weights_dtype"], config["gradient_checkpointing"]) == \
        ("bf16", "bfloat16", True)
    assert (tmp_path / "run/model/adapter_model.safetensors").is_file()
    bad = run_cli_inprocess(*common, "--out", tmp_path / "bad", "--mixed-precision", "fp16")
    assert_user_error(bad, "fp16 needs a GPU")


def test_a_bf16_lora_run_scores_mrd_on_the_fly_in_fp32_module_by_module(tiny):
    model = copy.deepcopy(tiny.model).to(torch.bfloat16)  # as `mrd unlearn --lora --weights-dtype bfloat16` loads
    cfg = {"lora": LoraSettings(), "mixed_precision": "bf16", "weights_dtype": "bfloat16", "mrd_draws": 2,
           "max_steps": 1}
    result = run(tiny, model, method="npo", sampler="cga", cfg=cfg)
    assert result.summary["scores"] == "on-the-fly" and len(result.history) == 2

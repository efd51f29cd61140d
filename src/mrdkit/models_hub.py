"""Loading a Hugging Face model from a local ``save_pretrained`` directory or a hub id (cache first, offline-aware).

Used by :func:`mrdkit.models.load_model`; every load ends in :func:`mrdkit.models_policy.finish_loading`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from mrdkit.errors import MrdkitError
from mrdkit.models_policy import LoadedModel, finish_loading, resolve_dtype

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def _check_model_dir(path: Path) -> None:
    if not path.is_dir():
        raise MrdkitError(f"model path {path} is not a directory")
    if not (path / "config.json").is_file():
        raise MrdkitError(f"model directory {path} has no config.json (expected a save_pretrained folder)")
    # transformers 5 silently builds an empty GPT2Tokenizer for a folder without tokenizer files.
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise MrdkitError(f"model directory {path} has no tokenizer files (save the tokenizer there too)")


def _in_hub_cache(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)


def _hub_offline() -> bool:
    """True when the hub must not be contacted (env read now, so a test's setenv counts, as does the hub's own
    flag read at import)."""
    from huggingface_hub import constants

    flags = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("TRANSFORMERS_OFFLINE", ""))
    return any(f.strip().lower() in ("1", "true", "yes", "on") for f in flags) or bool(constants.HF_HUB_OFFLINE)


def _from_pretrained(source: str, local_only: bool, dtype: torch.dtype, hf: dict) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {k: v for k, v in hf.items() if v is not None}
    # adapter_kwargs: transformers' PEFT-adapter probe ignores local_files_only and would retry the hub for ~20 s.
    model = AutoModelForCausalLM.from_pretrained(source, local_files_only=local_only, dtype=dtype,
                                                 adapter_kwargs={"local_files_only": local_only}, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only,
                                              trust_remote_code=hf["trust_remote_code"])
    if len(tokenizer) < 2:
        raise MrdkitError(f"the tokenizer loaded for {source} is empty (no tokenizer files?)")
    return model, tokenizer


def _load_pretrained(source: str, spec: str, *, local: bool, hf: dict, dtype: Any, device: Any,
                     for_mrd: bool) -> LoadedModel:
    """``from_pretrained`` a directory or hub id; a cached hub id loads without touching the network."""
    torch_dtype = resolve_dtype(dtype)
    cached = local or _in_hub_cache(source)
    if not cached and _hub_offline():
        raise MrdkitError(
            f"model {spec!r} is not in the local Hugging Face cache and the hub is unreachable (HF_HUB_OFFLINE=1): "
            f"download it where the hub is reachable, or pass an existing local directory"
        )
    try:
        model, tokenizer = _from_pretrained(source, cached, torch_dtype, hf)
    except OSError as err:
        where = source if local else f"{spec!r} from the Hugging Face hub"
        raise MrdkitError(f"cannot load model {where}: {_first_line(err)}") from None
    except ValueError as err:
        if "trust_remote_code" not in str(err) or isinstance(err, MrdkitError):
            raise
        raise MrdkitError(f"model {spec!r} ships its own Python code, which mrdkit does not run unless asked: pass "
                          f"--trust-remote-code (Python: the trust_remote_code argument) only if you trust its "
                          f"source") from None
    return finish_loading(model, tokenizer, spec, dtype=torch_dtype, device=device, for_mrd=for_mrd)


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]

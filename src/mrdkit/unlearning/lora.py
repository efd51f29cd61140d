"""LoRA adapters (peft) or full fine-tuning: which parameters the unlearning loop trains, and how it saves them.

With LoRA (Hu et al. 2021, arXiv:2106.09685) the update of a weight ``W`` is ``(alpha / r) * B A`` with ``A``
(r, d_in) random and ``B`` (d_out, r) zero at the start, so the adapted model starts identical to the base model
and only ``A``, ``B`` train; the base weights stay bitwise unchanged unless the adapter is merged on save.
TOFU's unlearning runs offer the same choice (``LoRA.r: 0`` = full fine-tuning, forget.yaml / forget_lora.yaml).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

from mrdkit.errors import MrdkitError
from mrdkit.runs import as_ordinary_output
from mrdkit.seeding import derive_seed
from mrdkit.unlearning.config import LoraSettings


def default_target_modules(model: torch.nn.Module) -> list[str]:
    """peft's default LoRA targets for the model's type (GPT-2: ``c_attn``; Llama: ``q_proj, v_proj``)."""
    from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS

    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in DEFAULTS:
        raise MrdkitError(f"no default LoRA target modules for model type {model_type!r}: set "
                          f"lora.target_modules (e.g. --set lora.target_modules=q_proj,v_proj)")
    return list(DEFAULTS[model_type])


def apply_lora(model: torch.nn.Module, settings: LoraSettings, seed: int = 0) -> tuple[Any, list[str]]:
    """Wrap ``model`` with fresh LoRA adapters; returns (peft model, resolved target modules).

    Adapter initialisation draws from the global RNG inside peft, so it runs under ``fork_rng`` seeded from
    ``(seed, "lora-init")``: the same inputs give the same adapters and the caller's RNG is untouched (house rule 5).
    """
    from peft import LoraConfig, get_peft_model

    targets = list(settings.target_modules or default_target_modules(model))
    model_type = getattr(model.config, "model_type", "")
    config = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        target_modules=targets, bias="none", task_type="CAUSAL_LM",
                        fan_in_fan_out=model_type == "gpt2")  # GPT-2's Conv1D stores weights transposed
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        # peft asks a checkpointing model transformers' deprecated `is_gradient_checkpointing`: not the user's doing
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        torch.manual_seed(derive_seed(seed, "lora-init"))
        try:
            peft_model = get_peft_model(model, config)
        except ValueError as exc:  # e.g. a target module that is not in the model
            raise MrdkitError(f"LoRA: {str(exc).splitlines()[0]}") from None
    return peft_model, targets


def select_trainable(model: torch.nn.Module, pattern: str | None) -> None:
    """Freeze every trainable parameter whose name does not match ``pattern`` (``re.search``); None keeps all.

    WMDP's RMU, for example, trains only the MLP output matrices of three layers (``layers\\.[5-7]\\.mlp\\.
    down_proj``, Li et al. 2024, arXiv:2403.03218, ``param_ids=[6]`` of layers 5-7 in its reference script).

    Raises:
        MrdkitError: ``pattern`` matches no trainable parameter.
    """
    if pattern is None:
        return
    rx = re.compile(pattern)
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if not any(rx.search(name) for name, _ in trainable):
        example = trainable[0][0] if trainable else "none"
        raise MrdkitError(f"trainable_params {pattern!r} matches no trainable parameter (names look like "
                          f"{example!r})")
    for name, p in trainable:
        if not rx.search(name):
            p.requires_grad_(False)


def cast_for_training(model: torch.nn.Module, frozen_dtype: torch.dtype, *, lora: bool) -> None:
    """Half-precision trainable parameters -> float32 (AdamW and its state then run in fp32: a lr 1e-5 update is
    below bf16's resolution for most weights); with a half ``frozen_dtype`` the parameters that do not train -> it.

    ``lora=True`` treats every parameter as frozen (before peft adds the adapters, none of the base weights will
    train). fp32 / fp64 weights with ``frozen_dtype`` float32 are left bitwise untouched.
    """
    half = (torch.bfloat16, torch.float16)
    with torch.no_grad():
        for p in model.parameters():
            trains = p.requires_grad and not lora
            if trains and p.dtype in half:
                p.data = p.data.to(torch.float32)
            elif not trains and frozen_dtype in half and p.is_floating_point() and p.dtype != frozen_dtype:
                p.data = p.data.to(frozen_dtype)


def trainable_parameters(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """Named parameters with ``requires_grad`` (LoRA: adapters only); tied weights appear once."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def is_peft(model: torch.nn.Module) -> bool:
    return hasattr(model, "peft_config")


def save_final_model(model: torch.nn.Module, tokenizer: Any, path: Path, *, merge: bool,
                     state_dict: dict[str, torch.Tensor] | None = None) -> torch.nn.Module:
    """Write the unlearned model (safetensors) and tokenizer to ``path``; returns the model to hand back.

    Full fine-tuning: ``save_pretrained`` (transformers 5 always writes safetensors), loadable with
    :func:`mrdkit.models.load_model`. LoRA: the adapter alone (``adapter_model.safetensors``, peft's safe
    serialisation), or with ``merge`` the merged full model (``merge_and_unload``; the base weights change).
    The folder is written under a temporary name beside ``path`` and renamed into place, so a killed process
    never leaves a half-written ``model/`` (an older complete one, or none, until the resumed run saves again).
    ``state_dict``: whole tensors to write instead of the model's own (an FSDP-sharded model's gathered state).
    """
    if is_peft(model) and merge:
        model = model.merge_and_unload()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{path.name}-", dir=path.parent))
    try:
        if is_peft(model):
            model.save_pretrained(str(tmp), safe_serialization=True)
        else:
            model.save_pretrained(str(tmp), state_dict=state_dict)
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
        for entry in [tmp, *tmp.rglob("*")]:  # mkdtemp (and transformers' own temp files) make them private
            as_ordinary_output(entry)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return model

"""Model dtype, device and finishing policy, shared by every loader of :mod:`mrdkit.models`.

:func:`finish_loading` applies one policy: weights cast to the requested dtype and moved to the device, eval
mode, a pad token (the eos token when the tokenizer has none), and, for MRD, a refusal of half-precision weights.
Why the refusal: MRD perturbs every weight by sigma ~ 1e-5 (Feng et al. 2025, arXiv 2504.06658, section 3), but
bfloat16 spaces numbers ~8e-3 apart relative to their size (float16 ~1e-3), so ``w + delta`` rounds back to ``w``
for almost every weight and the "perturbed" model is the unperturbed one. Also here: :class:`LoadedModel`, the
context-length cap and the frozen reference copy of NPO / KL.
"""

from __future__ import annotations

import copy
import difflib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mrdkit.errors import MrdkitError

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "float64": torch.float64, "fp64": torch.float64, "double": torch.float64,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
}
LOW_PRECISION = (torch.bfloat16, torch.float16)


@dataclass
class LoadedModel:
    """A causal LM with its tokenizer and how it was asked for.

    Attributes:
        model: a Hugging Face ``PreTrainedModel`` in eval mode.
        tokenizer: its tokenizer; ``pad_token`` is always set.
        spec: the spec string it was loaded from (tiny models: the full size spec).
        dtype: floating dtype of the weights.
        device: where the weights live.
    """

    model: Any
    tokenizer: Any
    spec: str
    dtype: torch.dtype
    device: torch.device

    @property
    def n_params(self) -> int:
        """Number of distinct parameters (tied embeddings counted once)."""
        return sum(p.numel() for p in self.model.parameters())

    def save(self, path: str | os.PathLike) -> Path:
        """Write model (safetensors) and tokenizer with ``save_pretrained``; ``load_model(path)`` reloads them."""
        path = Path(path)
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        return path


# ------------------------------------------------------------------------------------------ dtype, device


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """Map a dtype name (``float32``, ``fp64``, ``bf16``...) or a ``torch.dtype`` to a floating ``torch.dtype``."""
    if isinstance(dtype, torch.dtype):
        if dtype in DTYPES.values():
            return dtype
        raise MrdkitError(f"unsupported model dtype {dtype} (use float32, float64, bfloat16 or float16)")
    key = str(dtype).lower().removeprefix("torch.")
    if key in DTYPES:
        return DTYPES[key]
    close = difflib.get_close_matches(key, list(DTYPES), n=2, cutoff=0.5)
    hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
    raise MrdkitError(f"unknown model dtype {dtype!r}{hint} (known: float32, float64, bfloat16, float16)")


def _refuse_for_mrd(dtype: torch.dtype) -> None:
    if dtype in LOW_PRECISION:
        name = str(dtype).removeprefix("torch.")
        raise MrdkitError(
            f"MRD needs float32 or float64 weights, not {name}: a sigma=1e-5 perturbation is below {name} "
            f"resolution, so most weights would not change; load with dtype='float32' (or 'float64')"
        )


def check_mrd_dtype(model: torch.nn.Module) -> None:
    """Raise :class:`MrdkitError` if any floating parameter of ``model`` is bfloat16 or float16 (see module doc)."""
    for p in model.parameters():
        _refuse_for_mrd(p.dtype)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` -> ``cuda`` if available else ``cpu``; ``cuda`` (or ``cuda:N``) without a GPU is an error."""
    name = str(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if re.fullmatch(r"cuda(:\d+)?", name):
        if not torch.cuda.is_available():
            raise MrdkitError(f"device {name!r} was requested but CUDA is not available (use 'cpu' or 'auto')")
        return torch.device(name)
    raise MrdkitError(f"unknown device {name!r} (use 'auto', 'cpu' or 'cuda')")


# ----------------------------------------------------------------------------------------------- finishing


def ensure_pad_token(tokenizer: Any, model: Any) -> None:
    """Give the tokenizer a pad token if it has none: the eos token.

    Padding is always right-side and masked out of labels (-100), so reusing eos for padding never changes a
    score; it only lets batches be built. The model config's ``pad_token_id`` is set to match if it is unset.
    """
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise MrdkitError("the tokenizer has neither a pad token nor an eos token to pad with")
        tokenizer.pad_token = tokenizer.eos_token
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id


def finish_loading(model: Any, tokenizer: Any, spec: str, *, dtype: Any = "float32", device: Any = "auto",
                   for_mrd: bool = False) -> LoadedModel:
    """Cast, move, set eval mode and a pad token, enforce the MRD dtype policy; wrap as :class:`LoadedModel`."""
    torch_dtype, dev = resolve_dtype(dtype), resolve_device(device)
    if for_mrd:
        _refuse_for_mrd(torch_dtype)
    model = model.to(device=dev, dtype=torch_dtype)
    model.eval()
    ensure_pad_token(tokenizer, model)
    if for_mrd:
        check_mrd_dtype(model)
    return LoadedModel(model=model, tokenizer=tokenizer, spec=spec, dtype=torch_dtype, device=dev)


def context_length(model: Any) -> int | None:
    """The model's position limit (``n_positions`` / ``max_position_embeddings``), or None when unknown."""
    config = getattr(model, "config", None)
    value = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)
    return int(value) if isinstance(value, int) and value > 0 else None


def fit_max_length(model: Any, max_length: int) -> int:
    """``max_length`` capped at the model's context.

    A sequence longer than the position table would index past it (GPT-2: an IndexError deep in the forward), so
    longer samples are cut to the context instead; :func:`mrdkit.data.encode_samples` warns with their count
    ("N of M samples truncated to L tokens"). No warning here: most runs never reach the cap.
    """
    limit = context_length(model)
    return max_length if limit is None else min(max_length, limit)


def clone_frozen(model: torch.nn.Module) -> torch.nn.Module:
    """A deep copy in eval mode with ``requires_grad=False`` everywhere: the fixed reference model of NPO / KL.

    The copy shares no storage with ``model``, so training ``model`` leaves the reference untouched.
    """
    ref = copy.deepcopy(model)
    ref.eval()
    ref.requires_grad_(False)
    return ref


def model_fingerprint(model: torch.nn.Module, values_per_tensor: int = 32) -> dict[str, Any]:
    """A cheap identity of a model's weights, stored in run configs so that resuming a run with other weights
    (another checkpoint, another dtype, an unlearned copy) is refused instead of mixing two models' numbers.

    ``weights`` hashes, for every parameter in order, its name, shape and dtype, its float64 sum and 2-norm
    (any change of the weights moves these except by measure-zero coincidence) and ``values_per_tensor``
    evenly spaced entries. One pass of reductions: ~0.1 s for a 135M model on CPU."""
    import hashlib

    digest, n_params = hashlib.blake2b(digest_size=8), 0
    with torch.no_grad():
        for name, param in model.named_parameters():
            flat = param.detach().reshape(-1)
            n_params += flat.numel()
            picks = flat[:: max(1, flat.numel() // values_per_tensor)][:values_per_tensor]
            moments = torch.stack([flat.sum(dtype=torch.float64),
                                   torch.linalg.vector_norm(flat, dtype=torch.float64)])
            digest.update(f"{name}|{tuple(param.shape)}|{param.dtype}".encode())
            digest.update(torch.cat([moments, picks.double()]).cpu().numpy().tobytes())
    dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in model.parameters()})
    return {"class": type(model).__name__, "dtype": "+".join(dtypes), "n_params": n_params,
            "weights": digest.hexdigest()}

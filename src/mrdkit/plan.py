"""``mrd plan``: peak memory per device of MRD scoring and of unlearning, from a model's config alone.

Nothing is downloaded and no weight is loaded: the model is built on the meta device (accelerate's
``init_empty_weights``) to count its parameters, its largest module and parameter, its transformer blocks and the
LoRA adapters peft would add. Activations are MEASURED rather than guessed: the same architecture is instantiated
at a few tiny sizes on the CPU and run forward under the run's settings (LoRA, autocast, gradient checkpointing,
attention implementation, dropout); the bytes of every tensor autograd saves for the backward pass, per token and
per block, are a linear function of (hidden, intermediate, key/value width, heads, heads x length) whose
coefficients the probes determine (Korthikanti et al. 2022, arXiv:2205.05198, derive the same form by hand for
GPT-3: s b h (34 + 5 a s / h) per layer in 16-bit). Everything else is counted from what mrdkit's code allocates:

Unlearning, per device (P_t trainable, P_f frozen parameters; N processes; ``/N`` only under FSDP):

* weights ``4 P_t + b_w P_f``, gradients ``4 P_t``, AdamW moments ``8 P_t`` (all fp32: trainable parameters are
  kept in fp32); under FSDP divided by N, plus two gathered transformer blocks (the one running, the next);
* the reference (npo / kl / idkdpo / rmu): none with LoRA (adapters disabled), a copy of the trainable weights
  (``copy``), nothing on the device (``cpu``), one module (``offload``);
* autocast (``mixed_precision``): a half copy of every fp32 matrix a forward multiplies, saved for its backward;
* activations: the probe's bytes for the micro-batch (checkpointing: block inputs plus one block recomputed);
* the LM head: ``token_logprobs`` takes an fp64 log-softmax of the (B, T, V) logits, keeps it for the backward
  (8 bytes per logit) and, while it runs, also holds the logits and their fp64 copy; the backward of the
  log-softmax holds about three more fp64 tensors of that size;
* the AdamW step: on CUDA the multi-tensor ("foreach") kernels allocate one more fp32 copy of the trainable
  weights; the stop rule's measurement runs ``eval_batch_size`` samples without gradients.

MRD scoring, per device (weights spread over N devices by a ``device_map``): weights, the perturbation's extra
(``copy``: one clone of every weight; ``lowmem``: the tied weights + the largest module; ``compute_dtype``: that
in the wide dtype, twice, over half weights), one noise buffer the size of the largest parameter, one forward's
logits (+ fp64 log-softmax), and, with the default proxies, one backward per sample (gradients of every weight).

All byte counts are in GiB (2^30) in the output. Sizes of public models are facts of their configs: the Llama-2
rows of ``docs/scaling.md`` use :data:`PUBLIC_CONFIGS`.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

import torch

from mrdkit.errors import MrdkitError

GIB = 2 ** 30
DTYPE_BYTES = {"float64": 8, "float32": 4, "bfloat16": 2, "float16": 2}
HALF = {"bf16": "bfloat16", "fp16": "float16"}

#: Public configs (``config.json`` of meta-llama/Llama-2-{7,13,70}b-hf on the Hugging Face hub, Touvron et al.
#: 2023, arXiv:2307.09288): no weights are needed to plan for them.
PUBLIC_CONFIGS: dict[str, dict[str, Any]] = {
    "llama-2-7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                       num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096),
    "llama-2-13b": dict(hidden_size=5120, intermediate_size=13824, num_hidden_layers=40, num_attention_heads=40,
                        num_key_value_heads=40, vocab_size=32000, max_position_embeddings=4096),
    "llama-2-70b": dict(hidden_size=8192, intermediate_size=28672, num_hidden_layers=80, num_attention_heads=64,
                        num_key_value_heads=8, vocab_size=32000, max_position_embeddings=4096),
}
REFERENCE_METHODS = {"npo", "kl", "idkdpo", "rmu"}


# ----------------------------------------------------------------------------------------------- settings


@dataclass
class PlanSettings:
    """A run to plan for (the options of ``mrd unlearn`` / ``mrd score`` that change memory).

    Attributes:
        method: unlearning method (``ga``, ``npo``, ...); npo / kl / idkdpo / rmu need a reference model.
        lora, lora_r, lora_targets: LoRA adapters (rank; target modules, None = peft's default for the model).
        mixed_precision: ``no`` | ``bf16`` | ``fp16`` (autocast). weights_dtype: dtype of frozen weights.
        gradient_checkpointing, reference, fsdp: as :class:`mrdkit.unlearning.config.UnlearnConfig`.
        gpus, gpu_memory_gib: devices (processes under DDP / FSDP; a device_map for scoring) and memory of each.
        batch_size, seq_len, grad_accum, eval_batch_size: forget samples per micro-batch per process, tokens per
            sample, micro-batches per step, batch of the stop rule's measurement.
        retain: whether the method runs a retain batch too (None: the method's default).
        attn_implementation: ``sdpa`` (transformers' default) or ``eager``.
        device: ``cuda`` or ``cpu`` (CUDA adds the foreach AdamW copy; CPU numbers are what the tests measure).
        score_dtype, perturb_mode, compute_dtype, score_batch_size, grad_norm: MRD scoring (``mrd score``).
    """

    method: str = "npo"
    lora: bool = False
    lora_r: int = 8
    lora_targets: Optional[list[str]] = None
    mixed_precision: str = "no"
    weights_dtype: str = "float32"
    gradient_checkpointing: bool = False
    reference: str = "auto"
    fsdp: bool = False
    gpus: int = 1
    gpu_memory_gib: float = 80.0
    batch_size: int = 4
    seq_len: int = 512
    grad_accum: int = 1
    eval_batch_size: int = 16
    retain: Optional[bool] = None
    attn_implementation: str = "sdpa"
    device: str = "cuda"
    score_dtype: str = "float32"
    perturb_mode: str = "copy"
    compute_dtype: Optional[str] = None
    score_batch_size: int = 16
    grad_norm: bool = True

    def check(self) -> None:
        """One-line errors for values the planner cannot use."""
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise MrdkitError(f"plan: mixed_precision must be no, bf16 or fp16, got {self.mixed_precision!r}")
        for name in ("weights_dtype", "score_dtype"):
            if getattr(self, name) not in DTYPE_BYTES:
                raise MrdkitError(f"plan: {name} must be one of {', '.join(DTYPE_BYTES)}, got {getattr(self, name)!r}")
        if self.reference not in ("auto", "adapters", "copy", "cpu", "offload"):
            raise MrdkitError(f"plan: unknown reference {self.reference!r}")
        if min(self.gpus, self.batch_size, self.seq_len, self.grad_accum, self.eval_batch_size) < 1:
            raise MrdkitError("plan: gpus, batch size, length, grad_accum and eval batch size must be >= 1")
        if self.perturb_mode not in ("copy", "lowmem") or self.attn_implementation not in ("sdpa", "eager"):
            raise MrdkitError("plan: perturb_mode is copy | lowmem and attn_implementation sdpa | eager")

    @property
    def needs_reference(self) -> bool:
        return self.method in REFERENCE_METHODS

    @property
    def runs_retain(self) -> bool:
        """Whether a retain batch runs (GradDiff-style methods; NPO / GA / SimNPO+0 default to none)."""
        if self.retain is not None:
            return self.retain
        return self.method in {"graddiff", "kl", "idk", "idkdpo", "simnpo", "rmu"}


# ------------------------------------------------------------------------------------------------ the model


@dataclass
class ModelShape:
    """What the planner needs of a model, counted on the meta device."""

    name: str
    config: Any
    model_type: str
    n_params: int  # distinct parameters (tied ones once)
    vocab: int
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    tied: bool
    largest_param: int  # elements of the largest parameter (MRD's noise buffer)
    largest_module: int  # elements owned by the largest module (lowmem's clone)
    shared: int  # elements of parameters owned by several modules (tied embeddings)
    block_params: int  # elements of one transformer block (FSDP's gathered unit)
    matrix_params: int  # elements of the weight matrices the forward multiplies (autocast casts them)
    lora_params: int = 0
    lora_targets: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        keys = ("name", "model_type", "n_params", "vocab", "hidden", "intermediate", "layers", "heads", "kv_heads",
                "tied", "largest_module", "lora_params", "lora_targets")
        return {k: getattr(self, k) for k in keys}


def public_config(name: str):
    """A ``LlamaConfig`` of a public model in :data:`PUBLIC_CONFIGS`."""
    from transformers import LlamaConfig

    return LlamaConfig(**PUBLIC_CONFIGS[name], tie_word_embeddings=False, rms_norm_eps=1e-5)


def load_config(spec: str):
    """A model's config, without weights: a public name (``llama-2-7b``), ``tiny...``, ``testbed[...]``,
    ``smollm2``, a directory or ``config.json`` path, or a hub id in the local cache."""
    from transformers import AutoConfig

    if spec in PUBLIC_CONFIGS:
        return public_config(spec)
    if spec == "tiny" or spec.startswith(("tiny-", "tiny:")):
        from mrdkit.tiny import TINY_DEFAULTS, parse_tiny_spec, tiny_config

        arch, sizes = parse_tiny_spec(spec)
        return tiny_config(arch, **{**TINY_DEFAULTS, **sizes})
    if spec == "testbed" or spec.startswith(("testbed:", "testbed-")):
        from mrdkit.testbed.tofu import testbed_dir

        head, _, which = spec.partition(":")
        tier = head[len("testbed-"):] if head.startswith("testbed-") else "tiny"
        return AutoConfig.from_pretrained(testbed_dir(tier) / (which or "target"))
    if spec == "smollm2":
        from mrdkit.models import smollm2_dir

        return AutoConfig.from_pretrained(smollm2_dir())
    path = Path(spec).expanduser()
    if path.is_file():
        path = path.parent
    try:
        return AutoConfig.from_pretrained(str(path) if path.exists() else spec, local_files_only=True)
    except (OSError, ValueError) as exc:
        names = ", ".join(PUBLIC_CONFIGS)
        raise MrdkitError(f"plan: no config for {spec!r} ({str(exc).splitlines()[0]}); use a model directory, a "
                          f"config.json, a cached hub id, tiny / testbed / smollm2, or one of {names}") from None


def meta_model(config):
    """The causal LM of ``config`` with every parameter on the meta device (no memory, no initialisation)."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(config)
    model.tie_weights()  # from_config on the meta device leaves tied embeddings as two parameters
    return model


def _dims(config) -> dict[str, int]:
    heads = config.num_attention_heads
    hidden = config.hidden_size
    inter = getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * hidden
    return {"hidden": hidden, "intermediate": inter, "layers": config.num_hidden_layers, "heads": heads,
            "kv_heads": getattr(config, "num_key_value_heads", None) or heads, "vocab": config.vocab_size}


def lora_count(model, targets: list[str], r: int) -> int:
    """Adapter elements peft adds: ``r (d_in + d_out)`` for every Linear / Conv1D whose name ends in a target."""
    total = 0
    for name, module in model.named_modules():
        if not any(name == t or name.endswith("." + t) for t in targets):
            continue
        weight = getattr(module, "weight", None)
        if weight is None or weight.ndim != 2:
            continue
        total += r * (weight.shape[0] + weight.shape[1])
    return total


def model_shape(spec: str, settings: PlanSettings, config=None) -> ModelShape:
    """Count parameters, modules, blocks and LoRA adapters of ``spec`` on the meta device."""
    from mrdkit.scoring.perturb import owner_groups

    config = config if config is not None else load_config(spec)
    model = meta_model(config)
    named = list(model.named_parameters())
    shared, groups = owner_groups(model, named)
    blocks = [m for m in model.modules() if type(m).__name__ in set(model._no_split_modules or [])]
    matrices = sum(p.numel() for n, p in named if p.ndim == 2 and "embed" not in n and "wte" not in n
                   and "wpe" not in n)
    head = model.get_output_embeddings()
    if head is not None and any(head.weight is p for _, p in shared):
        matrices += head.weight.numel()  # tied: the head multiplies the embedding matrix
    targets = []
    if settings.lora:
        from mrdkit.unlearning.lora import default_target_modules

        targets = list(settings.lora_targets or default_target_modules(model))
    dims = _dims(config)
    return ModelShape(
        name=spec, config=config, model_type=config.model_type, n_params=sum(p.numel() for _, p in named),
        tied=bool(shared), largest_param=max(p.numel() for _, p in named),
        largest_module=max(sum(p.numel() for _, p in g) for _, g in groups), shared=sum(p.numel() for _, p in shared),
        block_params=sum(p.numel() for p in blocks[0].parameters()) if blocks else 0, matrix_params=matrices,
        lora_params=lora_count(model, targets, settings.lora_r) if targets else 0, lora_targets=targets, **dims)


# ------------------------------------------------------------------------------------------ activation probe


PROBE_SIZES = [  # (hidden, intermediate, heads, kv heads, length): each varies one feature of the first
    (64, 160, 4, 2, 32), (128, 160, 4, 2, 32), (64, 320, 4, 2, 32), (64, 160, 8, 2, 32), (64, 160, 4, 4, 32),
    (64, 160, 4, 2, 64), (96, 224, 8, 4, 48), (128, 320, 8, 4, 64),
]


def _features(hidden: int, inter: int, heads: int, kv: int, length: int) -> list[float]:
    """Per-token terms a block's saved activations are linear in: hidden, intermediate, key/value width, heads,
    heads x length (attention probabilities and their dropout mask when they are materialised), length (an
    attention mask per sample) and a constant."""
    return [hidden, inter, kv * (hidden // heads), heads, heads * length, length, 1.0]


def shrunk(config, hidden: int, inter: int, heads: int, kv: int, layers: int, vocab: int, length: int):
    """A copy of ``config`` at a tiny size (same architecture, same code path)."""
    small = copy.deepcopy(config)
    small.hidden_size, small.num_attention_heads, small.num_hidden_layers = hidden, heads, layers
    small.vocab_size = vocab
    if hasattr(small, "num_key_value_heads"):
        small.num_key_value_heads = kv
    if getattr(small, "head_dim", None) is not None:
        small.head_dim = hidden // heads
    if small.model_type == "gpt2":
        small.n_inner = inter
    else:
        small.intermediate_size = inter
    for key in ("max_position_embeddings", "n_positions"):
        if hasattr(small, key):
            setattr(small, key, max(length, 64))
    return small


def _saved_bytes(model, batch: int, length: int, vocab: int, autocast: Optional[str]) -> int:
    """Bytes of the tensors autograd keeps for the backward after one training forward (parameters excluded, each
    storage once). Tensors saved by a node that is freed during the forward (its output was discarded) are not
    counted: only those alive while the output is held."""
    import gc
    import weakref

    saved: list = []
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(weakref.ref(t))
        return t

    ids = torch.randint(2, vocab, (batch, length), generator=torch.Generator().manual_seed(0))
    cast = torch.autocast("cpu", dtype=getattr(torch, HALF[autocast])) if autocast else contextlib.nullcontext()
    # no automatic collection during the forward, then one of the youngest generation (where all its garbage is,
    # ms instead of a full collection): what a discarded node kept is freed at a fixed point, so counts repeat
    gc.disable()
    try:
        with cast, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)
        gc.collect(0)
    finally:
        gc.enable()
    alive = {}
    for ref in saved:
        t = ref()
        if t is not None and t.untyped_storage().data_ptr() not in params:
            alive[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    del out
    return sum(alive.values())


def _probe_model(config, settings: PlanSettings, checkpointing: bool):
    """A tiny instance of ``config`` set up as the run trains it: dropout on, LoRA or all weights trainable."""
    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(config)
    config._attn_implementation = settings.attn_implementation
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        # fp32 as mrdkit trains (a config may name the dtype its checkpoint was stored in, e.g. float16)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).train()
    if checkpointing:
        from mrdkit.unlearning.setup import enable_checkpointing

        enable_checkpointing(model)
    if settings.lora:
        from mrdkit.unlearning.config import LoraSettings
        from mrdkit.unlearning.lora import apply_lora

        model, _ = apply_lora(model, LoraSettings(r=settings.lora_r, target_modules=settings.lora_targets))
        model.train()
    return model


@dataclass
class Activations:
    """Saved-activation bytes per token: ``per_block`` and ``outside`` (embeddings, final norm, head input)."""

    per_block: float
    outside: float

    def bytes(self, layers: int, tokens: int) -> float:
        return tokens * (layers * self.per_block + self.outside)


_PROBES: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}  # coefficients per architecture and settings


def probe_key(shape: ModelShape, settings: PlanSettings, checkpointing: bool) -> tuple:
    """What the probe's coefficients depend on: the architecture and its options (dropout rates, norms, ...: the
    whole config) and the training settings; not the length, the batch or the number of devices."""
    return (shape.config.to_json_string(), settings.attn_implementation, settings.mixed_precision, settings.lora,
            settings.lora_r, tuple(shape.lora_targets), checkpointing)


def _coefficients(shape: ModelShape, settings: PlanSettings, checkpointing: bool):
    """Least-squares coefficients of saved bytes per token, per block and outside the blocks (see
    :func:`probe_activations`); measured once per :func:`probe_key`."""
    key = probe_key(shape, settings, checkpointing)
    if key in _PROBES:
        return _PROBES[key]
    from mrdkit.train import pinned_threads

    autocast = settings.mixed_precision if settings.mixed_precision != "no" else None
    rows, per_block, outside, vocab = [], [], [], 257
    # one thread: the probes are tiny, and on a busy machine a second thread makes every small op wait for a core
    with pinned_threads(1):
        for hidden, inter, heads, kv, length in PROBE_SIZES:
            kv = kv if shape.kv_heads != shape.heads else heads  # multi-head models: kv width = hidden
            totals = {}
            for layers in (1, 2):
                small = shrunk(shape.config, hidden, inter, heads, kv, layers, vocab, length)
                model = _probe_model(small, settings, checkpointing)
                one, two = (_saved_bytes(model, b, length, vocab, autocast) for b in (1, 2))
                totals[layers] = (two - one) / length  # per token: what does not grow with the batch drops out
            rows.append(_features(hidden, inter, heads, kv, length))
            per_block.append(totals[2] - totals[1])
            outside.append(totals[1] - (totals[2] - totals[1]))
    x = torch.tensor(rows, dtype=torch.float64)
    if shape.kv_heads == shape.heads:  # multi-head attention: the key/value width IS the hidden size
        x[:, 2] = 0.0
    _PROBES[key] = (fit(x, per_block), fit(x[:, [0, 6]], outside))
    return _PROBES[key]


def fit(x: torch.Tensor, y: list[float]) -> torch.Tensor:
    """Least squares ``x c = y`` on an SVD (minimum-norm on collinear / zero columns), columns scaled to unit norm
    first: the features span 1 to ~10^4, and an unscaled fit is at the mercy of LAPACK's rank decisions."""
    scale = x.norm(dim=0)
    scale[scale == 0] = 1.0
    target = torch.tensor(y, dtype=torch.float64).unsqueeze(1)
    return torch.linalg.lstsq(x / scale, target, driver="gelsd").solution.squeeze(1) / scale


def probe_activations(shape: ModelShape, settings: PlanSettings, *, checkpointing: bool = False) -> Activations:
    """Measure the architecture's saved activations per token at tiny sizes and extrapolate to ``shape``.

    For each of :data:`PROBE_SIZES`, training forwards with 1 and 2 blocks and batch 1 and 2 give (by differences)
    the bytes per token of one block and of everything outside the blocks; a least-squares fit over
    :func:`_features` (exact when the dependence is linear, as a transformer block's is) gives the coefficients.
    """
    block, out = _coefficients(shape, settings, checkpointing)
    target = torch.tensor(_features(shape.hidden, shape.intermediate, shape.heads, shape.kv_heads,
                                    settings.seq_len), dtype=torch.float64)
    return Activations(per_block=max(0.0, float(target @ block)), outside=max(0.0, float(target[[0, 6]] @ out)))


# ------------------------------------------------------------------------------------------------- budgets


def _reference_mode(settings: PlanSettings) -> str:
    if not settings.needs_reference:
        return "none"
    if settings.reference == "auto":
        return "adapters" if settings.lora else "copy"
    return settings.reference


def _logit_bytes(settings: PlanSettings, shape: ModelShape, batch: int) -> dict[str, float]:
    """Bytes per forward of ``token_logprobs`` on (batch, seq_len, V) logits (mrdkit.logprob.gather_logprobs).

    ``held``: the fp64 log-softmax kept for the backward; ``forward``: what is alive while it is computed (the
    logits in the compute dtype, accelerate's fp32 copy of them under autocast, the fp64 copy and the fp64
    log-softmax); ``backward``: on top of the held log-softmax, the gather's and the log-softmax's fp64 gradients
    (measured on the CPU: 16.2 bytes per logit above what the forward left).
    """
    n = batch * settings.seq_len * shape.vocab
    autocast = settings.mixed_precision != "no"
    return {"held": 8.0 * n, "forward": n * ((2 + 4) if autocast else 4) + 16.0 * n, "backward": 16.0 * n,
            "no_grad": n * ((2 if autocast else 4) + 16.0)}


def block_transient(shape: ModelShape, settings: PlanSettings, tokens: int, wide: int = 4) -> float:
    """Bytes a block's forward without gradients holds at its worst moment: the MLP's input and two intermediate
    tensors, or query, key, value and (eager attention) the probabilities; freed before the LM head runs."""
    mlp = shape.hidden + 2 * shape.intermediate
    attention = 3 * shape.hidden + (shape.heads * settings.seq_len if settings.attn_implementation == "eager" else 0)
    return float(tokens * wide * max(mlp, attention))


def unlearn_budget(shape: ModelShape, settings: PlanSettings) -> dict[str, Any]:
    """Bytes per device of one unlearning run (module docstring), by component and by phase."""
    n_dev = settings.gpus if settings.fsdp else 1
    trainable = shape.lora_params if settings.lora else shape.n_params
    frozen = shape.n_params if settings.lora else 0
    half = DTYPE_BYTES[settings.weights_dtype]
    autocast = settings.mixed_precision != "no"
    tokens = settings.batch_size * settings.seq_len
    ckpt = settings.gradient_checkpointing
    acts = probe_activations(shape, settings)
    saved = acts.bytes(shape.layers, tokens)
    if ckpt:  # block inputs kept, one block's activations alive again while it is recomputed
        kept = probe_activations(shape, settings, checkpointing=True)
        saved = kept.bytes(shape.layers, tokens) + acts.per_block * tokens
    forwards = 1 + settings.runs_retain + (settings.method in ("idk", "idkdpo"))
    logits = _logit_bytes(settings, shape, settings.batch_size)
    mode = _reference_mode(settings)
    parts = {
        "weights": (4.0 * trainable + half * frozen) / n_dev
        + (2 * shape.block_params * 4.0 if settings.fsdp else 0.0),  # the gathered block and the prefetched one
        "gradients": 4.0 * trainable / n_dev,
        "adamw": 8.0 * trainable / n_dev,
        "reference": {"copy": 0.0 if settings.lora else 4.0 * trainable / n_dev, "offload": 4.0 * shape.largest_module,
                      }.get(mode, 0.0),
        "autocast_copies": _autocast_bytes(shape, settings) if autocast else 0.0,
        "activations": forwards * saved,
        "logits": forwards * logits["held"],
        "ddp_buckets": 4.0 * trainable if settings.gpus > 1 and not settings.fsdp else 0.0,
    }
    static = parts["weights"] + parts["adamw"] + parts["reference"] + parts["ddp_buckets"]
    ref_pass = max(logits["no_grad"], block_transient(shape, settings, tokens)) if mode not in ("none", "cpu") \
        else 0.0
    transient = max(logits["forward"], ref_pass, logits["backward"])
    grads_early = parts["gradients"] if settings.grad_accum > 1 else 0.0
    step_bytes = 4.0 * trainable / n_dev if settings.device == "cuda" else 8.0 * min(trainable, shape.largest_param)
    eval_logits = _logit_bytes(settings, shape, settings.eval_batch_size)["no_grad"]
    phases = {
        "forward+backward": static + grads_early + parts["autocast_copies"] + parts["activations"] + parts["logits"]
        + transient,
        "end of backward": static + parts["gradients"] + (parts["autocast_copies"] if not ckpt else 0.0),
        "optimizer step": static + parts["gradients"] + step_bytes,
        "stop-rule measurement": static + max(eval_logits, block_transient(
            shape, settings, settings.eval_batch_size * settings.seq_len)),
    }
    return {"parts": parts, "phases": phases, "peak": max(phases.values()), "reference_mode": mode,
            "trainable_params": trainable, "activations_per_token_block": acts.per_block}


def _autocast_bytes(shape: ModelShape, settings: PlanSettings) -> float:
    """Half copies of the fp32 weight matrices a forward multiplies under autocast, saved for the backward.

    Weights already stored in half precision (``weights_dtype``, frozen under LoRA) are not copied; with gradient
    checkpointing only the block being recomputed (and the head) keep theirs; under FSDP each process casts the
    gathered blocks, one at a time."""
    if settings.lora and settings.weights_dtype != "float32":
        return 0.0
    per_block = shape.block_params
    head = shape.matrix_params - shape.layers * per_block
    if settings.gradient_checkpointing or settings.fsdp:
        return 2.0 * (per_block + max(head, 0))
    return 2.0 * shape.matrix_params


def score_budget(shape: ModelShape, settings: PlanSettings) -> dict[str, Any]:
    """Bytes per device of MRD scoring (``mrd score``): weights spread by a device_map over ``gpus``."""
    n_dev = settings.gpus
    stored = DTYPE_BYTES[settings.score_dtype]
    wide = DTYPE_BYTES[settings.compute_dtype] if settings.compute_dtype else stored
    lowmem = settings.perturb_mode == "lowmem" or settings.compute_dtype is not None
    one_module = (shape.shared + shape.largest_module) * wide
    if settings.compute_dtype:  # the upcast module and the perturber's clone of it
        extra = 2 * one_module
    else:
        extra = one_module if lowmem else shape.n_params * stored / n_dev
    tokens = settings.score_batch_size * settings.seq_len
    acts = probe_activations(shape, replace(settings, mixed_precision="no", lora=False))
    parts = {"weights": shape.n_params * stored / n_dev, "perturbation": extra,
             "noise_buffer": shape.largest_param * wide,
             "forward": max(tokens * shape.vocab * (wide + 16.0), block_transient(shape, settings, tokens, wide))}
    phases = {"draws": sum(parts.values())}
    if settings.grad_norm and not settings.compute_dtype:  # the gradient-norm proxy: one backward per sample
        one = replace(settings, batch_size=1)
        logits = _logit_bytes(one, shape, 1)
        phases["gradient-norm proxy"] = (parts["weights"] + shape.n_params * stored / n_dev
                                         + acts.bytes(shape.layers, settings.seq_len) + logits["held"]
                                         + logits["backward"])
    return {"parts": parts, "phases": phases, "peak": max(phases.values())}


# ----------------------------------------------------------------------------------------------- the plan


TASKS = ("score", "unlearn")


def plan(spec: str, settings: PlanSettings, tasks: tuple[str, ...] = TASKS, config=None) -> dict[str, Any]:
    """Peak bytes per device of ``tasks`` for model ``spec`` under ``settings``; whether each fits the device
    memory, and (when it does not) the changes that make it fit."""
    settings.check()
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown:
        raise MrdkitError(f"plan: unknown task {unknown[0]!r} (known: {', '.join(TASKS)})")
    shape = model_shape(spec, settings, config)
    limit = settings.gpu_memory_gib * GIB
    out: dict[str, Any] = {"model": shape.summary(), "settings": asdict(settings), "device_bytes": limit}
    for task in tasks:
        budget = (score_budget if task == "score" else unlearn_budget)(shape, settings)
        budget["fits"] = budget["peak"] <= limit
        if not budget["fits"]:
            budget["fits_with"] = suggestions(shape, settings, task)
        out[task] = budget
    return out


def _alternatives(settings: PlanSettings, task: str) -> list[tuple[str, dict[str, Any]]]:
    """Changes to try, cheapest in accuracy / speed first; each a (flags, overrides) pair."""
    if task == "score":
        return [("--perturb-mode lowmem", {"perturb_mode": "lowmem"}),
                ("--dtype bfloat16 --compute-dtype float32", {"score_dtype": "bfloat16", "compute_dtype": "float32",
                                                              "perturb_mode": "lowmem"}),
                ("--no-proxies (no gradient-norm proxy)", {"grad_norm": False}),
                ("--batch-size 1", {"score_batch_size": 1})]
    return [("--gradient-checkpointing", {"gradient_checkpointing": True}),
            ("--mixed-precision bf16", {"mixed_precision": "bf16"}),
            ("--reference cpu", {"reference": "cpu"}),
            ("--lora", {"lora": True}),
            ("--lora --mixed-precision bf16 --weights-dtype bfloat16",
             {"lora": True, "mixed_precision": "bf16", "weights_dtype": "bfloat16"}),
            ("--batch-size 1", {"batch_size": 1, "eval_batch_size": 1})]


def suggestions(shape: ModelShape, settings: PlanSettings, task: str, max_gpus: int = 64) -> list[dict[str, Any]]:
    """Single changes that make ``task`` fit; then the same cumulatively; then FSDP (unlearning) or a
    device_map (scoring) over the fewest devices of this memory that fit."""
    budget = score_budget if task == "score" else unlearn_budget
    found, cumulative, flags = [], settings, []
    for label, change in _alternatives(settings, task):
        if any(getattr(settings, k) != v for k, v in change.items()):
            trial = replace(settings, **change)
            peak = budget(_reshaped(shape, trial), trial)["peak"]
            if peak <= settings.gpu_memory_gib * GIB:
                found.append({"change": label, "peak_gib": peak / GIB})
            cumulative, flags = replace(cumulative, **change), flags + [label]
    if not found:
        peak = budget(_reshaped(shape, cumulative), cumulative)["peak"]
        if peak <= settings.gpu_memory_gib * GIB:
            found.append({"change": " ".join(flags), "peak_gib": peak / GIB})
    for base in (settings, cumulative):
        gpus = _devices_needed(shape, base, task, max_gpus)
        if gpus is not None:
            label = f"--fsdp on {gpus} GPUs" if task == "unlearn" else f"--device-map auto over {gpus} GPUs"
            extra = "" if base is settings else " with " + " ".join(flags)
            found.append({"change": label + extra, "peak_gib": gpus and budget(
                _reshaped(shape, _spread(base, task, gpus)), _spread(base, task, gpus))["peak"] / GIB})
            break
    return found


def _spread(settings: PlanSettings, task: str, gpus: int) -> PlanSettings:
    return replace(settings, gpus=gpus, fsdp=task == "unlearn" and not settings.lora)


def _devices_needed(shape: ModelShape, settings: PlanSettings, task: str, max_gpus: int) -> Optional[int]:
    budget = score_budget if task == "score" else unlearn_budget
    gpus = 2
    while gpus <= max_gpus:
        trial = _spread(settings, task, gpus)
        if budget(_reshaped(shape, trial), trial)["peak"] <= settings.gpu_memory_gib * GIB:
            return gpus
        gpus *= 2
    return None


def _reshaped(shape: ModelShape, settings: PlanSettings) -> ModelShape:
    """``shape`` with the LoRA adapter count of ``settings`` (alternatives may switch LoRA on)."""
    if settings.lora and not shape.lora_params:
        from mrdkit.unlearning.lora import default_target_modules

        model = meta_model(shape.config)
        targets = list(settings.lora_targets or default_target_modules(model))
        return replace(shape, lora_params=lora_count(model, targets, settings.lora_r), lora_targets=targets)
    return shape


def rows_of(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Printable rows: one per task and component / phase, in GiB."""
    rows = []
    for task in TASKS:
        if task not in result:
            continue
        budget = result[task]
        for name, value in {**budget["parts"], **{f"phase: {k}": v for k, v in budget["phases"].items()}}.items():
            rows.append({"task": task, "item": name, "GiB": round(value / GIB, 3)})
        verdict = "fits" if budget["fits"] else "does NOT fit"
        rows.append({"task": task, "item": f"PEAK per device ({verdict} in {result['device_bytes'] / GIB:g} GiB)",
                     "GiB": round(budget["peak"] / GIB, 3)})
    return rows

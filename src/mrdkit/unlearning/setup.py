"""Setting up an :func:`~mrdkit.unlearning.loop.unlearn` run: input checks, the method, accelerate (DDP, or FSDP2
sharding through :mod:`~mrdkit.unlearning.sharding`; DeepSpeed and Megatron-LM refused), precision and memory
switches, AdamW and its schedule, the resolved ``config.json``, and :func:`build_run`, which assembles the
:class:`RunState` in the order that matters (MRD scores and the reference from the start model, before LoRA and
any checkpoint).
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from mrdkit.checkpoint import latest_checkpoint
from mrdkit.data import Sample, check_unique_ids, load_idk
from mrdkit.data.templates import resolve_template
from mrdkit.errors import MrdkitError
from mrdkit.models import model_fingerprint, resolve_device, resolve_dtype
from mrdkit.runs import RunDir, digest
from mrdkit.samplers import SAMPLERS
from mrdkit.train import LrSchedule, make_optimizer, make_scheduler
from mrdkit.unlearning import feed as F
from mrdkit.unlearning import reference as R
from mrdkit.unlearning import sharding, trackers
from mrdkit.unlearning.config import UnlearnConfig
from mrdkit.unlearning.lora import apply_lora, cast_for_training, select_trainable, trainable_parameters
from mrdkit.unlearning.methods import UnlearnMethod, build_method

REFUSED = ("DEEPSPEED", "MEGATRON_LM")


@dataclass
class UnlearnState:
    """What an evaluation callback receives: ``callback(state) -> mapping | None`` (merged into the log row's
    ``eval``; ``{"stop": True}`` ends the run). ``model`` is the unwrapped model, in eval mode during the call."""

    step: int
    epoch: float
    model: torch.nn.Module
    tokenizer: Any
    row: dict[str, Any]
    history: list[dict[str, Any]]


Callback = Callable[[UnlearnState], "Mapping[str, Any] | None"]


@dataclass
class RunState:
    """Everything the loop carries from step to step."""

    cfg: UnlearnConfig
    acc: Any
    model: Any  # as prepared by accelerate (DDP-wrapped with several processes; the sharded model under FSDP)
    raw: Any  # unwrapped
    ref: Any
    method: UnlearnMethod
    feed: F.Feed
    sampler: Any
    optimizer: Any  # as prepared by accelerate
    scheduler: Any
    params: dict[str, torch.nn.Parameter]
    total: int
    run_dir: RunDir | None
    callbacks: Sequence[Callback] = ()
    progress: Callable[[int, int], None] | None = None
    retain_panel: list = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    stop: tuple[int, str] | None = None
    checkpoint: Path | None = None  # the checkpoint to resume from
    raw_optimizer: Any = None  # the optimizer accelerate wrapped (checkpoints load into it)
    info: dict[str, Any] = field(default_factory=dict)  # method / sampler / scores / LoRA targets for the summary
    start_weights: str | None = None  # weights_digest of the trainable parameters before any update
    sharded: bool = False  # FSDP2: parameters, gradients and AdamW state are DTensor shards


def resolve_method(method: str | UnlearnMethod, cfg: UnlearnConfig) -> UnlearnMethod:
    """A method instance from a registered name (+ ``cfg.method_kwargs``) or as given."""
    if isinstance(method, UnlearnMethod):
        if cfg.method_kwargs:
            raise MrdkitError("method_kwargs apply to a method name, not to a method instance")
        return method
    return build_method(method, **cfg.method_kwargs)


def check_inputs(forget, retain, method: UnlearnMethod, sampler, out_dir, resume: bool, idk) -> None:
    """One-line errors for what would fail later, before any heavy work."""
    if not forget:
        raise MrdkitError("the forget set is empty")
    if method.needs_idk and idk is not None and not idk:
        raise MrdkitError(f"method {method.name!r} needs at least one 'I don't know' answer (idk=)")
    check_unique_ids(forget, "the forget set")
    if method.needs_retain and not retain:
        raise MrdkitError(f"method {method.name!r} needs retain data (retain= / --retain), or set alpha=0")
    if isinstance(sampler, str):
        SAMPLERS.get(sampler)  # did-you-mean before any heavy work
    if resume and out_dir is None:
        raise MrdkitError("resume=True needs out_dir (the run directory to resume)")
    warn_overlap(forget, retain)


def warn_overlap(forget: Sequence[Sample], retain: Sequence[Sample] | None) -> None:
    """Warn when forget samples are also retain samples (same id, or same prompt and answer): the retain term then
    trains back what the forget term removes."""
    if not retain:
        return
    ids, texts = {s.id for s in retain}, {(s.prompt, s.answer) for s in retain}
    both = [s.id for s in forget if s.id in ids or (s.prompt, s.answer) in texts]
    if both:
        warnings.warn(f"{len(both)} of {len(forget)} forget samples are also in the retain set (same id or text), "
                      f"e.g. {both[0]!r}: the retain term will train them back", UserWarning, stacklevel=3)


def make_accelerator(cfg: UnlearnConfig, method: UnlearnMethod, out_dir: Any = None):
    """accelerate's ``Accelerator`` for this run (CPU when asked, ``cfg.mixed_precision``, trackers of
    ``cfg.report_to`` writing into ``out_dir``), refusing DeepSpeed and Megatron-LM."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    # RMU reads one layer's activations: parameters above it get no gradient, which DDP must be told about
    handlers = [DistributedDataParallelKwargs(find_unused_parameters=True)] if method.needs_activations else []
    names = trackers.tracker_names(cfg.report_to)
    trackers.check_available(names, out_dir)
    cpu = resolve_device(cfg.device).type == "cpu"
    if cpu and cfg.mixed_precision == "fp16":
        raise MrdkitError("mixed_precision=fp16 needs a GPU (fp16 autocast and its loss scaling are CUDA-only); on "
                          "the CPU use bf16")
    fresh_precision(cfg.mixed_precision)
    acc = Accelerator(cpu=cpu, kwargs_handlers=handlers, mixed_precision=cfg.mixed_precision,
                      **trackers.accelerator_kwargs(names, out_dir))
    check_distributed_type(acc.distributed_type)
    if acc.num_processes > 1:
        from mrdkit.dist import destroy_group_at_exit

        destroy_group_at_exit()  # accelerate leaves the group up at exit; see destroy_group_at_exit
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if acc.num_processes != world:  # each rank would train alone on the full stream and race on out_dir
        raise MrdkitError(f"launched as {world} processes but accelerate runs {acc.num_processes}: its state was "
                          f"set up before unlearn() with another device choice (e.g. PartialState() without cpu=True "
                          f"on a CPU run); let unlearn() create it")
    return acc


def fresh_precision(mixed_precision: str) -> None:
    """Let a single-process run pick its own ``mixed_precision``.

    accelerate keeps ONE process-wide ``AcceleratorState`` and refuses a second ``Accelerator`` with another
    precision ("restart your runtime"), so a second ``unlearn()`` in a notebook or a test could not switch from fp32
    to bf16. A single process owns nothing that depends on the old state once its run is over, so its state is
    dropped (``PartialState``, the process group's, is kept); a multi-process launch keeps the precision it was
    launched with and a different request is a one-line error.
    """
    from accelerate.state import AcceleratorState, PartialState

    state = AcceleratorState._shared_state
    if not state or state.get("_mixed_precision", mixed_precision) == mixed_precision:
        return
    if PartialState().num_processes > 1:  # the process group's own count (a WORLD_SIZE mismatch is checked later)
        raise MrdkitError(f"this process was launched with mixed precision {state['_mixed_precision']!r}; "
                          f"mixed_precision={mixed_precision!r} needs its own launch (accelerate launch "
                          f"--mixed_precision {mixed_precision}, or mrd unlearn --mixed-precision alone)")
    AcceleratorState._reset_state()


def check_distributed_type(kind: Any) -> None:
    """Refuse accelerate modes mrdkit's loop does not drive (DeepSpeed ZeRO, Megatron-LM).

    DDP (MULTI_GPU, MULTI_CPU) keeps a full replica per process; FSDP (accelerate's ``--use_fsdp`` with
    ``fsdp_version: 2``, or ``--fsdp`` under any multi-process launch) is sharded by
    :mod:`mrdkit.unlearning.sharding`, whose checkpoints and final model gather whole tensors. DeepSpeed would need
    its own engine for the step, the checkpoints and the final save: not tested here, so refused (docs/scaling.md).
    """
    name = getattr(kind, "name", None) or str(kind).rsplit(".", 1)[-1]
    if name.upper() in REFUSED:
        raise MrdkitError(f"mrd unlearn runs DDP or FSDP2; accelerate is configured for {name}, which its loop does "
                          f"not drive: for sharded full-parameter unlearning use FSDP (mrd unlearn --fsdp under "
                          f"torchrun / accelerate launch --multi_gpu, or accelerate's FSDP2 config; docs/scaling.md)")


def uses_fsdp(cfg: UnlearnConfig, acc: Any) -> bool:
    """``cfg.fsdp``, or a launch with accelerate's FSDP config (which accelerate honours on GPUs only)."""
    name = getattr(acc.distributed_type, "name", str(acc.distributed_type))
    if name == "FSDP" and cfg.lora is not None:
        raise MrdkitError("accelerate is configured for FSDP, which mrd unlearn uses for full-parameter runs only; "
                          "with LoRA launch with --multi_gpu (DDP)")
    return cfg.fsdp or name == "FSDP"


def enable_checkpointing(model: torch.nn.Module) -> None:
    """transformers' gradient checkpointing, non-reentrant (``torch.utils.checkpoint(use_reentrant=False)``): each
    block's activations are recomputed in the backward pass, with the forward's RNG state (same dropout masks), so
    the gradients equal those of a plain backward (Chen et al. 2016, arXiv:1604.06174)."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x: the new name of the same switch
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    elif getattr(model, "supports_gradient_checkpointing", False):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    else:
        raise MrdkitError(f"{type(model).__name__} does not support gradient checkpointing")


def sampler_name(sampler: Any) -> str:
    """A registered sampler's name, or the class name of a sampler object."""
    return sampler if isinstance(sampler, str) else type(sampler).__name__


def run_config(cfg, method, sampler, forget, retain, scores, source, targets, meta, start) -> dict[str, Any]:
    """The resolved config stored in ``config.json``; ``--resume`` refuses a run whose config differs, including
    another start model (``start``: its :func:`~mrdkit.models.model_fingerprint`)."""
    data = {"forget": {"n": len(forget), "ids": digest([s.id for s in forget])},
            "retain": {"n": len(retain or []), "ids": digest([s.id for s in retain or []])}}
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "report_to"}  # a view, not the run's identity
    return {"unlearn": settings, "method": method.hparams(),
            "sampler": sampler_name(sampler), "data": data,
            "scores": {"source": source, "digest": digest(scores) if scores else None},
            "lora_targets": targets, "start_model": start, **dict(meta or {})}


def prepare_weights(model, cfg: UnlearnConfig, acc, sharded: bool, want_reference: bool):
    """Which weights train, their dtypes, the reference and LoRA, in the order that matters; returns
    ``(model, reference, LoRA targets)``.

    Trainable selection and dtypes come first, so the reference copy shares exactly the weights that never train;
    LoRA wraps the model after the copy (which must not see adapters), the ``adapters`` reference after LoRA.
    """
    if cfg.lora is None:
        select_trainable(model, cfg.trainable_params)
    cast_for_training(model, resolve_dtype(cfg.weights_dtype), lora=cfg.lora is not None)
    if cfg.gradient_checkpointing:
        enable_checkpointing(model)
    ref = R.before_lora(model, cfg, acc.device) if want_reference else None
    targets = None
    if cfg.lora is not None:
        model, targets = apply_lora(model, cfg.lora, cfg.seed)
        select_trainable(model, cfg.trainable_params)
        cast_for_training(model, resolve_dtype(cfg.weights_dtype), lora=False)  # adapters fp32, base as set
        if want_reference and ref is None:
            ref = R.after_lora(model, cfg)
    if sharded:
        sharding.shard(model, reshard_after_forward=sharding.plugin_reshard(acc))
        if ref is not None:
            sharding.shard(ref, reshard_after_forward=sharding.plugin_reshard(acc))
    return model, ref, targets


def build_run(model, tokenizer, forget: list[Sample], retain: list[Sample], meth: UnlearnMethod, sampler, scores,
              cfg: UnlearnConfig, *, out_dir, resume, overwrite, idk, ref_model, run_meta) -> RunState:
    """Scores, trainable weights, reference, LoRA, sharding, run directory, sampler, batches, optimizer, schedule
    and accelerate, in the order that matters: the MRD scores and the reference see the start model, before LoRA
    and any checkpoint."""
    acc = make_accelerator(cfg, meth, out_dir)
    sharded = uses_fsdp(cfg, acc)
    if sharded and sampler == "refresh":
        raise MrdkitError("the refresh sampler re-scores MRD on the sharded model, which fsdp does not support; "
                          "score once (--scores) and use cga / mrd_weighted")
    init_scores, source, scorer = F.initial_scores(sampler, scores, forget, model, tokenizer, cfg)
    start = model_fingerprint(model) if out_dir is not None else None  # before LoRA wraps it
    if not sharded:
        model.to(acc.device)  # so that the reference copy sharing frozen weights shares them on the device
    model, ref, targets = prepare_weights(model, cfg, acc, sharded, meth.needs_reference and ref_model is None)
    if meth.needs_reference and ref_model is not None:
        ref = ref_model.to(acc.device).eval()
    params = trainable_parameters(model)
    if not params:
        raise MrdkitError("the model has no trainable parameters (requires_grad is False everywhere, or "
                          "trainable_params matches none)")
    config = run_config(cfg, meth, sampler, forget, retain, init_scores, source, targets, run_meta, start)
    config["template_used"] = resolve_template(cfg.template, tokenizer)  # what "auto" picked, for the record
    run_dir = None if out_dir is None else RunDir(out_dir, config, resume=resume, overwrite=overwrite)
    if run_dir is not None:
        trackers.start(acc, trackers.tracker_names(cfg.report_to), run_dir.path, config, resume)
    ckpt = latest_checkpoint(run_dir.path) if resume else None
    resumed = json.loads((ckpt / "state.json").read_text()) if ckpt else None
    smp = F.sampler_for(sampler, init_scores, scorer, cfg, len(forget), acc, resumed)
    feed = F.Feed(forget, F.encode(forget, tokenizer, cfg), F.encode(retain, tokenizer, cfg) if meth.needs_retain
                  else None, (list(idk) if idk is not None else load_idk()) if meth.needs_idk else None,
                  tokenizer, cfg, acc.process_index)
    total = F.total_steps(smp, cfg)
    optimizer = make_optimizer(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=cfg.betas)
    scheduler = make_scheduler(optimizer, LrSchedule(total, cfg.warmup_for(total), cfg.schedule))
    model.train(cfg.train_mode)
    if sharded:  # already sharded: accelerate must not wrap it in DDP (nor re-shard it under its FSDP plugin)
        prepared, prepared_opt = model, optimizer
    else:
        prepared, prepared_opt = acc.prepare(model, optimizer)
    panel = F.encode(F.monitor_subset(retain, cfg.monitor_retain), tokenizer, cfg) if retain else []
    info = {"method": meth.name, "sampler": sampler_name(sampler), "scores": source, "lora_targets": targets,
            "report_to": trackers.tracker_names(cfg.report_to) or None}
    return RunState(cfg, acc, prepared, model if sharded else acc.unwrap_model(prepared), ref, meth, feed, smp,
                    prepared_opt, scheduler, params, total, run_dir, retain_panel=panel, checkpoint=ckpt,
                    raw_optimizer=optimizer, info=info, sharded=sharded)

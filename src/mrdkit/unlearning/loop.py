"""``unlearn()``: the one explicit unlearning loop, built on ``accelerate`` so the same code runs on 1 or N devices.

Setup (this module): method, reference model (a frozen copy of the start model, before LoRA and before any
update), MRD scores for the sampler, LoRA or full fine-tuning, AdamW over the trainable parameters (decay on
matrices only), a warmup + schedule (:class:`~mrdkit.unlearning.config.LrSchedule`), the run directory and,
with ``resume=True``, the last checkpoint. Then epochs of optimizer steps (:mod:`mrdkit.unlearning.training`)
until ``max_steps`` / ``epochs`` or the stop rule, and the final model in safetensors.

The forget sampler shards its own index stream (``num_replicas`` / ``rank`` = accelerate's process count /
index), so no DataLoader is ``prepare``d: batches are collated here from sampler indices. The scheduler is not
``prepare``d either (accelerate would step it once per process per call). Single-process runs need no
``accelerate launch``; ``accelerate launch --multi_gpu --num_processes N -m mrdkit unlearn ...`` runs N.

The MRD paper (Feng et al., arXiv:2504.06658, paper-notes section 3) changes only the sampler: ``cga`` draws
high-MRD (easy) forget samples more often; every base method (GA, GradDiff, NPO, ...) is unchanged.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from mrdkit.data import Sample, check_unique_ids, load_idk
from mrdkit.errors import MrdkitError
from mrdkit.models import clone_frozen, fit_max_length, resolve_device
from mrdkit.runs import RunDir, atomic_write_jsonl
from mrdkit.unlearning import feed as F
from mrdkit.unlearning.checkpoint import latest_checkpoint, load_checkpoint
from mrdkit.unlearning.config import LrSchedule, UnlearnConfig
from mrdkit.unlearning.lora import apply_lora, save_final_model, trainable_parameters
from mrdkit.unlearning.methods import UnlearnMethod, build_method
from mrdkit.unlearning.samplers import SAMPLERS
from mrdkit.unlearning.training import LOG, RunState, UnlearnState, after_step, log_row, measure, train_step

__all__ = ["UnlearnConfig", "UnlearnResult", "UnlearnState", "unlearn"]

Callback = Callable[[UnlearnState], "Mapping[str, Any] | None"]


@dataclass
class UnlearnResult:
    """The unlearned model (eval mode; a peft model with LoRA unless merged on save) and what happened.

    Attributes:
        model: the final model. history: the train-log rows (row 0: before any update).
        stop_step, stop_reason: where and why the run stopped early (``"stop_prob"``, ``"callback"``), else None.
        run_dir: the run directory (None without ``out_dir``). summary: what ``summary.json`` holds.
    """

    model: torch.nn.Module
    history: list[dict[str, Any]]
    stop_step: int | None
    stop_reason: str | None
    run_dir: Path | None
    summary: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------------- setup


def _method(method: str | UnlearnMethod, cfg: UnlearnConfig) -> UnlearnMethod:
    if isinstance(method, UnlearnMethod):
        if cfg.method_kwargs:
            raise MrdkitError("method_kwargs apply to a method name, not to a method instance")
        return method
    return build_method(method, **cfg.method_kwargs)


def _check_inputs(forget, retain, method: UnlearnMethod, sampler, out_dir, resume: bool, idk) -> None:
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
    _warn_overlap(forget, retain)


def _warn_overlap(forget: Sequence[Sample], retain: Sequence[Sample] | None) -> None:
    """Warn when forget samples are also retain samples (same id, or same prompt and answer): the retain term then
    trains back what the forget term removes."""
    if not retain:
        return
    ids, texts = {s.id for s in retain}, {(s.prompt, s.answer) for s in retain}
    both = [s.id for s in forget if s.id in ids or (s.prompt, s.answer) in texts]
    if both:
        warnings.warn(f"{len(both)} of {len(forget)} forget samples are also in the retain set (same id or text), "
                      f"e.g. {both[0]!r}: the retain term will train them back", UserWarning, stacklevel=3)


def _accelerator(cfg: UnlearnConfig, method: UnlearnMethod):
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    # RMU reads one layer's activations: parameters above it get no gradient, which DDP must be told about
    handlers = [DistributedDataParallelKwargs(find_unused_parameters=True)] if method.needs_activations else []
    acc = Accelerator(cpu=resolve_device(cfg.device).type == "cpu", kwargs_handlers=handlers)
    check_distributed_type(acc.distributed_type)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if acc.num_processes != world:  # each rank would train alone on the full stream and race on out_dir
        raise MrdkitError(f"launched as {world} processes but accelerate runs {acc.num_processes}: its state was "
                          f"set up before unlearn() with another device choice (e.g. PartialState() without cpu=True "
                          f"on a CPU run); let unlearn() create it")
    return acc


SHARDED = ("DEEPSPEED", "FSDP", "MEGATRON_LM")


def check_distributed_type(kind: Any) -> None:
    """Refuse accelerate modes that shard parameters (DeepSpeed ZeRO, FSDP, Megatron-LM).

    The loop saves ``trainable_parameters`` and the AdamW state straight to safetensors, clips with a global norm
    over the local parameters and writes ``model/`` with ``save_pretrained``: under sharding each process holds
    only a slice, so checkpoints and the final model would be incomplete (docs/robustness.md). DDP (MULTI_GPU,
    MULTI_CPU) keeps a full replica per process and is supported.
    """
    name = getattr(kind, "name", None) or str(kind).rsplit(".", 1)[-1]
    if name.upper() in SHARDED:
        raise MrdkitError(f"mrd unlearn runs data-parallel (DDP) only; accelerate is configured for {name}, whose "
                          f"sharded parameters its checkpoints and final save cannot hold: launch with "
                          f"--multi_gpu (DDP), or see docs/robustness.md for DeepSpeed / FSDP")


def _optimizer(params: Mapping[str, torch.nn.Parameter], cfg: UnlearnConfig) -> torch.optim.AdamW:
    """AdamW with decoupled decay on matrices only (not biases / norm weights), as the HF Trainer does."""
    groups = [{"params": [p for p in params.values() if p.ndim >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params.values() if p.ndim < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, betas=tuple(cfg.betas))


def _sampler_name(sampler: Any) -> str:
    return sampler if isinstance(sampler, str) else type(sampler).__name__


def _digest(values: Sequence[Any]) -> str:
    return hashlib.blake2b("\n".join(map(repr, values)).encode(), digest_size=8).hexdigest()


def _run_config(cfg, method, sampler, forget, retain, scores, source, targets, meta) -> dict[str, Any]:
    """The resolved config stored in ``config.json``; ``--resume`` refuses a run whose config differs."""
    data = {"forget": {"n": len(forget), "ids": _digest([s.id for s in forget])},
            "retain": {"n": len(retain or []), "ids": _digest([s.id for s in retain or []])}}
    return {"unlearn": dataclasses.asdict(cfg), "method": method.hparams(),
            "sampler": _sampler_name(sampler), "data": data,
            "scores": {"source": source, "digest": _digest(scores) if scores else None},
            "lora_targets": targets, **dict(meta or {})}


# ------------------------------------------------------------------------------------------- run / resume


def _fresh_start(r: RunState) -> None:
    """Clear a previous attempt's outputs and log row 0 (before any update); the stop rule may end it there."""
    if r.run_dir is not None and r.acc.is_main_process:
        shutil.rmtree(r.run_dir.file("checkpoints"), ignore_errors=True)
        for name in (LOG, "summary.json", "DONE.json"):
            r.run_dir.file(name).unlink(missing_ok=True)
    row = {"step": 0, "epoch": 0.0, **measure(r)}
    if r.cfg.stop_prob is not None and row["forget_prob"] <= r.cfg.stop_prob:
        r.stop = (0, "stop_prob")
    log_row(r, row)


def _resume(r: RunState, ckpt: Path, raw_optimizer) -> tuple[int, int, int]:
    """Load the checkpoint and keep the log rows up to its step; returns (step, epoch, step in epoch)."""
    state = load_checkpoint(ckpt, params=r.params, optimizer=raw_optimizer, scheduler=r.scheduler)
    r.stop = tuple(state["stop"]) if state.get("stop") else None
    log = r.run_dir.file(LOG)
    r.history = [row for row in _read_log(log) if row["step"] <= state["step"]]
    if r.acc.is_main_process:
        atomic_write_jsonl(log, r.history)  # drop rows a killed run wrote after its last checkpoint
    return state["step"], state["epoch"], state["step_in_epoch"]


def _read_log(path: Path) -> list[dict[str, Any]]:
    """The train log's rows; a torn LAST line (the process died inside its append) is dropped, any other
    malformed line is an error naming it."""
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    rows = []
    for lineno, line in enumerate(lines, 1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if lineno < len(lines):
                raise MrdkitError(f"{path} line {lineno}: invalid JSON; the train log is damaged") from None
    return rows


def _train(r: RunState, step: int, epoch: int, in_epoch: int) -> None:
    done = r.stop is not None or step >= r.total
    while not done:
        groups = F.epoch_groups(r.sampler, epoch, r.cfg.batch_size, r.cfg.grad_accum)
        if not groups:
            raise MrdkitError(f"the sampler yielded no forget samples in epoch {epoch}")
        for k in range(in_epoch, len(groups)):
            step += 1
            row = train_step(r, groups[k], step, round(epoch + (k + 1) / len(groups), 4))
            done = after_step(r, row, epoch, k + 1, k + 1 == len(groups))
            if done:
                break
        epoch, in_epoch = epoch + 1, 0


def _last_with(history: list[dict[str, Any]], key: str, first: bool = False) -> float | None:
    rows = [row[key] for row in history if row.get(key) is not None]
    return (rows[0] if first else rows[-1]) if rows else None


def _finish(r: RunState, wall: float, info: dict[str, Any]) -> UnlearnResult:
    r.acc.wait_for_everyone()
    stop_step, reason = r.stop if r.stop else (None, None)
    summary = {"status": "stopped" if r.stop else "completed", "steps": r.history[-1]["step"], "total_steps": r.total,
               "epochs": r.history[-1]["epoch"], "stop_step": stop_step, "stop_reason": reason,
               **{f"{k}_{end}": _last_with(r.history, k, end == "start") for k in ("forget_prob", "retain_prob")
                  for end in ("start", "end")},
               "trainable_params": sum(p.numel() for p in r.params.values()), "wall_s": round(wall, 2), **info}
    model = r.raw
    if r.run_dir is not None and r.acc.is_main_process:
        merge = bool(r.cfg.lora and r.cfg.lora.merge_on_save)
        model = save_final_model(r.raw, r.feed.tokenizer, r.run_dir.file("model"), merge=merge)
        summary["model_dir"] = str(r.run_dir.file("model"))
        r.run_dir.write_json("summary.json", summary)
        r.run_dir.mark_finished(summary)
    model.eval()
    return UnlearnResult(model, r.history, stop_step, reason, r.run_dir.path if r.run_dir else None, summary)


def _build(model, tokenizer, forget: list[Sample], retain: list[Sample], meth: UnlearnMethod, sampler, scores,
           cfg: UnlearnConfig, *, out_dir, resume, overwrite, idk, ref_model, run_meta):
    """Reference, scores, LoRA, run directory, sampler, batches, optimizer, schedule and accelerate, in the order
    that matters: the reference copy and the MRD scores see the start model, before LoRA and any checkpoint."""
    acc = _accelerator(cfg, meth)
    ref = None
    if meth.needs_reference:
        ref = (ref_model if ref_model is not None else clone_frozen(model)).to(acc.device).eval()
    init_scores, source, scorer = F.initial_scores(sampler, scores, forget, model, tokenizer, cfg)
    targets = None
    if cfg.lora is not None:
        model, targets = apply_lora(model, cfg.lora, cfg.seed)
    params = trainable_parameters(model)
    if not params:
        raise MrdkitError("the model has no trainable parameters (requires_grad is False everywhere)")
    config = _run_config(cfg, meth, sampler, forget, retain, init_scores, source, targets, run_meta)
    run_dir = None if out_dir is None else RunDir(out_dir, config, resume=resume, overwrite=overwrite)
    ckpt = latest_checkpoint(run_dir.path) if resume else None
    resumed = json.loads((ckpt / "state.json").read_text()) if ckpt else None
    smp = F.sampler_for(sampler, init_scores, scorer, cfg, len(forget), acc, resumed)
    feed = F.Feed(forget, F.encode(forget, tokenizer, cfg), F.encode(retain, tokenizer, cfg) if meth.needs_retain
                  else None, (list(idk) if idk is not None else load_idk()) if meth.needs_idk else None,
                  tokenizer, cfg, acc.process_index)
    total = F.total_steps(smp, cfg)
    optimizer = _optimizer(params, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, LrSchedule(total, cfg.warmup_for(total), cfg.schedule))
    model.train(cfg.train_mode)
    prepared, prepared_opt = acc.prepare(model, optimizer)
    panel = F.encode(F.monitor_subset(retain, cfg.monitor_retain), tokenizer, cfg) if retain else []
    r = RunState(cfg, acc, prepared, acc.unwrap_model(prepared), ref, meth, feed, smp, prepared_opt, scheduler,
                 params, total, run_dir, [], None, panel)
    info = {"method": meth.name, "sampler": _sampler_name(sampler), "scores": source, "lora_targets": targets}
    return r, ckpt, optimizer, info


# ----------------------------------------------------------------------------------------------------- API


def unlearn(model: torch.nn.Module, tokenizer: Any, forget: Sequence[Sample], retain: Sequence[Sample] | None = None,
            *, method: str | UnlearnMethod = "ga", sampler: Any = "random",
            scores: Mapping[str, float] | str | Path | None = None, config: UnlearnConfig | None = None,
            out_dir: str | Path | None = None, resume: bool = False, overwrite: bool = False,
            callbacks: Sequence[Callback] = (), progress: Callable[[int, int], None] | None = None,
            idk: Sequence[str] | None = None, ref_model: torch.nn.Module | None = None,
            run_meta: Mapping[str, Any] | None = None) -> UnlearnResult:
    """Unlearn ``forget`` from ``model`` (in place) with a registered method and forget-set sampler.

    Args:
        model, tokenizer: a Hugging Face causal LM (float32 recommended) and its tokenizer.
        forget, retain: samples to forget / to keep (retain: needed by methods with a retain term).
        method: ``ga``, ``graddiff``, ``kl``, ``npo``, ``simnpo``, ``idk``, ``idkdpo``, ``rmu`` (hyper-parameters in
            ``config.method_kwargs``) or a method instance.
        sampler: a registered sampler name (``random``, ``cga``, ...; options in ``config.sampler_kwargs``) or a
            sampler object with ``set_epoch`` and ``__iter__``.
        scores: MRD per forget id (a dict, or a path to ``mrd.jsonl`` with ``id`` / ``mrd`` rows) for the
            score-based samplers; None = score on the fly when the sampler needs scores.
        config: :class:`UnlearnConfig` (defaults are 7B-model values; a tiny model needs ``lr`` ~1e-3).
        out_dir: run directory (config.json, provenance.json, train_log.jsonl, checkpoints/, model/,
            summary.json); None = keep everything in memory.
        resume: continue ``out_dir`` from its last checkpoint (same config required; pass the same START model,
            from which the reference copy and the MRD scores are taken again); bitwise equal to an uninterrupted
            run. overwrite: reuse a directory holding a finished run.
        callbacks: ``callback(UnlearnState) -> mapping | None`` every ``eval_every`` steps and at the end.
        progress: ``progress(step, total_steps)`` after every step.
        idk: "I don't know" answers for idk / idkdpo (default: TOFU's ``idontknow.jsonl``).
        ref_model: the frozen reference of npo / kl / idkdpo / rmu (default: a frozen copy of ``model``).
        run_meta: extra JSON-ready fields stored in ``config.json`` (e.g. the model and data specs).

    Returns:
        :class:`UnlearnResult`.

    Raises:
        MrdkitError: bad input; :class:`~mrdkit.errors.NonFiniteLossError` when a loss becomes NaN/Inf.
    """
    t0 = time.perf_counter()
    cfg = config or UnlearnConfig()
    cfg.check()
    if fit_max_length(model, cfg.max_length) < cfg.max_length:  # cut at the context, not past the position table
        cfg = dataclasses.replace(cfg, max_length=fit_max_length(model, cfg.max_length))
    meth = _method(method, cfg)
    _check_inputs(forget, retain, meth, sampler, out_dir, resume, idk)
    r, ckpt, optimizer, info = _build(model, tokenizer, list(forget), list(retain or []), meth, sampler, scores, cfg,
                                      out_dir=out_dir, resume=resume, overwrite=overwrite, idk=idk,
                                      ref_model=ref_model, run_meta=run_meta)
    r.callbacks, r.progress = list(callbacks), progress
    position = _resume(r, ckpt, optimizer) if ckpt else (0, 0, 0)
    if not ckpt:
        _fresh_start(r)
    _train(r, *position)
    return _finish(r, time.perf_counter() - t0, info)

"""``unlearn()``: the one explicit unlearning loop, built on ``accelerate`` so the same code runs on 1 or N devices.

Setup (:mod:`~mrdkit.unlearning.run_setup`): method, reference model (a frozen copy of the start model, before
LoRA and before any update), MRD scores for the sampler, LoRA or full fine-tuning, AdamW over the trainable
parameters (decay on matrices only), a warmup + schedule (:class:`~mrdkit.unlearning.config.LrSchedule`), the
run directory and, with ``resume=True``, the last checkpoint. Then epochs of optimizer steps
(:mod:`mrdkit.unlearning.training`) until ``max_steps`` / ``epochs`` or the stop rule, and the final model in
safetensors.

The forget sampler shards its own index stream (``num_replicas`` / ``rank`` = accelerate's process count /
index), so no DataLoader is ``prepare``d: batches are collated here from sampler indices. The scheduler is not
``prepare``d either (accelerate would step it once per process per call). Single-process runs need no
``accelerate launch``; ``accelerate launch --multi_gpu --num_processes N -m mrdkit unlearn ...`` runs N.

The MRD paper (Feng et al., arXiv:2504.06658, paper-notes section 3) changes only the sampler: ``cga`` draws
high-MRD (easy) forget samples more often; every base method (GA, GradDiff, NPO, ...) is unchanged.

This module runs, resumes and finishes the loop; the setup lives in :mod:`mrdkit.unlearning.run_setup` (its names
are re-exported here).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from mrdkit.data import Sample
from mrdkit.errors import MrdkitError
from mrdkit.models import fit_max_length
from mrdkit.runs import atomic_write_jsonl
from mrdkit.unlearning import feed as F
from mrdkit.unlearning.checkpoint import load_checkpoint
from mrdkit.unlearning.config import UnlearnConfig
from mrdkit.unlearning.lora import save_final_model
from mrdkit.unlearning.methods import UnlearnMethod
from mrdkit.unlearning.run_setup import (  # noqa: F401  (re-exported)
    SHARDED,
    _accelerator,
    _build,
    _check_inputs,
    _digest,
    _method,
    _optimizer,
    _run_config,
    _sampler_name,
    _warn_overlap,
    check_distributed_type,
)
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

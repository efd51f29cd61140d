"""``unlearn()``: the one explicit unlearning loop, built on ``accelerate`` so the same code runs on 1 or N devices.

Setup (:mod:`~mrdkit.unlearning.setup`): method, MRD scores for the sampler, the trainable weights and their dtypes,
the reference model (the start model before any update: the LoRA model with adapters disabled, or a copy sharing
the frozen weights; :mod:`~mrdkit.unlearning.reference`), LoRA or full fine-tuning, FSDP2 sharding when asked
(:mod:`~mrdkit.unlearning.sharding`), AdamW over the trainable parameters (decay on matrices only), a warmup +
schedule (:class:`~mrdkit.train.LrSchedule`), the run directory and, with ``resume=True``, the last checkpoint.
Then epochs of optimizer steps until ``max_steps`` / ``epochs`` or the stop rule, and the final model in
safetensors.

Step ``s`` (1-based) takes up to ``grad_accum`` forget micro-batches, pairs each with a retain batch (and, for
idk/idkdpo, the forget questions with "I don't know" answers), lets the method turn them into
``L = gamma * L_forget + alpha * L_retain`` (:mod:`mrdkit.unlearning.methods`) and takes one optimizer step through
:func:`mrdkit.train.train_step` (mean of the micro-batch gradients, clipping, AdamW, schedule). Accumulation is
done there rather than by ``Accelerator(gradient_accumulation_steps=...)``: accelerate counts micro-batches across
epoch ends and divides every loss by the configured count, so a short last group would get the wrong weight.
A NaN/Inf loss or gradient norm raises :class:`~mrdkit.errors.NonFiniteLossError` before the optimizer step, so
the weights and the last checkpoint stay good.

The forget sampler shards its own index stream (``num_replicas`` / ``rank`` = accelerate's process count /
index), so no DataLoader is ``prepare``d: batches are collated from sampler indices. The scheduler is not
``prepare``d either (accelerate would step it once per process per call). Single-process runs need no
``accelerate launch``; ``accelerate launch --multi_gpu --num_processes N -m mrdkit unlearn ...`` runs N.
Mixed precision is accelerate's autocast, entered around every micro-batch's forwards (model and reference) and
around the measurements; under FSDP the model is sharded by mrdkit and not ``prepare``d (docs/scaling.md).

The MRD paper (Feng et al., arXiv:2504.06658, paper-notes section 3) changes only the sampler: ``cga`` draws
high-MRD (easy) forget samples more often; every base method (GA, GradDiff, NPO, ...) is unchanged.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from mrdkit.checkpoint import check_names, latest_checkpoint, load_checkpoint, read_checkpoint, save_checkpoint
from mrdkit.data import Sample
from mrdkit.errors import MrdkitError, NonFiniteLossError
from mrdkit.models import fit_max_length, weights_digest
from mrdkit.runs import atomic_write_jsonl, dumps
from mrdkit.train import seeded_dropout, train_step
from mrdkit.unlearning import feed as F
from mrdkit.unlearning import sharding, trackers
from mrdkit.unlearning.config import UnlearnConfig
from mrdkit.unlearning.lora import save_final_model
from mrdkit.unlearning.methods import UnlearnMethod
from mrdkit.unlearning.setup import Callback, RunState, UnlearnState, build_run, check_inputs, resolve_method
from mrdkit.unlearning.step import method_loss

__all__ = ["UnlearnConfig", "UnlearnResult", "UnlearnState", "unlearn"]

LOG = "train_log.jsonl"
CURVE = "prob_curve.png"


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


# ------------------------------------------------------------------------------------------- one step


def _mean_over_processes(acc: Any, values: dict[str, float]) -> dict[str, float]:
    if acc.num_processes == 1 or not values:
        return values
    t = acc.reduce(torch.tensor(list(values.values()), dtype=torch.float64, device=acc.device), reduction="mean")
    return dict(zip(values, t.tolist()))  # NaN on any process makes the mean NaN everywhere: all ranks stop


def _nonfinite(r: RunState, step: int, parts: Mapping[str, float]) -> NonFiniteLossError:
    last = latest_checkpoint(r.run_dir.path) if r.run_dir else None
    text = ", ".join(f"{k}={v:.4g}" for k, v in parts.items())
    message = (f"non-finite loss at step {step} ({text}); run stopped, last good checkpoint: "
               f"{last or 'none'} (lower the lr or check the method's hyper-parameters)")
    if r.run_dir and r.acc.is_main_process:
        r.run_dir.write_json("summary.json", {"status": "non_finite", "step": step, "message": message})
    return NonFiniteLossError(message)


def unlearning_step(r: RunState, group: list[list[int]], step: int, epoch: float) -> dict[str, Any]:
    """One optimizer step over the micro-batches of ``group`` (forget indices); returns the log row."""
    lr, ids = r.optimizer.param_groups[0]["lr"], []

    def micro_loss(m: int, indices: list[int]):
        def run() -> tuple[torch.Tensor, dict[str, float]]:
            batches = r.feed.batches(indices, step, m, retain=r.method.needs_retain, idk=r.method.needs_idk)
            ids.extend(batches[0]["ids"])
            # autocast (mixed_precision) around the model AND the reference, so both see the same precision
            with seeded_dropout(r.cfg.seed, step, m, r.feed.rank, device=r.acc.device), r.acc.autocast():
                return method_loss(r.method, r.model, r.ref, *batches)
        return run

    result = train_step([micro_loss(m, indices) for m, indices in enumerate(group)], params=list(r.params.values()),
                        optimizer=r.optimizer, scheduler=r.scheduler, max_grad_norm=r.cfg.max_grad_norm,
                        accelerator=r.acc, model=r.model, reduce_parts=lambda p: _mean_over_processes(r.acc, p),
                        on_nonfinite=lambda parts: _nonfinite(r, step, parts))
    if r.acc.num_processes > 1:
        from accelerate.utils import gather_object

        ids = gather_object(ids)
    return {"step": step, "epoch": epoch, "loss": result.parts.get("total"), "parts": result.parts, "lr": lr,
            "grad_norm": result.grad_norm, "forget_ids": ids}


# ------------------------------------------------------------------------------------------- after a step


def _due(every: int | None, step: int) -> bool:
    return every is not None and step % every == 0


def measure(r: RunState) -> dict[str, float]:
    """Mean P(a|q) of the whole forget set and of the retain panel (the stop rule's input)."""
    bs, pad = r.cfg.eval_batch_size, r.feed.pad
    with r.acc.autocast():  # the precision the steps run in (half frozen weights need it)
        out = {"forget_prob": F.mean_probability(r.raw, r.feed.forget_enc, bs, pad)}
        if r.retain_panel:
            out["retain_prob"] = F.mean_probability(r.raw, r.retain_panel, bs, pad)
    return out


def log_row(r: RunState, row: dict[str, Any]) -> None:
    """Keep ``row`` in the history and append it to ``train_log.jsonl`` (a checkpoint's resume truncates it).

    One ``write`` call per row on an ``O_APPEND`` descriptor, so a killed process leaves whole lines (a torn last
    line, possible only on power loss, is dropped on resume)."""
    r.history.append(row)
    trackers.log(r.acc, row)
    if r.run_dir and r.acc.is_main_process:
        data = (dumps(row, indent=None) + "\n").encode("utf-8")
        fd = os.open(r.run_dir.file(LOG), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            view = memoryview(data)
            while view:  # a regular file takes it in one call; loop only for the pathological short write
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)


def _callbacks(r: RunState, row: dict[str, Any]) -> None:
    """Run the evaluation callbacks on the model in eval mode (no dropout) and under the run's autocast; their
    results go to ``row["eval"]``."""
    state = UnlearnState(row["step"], row["epoch"], r.raw, r.feed.tokenizer, row, r.history)
    was_training = r.raw.training
    r.raw.eval()
    try:
        for callback in r.callbacks:
            with r.acc.autocast():
                result = callback(state) or {}
            row.setdefault("eval", {}).update(result)
            if result.get("stop") and r.stop is None:
                r.stop = (row["step"], "callback")
    finally:
        r.raw.train(was_training)


def checkpoint_now(r: RunState, step: int, epoch: int, in_epoch: int) -> None:
    """Write the checkpoint of ``step`` (main process) with the loop position ``(epoch, step within epoch)``.

    Sharded (FSDP) runs gather whole tensors first, a collective every process joins, so a checkpoint has one
    format whatever wrote it."""
    if r.run_dir is None:
        return
    params, optimizer = r.params, r.optimizer
    if r.sharded:
        params = sharding.full_parameters(r.raw, r.params)
        optimizer = sharding.full_optimizer_state(r.raw, r.raw_optimizer)
    if r.acc.is_main_process:
        scores = r.sampler.scores.tolist() if hasattr(r.sampler, "rescore") else None
        state = {"epoch": epoch, "step_in_epoch": in_epoch, "stop": r.stop, "sampler_scores": scores}
        save_checkpoint(r.run_dir.path, step, params=params, optimizer=optimizer, scheduler=r.scheduler,
                        state=state)
    r.acc.wait_for_everyone()


def after_step(r: RunState, row: dict[str, Any], epoch: int, in_epoch: int, epoch_end: bool) -> bool:
    """Stop rule, callbacks, log row, checkpoint, progress; returns True when the run is over."""
    cfg, step = r.cfg, row["step"]
    last = step >= r.total
    if _due(cfg.stop_check_every, step) or (cfg.stop_check_every is None and epoch_end) or last:
        row.update(measure(r))
        if cfg.stop_prob is not None and row["forget_prob"] <= cfg.stop_prob:
            r.stop = (step, "stop_prob")
    if _due(cfg.eval_every, step) or last or r.stop:
        _callbacks(r, row)
    log_row(r, row)
    done = last or r.stop is not None
    if _due(cfg.checkpoint_every, step) or done:
        checkpoint_now(r, step, epoch, in_epoch)
    if r.progress is not None and r.acc.is_main_process:
        r.progress(step, r.total)
    return done


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


def _resume(r: RunState) -> tuple[int, int, int]:
    """Load the checkpoint and keep the log rows up to its step; returns (step, epoch, step in epoch)."""
    if r.sharded:  # every process reads the whole tensors and keeps its shard
        saved, optimizer_state, scheduler_state, state = read_checkpoint(r.checkpoint)
        check_names(r.checkpoint, saved, r.params)
        sharding.load_full(r.raw, r.raw_optimizer, saved, optimizer_state)
        r.scheduler.load_state_dict(scheduler_state)
    else:
        state = load_checkpoint(r.checkpoint, params=r.params, optimizer=r.raw_optimizer, scheduler=r.scheduler)
    r.stop = tuple(state["stop"]) if state.get("stop") else None
    log = r.run_dir.file(LOG)
    r.history = [row for row in read_log(log) if row["step"] <= state["step"]]
    if r.acc.is_main_process:
        atomic_write_jsonl(log, r.history)  # drop rows a killed run wrote after its last checkpoint
    return state["step"], state["epoch"], state["step_in_epoch"]


def read_log(path: Path) -> list[dict[str, Any]]:
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
            row = unlearning_step(r, groups[k], step, round(epoch + (k + 1) / len(groups), 4))
            done = after_step(r, row, epoch, k + 1, k + 1 == len(groups))
            if done:
                break
        epoch, in_epoch = epoch + 1, 0


def _last_with(history: list[dict[str, Any]], key: str, first: bool = False) -> float | None:
    rows = [row[key] for row in history if row.get(key) is not None]
    return (rows[0] if first else rows[-1]) if rows else None


def plot_probabilities(history: list[dict[str, Any]], path: Path) -> Path | None:
    """``prob_curve.png``: forget and retain-panel mean P(a|q) against the optimizer step (every measured row)."""
    from mrdkit.plots import lines

    series = {}
    for key, label in (("forget_prob", "forget P(a|q)"), ("retain_prob", "retain P(a|q) (panel)")):
        points = [(row["step"], row[key]) for row in history if row.get(key) is not None]
        if points:
            series[label] = ([p[0] for p in points], [p[1] for p in points])
    if not series:
        return None
    return lines(series, path, title="Mean answer probability during unlearning", xlabel="optimizer step",
                 ylabel="mean P(a|q)")


def check_weights_changed(r: RunState, start_digest: str) -> bool:
    """Whether the trainable weights differ from the start (:func:`~mrdkit.models.weights_digest`); warns when
    they do not, since a run that changed nothing (every step at lr 0, a zero loss, frozen weights) must not read as
    a success."""
    changed = weights_digest(r.params.items()) != start_digest
    if not changed:
        steps = r.history[-1]["step"]
        warnings.warn(f"the weights did not change in {steps} optimizer step(s) (peak lr {r.cfg.lr:g}, schedule "
                      f"{r.cfg.schedule}, warmup {r.cfg.warmup_for(r.total)} step(s)): nothing was unlearned; raise "
                      f"--lr, --epochs or --max-steps", UserWarning, stacklevel=3)
    return changed


def finish_run(r: RunState, wall: float) -> UnlearnResult:
    r.acc.wait_for_everyone()
    stop_step, reason = r.stop if r.stop else (None, None)
    summary = {"status": "stopped" if r.stop else "completed", "steps": r.history[-1]["step"], "total_steps": r.total,
               "epochs": r.history[-1]["epoch"], "stop_step": stop_step, "stop_reason": reason,
               **{f"{k}_{end}": _last_with(r.history, k, end == "start") for k in ("forget_prob", "retain_prob")
                  for end in ("start", "end")},
               "trainable_params": sum(p.numel() for p in r.params.values()), "wall_s": round(wall, 2), **r.info}
    if r.start_weights is not None:
        summary["weights_changed"] = check_weights_changed(r, r.start_weights)
    model = r.raw
    whole = sharding.full_model_state(r.raw) if r.sharded and r.run_dir is not None else None  # collective
    if r.run_dir is not None and r.acc.is_main_process:
        merge = bool(r.cfg.lora and r.cfg.lora.merge_on_save)
        model = save_final_model(r.raw, r.feed.tokenizer, r.run_dir.file("model"), merge=merge, state_dict=whole)
        summary["model_dir"] = str(r.run_dir.file("model"))
        plot_probabilities(r.history, r.run_dir.file(CURVE))
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
        out_dir: run directory (config.json, provenance.json, train_log.jsonl, prob_curve.png, checkpoints/,
            model/, summary.json; tensorboard/ or wandb/ with ``config.report_to``); None = keep everything in
            memory (no trackers then).
        resume: continue ``out_dir`` from its last checkpoint (same config required; pass the same START model,
            from which the reference copy and the MRD scores are taken again); bitwise equal to an uninterrupted
            run. overwrite: reuse a directory holding a finished run.
        callbacks: ``callback(UnlearnState) -> mapping | None`` every ``eval_every`` steps and at the end.
        progress: ``progress(step, total_steps)`` after every step.
        idk: "I don't know" answers for idk / idkdpo (default: TOFU's ``idontknow.jsonl``).
        ref_model: the frozen reference of npo / kl / idkdpo / rmu (default: built per ``config.reference``: the
            LoRA model with its adapters disabled, or a copy of the start model sharing its frozen weights;
            :mod:`mrdkit.unlearning.reference`).
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
    meth = resolve_method(method, cfg)
    check_inputs(forget, retain, meth, sampler, out_dir, resume, idk)
    r = build_run(model, tokenizer, list(forget), list(retain or []), meth, sampler, scores, cfg, out_dir=out_dir,
                  resume=resume, overwrite=overwrite, idk=idk, ref_model=ref_model, run_meta=run_meta)
    r.callbacks, r.progress = list(callbacks), progress
    r.start_weights = weights_digest(r.params.items())  # before a resumed run loads its checkpoint
    try:
        if r.checkpoint:
            position = _resume(r)
        else:
            position = (0, 0, 0)
            _fresh_start(r)
        _train(r, *position)
        return finish_run(r, time.perf_counter() - t0)
    finally:
        trackers.finish(r.acc)  # flush the tracker files even when the run fails

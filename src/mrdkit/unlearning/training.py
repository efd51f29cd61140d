"""One optimizer step of the unlearning loop and the bookkeeping after it (stop rule, callbacks, log, checkpoint).

Step ``s`` (1-based) takes up to ``grad_accum`` forget micro-batches, pairs each with a retain batch (and, for
idk/idkdpo, the forget questions with "I don't know" answers), lets :func:`gather_step_inputs` run the model(s)
and the method turn them into ``L = gamma * L_forget + alpha * L_retain`` (:mod:`mrdkit.unlearning.methods`),
then clips the global gradient norm and takes an AdamW step and a scheduler step.

Accumulation is done here rather than by ``Accelerator(gradient_accumulation_steps=...)``: accelerate counts
micro-batches across epoch ends and divides every loss by the configured count, so a short last group would get
the wrong weight; here each step averages exactly the micro-batches it has (``no_sync`` on all but the last).

A NaN/Inf loss (checked before its backward, on every process) or gradient norm raises
:class:`NonFiniteLossError` before the optimizer step, so the weights and the last checkpoint stay good.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch

from mrdkit.errors import NonFiniteLossError
from mrdkit.runs import RunDir, dumps
from mrdkit.seeding import derive_seed
from mrdkit.unlearning import feed as F
from mrdkit.unlearning.checkpoint import latest_checkpoint, save_checkpoint
from mrdkit.unlearning.config import UnlearnConfig
from mrdkit.unlearning.methods import UnlearnMethod
from mrdkit.unlearning.step import gather_step_inputs

LOG = "train_log.jsonl"


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


@dataclass
class RunState:
    """Everything the loop carries from step to step."""

    cfg: UnlearnConfig
    acc: Any
    model: Any  # as prepared by accelerate (DDP-wrapped with several processes)
    raw: Any  # unwrapped
    ref: Any
    method: UnlearnMethod
    feed: F.Feed
    sampler: Any
    optimizer: Any
    scheduler: Any
    params: dict[str, torch.nn.Parameter]
    total: int
    run_dir: RunDir | None
    callbacks: Sequence[Callable[[UnlearnState], Mapping[str, Any] | None]]
    progress: Callable[[int, int], None] | None
    retain_panel: list = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    stop: tuple[int, str] | None = None


# ------------------------------------------------------------------------------------------- one step


@contextlib.contextmanager
def _seeded_dropout(seed: int, step: int, micro: int, rank: int, device: torch.device):
    """Dropout masks from (seed, step, micro, rank) instead of the global RNG, which is restored afterwards."""
    cuda = device.type == "cuda"
    with torch.random.fork_rng(devices=[device.index or 0] if cuda else []):
        s = derive_seed(seed, "dropout", step, micro, rank)
        torch.default_generator.manual_seed(s)
        if cuda:
            torch.cuda.manual_seed(s)
        yield


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


def train_step(r: RunState, group: list[list[int]], step: int, epoch: float) -> dict[str, Any]:
    """Forward/backward every micro-batch of ``group``, clip, AdamW + scheduler step; returns the log row."""
    lr, parts, ids = r.optimizer.param_groups[0]["lr"], {}, []
    for m, indices in enumerate(group):
        batches = r.feed.batches(indices, step, m, retain=r.method.needs_retain, idk=r.method.needs_idk)
        sync = r.acc.no_sync(r.model) if m < len(group) - 1 else contextlib.nullcontext()
        with sync:
            with _seeded_dropout(r.cfg.seed, step, m, r.feed.rank, r.acc.device):
                out = r.method.compute(gather_step_inputs(r.method, r.model, r.ref, *batches))
            micro = _mean_over_processes(r.acc, out.parts)
            if not all(map(math.isfinite, micro.values())):
                raise _nonfinite(r, step, micro)
            r.acc.backward(out.total / len(group))
        parts = {k: parts.get(k, 0.0) + v / len(group) for k, v in micro.items()}
        ids += batches[0]["ids"]
    norm = float(r.acc.clip_grad_norm_(list(r.params.values()), r.cfg.max_grad_norm or math.inf))
    if not math.isfinite(norm):
        raise _nonfinite(r, step, {**parts, "grad_norm": norm})
    r.optimizer.step()
    r.scheduler.step()
    r.optimizer.zero_grad(set_to_none=True)
    if r.acc.num_processes > 1:
        from accelerate.utils import gather_object

        ids = gather_object(ids)
    return {"step": step, "epoch": epoch, "loss": parts.get("total"), "parts": parts, "lr": lr, "grad_norm": norm,
            "forget_ids": ids}


# ------------------------------------------------------------------------------------------- after a step


def _due(every: int | None, step: int) -> bool:
    return every is not None and step % every == 0


def measure(r: RunState) -> dict[str, float]:
    """Mean P(a|q) of the whole forget set and of the retain panel (the stop rule's input)."""
    bs, pad = r.cfg.eval_batch_size, r.feed.pad
    out = {"forget_prob": F.mean_probability(r.raw, r.feed.forget_enc, bs, pad)}
    if r.retain_panel:
        out["retain_prob"] = F.mean_probability(r.raw, r.retain_panel, bs, pad)
    return out


def log_row(r: RunState, row: dict[str, Any]) -> None:
    """Keep ``row`` in the history and append it to ``train_log.jsonl`` (a checkpoint's resume truncates it).

    One ``write`` call per row on an ``O_APPEND`` descriptor, so a killed process leaves whole lines (a torn last
    line, possible only on power loss, is dropped on resume)."""
    r.history.append(row)
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
    """Run the evaluation callbacks on the model in eval mode (no dropout); their results go to ``row["eval"]``."""
    state = UnlearnState(row["step"], row["epoch"], r.raw, r.feed.tokenizer, row, r.history)
    was_training = r.raw.training
    r.raw.eval()
    try:
        for callback in r.callbacks:
            result = callback(state) or {}
            row.setdefault("eval", {}).update(result)
            if result.get("stop") and r.stop is None:
                r.stop = (row["step"], "callback")
    finally:
        r.raw.train(was_training)


def checkpoint_now(r: RunState, step: int, epoch: int, in_epoch: int) -> None:
    """Write the checkpoint of ``step`` (main process) with the loop position ``(epoch, step within epoch)``."""
    if r.run_dir is None:
        return
    if r.acc.is_main_process:
        scores = r.sampler.scores.tolist() if hasattr(r.sampler, "rescore") else None
        state = {"epoch": epoch, "step_in_epoch": in_epoch, "stop": r.stop, "sampler_scores": scores}
        save_checkpoint(r.run_dir.path, step, params=r.params, optimizer=r.optimizer, scheduler=r.scheduler,
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

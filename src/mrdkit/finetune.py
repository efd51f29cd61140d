"""Plain NLL fine-tuning of a causal LM on QA samples: how the TOFU testbed models learn their authors.

TOFU (Maini et al. 2024, arXiv:2401.06121, section 3) fine-tunes a chat model on all 4000 QA pairs with the
answer-only negative log-likelihood and AdamW; the forget-quality reference ("retain model") is trained the same
way on the retain split only. This module is that loop at CPU scale:

    L(theta) = - (1 / sum_i n_i) * sum_i sum_{t in answer_i} log p_theta(y_t | x_<t)

(token mean over the batch, as Hugging Face's causal-LM loss), computed through the one primitive
:func:`mrdkit.logprob.token_logprobs`.

Speed: samples are sorted by token length and cut into fixed buckets, so each batch is padded only to its own
longest sample (about 2x faster than random batches on TOFU, where lengths vary 30-110 tokens). The *order* of
the buckets is shuffled every epoch with ``make_generator(seed, "finetune-batches", epoch)``.

Determinism: batch order comes from that generator, dropout (if the model has any) from a generator seeded with
``(seed, "finetune-dropout")`` inside :func:`torch.random.fork_rng`, so the caller's global RNG is untouched and
the same inputs + seed give bitwise identical weights on the same machine and thread count. Early stopping on
``target_accuracy`` reads only this run's own numbers, so it is deterministic too.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch

from mrdkit.data import Sample, collate, encode_samples, pad_id
from mrdkit.errors import MrdkitError
from mrdkit.logprob import token_logprobs
from mrdkit.seeding import derive_seed, make_generator

SCHEDULES = ("constant", "cosine")


@dataclass
class FinetuneConfig:
    """Fine-tuning recipe.

    Attributes:
        epochs: maximum number of passes over the data.
        lr: peak AdamW learning rate.
        batch_size: samples per batch (one bucket of similar lengths).
        weight_decay: AdamW decoupled weight decay, applied to matrices only (not biases / norms, as HF Trainer).
        warmup_steps: linear warmup from lr/warmup_steps to lr.
        schedule: ``"constant"`` after warmup, or ``"cosine"`` decay to 0 at ``epochs``.
        seed: seeds batch order and dropout.
        max_length: longest tokenized sequence kept.
        template: prompt template (:mod:`mrdkit.data.templates`).
        token_set: ``"answer"`` (TOFU: loss on answer tokens + EOS) or ``"all"``.
        target_accuracy: stop after the first epoch whose mean per-sample teacher-forced token accuracy reaches
            this (on ``monitor`` if given, else the running accuracy of the epoch's own training batches).
        eval_every: evaluate ``monitor`` every this many epochs (and after the last).
        max_grad_norm: gradient clipping (``None``: off).
        betas: AdamW betas.
    """

    epochs: int = 10
    lr: float = 2e-3
    batch_size: int = 32
    weight_decay: float = 0.0
    warmup_steps: int = 0
    schedule: str = "constant"
    seed: int = 0
    max_length: int = 512
    template: str = "plain"
    token_set: str = "answer"
    target_accuracy: float | None = None
    eval_every: int = 1
    max_grad_norm: float | None = 1.0
    betas: tuple[float, float] = (0.9, 0.999)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def check(self) -> None:
        """Raise :class:`MrdkitError` naming the first invalid field."""
        if self.schedule not in SCHEDULES:
            raise MrdkitError(f"unknown schedule {self.schedule!r} (known: {', '.join(SCHEDULES)})")
        for name in ("epochs", "batch_size", "eval_every"):
            if getattr(self, name) < 1:
                raise MrdkitError(f"finetune {name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.warmup_steps < 0:
            raise MrdkitError(f"finetune needs lr > 0 and warmup_steps >= 0 (got {self.lr}, {self.warmup_steps})")


@contextlib.contextmanager
def pinned_threads(n: int) -> Iterator[None]:
    """Run with ``n`` intra-op CPU threads (0: unchanged) and restore the old count afterwards.

    CPU training is bitwise repeatable only at a fixed thread count (the kernels split reductions by thread), so
    builds that promise identical weights pin it.
    """
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def length_buckets(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices sorted by length (ties by index: stable) and cut into consecutive batches of ``batch_size``."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def batch_order(n_batches: int, seed: int, epoch: int) -> list[int]:
    """The seeded permutation of bucket indices for ``epoch`` (independent of every other random stream)."""
    return torch.randperm(n_batches, generator=make_generator(seed, "finetune-batches", epoch)).tolist()


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Multiplier of the peak lr at optimizer step ``step`` (0-based).

    Warmup: ``(step + 1) / warmup`` for ``step < warmup``; then 1 (constant) or
    ``0.5 * (1 + cos(pi * (step - warmup) / (total - warmup)))`` (cosine, Loshchilov & Hutter 2017).
    """
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    span = max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / span)))


def make_optimizer(model: torch.nn.Module, cfg: FinetuneConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (biases and LayerNorm gains are not decayed, as HF Trainer)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise MrdkitError("finetune: the model has no trainable parameters")
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, betas=cfg.betas)


def _train_step(model, batch, optimizer, scheduler, cfg: FinetuneConfig) -> tuple[float, int, torch.Tensor]:
    """One AdamW step on the token-mean NLL; returns (summed NLL, token count, per-sample accuracy (B,))."""
    out = token_logprobs(model, batch, grad=True)  # values (B, T-1) float64
    n_tokens = int(out.count().sum())
    loss = -out.values.sum() / max(1, n_tokens)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
    optimizer.step()
    scheduler.step()
    return float(loss.detach()) * n_tokens, n_tokens, out.accuracy()


def _monitor_accuracy(model, tokenizer, monitor: Sequence[Sample], cfg: FinetuneConfig) -> dict[str, float]:
    from mrdkit.evaluation.answers import answer_logprobs

    scores = answer_logprobs(model, tokenizer, monitor, template=cfg.template, token_set=cfg.token_set,
                             batch_size=max(cfg.batch_size, 16), max_length=cfg.max_length)
    return {"monitor_accuracy": sum(s.accuracy for s in scores) / len(scores),
            "monitor_nll": -sum(s.mean_logprob for s in scores) / len(scores)}


def _run_epochs(model, tokenizer, batches, monitor, cfg, progress, on_epoch, ckpt) -> list[dict[str, Any]]:
    """The epoch loop; ``ckpt`` = (folder, fingerprint) saves after every epoch and resumes from the latest."""
    from mrdkit.finetune_ckpt import load_checkpoint, save_checkpoint

    optimizer = make_optimizer(model, cfg)
    total = cfg.epochs * len(batches)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total, cfg.warmup_steps, cfg.schedule))
    history: list[dict[str, Any]] = []
    resumed = load_checkpoint(ckpt[0], model, ckpt[1]) if ckpt else None
    if resumed is not None:
        optimizer.load_state_dict(resumed.optimizer)
        scheduler.load_state_dict(resumed.scheduler)
        torch.set_rng_state(resumed.rng)  # the dropout stream continues where it stopped
        history = resumed.history
        if history and (history[-1].get("stopped_early") or len(history) == cfg.epochs):
            return history  # the checkpoint is the finished run
    step = history[-1]["step"] if history else 0
    for epoch in range(len(history), cfg.epochs):
        start, nll, tokens, accs = time.perf_counter(), 0.0, 0, []
        lr = scheduler.get_last_lr()[0]
        for b in batch_order(len(batches), cfg.seed, epoch):
            s_nll, s_tok, acc = _train_step(model, batches[b], optimizer, scheduler, cfg)
            nll, tokens, step = nll + s_nll, tokens + s_tok, step + 1
            accs.append(acc)
            if progress is not None:
                progress(step, total)
        row = {"epoch": epoch + 1, "step": step, "lr": lr, "train_nll": nll / max(1, tokens),
               "train_accuracy": float(torch.cat(accs).mean())}
        if monitor and ((epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs):
            row.update(_monitor_accuracy(model, tokenizer, monitor, cfg))
            model.train()
        row["seconds"] = time.perf_counter() - start
        history.append(row)
        done = _reached(row, cfg, bool(monitor))
        if done:
            row["stopped_early"] = epoch + 1 < cfg.epochs
        if ckpt:
            save_checkpoint(ckpt[0], model, optimizer, scheduler, history, ckpt[1])
        if on_epoch is not None:
            on_epoch(row)
        if done:
            break
    return history


def _reached(row: dict[str, Any], cfg: FinetuneConfig, has_monitor: bool) -> bool:
    if cfg.target_accuracy is None:
        return False
    acc = row.get("monitor_accuracy") if has_monitor else row["train_accuracy"]
    return acc is not None and acc >= cfg.target_accuracy


def finetune(model: torch.nn.Module, tokenizer: Any, samples: Sequence[Sample], cfg: FinetuneConfig, *,
             monitor: Sequence[Sample] | None = None,
             progress: Callable[[int, int], None] | None = None,
             on_epoch: Callable[[dict[str, Any]], None] | None = None,
             checkpoint_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """Fine-tune ``model`` in place on ``samples`` with the answer NLL (TOFU's recipe, Maini et al. 2024).

    Args:
        model: a causal LM (trainable parameters = those with ``requires_grad``); left in eval mode.
        tokenizer: its tokenizer.
        samples: training QA samples.
        cfg: the recipe (:class:`FinetuneConfig`).
        monitor: optional samples whose teacher-forced token accuracy is measured every ``cfg.eval_every``
            epochs (and then drives ``target_accuracy``).
        progress: ``progress(done_steps, total_steps)`` callback.
        on_epoch: called with each epoch's history row as soon as it is complete (logging).
        checkpoint_dir: save a checkpoint there after every epoch (:mod:`mrdkit.finetune_ckpt`) and, if one is
            there already, resume from it: the result is bitwise the uninterrupted run's. A checkpoint of another
            recipe or data is refused.

    Returns:
        One dict per epoch: ``epoch``, ``step``, ``lr`` (at the epoch's start), ``train_nll`` (token mean),
        ``train_accuracy`` (mean per-sample accuracy of the epoch's training batches, taken before each step),
        ``seconds``, and ``monitor_accuracy`` / ``monitor_nll`` when measured; the last row has
        ``stopped_early`` when ``target_accuracy`` was reached.
    """
    cfg.check()
    if not samples:
        raise MrdkitError("finetune needs at least one training sample")
    encoded = encode_samples(samples, tokenizer, template=cfg.template, token_set=cfg.token_set,
                             max_length=cfg.max_length)
    pad = pad_id(tokenizer)
    batches = [collate([encoded[i] for i in idx], pad)
               for idx in length_buckets([len(e.input_ids) for e in encoded], cfg.batch_size)]
    model.train()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(cfg.seed, "finetune-dropout"))
            ckpt = None
            if checkpoint_dir is not None:
                from mrdkit.finetune_ckpt import fingerprint

                ckpt = (Path(checkpoint_dir), fingerprint(cfg.to_dict(), [s.id for s in samples], len(batches),
                                                          [s.id for s in monitor or []]))
            return _run_epochs(model, tokenizer, batches, monitor, cfg, progress, on_epoch, ckpt)
    finally:
        model.eval()

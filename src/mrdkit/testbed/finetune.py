"""Plain NLL fine-tuning of a causal LM on QA samples: how the testbed models learn their authors.

TOFU (Maini et al. 2024, arXiv:2401.06121, section 3) fine-tunes a chat model on all 4000 QA pairs with the
answer-only negative log-likelihood and AdamW; the forget-quality reference ("retain model") is trained the same
way on the retain split only. This module is that loop at CPU scale:

    L(theta) = - (1 / sum_i n_i) * sum_i sum_{t in answer_i} log p_theta(y_t | x_<t)

(token mean over the batch, as Hugging Face's causal-LM loss), computed through the one primitive
:func:`mrdkit.logprob.token_logprobs`, and every update is the shared :func:`mrdkit.train.train_step` (the step the
unlearning loop takes; AdamW with decay on matrices only, HF warmup from lr 0, clipping).

Speed: samples are sorted by token length and cut into fixed buckets, so each batch is padded only to its own
longest sample (about 2x faster than random batches on TOFU, where lengths vary 30-110 tokens). The *order* of
the buckets is shuffled every epoch with ``make_generator(seed, "finetune-batches", epoch)``.

Determinism: batch order comes from that generator and dropout (if the model has any) from
:func:`mrdkit.train.seeded_dropout` keyed by (seed, step), so the caller's global RNG is untouched and the same
inputs + seed give bitwise identical weights on the same machine and thread count. Early stopping on
``target_accuracy`` reads only this run's own numbers, so it is deterministic too. With ``checkpoint_dir`` a
checkpoint (:mod:`mrdkit.checkpoint`: safetensors + JSON) is written after every epoch and an interrupted run
resumes from it, bitwise as if never interrupted.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from mrdkit.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from mrdkit.data import Sample, collate, encode_samples, pad_id
from mrdkit.data.encode import check_options
from mrdkit.errors import MrdkitError
from mrdkit.logprob import token_logprobs
from mrdkit.runs import digest, read_json, refuse_if_differs
from mrdkit.seeding import make_generator
from mrdkit.train import SCHEDULES, LrSchedule, make_optimizer, make_scheduler, seeded_dropout, train_step


@dataclass
class FinetuneConfig:
    """Fine-tuning recipe.

    Attributes:
        epochs: maximum number of passes over the data.
        lr: peak AdamW learning rate.
        batch_size: samples per batch (one bucket of similar lengths).
        weight_decay: AdamW decoupled weight decay, applied to matrices only (not biases / norms, as HF Trainer).
        warmup_steps: linear warmup from lr 0 (HF convention, :class:`mrdkit.train.LrSchedule`).
        schedule: ``"constant"`` after warmup, ``"linear"`` or ``"cosine"`` decay to 0 at ``epochs``.
        seed: seeds batch order and dropout.
        max_length: longest tokenized sequence kept.
        template: prompt template (:mod:`mrdkit.data.templates`).
        token_set: ``"answer"`` (TOFU: loss on answer tokens + EOS) or ``"all"``.
        encoding: how prompt and answer become tokens (:func:`mrdkit.data.encode_samples`; ``joint`` as TOFU).
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
    encoding: str = "joint"
    target_accuracy: float | None = None
    eval_every: int = 1
    max_grad_norm: float | None = 1.0
    betas: tuple[float, float] = (0.9, 0.999)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def check(self) -> None:
        """Raise :class:`MrdkitError` naming the first invalid field."""
        check_options(self.token_set, self.encoding)
        if self.schedule not in SCHEDULES:
            raise MrdkitError(f"unknown schedule {self.schedule!r} (known: {', '.join(SCHEDULES)})")
        for name in ("epochs", "batch_size", "eval_every"):
            if getattr(self, name) < 1:
                raise MrdkitError(f"finetune {name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.warmup_steps < 0:
            raise MrdkitError(f"finetune needs lr > 0 and warmup_steps >= 0 (got {self.lr}, {self.warmup_steps})")


def fresh_tiny_gpt2(sizes: dict[str, int], tokenizer: Any, seed: int):
    """The starting point of a testbed built from scratch: a seeded tiny GPT-2 of ``sizes``
    (:func:`mrdkit.tiny.tiny_config`) with dropout off (memorisation is the point, and TOFU's Llama-2 has none),
    float32 on the CPU, as a :class:`~mrdkit.models.LoadedModel`."""
    from mrdkit.models import finish_loading
    from mrdkit.tiny import init_tiny_weights, tiny_config

    config = tiny_config("gpt2", **sizes)
    config.resid_pdrop = config.embd_pdrop = config.attn_pdrop = 0.0
    return finish_loading(init_tiny_weights(config, seed), tokenizer, "tiny-gpt2", device="cpu")


def length_buckets(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices sorted by length (ties by index: stable) and cut into consecutive batches of ``batch_size``."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def batch_order(n_batches: int, seed: int, epoch: int) -> list[int]:
    """The seeded permutation of bucket indices for ``epoch`` (independent of every other random stream)."""
    return torch.randperm(n_batches, generator=make_generator(seed, "finetune-batches", epoch)).tolist()


def _monitor_accuracy(model, tokenizer, monitor: Sequence[Sample], cfg: FinetuneConfig) -> dict[str, float]:
    from mrdkit.evaluation.answers import answer_logprobs

    scores = answer_logprobs(model, tokenizer, monitor, template=cfg.template, token_set=cfg.token_set,
                             batch_size=max(cfg.batch_size, 16), max_length=cfg.max_length, encoding=cfg.encoding)
    return {"monitor_accuracy": sum(s.accuracy for s in scores) / len(scores),
            "monitor_nll": -sum(s.mean_logprob for s in scores) / len(scores)}


@dataclass
class _Epoch:
    """Running totals of one epoch's training batches."""

    nll: float = 0.0
    tokens: int = 0
    accuracies: list[torch.Tensor] = field(default_factory=list)


def _nll_loss(model, batch, epoch: _Epoch, seed: int, step: int):
    """The micro-batch loss of :func:`mrdkit.train.train_step`: token-mean NLL; records the epoch's totals."""
    def loss() -> tuple[torch.Tensor, dict[str, float]]:
        with seeded_dropout(seed, "finetune", step):
            out = token_logprobs(model, batch, grad=True)  # values (B, T-1) float64
        n_tokens = int(out.count().sum())
        nll = -out.values.sum() / max(1, n_tokens)
        epoch.nll, epoch.tokens = epoch.nll + float(nll.detach()) * n_tokens, epoch.tokens + n_tokens
        epoch.accuracies.append(out.accuracy())
        return nll, {"nll": float(nll.detach())}
    return loss


def _reached(row: dict[str, Any], cfg: FinetuneConfig, has_monitor: bool) -> bool:
    if cfg.target_accuracy is None:
        return False
    acc = row.get("monitor_accuracy") if has_monitor else row["train_accuracy"]
    return acc is not None and acc >= cfg.target_accuracy


def _resume(ckpt_dir: Path | None, fingerprint: dict[str, Any], params, optimizer, scheduler) -> list[dict]:
    """The history of the latest checkpoint in ``ckpt_dir`` (weights, optimizer and schedule loaded), or []."""
    ckpt = latest_checkpoint(ckpt_dir) if ckpt_dir is not None else None
    if ckpt is None:
        return []
    saved = read_json(ckpt / "state.json").get("fingerprint", {})
    refuse_if_differs(saved, fingerprint, f"fine-tune checkpoint {ckpt} was written for another run",
                      "delete it to start afresh", nested=True)
    return load_checkpoint(ckpt, params=params, optimizer=optimizer, scheduler=scheduler)["history"]


def _run_epochs(model, tokenizer, batches, monitor, cfg: FinetuneConfig, progress, on_epoch, ckpt_dir,
                fingerprint) -> list[dict[str, Any]]:
    """The epoch loop; with ``ckpt_dir`` a checkpoint after every epoch and a resume from the latest."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    optimizer = make_optimizer(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=cfg.betas)
    total = cfg.epochs * len(batches)
    scheduler = make_scheduler(optimizer, LrSchedule(total, cfg.warmup_steps, cfg.schedule))
    history = _resume(ckpt_dir, fingerprint, params, optimizer, scheduler)
    if history and (history[-1].get("stopped_early") or len(history) == cfg.epochs):
        return history  # the checkpoint is the finished run
    step = history[-1]["step"] if history else 0
    for epoch in range(len(history), cfg.epochs):
        start, totals = time.perf_counter(), _Epoch()
        lr = scheduler.get_last_lr()[0]
        for b in batch_order(len(batches), cfg.seed, epoch):
            step += 1
            train_step([_nll_loss(model, batches[b], totals, cfg.seed, step)], params=list(params.values()),
                       optimizer=optimizer, scheduler=scheduler, max_grad_norm=cfg.max_grad_norm)
            if progress is not None:
                progress(step, total)
        row = {"epoch": epoch + 1, "step": step, "lr": lr, "train_nll": totals.nll / max(1, totals.tokens),
               "train_accuracy": float(torch.cat(totals.accuracies).mean())}
        if monitor and ((epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs):
            row.update(_monitor_accuracy(model, tokenizer, monitor, cfg))
            model.train()
        row["seconds"] = time.perf_counter() - start
        history.append(row)
        done = _reached(row, cfg, bool(monitor))
        if done:
            row["stopped_early"] = epoch + 1 < cfg.epochs
        if ckpt_dir is not None:
            save_checkpoint(ckpt_dir, epoch + 1, params=params, optimizer=optimizer, scheduler=scheduler,
                            state={"history": history, "fingerprint": fingerprint})
        if on_epoch is not None:
            on_epoch(row)
        if done:
            break
    return history


def run_fingerprint(cfg: FinetuneConfig, samples: Sequence[Sample], n_batches: int,
                    monitor: Sequence[Sample] = ()) -> dict[str, Any]:
    """What a checkpoint must match to be resumed: the recipe, the training and monitor samples, the batching."""
    return {"config": cfg.to_dict(), "samples": digest(s.id for s in samples), "n_samples": len(samples),
            "monitor": digest(s.id for s in monitor), "n_batches": n_batches}


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
        checkpoint_dir: save a checkpoint there after every epoch (:mod:`mrdkit.checkpoint`) and, if one is there
            already, resume from it: the result is bitwise the uninterrupted run's. A checkpoint of another recipe
            or data is refused.

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
                             max_length=cfg.max_length, encoding=cfg.encoding)
    pad = pad_id(tokenizer)
    batches = [collate([encoded[i] for i in idx], pad)
               for idx in length_buckets([len(e.input_ids) for e in encoded], cfg.batch_size)]
    fingerprint = run_fingerprint(cfg, samples, len(batches), monitor or [])
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    model.train()
    try:
        return _run_epochs(model, tokenizer, batches, monitor, cfg, progress, on_epoch, ckpt_dir, fingerprint)
    finally:
        model.eval()

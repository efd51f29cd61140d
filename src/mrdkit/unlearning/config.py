"""Settings of the unlearning loop, with where each default comes from.

Sources of the defaults (see ``docs/paper-notes.md`` section 6 and the TOFU reference code, Maini et al. 2024,
arXiv:2401.06121, ``config/forget.yaml`` / ``config/forget_lora.yaml`` / ``forget.py`` of locuslab/tofu):

- lr 1e-5: NPO runs around the MRD paper (Feng et al., arXiv:2504.06658) and TOFU's forget.yaml; GradDiff used
  7e-6 there. Both are for 7B models: a tiny model built from config needs ~1e-3 to move in a few steps.
- epochs 5, weight decay 0.01, AdamW: paper-notes section 6 / TOFU forget.yaml.
- schedule ``linear`` with one epoch of warmup (``warmup_ratio`` 0.2 of 5 epochs): TOFU's forget.py uses the
  Hugging Face Trainer default (linear decay) and ``warmup_steps = steps_per_epoch``.
- max_grad_norm 1.0: the Hugging Face Trainer default that TOFU inherits.
- batch_size 4 x grad_accum 1: a CPU-sized choice between the MRD reference code (ONE forget sample per step,
  paper-notes section 3) and TOFU (16 x 4 on GPUs); raise ``grad_accum`` to match TOFU's effective batch.
- LoRA r 8, alpha 32, dropout 0.05: TOFU forget_lora.yaml; target modules: peft's defaults per model type
  (GPT-2 ``c_attn``, Llama ``q_proj, v_proj``).
- stop rule: the MRD reference code's "mean token probability <= 0.02" (paper-notes section 4) when ``stop_prob``
  is set; off by default.
- trackers: none by default (``train_log.jsonl`` always); ``report_to`` as the Hugging Face Trainer's option of the
  same name (:mod:`mrdkit.unlearning.trackers`).
- memory and precision (docs/scaling.md): fp32 weights and AdamW state, no autocast, no checkpointing, a reference
  that costs nothing under LoRA (adapters disabled) and one copy of the TRAINABLE weights otherwise; the switches
  for 7B-70B models (``mixed_precision``, ``weights_dtype``, ``gradient_checkpointing``, ``reference``,
  ``trainable_params``, ``fsdp``) are all off by default, so small runs stay bitwise what they were.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Optional

from mrdkit.data.encode import check_options
from mrdkit.errors import MrdkitError
from mrdkit.train import SCHEDULES

MIXED_PRECISION = ("no", "bf16", "fp16")
WEIGHTS_DTYPES = ("float32", "bfloat16", "float16")
REFERENCES = ("auto", "adapters", "copy", "cpu", "offload")


@dataclass
class LoraSettings:
    """LoRA adapters through peft (Hu et al. 2021, arXiv:2106.09685); defaults from TOFU forget_lora.yaml.

    Attributes:
        r: adapter rank.
        alpha: scaling numerator (the update is ``(alpha / r) * B A``).
        dropout: dropout on the adapter input.
        target_modules: module names to adapt; None = peft's default for the model type.
        merge_on_save: save the merged full model instead of the adapter alone.
    """

    r: int = 8
    alpha: int = 32
    dropout: float = 0.05
    target_modules: Optional[list[str]] = None
    merge_on_save: bool = False


@dataclass
class UnlearnConfig:
    """Everything the loop needs besides the model and the data (defaults: module docstring).

    Attributes:
        lr: peak AdamW learning rate (1e-5 is for 7B models; tiny models need ~1e-3).
        epochs: passes over the forget sampler (ignored when ``max_steps`` is set).
        batch_size: forget samples per micro-batch (per process); the retain / IDK batches have the same size.
        grad_accum: micro-batches per optimizer step.
        weight_decay: decoupled AdamW decay on matrices only (not biases / norms, as the HF Trainer).
        betas: AdamW betas.
        warmup_ratio: warmup length as a fraction of all steps; ``warmup_steps`` overrides it.
        warmup_steps: warmup length in steps.
        schedule: ``constant``, ``linear`` (to 0 at the last step) or ``cosine`` after warmup.
        max_grad_norm: clip the global gradient norm to this; None = no clipping (the norm is still logged).
        max_steps: stop after this many optimizer steps (overrides ``epochs``, as in the HF Trainer).
        seed: derives every random stream (sampler, retain pairing, IDK answers, dropout).
        template, token_set, max_length, encoding: how samples become tokens (:func:`mrdkit.data.encode_samples`;
            ``joint``: prompt and answer tokenized as one string, as TOFU / open-unlearning train).
        stop_prob: stop once the forget set's mean answer probability is <= this (None = off).
        stop_check_every: measure the forget / retain probability every N steps; None = at each epoch's end.
        eval_every: call the evaluation callbacks every N steps (and at the end); None = only at the end.
        checkpoint_every: write a checkpoint every N steps (and at the end); None = only at the end.
        monitor_retain: retain samples (evenly spaced) whose probability is logged; 0 = none.
        eval_batch_size: batch size of the probability measurements.
        train_mode: run the model in train mode (dropout on, as the HF Trainer); dropout is seeded per step.
        device: ``auto``, ``cpu`` or ``cuda`` (accelerate's device when launched with ``accelerate launch``).
        lora: LoRA settings, or None for full fine-tuning.
        method_kwargs: hyper-parameters passed to :func:`mrdkit.unlearning.build_method`.
        sampler_kwargs: options passed to :func:`mrdkit.samplers.build`.
        score_key, score_direction: the column of a score file given as ``scores`` (``mrd`` of ``mrd.jsonl``, or
            any ``mrd difficulty score`` column) and what its HIGH values predict (``easier`` / ``harder``; None:
            as the file's ``scores.json`` declares, else ``easier``); samplers see higher = easier.
        mrd_draws, mrd_sigma, mrd_estimator: on-the-fly MRD scoring when a sampler needs scores and none were
            given (paper-notes section 1: K = 100, sigma = 1e-5).
        rescore_draws: draws of the cheap re-scoring the ``refresh`` sampler runs every epoch.
        report_to: experiment trackers fed every train-log row: ``none``, ``tensorboard``, ``wandb`` or a comma
            list (:mod:`mrdkit.unlearning.trackers`); not part of the run's identity (``--resume`` may change it).
        mixed_precision: ``no``, ``bf16`` or ``fp16``: accelerate's autocast around every forward of a step (model
            and reference); weights, gradients and AdamW state stay in their own dtype (fp32 master weights).
        weights_dtype: dtype of the weights that do NOT train (LoRA's base model, layers outside
            ``trainable_params``, the reference copy's frozen part): ``float32`` or ``bfloat16`` / ``float16`` (half
            needs ``mixed_precision``). Trainable parameters are always kept in float32, so AdamW and its state are
            fp32: a lr 1e-5 update is below bf16's resolution for most weights.
        gradient_checkpointing: recompute each block's activations in the backward pass instead of storing them
            (transformers' ``gradient_checkpointing_enable``, non-reentrant): same gradients, less memory.
        reference: the frozen reference of npo / kl / idkdpo / rmu: ``auto`` (``adapters`` with LoRA, else
            ``copy``), ``adapters`` (the LoRA model with its adapters disabled: no second copy), ``copy`` (a copy of
            the trainable weights on the training device, frozen weights shared), ``cpu`` (a full copy kept and run
            on the CPU) or ``offload`` (a full copy in CPU memory run on the training device module by module).
        trainable_params: regular expression over parameter names: only matching parameters train (full
            fine-tuning; with LoRA it filters the adapters); e.g. ``mlp.down_proj`` of layers 5-7 for WMDP's RMU.
        fsdp: shard parameters, gradients and AdamW state over the launched processes with torch FSDP2
            (``fully_shard`` per transformer block); needs a multi-process launch (docs/scaling.md).
    """

    lr: float = 1e-5
    epochs: int = 5
    batch_size: int = 4
    grad_accum: int = 1
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup_ratio: float = 0.2
    warmup_steps: Optional[int] = None
    schedule: str = "linear"
    max_grad_norm: Optional[float] = 1.0
    max_steps: Optional[int] = None
    seed: int = 0
    template: str = "auto"
    token_set: str = "answer"
    encoding: str = "joint"
    max_length: int = 512
    stop_prob: Optional[float] = None
    stop_check_every: Optional[int] = None
    eval_every: Optional[int] = None
    checkpoint_every: Optional[int] = None
    monitor_retain: int = 64
    eval_batch_size: int = 16
    train_mode: bool = True
    device: str = "auto"
    lora: Optional[LoraSettings] = None
    method_kwargs: dict[str, Any] = field(default_factory=dict)
    sampler_kwargs: dict[str, Any] = field(default_factory=dict)
    score_key: str = "mrd"
    score_direction: Optional[str] = None
    mrd_draws: int = 100
    mrd_sigma: float = 1e-5
    mrd_estimator: str = "antithetic"
    rescore_draws: int = 8
    report_to: str = "none"
    mixed_precision: str = "no"
    weights_dtype: str = "float32"
    gradient_checkpointing: bool = False
    reference: str = "auto"
    trainable_params: Optional[str] = None
    fsdp: bool = False

    def check(self) -> None:
        """Raise :class:`MrdkitError` naming the first invalid field."""
        positive = {"lr": self.lr, "epochs": self.epochs, "batch_size": self.batch_size,
                    "grad_accum": self.grad_accum, "max_length": self.max_length,
                    "eval_batch_size": self.eval_batch_size}
        for name, value in positive.items():
            _require(value > 0, f"{name} must be > 0, got {value}")
        _require(math.isfinite(self.lr), f"lr must be finite, got {self.lr}")
        _require(self.mrd_draws >= 1 and self.rescore_draws >= 1,
                 f"mrd_draws and rescore_draws (MRD draws K) must be >= 1, got {self.mrd_draws}, {self.rescore_draws}")
        _require(math.isfinite(self.mrd_sigma) and self.mrd_sigma > 0,
                 f"mrd_sigma must be a finite positive number, got {self.mrd_sigma}")
        from mrdkit.scoring.config import check_sigma_range
        from mrdkit.scoring.estimators import ESTIMATORS

        check_sigma_range(float(self.mrd_sigma))  # on-the-fly scores: the same range as mrd score

        ESTIMATORS.get(self.mrd_estimator)  # did-you-mean before any model loads
        _require(self.score_direction in (None, "easier", "harder"),
                 f"score_direction must be easier or harder, got {self.score_direction!r}")
        from mrdkit.unlearning.trackers import tracker_names

        tracker_names(self.report_to)  # unknown tracker names fail here, before any model loads
        for name in ("max_steps", "warmup_steps", "stop_check_every", "eval_every", "checkpoint_every"):
            value = getattr(self, name)
            _require(value is None or value >= (0 if name == "warmup_steps" else 1),
                     f"{name} must be a positive number of steps or None, got {value}")
        _require(self.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        check_options(self.token_set, self.encoding)
        _require(0 <= self.warmup_ratio < 1, f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        _require(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        _require(self.max_grad_norm is None or self.max_grad_norm > 0, "max_grad_norm must be > 0 or None")
        _require(self.stop_prob is None or 0 < self.stop_prob < 1, f"stop_prob must be in (0, 1), got {self.stop_prob}")
        _require(self.monitor_retain >= 0, f"monitor_retain must be >= 0, got {self.monitor_retain}")
        _require(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "betas must be two numbers in [0, 1)")
        self.check_memory_options()
        if self.lora is not None:
            _require(self.lora.r >= 1 and self.lora.alpha > 0 and 0 <= self.lora.dropout < 1,
                     f"lora needs r >= 1, alpha > 0, 0 <= dropout < 1; got {self.lora}")

    def check_memory_options(self) -> None:
        """The precision / memory / sharding switches: known names and combinations that can run."""
        _require(self.mixed_precision in MIXED_PRECISION,
                 f"mixed_precision must be one of {MIXED_PRECISION}, got {self.mixed_precision!r}")
        _require(self.weights_dtype in WEIGHTS_DTYPES,
                 f"weights_dtype must be one of {WEIGHTS_DTYPES}, got {self.weights_dtype!r}")
        _require(self.weights_dtype == "float32" or self.mixed_precision != "no",
                 f"weights_dtype={self.weights_dtype} needs mixed_precision=bf16 or fp16 (autocast runs the fp32 "
                 f"trainable and the half-precision frozen weights together)")
        _require(self.reference in REFERENCES, f"reference must be one of {REFERENCES}, got {self.reference!r}")
        _require(self.reference != "adapters" or self.lora is not None,
                 "reference=adapters needs LoRA (--lora): without adapters there is nothing to disable")
        _require(not self.gradient_checkpointing or self.train_mode,
                 "gradient_checkpointing needs train_mode=True (transformers checkpoints only in training mode)")
        if self.trainable_params is not None:
            try:
                re.compile(self.trainable_params)
            except re.error as exc:
                raise MrdkitError(f"unlearn config: trainable_params is not a regular expression: {exc}") from None
        if self.fsdp:
            _require(self.lora is None, "fsdp shards full-parameter unlearning; with LoRA use DDP (no --fsdp): the "
                                        "adapters are small and the base weights frozen")
            _require(self.reference in ("auto", "copy"), f"fsdp shards the reference copy too; reference="
                                                         f"{self.reference!r} is not available under fsdp")
            _require(self.mixed_precision != "fp16", "fsdp runs bf16 autocast, not fp16 (its loss scaling needs "
                                                     "accelerate's prepared optimizer); use mixed_precision=bf16")

    def warmup_for(self, total_steps: int) -> int:
        """Warmup steps for a run of ``total_steps``: ``warmup_steps`` or ``ceil(warmup_ratio * total)``, at most
        ``total_steps - 1``. Why the cap: warmup starts at lr 0 (step s has ``lr * s / W``), so a warmup as long as
        the run (1 step of 1: ``ceil(0.2 * 1) = 1``) would leave every step at lr 0 and change nothing."""
        wanted = self.warmup_steps if self.warmup_steps is not None else math.ceil(self.warmup_ratio * total_steps)
        return max(0, min(wanted, total_steps - 1))


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise MrdkitError(f"unlearn config: {message}")

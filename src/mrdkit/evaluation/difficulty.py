"""Ground truth for sample-level unlearning difficulty: how many updates it takes to forget a sample (or chunk).

The MRD paper (Feng et al. 2025, arXiv:2504.06658) validates MRD against "required unlearning updates": per
chunk of forget samples, the epochs of the base unlearning algorithm until the chunk's mean token probability is
<= 0.02, capped at 20 epochs (the reference code; paper-notes section 4). :func:`required_updates` measures that
(``chunk_size=n``) and the finer per-sample variant (default): the chosen method (default gradient ascent, fixed
lr) on ONE sample, starting from the start model each time, counting updates until

- ``statistic="geometric"`` (default): ``exp((1/n) sum_t log p_t) <= threshold``, the length-normalised
  probability TOFU calls P(a|q) (Maini et al. 2024, arXiv:2401.06121); ``"arithmetic"``: ``(1/n) sum_t p_t``,
  the literal "mean token probability"; a chunk uses the mean of its samples' values; or
- ``relative=f``: the mean token log-prob falls to ``<= f * initial`` (e.g. f = 2: log-prob doubled), a
  threshold that does not depend on how well the sample was memorised to begin with.

A sample that never gets there is censored at ``cap`` updates (report it; use Harrell's C, see
:mod:`mrdkit.evaluation.correlation`). Every unit starts from bit-identical weights (one clone, ``copy_`` back,
fresh optimizer) and the model ends bitwise unchanged, even on errors (house rule 6). Updates run in eval mode
(no dropout), so counts are deterministic. Rows can be checkpointed atomically and a run resumed.

Every update is a :func:`mrdkit.train.train_step` (the step the unlearning loop takes) on the method's loss, and
the start weights come back from one :class:`~mrdkit.snapshot.ParamSnapshot`. Comparing scores with the counts
(:func:`~mrdkit.evaluation.correlation.correlation_report`) is in :mod:`mrdkit.evaluation.correlation`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch

from mrdkit.data import Sample, collate, encode_samples, pad_id
from mrdkit.data.encode import check_options
from mrdkit.errors import MrdkitError
from mrdkit.logprob import TokenLogProbs, token_logprobs
from mrdkit.runs import atomic_write_jsonl, config_matches, read_jsonl, refuse_if_differs
from mrdkit.seeding import python_rng
from mrdkit.snapshot import ParamSnapshot
from mrdkit.train import OPTIMIZERS, make_optimizer, train_step
from mrdkit.unlearning.step import method_loss

STATISTICS = ("geometric", "arithmetic")


@dataclass
class DifficultyConfig:
    """Settings of :func:`required_updates` (see the module docstring); ``cap=None``: 150 updates per sample
    (paper-notes section 4 measurement), 20 epochs per chunk (the reference code). ``batch_size``: mini-batch of
    a chunk's epoch (None: the whole chunk, one update per epoch)."""

    method: str = "ga"
    lr: float = 1e-3
    threshold: float = 0.02
    relative: Optional[float] = None
    statistic: str = "geometric"
    cap: Optional[int] = None
    token_set: str = "answer"
    optimizer: str = "adamw"
    weight_decay: float = 0.0
    chunk_size: Optional[int] = None
    batch_size: Optional[int] = None
    seed: int = 0
    template: str = "auto"
    max_length: int = 512
    encoding: str = "joint"
    method_kwargs: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.statistic not in STATISTICS or self.optimizer not in OPTIMIZERS:
            raise MrdkitError(f"statistic must be one of {STATISTICS} and optimizer one of {OPTIMIZERS}, got "
                              f"{self.statistic!r}, {self.optimizer!r}")
        if not (self.lr > 0 and 0 < self.threshold < 1) or (self.relative is not None and self.relative <= 1):
            raise MrdkitError(f"need lr > 0, 0 < threshold < 1 and relative > 1, got lr={self.lr}, "
                              f"threshold={self.threshold}, relative={self.relative}")
        if any(v is not None and v < 1 for v in (self.cap, self.chunk_size, self.batch_size)):
            raise MrdkitError(f"cap, chunk_size and batch_size must be >= 1, got {self.cap}, {self.chunk_size}, "
                              f"{self.batch_size}")
        check_options(self.token_set, self.encoding)
        if self.cap is None:
            self.cap = 150 if self.chunk_size is None else 20


def _units(samples: Sequence[Sample], chunk_size: Optional[int]) -> list[tuple[str, list[Sample]]]:
    """``[(row id, samples)]``: one per sample, or consecutive chunks ``chunk:<k>``."""
    if chunk_size is None:
        return [(s.id, [s]) for s in samples]
    return [(f"chunk:{k}", list(samples[i:i + chunk_size])) for k, i in enumerate(range(0, len(samples), chunk_size))]


def _config_path(path: Path) -> Path:
    return path.with_name(path.name + ".config.json")


def _load_checkpoint(path: Path, config: dict, resume: bool) -> list[dict]:
    """Rows already done (resume) after checking the checkpoint was made with the same settings."""
    from mrdkit.runs import atomic_write_json, read_json

    meta = _config_path(path)
    if resume and path.is_file():
        refuse_if_differs(read_json(meta) if meta.is_file() else {}, config, f"cannot resume {path}: it was made "
                          f"with other settings", "rerun those settings, or start afresh without resume")
        return read_jsonl(path)
    atomic_write_json(meta, config)
    return []


def checkpoint_is_current(checkpoint_path: str | Path, samples: Sequence[Sample], model: torch.nn.Module,
                          **settings: Any) -> bool:
    """True when ``checkpoint_path`` was written by :func:`required_updates` from this ``model`` (same weights)
    with exactly these samples and settings, i.e. it can be resumed (callers that own the file start afresh
    otherwise)."""
    path = Path(checkpoint_path)
    config = _checkpoint_config(DifficultyConfig(**settings), samples, model)
    return path.is_file() and config_matches(_config_path(path), config)


def _checkpoint_config(cfg: DifficultyConfig, samples: Sequence[Sample], model: torch.nn.Module) -> dict[str, Any]:
    from mrdkit.models import model_fingerprint

    return {**asdict(cfg), "ids": [s.id for s in samples], "model": model_fingerprint(model)}


def required_updates(
    model: torch.nn.Module, tokenizer: Any, samples: Sequence[Sample], *, retain: Sequence[Sample] | None = None,
    progress: Optional[Callable[[int, int], None]] = None, checkpoint_path: str | Path | None = None,
    resume: bool = False, checkpoint_every: int = 5, **settings: Any,
) -> list[dict[str, Any]]:
    """Per-sample (or per-chunk) updates until forgotten, from the same start model every time.

    Args:
        model: causal LM; every trainable parameter is updated, then restored bit-exactly (it ends unchanged).
        tokenizer: its tokenizer. samples: the forget samples (unique ids).
        retain: retain samples for methods with a retain term (one drawn per step, seeded per unit).
        progress: optional ``progress(done, total)`` over units.
        checkpoint_path: JSONL rewritten atomically every ``checkpoint_every`` units and at the end.
        resume: skip units whose rows are in ``checkpoint_path`` (same settings required); results are identical
            to an uninterrupted run because every unit starts from the start model.
        **settings: :class:`DifficultyConfig` fields: ``method`` (default ``ga``), ``lr`` (1e-3), ``threshold``
            (0.02), ``relative``, ``statistic``, ``cap``, ``token_set`` (``answer``), ``optimizer`` (``adamw``),
            ``weight_decay`` (0), ``chunk_size``, ``batch_size``, ``seed``, ``template``, ``max_length``,
            ``method_kwargs``.

    Returns:
        Rows ``{id, updates, censored, steps, initial_prob, final_prob, initial_logprob, final_logprob,
        l1_change, l2_change}`` (+ ``ids`` for chunks) in sample order. ``updates`` = steps (per sample) or epochs
        (per chunk); censored rows carry ``updates = cap``.
    """
    unknown = sorted(set(settings) - set(DifficultyConfig.__dataclass_fields__))
    if unknown:
        raise MrdkitError(f"required_updates got unknown settings {', '.join(unknown)}")
    cfg = DifficultyConfig(**settings)
    units = _units(samples, cfg.chunk_size)
    path = None if checkpoint_path is None else Path(checkpoint_path)
    config = _checkpoint_config(cfg, samples, model)  # the start model's fingerprint: resume only from it
    done = {r["id"]: r for r in (_load_checkpoint(path, config, resume) if path else [])}

    def save() -> None:
        if path is not None:
            atomic_write_jsonl(path, [done[k] for k, _ in units if k in done])

    with ParamSnapshot(model=model, drop_grads=True) as snapshot:
        model.eval()  # dropout off: counts must not depend on the global RNG (the mode is restored on exit)
        runner = UnitRunner(model, tokenizer, cfg, retain, snapshot)
        try:
            for n, (key, unit) in enumerate(units, 1):
                if key not in done:
                    snapshot.restore()  # fresh start model for every unit; the optimizer is new per unit too
                    done[key] = {"id": key, **({"ids": [s.id for s in unit]} if cfg.chunk_size else {}),
                                 **runner.unit(unit, key)}
                    if n % checkpoint_every == 0:  # a killed process keeps all but the last few units
                        save()
                if progress is not None:
                    progress(n, len(units))
        finally:
            save()  # also on an exception or Ctrl-C: resume continues from here
    return [done[k] for k, _ in units]


# ------------------------------------------------------------------------------------ the update loop


def _stat(lp: TokenLogProbs, statistic: str) -> tuple[float, float]:
    """(probability statistic, mean token log-prob), each averaged over the batch's samples."""
    mean_lp = lp.mean()  # (B,)
    if statistic == "geometric":
        prob = mean_lp.exp()
    else:
        prob = (lp.values.exp() * lp.mask).sum(-1) / lp.count().clamp(min=1)  # (B,) mean_t p_t
    return float(prob.mean()), float(mean_lp.mean())


class UnitRunner:
    """Holds what every unit shares: the method, the reference model, encoded retain data, the optimizer kind."""

    def __init__(self, model: Any, tokenizer: Any, cfg: DifficultyConfig, retain: Sequence[Sample] | None,
                 snapshot: ParamSnapshot):
        from mrdkit.models import clone_frozen
        from mrdkit.unlearning.methods import build_method

        self.model, self.tok, self.cfg = model, tokenizer, cfg
        self.method = build_method(cfg.method, **cfg.method_kwargs)
        if self.method.needs_retain and not retain:
            raise MrdkitError(f"method {cfg.method!r} needs retain samples (or set its alpha=0)")
        self.ref = clone_frozen(model) if self.method.needs_reference else None
        self.retain = self._encode(retain) if retain and self.method.needs_retain else []
        self.snapshot = snapshot

    def _encode(self, samples: Sequence[Sample]) -> list:
        from mrdkit.models import fit_max_length

        # cut to the model's context: a longer sequence would index past GPT-2's position table
        return encode_samples(samples, self.tok, template=self.cfg.template, token_set=self.cfg.token_set,
                              encoding=self.cfg.encoding,
                              max_length=fit_max_length(self.model, self.cfg.max_length))

    def batch(self, samples: Sequence[Sample]) -> dict:
        return collate(self._encode(samples), pad_id(self.tok))

    def optimizer(self) -> torch.optim.Optimizer:
        return make_optimizer(self.snapshot.params, lr=self.cfg.lr, name=self.cfg.optimizer,
                              weight_decay=self.cfg.weight_decay)

    def extras(self, unit: Sequence[Sample], key: str) -> tuple[Optional[Callable[[], dict]], Optional[dict]]:
        """Retain-batch factory (one retain sample per step, seeded per unit) and the unit's IDK batch."""
        rng = python_rng(self.cfg.seed, "difficulty", key)
        retain = (lambda: collate([rng.choice(self.retain)], pad_id(self.tok))) if self.retain else None
        idk = None
        if self.method.needs_idk:
            from mrdkit.data import load_idk

            answers = load_idk()
            idk = self.batch([s.replace(answer=rng.choice(answers)) for s in unit])
        return retain, idk

    def done(self, prob: float, logp: float, initial_logp: float) -> bool:
        if self.cfg.relative is not None:
            return logp <= self.cfg.relative * initial_logp
        return prob <= self.cfg.threshold

    def step(self, opt: torch.optim.Optimizer, batch: dict, retain: Any, idk: Any) -> None:
        """One optimizer update on ``batch`` with the method's loss, through the shared :func:`train_step` (no
        clipping, no schedule: the ground truth counts plain updates at a fixed lr)."""
        def loss():
            return method_loss(self.method, self.model, self.ref, batch, retain() if retain else None, idk)

        train_step([loss], params=self.snapshot.params, optimizer=opt)

    def measure(self, batch: dict) -> tuple[float, float]:
        return _stat(token_logprobs(self.model, batch), self.cfg.statistic)

    def unit(self, unit: Sequence[Sample], key: str) -> dict[str, Any]:
        """Updates until the unit is forgotten (per sample: one update = one step; per chunk: one epoch over its
        mini-batches of ``batch_size``). The statistic is measured on the whole unit after every update."""
        cfg = self.cfg
        batch, (retain, idk) = self.batch(unit), self.extras(unit, key)
        size = cfg.batch_size or len(unit)
        minis = [batch] if size >= len(unit) else [self.batch(unit[i:i + size]) for i in range(0, len(unit), size)]
        if idk is not None and len(minis) > 1:
            raise MrdkitError(f"method {cfg.method!r} needs the whole chunk per step: leave batch_size unset")
        opt = self.optimizer()
        prob0, logp0 = prob, logp = self.measure(batch)
        updates = steps = 0
        while not self.done(prob, logp, logp0) and updates < cfg.cap:
            for mini in minis:
                self.step(opt, mini, retain, idk)
                steps += 1
            updates += 1
            prob, logp = self.measure(batch)
        l1, l2 = self.snapshot.change()
        return {"updates": updates, "censored": not self.done(prob, logp, logp0), "steps": steps,
                "initial_prob": prob0, "final_prob": prob, "initial_logprob": logp0, "final_logprob": logp,
                "l1_change": l1, "l2_change": l2}

"""The per-unit update loop of :func:`mrdkit.evaluation.difficulty.required_updates` (re-exported there).

:class:`Snapshot` clones the trainable parameters once and copies them back bit-exactly (house rule 6);
``_Runner`` holds what every unit shares (method, reference model, retain data, optimizer kind) and counts the
updates until one unit (a sample or a chunk) is forgotten; ``_stat`` is the measured statistic: the geometric
``exp((1/n) sum_t log p_t)`` (TOFU's P(a|q), Maini et al. 2024, arXiv:2401.06121) or arithmetic
``(1/n) sum_t p_t`` mean token probability, with the mean token log-prob (Feng et al. 2025, arXiv:2504.06658).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

import torch

from mrdkit.data import Sample, collate, encode_samples, pad_id
from mrdkit.errors import MrdkitError
from mrdkit.logprob import TokenLogProbs, token_logprobs
from mrdkit.seeding import python_rng

if TYPE_CHECKING:  # annotation only: difficulty imports this module
    from mrdkit.evaluation.difficulty import DifficultyConfig


def _stat(lp: TokenLogProbs, statistic: str) -> tuple[float, float]:
    """(probability statistic, mean token log-prob), each averaged over the batch's samples."""
    mean_lp = lp.mean()  # (B,)
    if statistic == "geometric":
        prob = mean_lp.exp()
    else:
        prob = (lp.values.exp() * lp.mask).sum(-1) / lp.count().clamp(min=1)  # (B,) mean_t p_t
    return float(prob.mean()), float(mean_lp.mean())


class Snapshot:
    """One clone of the trainable parameters: ``restore()`` copies it back bit-exactly (and drops gradients),
    ``change()`` measures the distance to it. As a context manager it restores the weights and the train/eval
    mode on exit, even on errors (house rule 6)."""

    def __init__(self, model: torch.nn.Module):
        self.model, self.was_training = model, model.training
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.saved = [p.detach().clone() for p in self.params]

    def restore(self) -> None:
        with torch.no_grad():
            for p, s in zip(self.params, self.saved):
                p.copy_(s)
                p.grad = None

    def change(self) -> tuple[float, float]:
        """``(sum |theta - theta_0|, ||theta - theta_0||_2)`` over trainable parameters, in float64."""
        l1 = l2 = 0.0
        for p, s in zip(self.params, self.saved):
            d = p.detach().double() - s.double()
            l1, l2 = l1 + float(d.abs().sum()), l2 + float(d.pow(2).sum())
        return l1, math.sqrt(l2)

    def __enter__(self) -> "Snapshot":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.restore()
        self.model.train(self.was_training)


class _Runner:
    """Holds what every unit shares: the method, the reference model, encoded retain data, the optimizer kind."""

    def __init__(self, model: Any, tokenizer: Any, cfg: DifficultyConfig, retain: Sequence[Sample] | None,
                 snapshot: Snapshot):
        from mrdkit.models import clone_frozen
        from mrdkit.unlearning import build_method

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
                              max_length=fit_max_length(self.model, self.cfg.max_length))

    def batch(self, samples: Sequence[Sample]) -> dict:
        return collate(self._encode(samples), pad_id(self.tok))

    def optimizer(self) -> torch.optim.Optimizer:
        if self.cfg.optimizer == "sgd":
            return torch.optim.SGD(self.snapshot.params, lr=self.cfg.lr)
        return torch.optim.AdamW(self.snapshot.params, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)

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
        """One optimizer update on ``batch`` with the method's loss (:func:`gather_step_inputs` + ``compute``)."""
        from mrdkit.unlearning import gather_step_inputs

        ctx = gather_step_inputs(self.method, self.model, self.ref, batch, retain() if retain else None, idk)
        loss = self.method.compute(ctx).total
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

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

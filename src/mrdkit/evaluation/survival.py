"""Joint survival: when does each forget sample fall below the forgetting threshold while the whole forget set is
unlearned together, as a user would run it? The second ground truth of unlearning difficulty.

The per-sample ground truth (:func:`mrdkit.evaluation.difficulty.required_updates`) unlearns one sample at a time
from the start model. A user unlearns the whole set at once, with a method and a sampler; what they want predicted
is which samples will still be remembered late in that run. :func:`joint_survival` runs
:func:`mrdkit.unlearning.loop.unlearn` on the whole forget set and, after every optimizer step, measures every
sample's mean answer log-prob ``f_i(step)``; its survival time is the first step with
``exp(f_i) <= tau`` (TOFU's P(a|q); the reference code's tau = 0.02), censored at the last step of the run when it
never gets there. The start weights are restored bit-exactly afterwards.

Online forecast (:func:`forecast_steps`): from the first m steps of each sample's trajectory, a least-squares line
through ``f_i(0..m)`` extrapolated to ``log tau`` predicts its survival step (a sample already below tau within m
steps gets its observed step); :func:`mrdkit.evaluation.correlation.harrell_c` of that prediction as a function of
m says how early a run tells which samples will resist.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np
import torch

from mrdkit.data import Sample, iter_batches, pad_id
from mrdkit.errors import MrdkitError
from mrdkit.logprob import token_logprobs
from mrdkit.snapshot import ParamSnapshot


@dataclass
class SurvivalConfig:
    """Settings of :func:`joint_survival`.

    Attributes:
        method, method_kwargs: the unlearning method (``ga``, ``npo``, ...; retain data for those with a retain term).
        sampler, sampler_kwargs, scores: the forget sampler (``random`` default) and its scores, as in ``unlearn``.
        lr, batch_size, optimizer settings: the run (batch_size None = the whole forget set per step, full batch);
            constant lr, no warmup, as the per-sample ground truth.
        max_steps: censoring point. threshold: tau. seed, template, encoding, max_length: as everywhere.
        measure_batch_size: samples per forward pass of the per-step measurement.
    """

    method: str = "ga"
    lr: float = 5e-5
    batch_size: Optional[int] = None
    max_steps: int = 200
    threshold: float = 0.02
    sampler: str = "random"
    seed: int = 0
    template: str = "auto"
    encoding: str = "joint"
    max_length: int = 512
    weight_decay: float = 0.0
    max_grad_norm: Optional[float] = None
    measure_batch_size: int = 32
    method_kwargs: dict[str, Any] = field(default_factory=dict)
    sampler_kwargs: dict[str, Any] = field(default_factory=dict)

    def unlearn_config(self, n_forget: int):
        """The :class:`~mrdkit.unlearning.config.UnlearnConfig` of the run."""
        from mrdkit.unlearning.config import UnlearnConfig

        return UnlearnConfig(lr=self.lr, batch_size=self.batch_size or n_forget, max_steps=self.max_steps,
                             warmup_steps=0, schedule="constant", weight_decay=self.weight_decay,
                             max_grad_norm=self.max_grad_norm, seed=self.seed, template=self.template,
                             encoding=self.encoding, max_length=self.max_length, eval_every=1, monitor_retain=0,
                             stop_check_every=self.max_steps, train_mode=False,
                             method_kwargs=dict(self.method_kwargs), sampler_kwargs=dict(self.sampler_kwargs))


def sample_logprobs(model: torch.nn.Module, encoded: Sequence[Any], pad: int, batch_size: int) -> list[float]:
    """Mean answer log-prob ``f_i`` of every encoded sample under the model's current weights (eval mode)."""
    was_training = model.training
    model.eval()
    try:
        out: list[float] = []
        for batch in iter_batches(encoded, batch_size, pad_token_id=pad):
            out.extend(token_logprobs(model, batch).mean().tolist())
        return out
    finally:
        model.train(was_training)


def survival_rows(ids: Sequence[str], trajectories: Sequence[Sequence[float]], threshold: float) -> list[dict]:
    """``{id, survival_step, censored, initial_logprob, final_logprob, trajectory}`` per sample from the per-step
    mean log-probs (step 0 = before any update): the first step with ``f <= log tau``, else the last step."""
    log_tau = math.log(threshold)
    rows = []
    for sid, traj in zip(ids, trajectories):
        hit = next((step for step, f in enumerate(traj) if f <= log_tau), None)
        rows.append({"id": sid, "survival_step": hit if hit is not None else len(traj) - 1,
                     "censored": hit is None, "initial_logprob": traj[0], "final_logprob": traj[-1],
                     "trajectory": list(traj)})
    return rows


def joint_survival(model: torch.nn.Module, tokenizer: Any, forget: Sequence[Sample],
                   retain: Optional[Sequence[Sample]] = None, *, config: Optional[SurvivalConfig] = None,
                   scores: Any = None, progress: Any = None, **overrides: Any) -> list[dict[str, Any]]:
    """Unlearn ``forget`` jointly and record every sample's survival step (module docstring).

    Args:
        model, tokenizer: the start model (full fine-tuning; its weights are restored bit-exactly at the end).
        forget: the forget set (unique ids). retain: retain data for methods with a retain term.
        config: :class:`SurvivalConfig`; keyword ``overrides`` replace its fields.
        scores: sampler scores (as :func:`mrdkit.unlearning.loop.unlearn`), for a score-guided sampler.
        progress: ``progress(step, total)``.

    Returns:
        :func:`survival_rows`, in forget-set order; the run stops early once every sample has fallen below tau.
    """
    from mrdkit.data import encode_samples
    from mrdkit.unlearning.loop import unlearn

    cfg = dataclasses.replace(config or SurvivalConfig(), **overrides)
    if not forget:
        raise MrdkitError("the forget set is empty")
    ucfg = cfg.unlearn_config(len(forget))
    encoded = encode_samples(forget, tokenizer, template=cfg.template, encoding=cfg.encoding,
                             max_length=cfg.max_length)
    pad, log_tau, trajectories = pad_id(tokenizer), math.log(cfg.threshold), []

    def measure(state: Any) -> dict[str, Any]:
        values = sample_logprobs(state.model, encoded, pad, cfg.measure_batch_size)
        trajectories.append(values)
        return {"stop": max(values) <= log_tau}  # every sample forgotten: nothing left to time

    trajectories.append(sample_logprobs(model, encoded, pad, cfg.measure_batch_size))  # step 0
    with ParamSnapshot(model=model, drop_grads=True):
        unlearn(model, tokenizer, forget, retain, method=cfg.method, sampler=cfg.sampler, scores=scores,
                config=ucfg, callbacks=[measure], progress=progress)
    per_sample = np.asarray(trajectories, dtype=np.float64).T  # (N, steps + 1)
    return survival_rows([s.id for s in forget], per_sample.tolist(), cfg.threshold)


def forecast_steps(rows: Sequence[dict[str, Any]], horizon: int, threshold: float) -> dict[str, float]:
    """Predicted survival step of every sample from the first ``horizon`` steps of its trajectory (module
    docstring): the observed step if it fell below tau by then, else where a least-squares line through
    ``f(0..horizon)`` reaches ``log tau`` (inf when the line does not fall)."""
    if horizon < 1:
        raise MrdkitError(f"the forecast horizon must be >= 1 step, got {horizon}")
    log_tau, out = math.log(threshold), {}
    for r in rows:
        seen = np.asarray(r["trajectory"][:horizon + 1], dtype=np.float64)
        hit = np.flatnonzero(seen <= log_tau)
        if hit.size:
            out[r["id"]] = float(hit[0])
            continue
        slope, intercept = np.polyfit(np.arange(seen.size), seen, 1)
        out[r["id"]] = float((log_tau - intercept) / slope) if slope < 0 else math.inf
    return out

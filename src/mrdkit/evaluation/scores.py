"""Difficulty scores: per-sample predictions of how hard a sample will be to unlearn, in one registry.

MRD (Feng et al. 2025, arXiv:2504.06658) is one such prediction; on this project's testbeds it does not predict the
updates a sample needs (docs/results.md). This module puts MRD next to cheaper and more direct candidates, all
computed on the same token set (default: the answer tokens, which the ground truth and the unlearning loss use),
so that ``mrd bench run predictors`` can say which one to use. Notation: ``f(theta)`` is the sample's mean answer
log-prob ``(1/n) sum_t log p_theta(y_t | x, y_<t)``; "a step" is one :func:`mrdkit.train.train_step` of the
unlearning method on the sample alone, from the start weights, which are restored bit-exactly afterwards
(:class:`~mrdkit.snapshot.ParamSnapshot`).

Every score declares its ``direction``: what a HIGH value predicts (``easier`` = fewer updates to forget, as MRD;
``harder`` = more). Its ``cost`` is in forward+backward-pass equivalents per sample (a forward alone counts 1/3:
a backward costs about two forwards). Scores:

- ``mrd_paper`` / ``mrd_antithetic``: MRD on the chosen tokens (``|mean_k r_k|`` / ``|mean_k c_k|``, K draws;
  :mod:`mrdkit.scoring.engine`); easier; cost (K+1)/3 and (2K+1)/3.
- ``loss``: ``-f(theta)``, the mean answer NLL; easier (a weakly memorised answer is closer to the threshold).
- ``n_tokens``: answer length; ``min_k_20``, ``min_k_40``: Min-K% Prob (Shi et al. 2023, arXiv:2310.16789);
  ``zlib``: log-prob over zlib entropy (Carlini et al. 2021): membership signals, harder; cost 1/3.
- ``grad_norm``: ``||grad f||_2``: easier (a large gradient moves the log-prob fast); cost 1.
- ``lookahead_1``, ``lookahead_3``: ``f(theta_0) - f(theta_k)`` after k method steps on the sample alone, the drop
  of its own objective the unlearning run will see; easier; cost k + (k+1)/3 (f is measured after every step).
- ``grad_curvature``: ``(f(theta + eta u) + f(theta - eta u) - 2 f(theta)) / eta^2 = u'Hu`` with ``u = g/|g|`` the
  sample's own gradient direction (the direction unlearning moves in, where MRD averages over random
  directions); harder (positive curvature along the descent path slows the decrease); cost 1 + 2/3.
- ``newton_steps``: ``(f(theta_0) - log tau) / max(f(theta_0) - f(theta_1), eps)``: the updates a straight line
  through the first step needs to reach the forgetting threshold tau (TOFU's P(a|q) <= tau); harder; cost 1 + 2/3.

A cross-validated learned combination of the cheap scores is :func:`mrdkit.evaluation.predictors.learned_scores`
(it needs a ground truth to learn from).
"""

from __future__ import annotations

import math
import time
import zlib
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Optional, Sequence

import torch

from mrdkit.data import Sample, collate, encode_samples, pad_id
from mrdkit.data.encode import check_options
from mrdkit.errors import MrdkitError
from mrdkit.logprob import token_logprobs
from mrdkit.membership import min_k_logprob
from mrdkit.models import clone_frozen, fit_max_length
from mrdkit.registry import Registry
from mrdkit.samplers import DIRECTIONS
from mrdkit.scoring.perturb import eval_mode
from mrdkit.snapshot import ParamSnapshot, trainable
from mrdkit.train import make_optimizer, train_step

SCORES: Registry[Callable[..., dict[str, float]]] = Registry("difficulty score")


@dataclass
class ScoreConfig:
    """Settings of the difficulty scores (defaults: the tokens and the unlearning step of the ground truth).

    Attributes:
        token_set, template, encoding, max_length: how samples become tokens (:func:`mrdkit.data.encode_samples`).
        batch_size: samples per forward pass of the batched scores.
        draws, sigma, seed: MRD's K, noise scale and seed (the ``mrd_*`` scores).
        method, lr, optimizer, weight_decay, method_kwargs: the unlearning step of the step-based scores (as
            :class:`mrdkit.evaluation.difficulty.DifficultyConfig`: GA, AdamW, lr 1e-3 for tiny models).
        threshold: the forgetting threshold tau of ``newton_steps`` (TOFU P(a|q); the reference code's 0.02).
        curvature_step: eta of ``grad_curvature``; None = ``sigma * sqrt(d)``, the norm of one MRD draw.
    """

    token_set: str = "answer"
    template: str = "auto"
    encoding: str = "joint"
    max_length: int = 512
    batch_size: int = 16
    draws: int = 16
    sigma: float = 1e-5
    seed: int = 0
    method: str = "ga"
    lr: float = 1e-3
    optimizer: str = "adamw"
    weight_decay: float = 0.0
    threshold: float = 0.02
    curvature_step: Optional[float] = None
    method_kwargs: dict[str, Any] = field(default_factory=dict)

    def check(self) -> ScoreConfig:
        check_options(self.token_set, self.encoding)
        if not (self.lr > 0 and 0 < self.threshold < 1 and self.draws >= 1 and self.sigma > 0):
            raise MrdkitError(f"score settings need lr > 0, 0 < threshold < 1, draws >= 1, sigma > 0; got "
                              f"lr={self.lr}, threshold={self.threshold}, draws={self.draws}, sigma={self.sigma}")
        from mrdkit.scoring.config import check_sigma_range

        check_sigma_range(float(self.sigma))  # the mrd_* scores: the same range as mrd score
        return self


@dataclass
class ScoreContext:
    """What every score function receives: the model, the encoded samples and the settings."""

    model: torch.nn.Module
    tokenizer: Any
    samples: list[Sample]
    cfg: ScoreConfig
    encoded: list = field(default_factory=list)
    cache: dict[str, Any] = field(default_factory=dict)  # shared intermediate results (one pass, several scores)

    def single(self, i: int) -> dict[str, Any]:
        """The one-sample batch of sample ``i`` (unpadded)."""
        return collate([self.encoded[i]], pad_id(self.tokenizer))

    def ids(self) -> list[str]:
        return [s.id for s in self.samples]


FORWARD = 1 / 3  # a forward pass in forward+backward equivalents (a backward costs about two forwards)


def register_score(name: str, *, direction: str, cost: Callable[[ScoreConfig], float], formula: str,
                   citation: str = ""):
    """Register a score function ``fn(ctx) -> {id: value}`` with its metadata; ``cost(cfg)`` is its price per
    sample in forward+backward-pass equivalents under the settings ``cfg`` (e.g. MRD's depends on K)."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}")
    return SCORES.register(name, direction=direction, cost=cost, summary=formula, citation=citation)


# ------------------------------------------------------------------------------------------ one forward pass


def _token_rows(ctx: ScoreContext) -> dict[str, torch.Tensor]:
    """``{id: scored token log-probs (1-D float64)}``, one batched pass over the samples, cached."""
    if "rows" not in ctx.cache:
        from mrdkit.data import iter_batches

        rows: dict[str, torch.Tensor] = {}
        was_training = ctx.model.training
        ctx.model.eval()
        try:
            for batch in iter_batches(ctx.encoded, ctx.cfg.batch_size, pad_token_id=pad_id(ctx.tokenizer)):
                lp = token_logprobs(ctx.model, batch)
                rows.update({sid: v.cpu() for sid, v in zip(batch["ids"], lp.rows())})
        finally:
            ctx.model.train(was_training)
        ctx.cache["rows"] = rows
    return ctx.cache["rows"]


@register_score("loss", direction="easier", cost=lambda cfg: FORWARD, formula="-f(theta): mean answer NLL")
def loss(ctx: ScoreContext) -> dict[str, float]:
    return {sid: -float(v.mean()) for sid, v in _token_rows(ctx).items()}


@register_score("n_tokens", direction="harder", cost=lambda cfg: FORWARD, formula="number of scored tokens")
def n_tokens(ctx: ScoreContext) -> dict[str, float]:
    return {sid: float(v.numel()) for sid, v in _token_rows(ctx).items()}


@register_score("min_k_20", direction="harder", cost=lambda cfg: FORWARD,
                formula="mean of the lowest 20% token log-probs",
                citation="Shi et al. 2023, arXiv:2310.16789")
def min_k_20(ctx: ScoreContext) -> dict[str, float]:
    return {sid: min_k_logprob(v, 0.2) for sid, v in _token_rows(ctx).items()}


@register_score("min_k_40", direction="harder", cost=lambda cfg: FORWARD,
                formula="mean of the lowest 40% token log-probs",
                citation="Shi et al. 2023, arXiv:2310.16789")
def min_k_40(ctx: ScoreContext) -> dict[str, float]:
    return {sid: min_k_logprob(v, 0.4) for sid, v in _token_rows(ctx).items()}


@register_score("zlib", direction="harder", cost=lambda cfg: FORWARD,
                formula="f(theta) / zlib-compressed bytes of the answer",
                citation="Carlini et al. 2021, arXiv:2012.07805")
def zlib_score(ctx: ScoreContext) -> dict[str, float]:
    answers = {s.id: s.answer for s in ctx.samples}
    return {sid: float(v.mean()) / max(1, len(zlib.compress(answers[sid].encode()))) for sid, v in
            _token_rows(ctx).items()}


# ------------------------------------------------------------------------------------------------ MRD


def _mrd(ctx: ScoreContext, estimator: str) -> dict[str, float]:
    from mrdkit.data import iter_batches
    from mrdkit.scoring.engine import score_batches

    batches = list(iter_batches(ctx.encoded, ctx.cfg.batch_size, pad_token_id=pad_id(ctx.tokenizer)))
    res = score_batches(ctx.model, batches, draws=ctx.cfg.draws, sigma=ctx.cfg.sigma, seed=ctx.cfg.seed,
                        estimator=estimator)
    return dict(zip(res.ids, res.estimate.mrd.tolist()))


@register_score("mrd_paper", direction="easier", cost=lambda cfg: (cfg.draws + 1) * FORWARD,
                formula="|mean_k sum_t (l_t - l_t(theta+d_k))/l_t|",
                citation="Feng et al. 2025, arXiv:2504.06658")
def mrd_paper(ctx: ScoreContext) -> dict[str, float]:
    return _mrd(ctx, "paper")


@register_score("mrd_antithetic", direction="easier", cost=lambda cfg: (2 * cfg.draws + 1) * FORWARD,
                formula="|mean_k c_k|, c_k = (r_k(+d) + r_k(-d)) / 2: MRD's curvature part",
                citation="Feng et al. 2025, arXiv:2504.06658; antithetic variates")
def mrd_antithetic(ctx: ScoreContext) -> dict[str, float]:
    return _mrd(ctx, "antithetic")


# ------------------------------------------------------------------------------------- gradient-based


def _objective(ctx: ScoreContext, i: int, grad: bool = False) -> torch.Tensor:
    """``f(theta)`` of sample ``i``: its mean scored-token log-prob (a 0-dim float64 tensor)."""
    return token_logprobs(ctx.model, ctx.single(i), grad=grad).mean()[0]


def _gradient(ctx: ScoreContext, i: int, params: list[torch.Tensor]) -> list[torch.Tensor]:
    grads = torch.autograd.grad(_objective(ctx, i, grad=True), params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]


def _norm(tensors: Sequence[torch.Tensor]) -> float:
    return math.sqrt(sum(float(t.double().pow(2).sum()) for t in tensors))


@register_score("grad_norm", direction="easier", cost=lambda cfg: 1.0, formula="||grad f(theta)||_2")
def grad_norm(ctx: ScoreContext) -> dict[str, float]:
    params = trainable(ctx.model)
    with eval_mode(ctx.model):
        return {s.id: _norm(_gradient(ctx, i, params)) for i, s in enumerate(ctx.samples)}


@register_score("grad_curvature", direction="harder", cost=lambda cfg: 1 + 2 * FORWARD,
                formula="(f(theta+eta u) + f(theta-eta u) - 2 f(theta)) / eta^2, u = grad f / |grad f|")
def grad_curvature(ctx: ScoreContext) -> dict[str, float]:
    params = trainable(ctx.model)
    d = sum(p.numel() for p in params)
    eta = ctx.cfg.curvature_step or ctx.cfg.sigma * math.sqrt(d)
    out = {}
    with eval_mode(ctx.model), ParamSnapshot(params) as snap:
        for i, s in enumerate(ctx.samples):
            g = _gradient(ctx, i, params)
            scale = eta / max(_norm(g), 1e-300)
            values = []
            for sign in (1.0, -1.0):
                with torch.no_grad():
                    for p, gi, saved in zip(params, g, snap.saved):
                        p.copy_(saved + (sign * scale) * gi.to(p.dtype))
                    values.append(float(_objective(ctx, i)))
                snap.restore()
            with torch.no_grad():
                base = float(_objective(ctx, i))
            out[s.id] = (values[0] + values[1] - 2 * base) / eta ** 2
    return out


# -------------------------------------------------------------------------------------- step-based


def lookahead_drops(ctx: ScoreContext, steps: int) -> dict[str, list[float]]:
    """``{id: [f(theta_0), f(theta_1), ..., f(theta_steps)]}``: the sample's objective after each of ``steps``
    method steps on it alone (fresh optimizer per sample; weights restored bit-exactly), cached by steps."""
    key = f"lookahead:{steps}"
    have = next((v for k, v in ctx.cache.items() if k.startswith("lookahead:") and int(k.split(":")[1]) >= steps),
                None)
    if have is not None:
        return {sid: traj[:steps + 1] for sid, traj in have.items()}
    from mrdkit.unlearning.methods import build_method
    from mrdkit.unlearning.step import method_loss

    cfg = ctx.cfg
    method = build_method(cfg.method, **cfg.method_kwargs)
    if method.needs_retain or method.needs_idk:
        raise MrdkitError(f"step-based scores run the method on the sample alone; {cfg.method!r} needs retain or "
                          f"IDK data: use ga, npo or simnpo (or alpha=0)")
    ref = clone_frozen(ctx.model) if method.needs_reference else None
    params = trainable(ctx.model)
    out: dict[str, list[float]] = {}
    with eval_mode(ctx.model), ParamSnapshot(params, drop_grads=True) as snap:
        for i, s in enumerate(ctx.samples):
            batch = ctx.single(i)
            opt = make_optimizer(params, lr=cfg.lr, name=cfg.optimizer, weight_decay=cfg.weight_decay)
            with torch.no_grad():
                traj = [float(_objective(ctx, i))]
            for _ in range(steps):
                train_step([lambda: method_loss(method, ctx.model, ref, batch)], params=params, optimizer=opt)
                with torch.no_grad():
                    traj.append(float(_objective(ctx, i)))
            out[s.id] = traj
            snap.restore()
    ctx.cache[key] = out
    return out


@register_score("lookahead_1", direction="easier", cost=lambda cfg: 1 + 2 * FORWARD,
                formula="f(theta_0) - f(theta_1): drop of the sample's mean answer log-prob after 1 method step")
def lookahead_1(ctx: ScoreContext) -> dict[str, float]:
    return {sid: t[0] - t[1] for sid, t in lookahead_drops(ctx, 1).items()}


@register_score("lookahead_3", direction="easier", cost=lambda cfg: 3 + 4 * FORWARD,
                formula="f(theta_0) - f(theta_3): drop after 3 method steps on the sample alone")
def lookahead_3(ctx: ScoreContext) -> dict[str, float]:
    return {sid: t[0] - t[3] for sid, t in lookahead_drops(ctx, 3).items()}


@register_score("newton_steps", direction="harder", cost=lambda cfg: 1 + 2 * FORWARD,
                formula="(f(theta_0) - log tau) / max(f(theta_0) - f(theta_1), eps): straight-line steps to tau")
def newton_steps(ctx: ScoreContext) -> dict[str, float]:
    log_tau = math.log(ctx.cfg.threshold)
    out = {}
    for sid, t in lookahead_drops(ctx, 1).items():
        gap = t[0] - log_tau
        out[sid] = 0.0 if gap <= 0 else gap / max(t[0] - t[1], 1e-12)
    return out


# --------------------------------------------------------------------------------------------- runner


@dataclass
class ScoreTable:
    """Scores of several names for the same samples: ``rows`` (one dict per sample) and ``meta`` (per score:
    direction, cost, formula, citation, seconds; the settings)."""

    rows: list[dict[str, Any]]
    meta: dict[str, Any]

    def column(self, name: str) -> dict[str, float]:
        return {r["id"]: r[name] for r in self.rows if name in r}


def parse_names(names: str | Sequence[str]) -> list[str]:
    """``"a,b"`` or ``["a", "b"]`` -> validated registered names (did-you-mean on unknown ones); ``all`` = every
    registered score."""
    items = [n.strip() for n in (names.split(",") if isinstance(names, str) else names) if n.strip()]
    if not items:
        raise MrdkitError("no difficulty score named (known: " + ", ".join(SCORES.names()) + ")")
    if items == ["all"]:
        return SCORES.names()
    for name in items:
        SCORES.get(name)
    return items


def score_difficulty(model: torch.nn.Module, tokenizer: Any, samples: Sequence[Sample], names: str | Sequence[str],
                     config: Optional[ScoreConfig] = None, **overrides: Any) -> ScoreTable:
    """Compute the named difficulty scores (module docstring) for every sample.

    Args:
        model, tokenizer: the start model (float64 advised for MRD and ``grad_curvature``); its weights are left
            bit-exactly as they were.
        samples: the samples to score (unique ids).
        names: registered score names, or ``"all"``.
        config: :class:`ScoreConfig`; keyword ``overrides`` replace its fields.

    Returns:
        :class:`ScoreTable`.
    """
    from dataclasses import replace

    cfg = replace(config or ScoreConfig(), **overrides).check()
    names = parse_names(names)
    if not samples:
        raise MrdkitError("no samples to score")
    encoded = encode_samples(samples, tokenizer, template=cfg.template, token_set=cfg.token_set,
                             max_length=fit_max_length(model, cfg.max_length), encoding=cfg.encoding)
    ctx = ScoreContext(model, tokenizer, list(samples), cfg, encoded)
    rows = {s.id: {"id": s.id} for s in samples}
    meta: dict[str, Any] = {"config": asdict(cfg), "scores": {}}
    for name in names:
        entry, tic = SCORES.entry(name), time.perf_counter()
        for sid, value in entry.obj(ctx).items():
            rows[sid][name] = value
        info = {k: v for k, v in entry.meta.items() if k != "cost"}
        meta["scores"][name] = {**info, "cost": round(entry.meta["cost"](cfg), 4),
                                "seconds": round(time.perf_counter() - tic, 3)}
    return ScoreTable([rows[s.id] for s in samples], meta)

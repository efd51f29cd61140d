"""MRD scoring engine with common random numbers (Feng et al. 2025, arXiv 2504.06658).

Algorithm: ONE unperturbed pass over all batches gives the base token log-probs ``l_t``; then for each draw k
(and, for the antithetic estimator, each sign) the weights are perturbed ONCE, all batches are evaluated under
that perturbation with :func:`mrdkit.logprob.token_logprobs`, every sample is reduced at once to its scalar
``r = sum_t (l_t - l'_t)/l_t``, and the weights are restored bit-exactly. All samples share the K draws (common
random numbers: stabler rankings); the reference code re-runs the unperturbed forward per draw and per sample.

Batches are first re-batched canonically (:func:`canonical_batches`): on CPU a forward pass is bitwise
independent of the batch size at a fixed padded width, but NOT of the width, so every sample is padded to a
width set by its own length alone; MRD is then bitwise independent of the caller's batching.

Every function takes the run's :class:`~mrdkit.scoring.config.MRDConfig` (estimator, K, noise, perturb mode).
The draw loop (:func:`base_pass`, :func:`relative_changes`, :func:`draw_values`, :func:`score_batches`) looks up
``token_logprobs`` / ``relative_change`` / ``base_pass`` in this module's globals, so patching them here (e.g. to
time them, ``benchmarks/mrd_speed.py``) reaches every call.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Union

import torch

from mrdkit.errors import MrdkitError
from mrdkit.logprob import IGNORE_INDEX, model_device, token_logprobs
from mrdkit.models import context_length
from mrdkit.scoring.config import MRDConfig
from mrdkit.scoring.estimators import (
    Accumulator,
    EstimateResult,
    masked_row_sums,
    relative_change,
    resume_accumulator,
)
from mrdkit.scoring.perturb import eval_mode, make_perturber, select_parameters

Batch = Mapping[str, Any]
BATCH_KEYS = ("input_ids", "attention_mask", "labels")


def batch_ids(batches: list[Batch]) -> list[str]:
    """Sample ids in batch order (``str`` of each ``ids`` entry; the running row index where a batch has none)."""
    ids: list[str] = []
    for b in batches:
        ids.extend(str(i) for i in b.get("ids", range(len(ids), len(ids) + b["input_ids"].shape[0])))
    return ids


def _row_length(batch: Batch, i: int) -> int:
    """Used length of row i under right padding: one past the last attended or scored position."""
    used = (batch["attention_mask"][i] != 0) | (batch["labels"][i] != IGNORE_INDEX)
    idx = used.nonzero()
    return int(idx.max()) + 1 if idx.numel() else 1


def canonical_batches(batches: Iterable[Batch], multiple: int = 8, max_width: Optional[int] = None
                      ) -> tuple[list[Batch], list[str], torch.Tensor]:
    """Re-batch so that every sample is padded to ``round_up(length, multiple)``, a width set by itself alone.

    Why: on CPU a forward pass is bitwise independent of the batch size at a fixed padded width, but NOT of the
    width (softmax and attention products reduce over the key axis; tiny fp32 GPT-2: half the samples change).
    A per-sample width makes MRD bitwise independent of the caller's batching and trims padding. Rows per batch
    stay <= the largest input batch; ``max_width`` (the model's position limit) caps the width.

    Returns:
        (batches, ids in input order, order) where ``order[j]`` is the input position of canonical row j.
    """
    batches, rows = list(batches), []  # rows: (width, input position, input_ids, attention_mask, labels)
    ids = batch_ids(batches)
    for batch in batches:
        for i in range(batch["input_ids"].shape[0]):
            length = _row_length(batch, i)
            width = -(-length // multiple) * multiple
            width = max(length, min(width, max_width)) if max_width else width
            rows.append((width, len(rows)) + tuple(batch[k][i, :length] for k in BATCH_KEYS))
    max_rows = max((b["input_ids"].shape[0] for b in batches), default=1)
    groups: list[list[tuple]] = []
    for row in sorted(rows, key=lambda r: (r[0], r[1])):
        if not groups or groups[-1][0][0] != row[0] or len(groups[-1]) == max_rows:
            groups.append([])
        groups[-1].append(row)
    out = [_pad_group(group, ids) for group in groups]
    return out, ids, torch.tensor([row[1] for group in groups for row in group], dtype=torch.long)


def _pad_group(group: list[tuple], ids: list[str]) -> dict[str, Any]:
    """Right-pad trimmed rows of one width into a batch (pad input 0, attention 0, labels -100)."""
    width = group[0][0]
    batch: dict[str, Any] = {}
    for j, (key, fill) in enumerate(zip(BATCH_KEYS, (0, 0, IGNORE_INDEX))):
        batch[key] = torch.full((len(group), width), fill, dtype=group[0][2 + j].dtype)
        for r, row in enumerate(group):
            batch[key][r, :row[2 + j].shape[0]] = row[2 + j]
    batch["ids"] = [ids[row[1]] for row in group]
    return batch


def single_samples(batches: Iterable[Batch]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ``(id, one-row batch)`` for every sample, trimmed to its attention length (right padding)."""
    for batch in batches:
        ids = batch.get("ids")
        ids = [str(i) for i in range(batch["input_ids"].shape[0])] if ids is None else ids
        for i, sid in enumerate(ids):
            length = int(batch["attention_mask"][i].sum())
            yield str(sid), {k: batch[k][i:i + 1, :length] for k in ("input_ids", "attention_mask", "labels")}



@dataclass
class EngineResult:
    """Output of :func:`score_batches`; per-sample tensors follow ``ids`` (the input order of the batches).

    Attributes:
        estimate: the estimator's :class:`EstimateResult` (MRD, mean, stderr, raw draws...).
        base_logprob, n_tokens: (N,) unperturbed ``sum_t l_t`` (float64) and number of scored tokens.
        config: the settings that produced the numbers (estimator, sigma, seed, scheme, ...).
        param_names: names of the perturbed parameters; ``n_perturbed``: their total element count.
        forward_passes: batch forward passes run by this call (base pass included).
    """

    ids: list[str]
    estimate: EstimateResult
    base_logprob: torch.Tensor
    n_tokens: torch.Tensor
    config: dict[str, Any]
    param_names: list[str] = field(default_factory=list)
    n_perturbed: int = 0
    forward_passes: int = 0

    def rows(self) -> list[dict[str, Any]]:
        """One JSON-ready dict per sample: id, mrd, mean, stderr, unresolved, base_logprob, n_tokens (+ first-order)."""
        est = self.estimate
        cols = {"mrd": est.mrd, "mean": est.mean, "stderr": est.stderr, "unresolved": est.unresolved,
                "base_logprob": self.base_logprob, "n_tokens": self.n_tokens}
        if est.first_order_mean is not None:
            cols.update(first_order_mean=est.first_order_mean, first_order_stderr=est.first_order_stderr,
                        first_order_spread=est.first_order_spread)
        return [{"id": sid, **{k: v[i].item() for k, v in cols.items()}} for i, sid in enumerate(self.ids)]


@dataclass
class BasePass:
    """Unperturbed token log-probs of every (canonical) batch: the denominators of the relative change."""

    batches: list[Batch]
    values: list[torch.Tensor]  # per batch (B, T-1) float64 on the model device
    masks: list[torch.Tensor]  # per batch (B, T-1) bool
    ids: list[str]  # input order
    order: torch.Tensor  # (N,) input position of each canonical row

    def to_input_order(self, parts: list[torch.Tensor]) -> torch.Tensor:
        """Concatenate per-batch (B,) results and put them back in input order."""
        flat = torch.cat([p.cpu() for p in parts]) if parts else torch.zeros(0, dtype=torch.float64)
        return torch.empty_like(flat).index_copy_(0, self.order, flat)

    def sequence_logprob(self) -> torch.Tensor:
        """(N,) ``sum_t l_t`` per sample (padding-independent summation)."""
        return self.to_input_order([masked_row_sums(v, m) for v, m in zip(self.values, self.masks)])

    def n_tokens(self) -> torch.Tensor:
        """(N,) number of scored tokens per sample."""
        return self.to_input_order([m.sum(dim=-1) for m in self.masks])


def base_pass(model: torch.nn.Module, batches: Iterable[Batch], width_multiple: Optional[int] = 8) -> BasePass:
    """The one unperturbed pass of a scoring run, on :func:`canonical_batches` (or, if ``width_multiple`` is
    None, on the batches as given)."""
    batches, device = list(batches), model_device(model)
    if width_multiple is None:
        ids, order = batch_ids(batches), torch.arange(sum(b["input_ids"].shape[0] for b in batches))
    else:
        batches, ids, order = canonical_batches(batches, width_multiple, context_length(model))
    # moved to the model's device once, not once per draw
    batches = [{k: v.to(device) if torch.is_tensor(v) else v for k, v in b.items()} for b in batches]
    lps = [token_logprobs(model, batch) for batch in batches]
    return BasePass(batches, [lp.values for lp in lps], [lp.mask for lp in lps], ids, order)


def relative_changes(model: torch.nn.Module, base: BasePass) -> torch.Tensor:
    """(N,) ``r = sum_t (l_t - l'_t)/l_t`` for every sample (input order) under the model's CURRENT weights.

    Each batch is reduced to per-sample scalars immediately, so only (B, T) tensors are ever alive.
    """
    parts = [relative_change(values, token_logprobs(model, batch).values, mask)
             for batch, values, mask in zip(base.batches, base.values, base.masks)]
    return base.to_input_order(parts)


def draw_values(model: torch.nn.Module, base: BasePass, pert: Any, draw: int, signs: tuple[int, ...]
                ) -> list[torch.Tensor]:
    """One (N,) tensor of relative changes per sign under ``theta_0 + sign * sigma * z_draw``; restores after."""
    rs = []
    for sign in signs:
        pert.apply(draw, sign)
        rs.append(relative_changes(model, base))
    pert.restore()
    return rs


def resolve_config(cfg: Optional[MRDConfig], overrides: Mapping[str, Any]) -> MRDConfig:
    """``cfg`` (default :class:`MRDConfig`) with keyword ``overrides`` applied and validated (sigma = 0 allowed
    here: the engine's exact-zero check)."""
    return (cfg or MRDConfig()).with_overrides(allow_zero_sigma=True, **overrides)


def run_meta(cfg: MRDConfig, ids: list[str], width_multiple: Optional[int]) -> dict[str, Any]:
    """What a saved accumulator must match to be resumed: the noise, the estimator and the samples."""
    return {"estimator": cfg.estimator, **cfg.noise(), "param_pattern": cfg.param_pattern,
            "width_multiple": width_multiple,
            "ids": hashlib.blake2b("\n".join(ids).encode(), digest_size=8).hexdigest()}


def score_batches(model: torch.nn.Module, batches: Iterable[Batch], cfg: Optional[MRDConfig] = None, *,
                  progress: Optional[Callable[[int, int], None]] = None,
                  checkpoint: Optional[Callable[[int, dict[str, Any]], None]] = None, start_draw: int = 0,
                  accumulator: Union[Accumulator, Mapping[str, Any], None] = None,
                  width_multiple: Optional[int] = 8, **overrides: Any) -> EngineResult:
    """Score MRD for every sample of ``batches`` (arXiv 2504.06658) with common random numbers.

    ``MRD(x) = | (1/K) sum_k sum_t (l_t(theta) - l_t(theta + delta_k)) / l_t(theta) |``, delta_k ~ N(0, sigma^2 I)
    (estimator ``paper``), or its antithetic curvature part ``|(1/K) sum_k c_k|`` (``antithetic``, 2 passes per
    draw; see :mod:`mrdkit.scoring.estimators`). Cost: one base pass plus ``K * passes_per_draw`` passes.

    Args:
        model: causal LM in float32/float64; put in eval mode during scoring, weights restored bit-exactly.
        batches: dicts with input_ids, attention_mask, labels (-100 = not scored) and ids; iterated repeatedly.
        cfg: the run's settings (``draws`` K, ``sigma``, ``estimator``, ``seed``, ``scheme``, ``param_pattern``,
            ``relative``, ``clip``, ``perturb_mode``); keyword ``overrides`` replace fields of it (or of the
            defaults), e.g. ``score_batches(model, batches, draws=16, sigma=1e-4)``.
        progress: ``progress(draws_done, draws_total)`` after each draw.
        checkpoint: ``checkpoint(draw_index, accumulator_state)`` after each draw (save it to resume).
        start_draw, accumulator: resume from a checkpoint; bitwise identical to an uninterrupted run.
        width_multiple: pad each sample to a multiple of this whatever its batch (:func:`canonical_batches`);
            ``None`` evaluates the batches as given.

    Returns:
        :class:`EngineResult` (per-sample tensors in the input order of ``ids``).
    """
    cfg = resolve_config(cfg, overrides)
    if not 0 <= start_draw <= cfg.draws:
        raise MrdkitError(f"need 0 <= start_draw <= draws (got draws={cfg.draws}, start={start_draw})")
    params = select_parameters(model, cfg.param_pattern)
    with eval_mode(model), make_perturber(cfg.perturb_mode, model, params, cfg.torch_compute_dtype(),
                                          **cfg.noise()) as pert:
        base = base_pass(model, batches, width_multiple)
        meta = run_meta(cfg, base.ids, width_multiple)
        acc = resume_accumulator(accumulator, start_draw, cfg.estimator, len(base.ids), meta)
        passes = len(base.batches)
        for k in range(start_draw, cfg.draws):
            acc.add(k, *draw_values(model, base, pert, k, acc.signs))
            passes += len(acc.signs) * len(base.batches)
            if checkpoint is not None:
                checkpoint(k, acc.state_dict())
            if progress is not None:
                progress(k + 1, cfg.draws)
    return EngineResult(base.ids, acc.finalize(cfg.clip), base.sequence_logprob(), base.n_tokens(),
                        engine_config(cfg, meta), pert.names, pert.n_elements, passes)


def engine_config(cfg: MRDConfig, meta: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    """The settings an :class:`EngineResult` reports (those that produced its numbers)."""
    return {k: v for k, v in meta.items() if k != "ids"} | {"draws": int(cfg.draws), "clip": cfg.clip,
                                                            "perturb_mode": cfg.perturb_mode, **extra}


def _sums_under(model: torch.nn.Module, batches: list[Batch], params: list, signs: tuple[int, ...],
                mode: str = "copy", compute_dtype: Optional[torch.dtype] = None, **noise: Any) -> list[torch.Tensor]:
    """(N,) sequence log-probs ``S = sum_t l_t`` under draw 0 of ``noise`` with each sign (given batch order)."""
    out = []
    with make_perturber(mode, model, params, compute_dtype, **noise) as pert:
        for sign in signs:
            pert.apply(0, sign)
            out.append(base_pass(model, batches, None).sequence_logprob())
    return out


def floor_check(model: torch.nn.Module, batches: Iterable[Batch], cfg: Optional[MRDConfig] = None, *,
                factor: float = 100.0, **overrides: Any) -> dict[str, Any]:
    """Can MRD at this sigma be told from rounding, and is sigma small enough to be a local (second-order) probe?

    Floor: the larger of (a) ``max |S - S_repeat|`` over two unperturbed passes (non-determinism; 0 on CPU) and
    (b) ``max |S(theta (1 + eps z)) - S|``, a ~1-ulp relative weight jitter (eps = machine epsilon of the dtype),
    where ``S = sum_t l_t`` is a sample's sequence log-prob. Effects of one draw ``delta ~ N(0, sigma^2 I)`` of
    ``cfg``'s noise: total ``|S(theta + delta) - S|`` (first-order dominated) and curvature
    ``c(sigma) = |S(theta + delta) + S(theta - delta) - 2 S| / 2``, the part both MRD estimators converge to
    (arXiv 2504.06658; paper-notes sec. 1-2). Locality: with the same noise direction at 2 sigma, a quadratic
    ``S`` gives ``c(2 sigma) / c(sigma) = 4`` exactly for every sample; a median ratio outside [3.5, 4.5] means
    higher orders (sigma too large) or rounding (sigma too small for the dtype) dominate. Measured on the tiny TOFU
    testbed (float64): 4.00 at sigma 1e-5 and 1e-4, 3.95 at 1e-3, 4.84 at 1e-2, 1.67 at 0.05. ``cfg.perturb_mode`` as in
    :func:`score_batches`; 9 forward passes over the samples.

    Returns:
        dict: repeat_diff, ulp_effect, floor, effect_median/min, effect_ratio (median / floor), effect_ok
        (effect_ratio >= factor), curvature_median, curvature_ratio, curvature_ok, scaling_median, scaling_ok,
        ok (all three) and, when not ok, ``reason`` (one sentence naming the failed checks); warns with the reason.
    """
    cfg = resolve_config(cfg, overrides)
    params = select_parameters(model, cfg.param_pattern)
    wide = cfg.torch_compute_dtype()
    eps = max(torch.finfo(wide or p.dtype).eps for _, p in params)  # the floor of the dtype the forward runs in
    batches = canonical_batches(batches, max_width=context_length(model))[0]
    mode, sigma = cfg.perturb_mode, cfg.sigma
    with eval_mode(model):
        first, repeat = _sums_under(model, batches, params, (1, 1), mode, wide, sigma=0.0)
        (ulp,) = _sums_under(model, batches, params, (1,), mode, wide, sigma=eps, seed=cfg.seed, relative=True)
        plus, minus = _sums_under(model, batches, params, (1, -1), mode, wide, **cfg.noise())
        plus2, minus2 = _sums_under(model, batches, params, (1, -1), mode, wide, **{**cfg.noise(), "sigma": 2 * sigma})
    out = {"repeat_diff": float((repeat - first).abs().max()), "ulp_effect": float((ulp - first).abs().max()),
           "sigma": float(sigma), "factor": factor, "effect_min": float((plus - first).abs().min())}
    floor = out["floor"] = max(out["repeat_diff"], out["ulp_effect"])
    curvature = (plus + minus - 2 * first) / 2
    for key, effect in (("effect", plus - first), ("curvature", curvature)):
        median = out[f"{key}_median"] = float(effect.abs().median())
        out[f"{key}_ratio"] = _above_floor(median, floor)
        out[f"{key}_ok"] = out[f"{key}_ratio"] >= factor
    out["scaling_median"] = float(((plus2 + minus2 - 2 * first) / 2 / curvature).median())
    out["scaling_ok"] = 3.5 <= out["scaling_median"] <= 4.5  # NaN (0 / 0: no curvature at all) fails too
    out["ok"] = out["effect_ok"] and out["curvature_ok"] and out["scaling_ok"]
    if not out["ok"]:
        out["reason"] = floor_reason(out, wide or next(p.dtype for _, p in params))  # the dtype the forward runs in
        warnings.warn(out["reason"], RuntimeWarning, stacklevel=2)
    return out


def _above_floor(median: float, floor: float) -> float:
    """``median / floor``; with a zero floor, inf for a visible effect and 0 for none (never 0 / 0 = "passes")."""
    if floor > 0:
        return median / floor
    return math.inf if median > 0 else 0.0


def floor_reason(check: Mapping[str, Any], dtype: torch.dtype) -> str:
    """One sentence saying which parts of a failed :func:`floor_check` failed, with their numbers."""
    sigma, factor, name = check["sigma"], check["factor"], str(dtype).removeprefix("torch.")
    parts = []
    for key, what in (("effect", "the effect"), ("curvature", "the curvature (what MRD measures)")):
        if not check[f"{key}_ok"]:
            parts.append(f"{what} of sigma={sigma:g} on the sequence log-prob is {check[f'{key}_median']:.3g} "
                         f"(median), {check[f'{key}_ratio']:.3g}x the {name} rounding floor {check['floor']:.3g} "
                         f"(needs {factor:g}x)")
    if not check["scaling_ok"]:
        parts.append(f"the curvature grows {check['scaling_median']:.3g}x from sigma to 2 sigma (a local, "
                     f"second-order probe gives 4x)")
    return "floor check failed: " + "; ".join(parts)


def sigma_scaling_check(model: torch.nn.Module, batches: Iterable[Batch], cfg: Optional[MRDConfig] = None,
                        **overrides: Any) -> dict[str, Any]:
    """Does the antithetic curvature part scale as sigma^2 (the second-order signal, arXiv 2504.06658 Thm 3.2)?

    Runs the antithetic estimator at sigma and 2*sigma with the same seed (so delta(2 sigma) = 2 delta(sigma)
    exactly) and returns the per-sample ratios ``mean_c(2 sigma) / mean_c(sigma)``; about 4 means the estimate is
    curvature, not rounding noise or higher-order terms. Warns when the median ratio is outside [3, 5].

    Returns:
        dict with sigma, draws, ratios (list), median_ratio, ok.
    """
    cfg = resolve_config(cfg, {"estimator": "antithetic", **overrides})
    batches = list(batches)
    ratios = (score_batches(model, batches, cfg, sigma=2 * cfg.sigma).estimate.mean
              / score_batches(model, batches, cfg).estimate.mean)
    median = float(ratios.median())
    if not (ok := 3.0 <= median <= 5.0):
        warnings.warn(f"antithetic curvature grew {median:.3g}x (median) from sigma={cfg.sigma:g} to 2*sigma, "
                      f"expected ~4", RuntimeWarning, stacklevel=2)
    return {"sigma": float(cfg.sigma), "draws": int(cfg.draws), "ratios": ratios.tolist(), "median_ratio": median,
            "ok": ok}

"""What the unlearning loop feeds the model: forget batches from a sampler, paired retain and IDK batches, MRD
scores for the sampler, and the forget / retain probability the stop rule reads.

Randomness (house rule 5): the forget order comes from the sampler (``make_generator(seed, "sampler", name,
epoch)``); retain rows of micro-batch ``m`` of step ``s`` on process ``r`` from
``make_generator(seed, "retain-pairing", s, m, r)``; IDK answers from ``make_generator(seed, "idk-answers", s, m,
r)``. So a step's batches depend only on (seed, step), which is what makes ``--resume`` bit-exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from mrdkit.data import EncodedSample, Sample, collate, encode_samples, iter_batches, pad_id
from mrdkit.errors import MrdkitError
from mrdkit.logprob import token_logprobs
from mrdkit.samplers import SAMPLERS, build, orient
from mrdkit.seeding import make_generator
from mrdkit.unlearning.config import UnlearnConfig

Batch = dict[str, Any]


def encode(samples: Sequence[Sample], tokenizer: Any, cfg: UnlearnConfig) -> list[EncodedSample]:
    """Token ids and labels with the run's template, token set and max length."""
    return encode_samples(samples, tokenizer, template=cfg.template, token_set=cfg.token_set,
                          max_length=cfg.max_length, encoding=cfg.encoding)


@dataclass
class Feed:
    """Builds the batches of one micro-step (rank ``rank`` of ``num_processes``)."""

    forget: list[Sample]
    forget_enc: list[EncodedSample]
    retain_enc: list[EncodedSample] | None
    idk: list[str] | None
    tokenizer: Any
    cfg: UnlearnConfig
    rank: int = 0

    @property
    def pad(self) -> int:
        return pad_id(self.tokenizer)

    def forget_batch(self, indices: Sequence[int]) -> Batch:
        return collate([self.forget_enc[i] for i in indices], self.pad)

    def retain_batch(self, step: int, micro: int, size: int) -> Batch | None:
        """``size`` retain rows: a random subset (with replacement only if the retain set is smaller)."""
        if not self.retain_enc:
            return None
        g = make_generator(self.cfg.seed, "retain-pairing", step, micro, self.rank)
        n = len(self.retain_enc)
        rows = torch.randperm(n, generator=g)[:size] if n >= size else torch.randint(n, (size,), generator=g)
        return collate([self.retain_enc[i] for i in rows.tolist()], self.pad)

    def idk_batch(self, indices: Sequence[int], step: int, micro: int) -> Batch | None:
        """The forget questions of the batch with seeded random "I don't know" answers (TOFU's IDK data)."""
        if self.idk is None:
            return None
        g = make_generator(self.cfg.seed, "idk-answers", step, micro, self.rank)
        picks = torch.randint(len(self.idk), (len(indices),), generator=g).tolist()
        samples = [self.forget[i].replace(answer=self.idk[j]) for i, j in zip(indices, picks)]
        return collate(encode(samples, self.tokenizer, self.cfg), self.pad)

    def batches(self, indices: Sequence[int], step: int, micro: int, *, retain: bool, idk: bool):
        """(forget, retain or None, idk or None) for one micro-batch; only what the method needs is built."""
        return (self.forget_batch(indices), self.retain_batch(step, micro, len(indices)) if retain else None,
                self.idk_batch(indices, step, micro) if idk else None)


# ------------------------------------------------------------------------------------------------ scores


def declared_direction(path: str | Path, key: str) -> str | None:
    """The direction ``key`` declares in the ``scores.json`` beside a ``mrd difficulty score`` output, if any."""
    from mrdkit.runs import read_json

    meta = Path(path).with_name("scores.json")
    if not meta.is_file():
        return None
    return read_json(meta).get("scores", {}).get(key, {}).get("direction")


def load_score_file(path: str | Path, key: str = "mrd", direction: str | None = None) -> dict[str, float]:
    """``{id: score}`` oriented so that HIGHER = EASIER, from a JSON-lines file with ``id`` and ``key`` columns:
    ``mrd.jsonl`` of ``mrd score`` (``key="mrd"``: high MRD = easy) or ``scores.jsonl`` of ``mrd difficulty score``
    (any score name; its direction is read from the ``scores.json`` beside it). ``direction`` (``easier`` /
    ``harder``: what a HIGH value of the column predicts) overrides the declared one; default ``easier``."""
    from mrdkit.runs import read_jsonl

    rows = read_jsonl(path)
    bad = next((i for i, r in enumerate(rows, 1) if not isinstance(r, dict) or "id" not in r or key not in r), None)
    if bad is not None:
        have = ", ".join(sorted(rows[bad - 1])) if isinstance(rows[bad - 1], dict) else type(rows[bad - 1]).__name__
        raise MrdkitError(f"{path} line {bad}: no {key!r} column (a score row needs 'id' and {key!r}; it has: "
                          f"{have}); pick one with --score-key")
    values = {str(r["id"]): float(r[key]) for r in rows if r[key] is not None}
    return orient(values, direction or declared_direction(path, key) or "easier")



def scores_for(samples: Sequence[Sample], scores: Mapping[str, float], source: str) -> list[float]:
    """Scores in sample order; a forget id without a score is an error naming it."""
    missing = [s.id for s in samples if s.id not in scores]
    if missing:
        raise MrdkitError(f"{len(missing)} forget sample(s) have no score in {source}, e.g. {missing[0]!r}; "
                          f"score the same forget set (mrd score / mrd difficulty score) first")
    return [float(scores[s.id]) for s in samples]


def mrd_scorer(model: torch.nn.Module, tokenizer: Any, samples: Sequence[Sample],
               cfg: UnlearnConfig, label: str = "sampler") -> Callable[[int], list[float]]:
    """``score(draws) -> per-sample MRD`` of the model's current weights, via :func:`mrdkit.scoring.score_mrd`.

    Every call uses the run seed, i.e. the same noise draws (common random numbers): when the ``refresh``
    sampler re-scores each epoch, score changes reflect the weights, not new noise. MRD's own defaults apply
    otherwise (all tokens scored, paper-notes section 1); the weights are restored bit-exactly after scoring.
    Each call shows its own progress bar naming K and how to avoid it (K = 100 forward passes per batch of
    samples can take minutes before the first unlearning step), on the main process only.
    """
    import os

    from mrdkit.progress import progress_bar
    from mrdkit.scoring import score_mrd

    # half-precision weights (weights_dtype under LoRA) are scored in fp32 one module at a time: the 1e-5 noise is
    # below bf16's resolution, and a full fp32 copy is what loading them in bf16 avoided
    half = any(p.dtype in (torch.bfloat16, torch.float16) for p in model.parameters())
    wide = {"compute_dtype": "float32", "perturb_mode": "lowmem"} if half else {}

    def score(draws: int) -> list[float]:
        title = f"on-the-fly MRD for {label}: K={draws} draws, {len(samples)} samples"
        show = None if os.environ.get("RANK", "0") == "0" else False
        with progress_bar(title, draws, show=show) as bar:
            result = score_mrd(model, list(samples), tokenizer=tokenizer, draws=draws, sigma=cfg.mrd_sigma,
                               estimator=cfg.mrd_estimator, seed=cfg.seed, template=cfg.template,
                               max_length=cfg.max_length, proxies=False, grad_norm=False, diagnostics=False,
                               progress=bar, **wide)
        return scores_for(samples, result.scores(), "on-the-fly MRD scores")

    return score


def sampler_needs_scores(name: str) -> bool:
    return getattr(SAMPLERS.get(name), "needs_scores", True)  # refresh has no flag: it always re-scores


def make_sampler(name: str, scores: list[float] | None, cfg: UnlearnConfig, n: int, *, rescore=None,
                 num_replicas: int = 1, rank: int = 0):
    """Build the forget sampler; ``refresh`` gets ``rescore(epoch) -> scores``."""
    kw = dict(cfg.sampler_kwargs, seed=cfg.seed, num_replicas=num_replicas, rank=rank)
    if name == "refresh":
        kw["rescore"] = rescore
    if scores is None and not sampler_needs_scores(name):
        kw["n"] = n
    return build(name, scores, **kw)


def initial_scores(sampler, scores, forget, model, tokenizer, cfg) -> tuple[list[float] | None, str | None, Any]:
    """(initial scores, their source, the on-the-fly scorer the ``refresh`` sampler re-scores with, or None)."""
    name = sampler if isinstance(sampler, str) else None
    wants = name is not None and sampler_needs_scores(name)
    scorer = mrd_scorer(model, tokenizer, forget, cfg, label=name or "") if wants else None
    if isinstance(scores, (str, Path)):
        loaded = load_score_file(scores, cfg.score_key, cfg.score_direction)
        return scores_for(forget, loaded, f"{scores} ({cfg.score_key})"), "file", scorer
    if scores is not None:
        return scores_for(forget, scores, "scores"), "given", scorer
    if scorer is not None:  # scored before LoRA and before any update: the start model's MRD
        return scorer(cfg.mrd_draws), "on-the-fly", scorer
    return None, None, None


def sampler_for(sampler, scores, scorer, cfg: UnlearnConfig, n: int, acc, resumed: dict | None):
    """The forget sampler, sharded over accelerate's processes; a resumed ``refresh`` keeps its epoch's scores."""
    if not isinstance(sampler, str):
        if getattr(sampler, "n", n) != n:
            raise MrdkitError(f"the sampler covers {sampler.n} samples but the forget set has {n}")
        return sampler
    rescore = None
    if sampler == "refresh":
        saved = (resumed or {}).get("sampler_scores")
        at = (resumed or {}).get("epoch")
        # a resumed epoch keeps the scores it had (they were computed from the weights at that epoch's start)
        rescore = lambda e: saved if saved is not None and e == at else scorer(cfg.rescore_draws)  # noqa: E731
        scores = saved if saved is not None else scores
    return make_sampler(sampler, scores, cfg, n, rescore=rescore, num_replicas=acc.num_processes,
                        rank=acc.process_index)


# ------------------------------------------------------------------------------------------------ epochs


def _base(sampler: Any) -> Any:
    return getattr(sampler, "inner", sampler)  # a refresh sampler's length is its inner sampler's


def epoch_length(sampler: Any, epoch: int) -> int:
    """Indices this process gets in ``epoch``, without triggering a re-scoring."""
    base = _base(sampler)
    old = base.epoch
    base.set_epoch(epoch)
    n = len(base)
    base.set_epoch(old)
    return n


def epoch_groups(sampler: Any, epoch: int, batch_size: int, grad_accum: int) -> list[list[list[int]]]:
    """The epoch's optimizer steps: each a list of ``<= grad_accum`` micro-batches of ``<= batch_size`` indices."""
    sampler.set_epoch(epoch)
    indices = list(iter(sampler))
    micro = [indices[i:i + batch_size] for i in range(0, len(indices), batch_size)]
    return [micro[i:i + grad_accum] for i in range(0, len(micro), grad_accum)]


def total_steps(sampler: Any, cfg: UnlearnConfig) -> int:
    """``max_steps`` if set, else ``sum_e ceil(ceil(len_e / batch_size) / grad_accum)`` over the epochs."""
    if cfg.max_steps is not None:
        return cfg.max_steps
    return sum(math.ceil(math.ceil(epoch_length(sampler, e) / cfg.batch_size) / cfg.grad_accum)
               for e in range(cfg.epochs))


# ------------------------------------------------------------------------------------------- measurement


def monitor_subset(items: Sequence[Any] | None, k: int) -> list[Any]:
    """``k`` evenly spaced items (all when ``k >= len``): a fixed retain panel for the log."""
    if not items or k <= 0:
        return []
    if k >= len(items):
        return list(items)
    return [items[(i * len(items)) // k] for i in range(k)]


def mean_probability(model: torch.nn.Module, encoded: Sequence[EncodedSample], batch_size: int,
                     pad: int) -> float | None:
    """Mean over samples of ``P(a|q) = exp((1/n) sum_t log p_t)`` (TOFU's length-normalised probability).

    This is the quantity of the stop rule ("mean token probability <= 0.02", paper-notes section 4). The model
    runs in eval mode (no dropout) and is put back in its previous mode.
    """
    if not encoded:
        return None
    was_training = model.training
    model.eval()
    try:
        means = [token_logprobs(model, b).mean() for b in iter_batches(encoded, batch_size, pad_token_id=pad)]
    finally:
        model.train(was_training)
    return float(torch.exp(torch.cat(means)).mean())

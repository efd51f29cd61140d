"""Forget-set samplers, including the MRD-guided ones (Feng et al., arXiv:2504.06658, paper-notes section 3).

``scores`` are per-index MRD values: HIGH MRD = fragile memory = EASY to unlearn. Every sampler is a
``torch.utils.data.Sampler`` whose randomness comes only from
``make_generator(seed, "sampler", name, epoch)`` (never the global RNG), so a (seed, epoch) pair fixes the
epoch's index stream. ``set_epoch(e)`` selects the epoch, as with ``DistributedSampler``.

Sharding: with ``num_replicas = R`` and ``rank = r`` each process yields ``global[r::R]`` of the SAME global
sequence, padded (by repeating its head, as ``DistributedSampler`` does) to a multiple of R so that every rank
gets ``ceil(len / R)`` indices. Inside a Hugging Face ``Trainer`` keep ``num_replicas=1``: accelerate already
splits the DataLoader's batches across processes (see :func:`trainer_with_sampler`).

Toy example used in the docstrings: ``scores = [0.1, 0.5, 0.3, 0.9, 0.7, 0.2]``, ``seed = 0``, epoch 0.

``scores`` may be any per-sample difficulty score with the same convention (higher = easier), e.g. a column of
``mrd difficulty score`` output. Usable from any PyTorch loop or a Hugging Face ``Trainer``
(:func:`trainer_with_sampler`); the unlearning loop builds its forget sampler here.
"""

from __future__ import annotations

import math
from typing import Any, Callable, ClassVar, Iterator, Sequence

import torch
from torch.utils.data import Sampler

from mrdkit.errors import MrdkitError
from mrdkit.registry import Registry
from mrdkit.seeding import make_generator

SAMPLERS: Registry[type[Sampler]] = Registry("sampler")


DIRECTIONS = ("easier", "harder")


def orient(values: dict[str, float], direction: str) -> dict[str, float]:
    """Scores turned so that HIGHER = EASIER, the convention of every sampler here: ``direction`` says what a HIGH
    value of the given score predicts (``easier``: as MRD; ``harder``: e.g. a predicted number of updates)."""
    from mrdkit.errors import MrdkitError

    if direction not in DIRECTIONS:
        raise MrdkitError(f"unknown score direction {direction!r} (known: {', '.join(DIRECTIONS)})")
    return dict(values) if direction == "easier" else {k: -v for k, v in values.items()}


def validate_scores(scores: Sequence[float] | torch.Tensor, *, nonnegative: bool = False) -> torch.Tensor:
    """Scores as a 1-D float64 tensor; NaN/Inf (or negatives when ``nonnegative``) raise naming the index."""
    t = torch.as_tensor(scores, dtype=torch.float64).detach().cpu()
    if t.ndim != 1 or t.numel() == 0:
        raise MrdkitError(f"sampler scores must be a non-empty 1-D sequence, got shape {tuple(t.shape)}")
    bad = (~torch.isfinite(t)).nonzero().flatten()
    if bad.numel():
        raise MrdkitError(f"sampler score at index {int(bad[0])} is {float(t[bad[0]])}; scores must be finite")
    neg = (t < 0).nonzero().flatten()
    if nonnegative and neg.numel():
        raise MrdkitError(f"sampler score at index {int(neg[0])} is {float(t[neg[0]])}; mode 'proportional' needs >= 0")
    return t


class MrdSampler(Sampler[int]):
    """Base class: subclasses return one epoch's global index sequence from :meth:`global_indices`.

    Args:
        scores: per-index MRD (higher = easier); optional for samplers that ignore it (then give ``n``).
        n: dataset size when ``scores`` is None.
        seed: run seed; the generator is ``make_generator(seed, "sampler", name, epoch)``.
        num_samples: indices per epoch (global, before sharding); default ``n``.
        num_replicas, rank: sharding of the global sequence (see module docstring).
    """

    name: ClassVar[str] = ""
    needs_scores: ClassVar[bool] = True
    nonnegative_scores: ClassVar[bool] = False

    def __init__(self, scores=None, *, n: int | None = None, seed: int = 0, num_samples: int | None = None,
                 num_replicas: int = 1, rank: int = 0) -> None:
        if not (num_replicas >= 1 and 0 <= rank < num_replicas):
            raise MrdkitError(f"sampler: need num_replicas >= 1, 0 <= rank < num_replicas; got {num_replicas}, {rank}")
        if num_samples is not None and num_samples < 1:
            raise MrdkitError(f"sampler: num_samples must be >= 1, got {num_samples}")
        self.seed, self.epoch, self.num_samples = int(seed), 0, num_samples
        self.num_replicas, self.rank = int(num_replicas), int(rank)
        self.scores: torch.Tensor | None = None
        if scores is not None:
            self.set_scores(scores)
        elif self.needs_scores or n is None or n < 1:
            raise MrdkitError(f"sampler {self.name!r} needs scores" + ("" if self.needs_scores else " or n >= 1"))
        else:
            self.n = int(n)

    def set_scores(self, scores) -> None:
        """Replace the scores (same length once set), e.g. after re-scoring MRD."""
        t = validate_scores(scores, nonnegative=self.nonnegative_scores)
        if self.scores is not None and t.numel() != self.n:
            raise MrdkitError(f"sampler {self.name!r}: got {t.numel()} new scores for {self.n} samples")
        self.scores, self.n = t, t.numel()

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose sequence the next ``iter()`` yields."""
        self.epoch = int(epoch)

    def generator(self) -> torch.Generator:
        return make_generator(self.seed, "sampler", self.name, self.epoch)

    def epoch_size(self) -> int:
        """Length of the global sequence of the current epoch."""
        return self.num_samples or self.n

    def global_indices(self) -> list[int]:
        """The current epoch's global index sequence (all ranks together)."""
        raise NotImplementedError  # pragma: no cover

    def _padded(self) -> list[int]:
        seq = self.global_indices()
        total = math.ceil(len(seq) / self.num_replicas) * self.num_replicas
        return [seq[i % len(seq)] for i in range(total)]

    def __iter__(self) -> Iterator[int]:
        return iter(self._padded()[self.rank :: self.num_replicas])

    def __len__(self) -> int:
        return math.ceil(self.epoch_size() / self.num_replicas)


def register_sampler(name: str, summary: str):
    def decorate(cls):
        cls.name = name
        return SAMPLERS.register(name, summary=summary)(cls)

    return decorate


def _cycle(seq: Sequence[int], m: int) -> list[int]:
    return [seq[i % len(seq)] for i in range(m)]


@register_sampler("sequential", "0, 1, ..., n-1 every epoch")
class SequentialSampler(MrdSampler):
    """Indices in dataset order, scores ignored. Toy: ``[0, 1, 2, 3, 4, 5]`` every epoch."""

    needs_scores = False

    def global_indices(self) -> list[int]:
        return _cycle(range(self.n), self.epoch_size())


@register_sampler("random", "a fresh uniform permutation per epoch")
class RandomSampler(MrdSampler):
    """Uniform without replacement: one permutation per epoch (more, concatenated, if ``num_samples > n``).

    Toy, seed 0: epoch 0 ``[5, 2, 1, 4, 0, 3]``, epoch 1 ``[2, 0, 4, 1, 5, 3]``.
    """

    needs_scores = False

    def global_indices(self) -> list[int]:
        g, m = self.generator(), self.epoch_size()
        perms = [torch.randperm(self.n, generator=g) for _ in range(math.ceil(m / self.n))]
        return torch.cat(perms)[:m].tolist()


# ------------------------------------------------------------------------------ MRD-guided samplers


class WeightedSampler(MrdSampler):
    """Draw ``epoch_size()`` indices WITH replacement, P(i) = w_i / sum w (``torch.multinomial``)."""

    def weights(self) -> torch.Tensor:
        raise NotImplementedError  # pragma: no cover

    def probabilities(self) -> torch.Tensor:
        """Normalised sampling probabilities (n,)."""
        w = self.weights()
        return w / w.sum()

    def global_indices(self) -> list[int]:
        draws = torch.multinomial(self.probabilities(), self.epoch_size(), replacement=True, generator=self.generator())
        return draws.tolist()


@register_sampler("cga", "MRD curriculum GA: weight 0.6 at/above the median MRD, 0.4 below, with replacement")
class CGASampler(WeightedSampler):
    """The reference code's curriculum-GA rule (paper-notes section 3).

    ``w_i = high if MRD_i >= median(MRD) else low`` (median as ``numpy.median``: mean of the two middle
    values for even n); each step draws ONE index with replacement with P(i) = w_i / sum w; ``n`` draws per
    epoch; weights static. Toy (median 0.4), seed 0: epoch 0 ``[4, 4, 2, 3, 4, 1]``, epoch 1
    ``[0, 4, 4, 3, 4, 0]``.
    """

    def __init__(self, scores=None, *, high: float = 0.6, low: float = 0.4, **kw: Any) -> None:
        if not (high > 0 and low > 0):
            raise MrdkitError(f"cga: high and low weights must be > 0, got {high}, {low}")
        self.high, self.low = float(high), float(low)
        super().__init__(scores, **kw)

    def weights(self) -> torch.Tensor:
        median = torch.quantile(self.scores, 0.5)  # interpolated, = numpy.median
        high, low = (torch.tensor(w, dtype=torch.float64) for w in (self.high, self.low))
        return torch.where(self.scores >= median, high, low)


@register_sampler("mrd_weighted", "P(i) proportional to MRD_i or softmax(MRD / T), with replacement")
class MRDWeightedSampler(WeightedSampler):
    """``mode="proportional"``: P(i) = MRD_i / sum MRD (scores must be >= 0, not all 0);
    ``mode="softmax"``: P(i) = softmax(MRD / T)_i (T -> inf: uniform; T -> 0: the easiest sample only).

    Toy, seed 0, epoch 0: proportional ``[4, 3, 4, 1, 3, 2]``; softmax T = 0.1 ``[3, 3, 3, 3, 3, 3]``.
    """

    def __init__(self, scores=None, *, mode: str = "proportional", temperature: float = 1.0, **kw: Any) -> None:
        if mode not in ("proportional", "softmax"):
            raise MrdkitError(f"mrd_weighted: mode must be 'proportional' or 'softmax', got {mode!r}")
        if not temperature > 0:
            raise MrdkitError(f"mrd_weighted: temperature must be > 0, got {temperature}")
        self.mode, self.temperature = mode, float(temperature)
        self.nonnegative_scores = mode == "proportional"
        super().__init__(scores, **kw)

    def set_scores(self, scores) -> None:
        super().set_scores(scores)
        if self.mode == "proportional" and float(self.scores.sum()) <= 0:
            raise MrdkitError("mrd_weighted: all scores are 0; mode 'proportional' needs a positive total")

    def weights(self) -> torch.Tensor:
        if self.mode == "softmax":
            return torch.softmax(self.scores / self.temperature, dim=0)
        return self.scores


@register_sampler("curriculum", "strict easy-to-hard (MRD descending) with a growing pool")
class CurriculumSampler(MrdSampler):
    """Easy-to-hard order (MRD descending, ties by index) over a pool that grows with the epoch.

    Pool fraction ``p(e) = start_frac + (1 - start_frac) * min(1, r(e))`` with ``r(e) = e / pace_epochs``
    (``pacing="linear"``) or ``floor(steps * e / pace_epochs) / steps`` (``pacing="step"``: ``steps`` jumps);
    the pool is the easiest ``ceil(p(e) * n)`` samples, yielded in order (cycled up to ``num_samples`` if
    given, which keeps the epoch length fixed, e.g. for a ``Trainer``). No randomness.
    Toy (start_frac 0.5, pace_epochs 2): e0 ``[3, 4, 1]``, e1 ``[3, 4, 1, 2, 5]``, e2+ ``[3, 4, 1, 2, 5, 0]``.
    """

    hardest_first: ClassVar[bool] = False

    def __init__(self, scores=None, *, start_frac: float = 0.5, pace_epochs: int = 2, pacing: str = "linear",
                 steps: int = 1, **kw: Any) -> None:
        if not (0 < start_frac <= 1 and pace_epochs >= 0 and steps >= 1 and pacing in ("linear", "step")):
            raise MrdkitError(f"{self.name}: need 0 < start_frac <= 1, pace_epochs >= 0, steps >= 1, pacing in "
                              f"('linear', 'step'); got {start_frac}, {pace_epochs}, {steps}, {pacing!r}")
        self.start_frac, self.pace_epochs, self.pacing, self.steps = float(start_frac), int(pace_epochs), pacing, steps
        super().__init__(scores, **kw)

    def order(self) -> list[int]:
        """All indices easy-to-hard (hard-to-easy for the anti-curriculum); ties by index."""
        def key(i: int) -> tuple[float, int]:
            score = float(self.scores[i])
            return (score if self.hardest_first else -score, i)

        return sorted(range(self.n), key=key)

    def pool_fraction(self, epoch: int) -> float:
        ratio = 1.0 if self.pace_epochs == 0 else epoch / self.pace_epochs
        if self.pacing == "step":
            ratio = math.floor(self.steps * ratio + 1e-9) / self.steps
        return self.start_frac + (1.0 - self.start_frac) * min(1.0, ratio)

    def pool_size(self) -> int:
        return max(1, math.ceil(self.pool_fraction(self.epoch) * self.n - 1e-9))  # 1e-9: 0.3 * 10 is 3.0000000000000004

    def epoch_size(self) -> int:
        return self.num_samples or self.pool_size()

    def global_indices(self) -> list[int]:
        return _cycle(self.order()[: self.pool_size()], self.epoch_size())


@register_sampler("anti_curriculum", "strict hard-to-easy (MRD ascending) with a growing pool")
class AntiCurriculumSampler(CurriculumSampler):
    """:class:`CurriculumSampler` hardest (lowest MRD) first; the paper's open question 3.

    Toy (start_frac 0.5, pace_epochs 2): e0 ``[0, 5, 2]``, e1 ``[0, 5, 2, 1, 4]``, e2+ ``[0, 5, 2, 1, 4, 3]``.
    """

    hardest_first = True


@register_sampler("refresh", "any sampler whose MRD scores are recomputed at every new epoch")
class RefreshSampler(Sampler[int]):
    """Wrap a score-based sampler and call ``rescore(epoch) -> scores`` when a NEW epoch is set.

    ``rescore`` is typically a cheap MRD re-scoring of the forget set with the current weights (few draws).
    It is called at most once per epoch (a ``Trainer`` calls ``set_epoch`` twice per epoch); the initial
    ``scores`` count as epoch 0's, and without them ``rescore(0)`` runs at construction.

    Args:
        scores: initial scores or None.
        rescore: callback ``epoch -> scores`` (same length).
        inner: registered sampler name (built with ``seed``, ``num_samples``, sharding and ``**inner_kw``).

    Toy: ``inner="curriculum", start_frac=1`` and ``rescore(e)`` = the toy scores reversed
    (``[0.2, 0.7, 0.9, 0.3, 0.5, 0.1]``): epoch 0 ``[3, 4, 1, 2, 5, 0]``, epoch 1 ``[2, 1, 4, 3, 0, 5]``.
    """

    def __init__(self, scores=None, *, rescore: Callable[[int], Sequence[float]], inner: str = "cga", **inner_kw: Any):
        if inner == "refresh" or not SAMPLERS.get(inner).needs_scores:
            raise MrdkitError(f"refresh: inner sampler {inner!r} does not use scores")
        self.rescore = rescore
        self.inner: MrdSampler = SAMPLERS.get(inner)(rescore(0) if scores is None else scores, **inner_kw)
        self._scored_epoch = 0

    @property
    def n(self) -> int:
        return self.inner.n

    @property
    def epoch(self) -> int:
        return self.inner.epoch

    @property
    def scores(self) -> torch.Tensor:
        return self.inner.scores

    def set_epoch(self, epoch: int) -> None:
        if int(epoch) != self._scored_epoch:
            self.inner.set_scores(self.rescore(int(epoch)))
            self._scored_epoch = int(epoch)
        self.inner.set_epoch(epoch)

    def __iter__(self) -> Iterator[int]:
        return iter(self.inner)

    def __len__(self) -> int:
        return len(self.inner)


def build(name: str, scores=None, *, seed: int = 0, num_samples: int | None = None, **kw: Any) -> Sampler[int]:
    """Build a registered sampler: ``build("cga", mrd_scores, seed=0)``.

    ``kw`` are the sampler's own options (see each class) plus ``n`` (when no scores), ``num_replicas``, ``rank``.
    Unknown names raise a did-you-mean :class:`MrdkitError`; unknown options raise one naming the option.
    """
    cls = SAMPLERS.get(name)
    try:
        return cls(scores, seed=seed, num_samples=num_samples, **kw)
    except TypeError as exc:
        if "unexpected keyword argument" not in str(exc):
            raise
        raise MrdkitError(f"sampler {name!r}: {exc}") from None


def trainer_with_sampler(trainer_cls: type, sampler: Sampler[int]) -> type:
    """Subclass a Hugging Face ``Trainer`` class so that training draws forget samples from ``sampler``.

    Recipe (transformers 5.x, whose ``Trainer._get_train_sampler(self, train_dataset=None)`` builds the
    training sampler)::

        sampler = build("cga", mrd_scores, seed=0)
        trainer = trainer_with_sampler(Trainer, sampler)(model=model, args=args, train_dataset=forget_ds)
        trainer.train()

    The Trainer calls ``sampler.set_epoch(epoch)`` each epoch. With several processes, keep the sampler's
    ``num_replicas=1``: accelerate shards the DataLoader's batches across ranks itself.
    """

    def _get_train_sampler(self, train_dataset=None):
        dataset = self.train_dataset if train_dataset is None else train_dataset
        if len(dataset) != sampler.n:
            raise MrdkitError(f"sampler covers {sampler.n} samples but the train dataset has {len(dataset)}")
        return sampler

    name = f"{trainer_cls.__name__}WithMrdSampler"
    return type(name, (trainer_cls,), {"_get_train_sampler": _get_train_sampler, "mrd_sampler": sampler})

"""The sampler base class, registry and the score-free samplers (``sequential``, ``random``).

Conventions (randomness only from ``make_generator(seed, "sampler", name, epoch)``, ``set_epoch``, sharding as
``global[r::R]`` padded to a multiple of R) are described in :mod:`mrdkit.unlearning.samplers`; the MRD-guided
samplers are in :mod:`mrdkit.unlearning.guided_samplers`. Use ``SAMPLERS`` through
:mod:`mrdkit.unlearning.samplers`, which imports both modules, so that every sampler is registered.
"""

from __future__ import annotations

import math
from typing import ClassVar, Iterator, Sequence

import torch
from torch.utils.data import Sampler

from mrdkit.errors import MrdkitError
from mrdkit.registry import Registry
from mrdkit.seeding import make_generator

SAMPLERS: Registry[type[Sampler]] = Registry("sampler")


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


def _register(name: str, summary: str):
    def decorate(cls):
        cls.name = name
        return SAMPLERS.register(name, summary=summary)(cls)

    return decorate


def _cycle(seq: Sequence[int], m: int) -> list[int]:
    return [seq[i % len(seq)] for i in range(m)]


@_register("sequential", "0, 1, ..., n-1 every epoch")
class SequentialSampler(MrdSampler):
    """Indices in dataset order, scores ignored. Toy: ``[0, 1, 2, 3, 4, 5]`` every epoch."""

    needs_scores = False

    def global_indices(self) -> list[int]:
        return _cycle(range(self.n), self.epoch_size())


@_register("random", "a fresh uniform permutation per epoch")
class RandomSampler(MrdSampler):
    """Uniform without replacement: one permutation per epoch (more, concatenated, if ``num_samples > n``).

    Toy, seed 0: epoch 0 ``[5, 2, 1, 4, 0, 3]``, epoch 1 ``[2, 0, 4, 1, 5, 3]``.
    """

    needs_scores = False

    def global_indices(self) -> list[int]:
        g, m = self.generator(), self.epoch_size()
        perms = [torch.randperm(self.n, generator=g) for _ in range(math.ceil(m / self.n))]
        return torch.cat(perms)[:m].tolist()

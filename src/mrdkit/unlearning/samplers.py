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

The base class, registry and score-free samplers live in :mod:`mrdkit.unlearning.sampler_base`, the MRD-guided
ones in :mod:`mrdkit.unlearning.guided_samplers` (imported here, so every sampler is registered whenever
``SAMPLERS`` is reachable from this module); this module adds ``refresh``, :func:`build` and the ``Trainer`` hook.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence

import torch
from torch.utils.data import Sampler

from mrdkit.errors import MrdkitError
from mrdkit.unlearning.guided_samplers import (  # noqa: F401  (re-exported; importing it registers them)
    AntiCurriculumSampler,
    CGASampler,
    CurriculumSampler,
    MRDWeightedSampler,
    _WeightedSampler,
)
from mrdkit.unlearning.sampler_base import (  # noqa: F401  (re-exported)
    SAMPLERS,
    MrdSampler,
    RandomSampler,
    SequentialSampler,
    _cycle,
    _register,
    validate_scores,
)


@_register("refresh", "any sampler whose MRD scores are recomputed at every new epoch")
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

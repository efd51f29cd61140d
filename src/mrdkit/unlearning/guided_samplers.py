"""MRD-guided forget-set samplers (Feng et al., arXiv:2504.06658, paper-notes section 3): ``cga``,
``mrd_weighted``, ``curriculum`` and ``anti_curriculum``.

``scores`` are per-index MRD values: HIGH MRD = fragile memory = EASY to unlearn. Registered in ``SAMPLERS`` when
imported (:mod:`mrdkit.unlearning.samplers` imports this module). Toy example used in the docstrings:
``scores = [0.1, 0.5, 0.3, 0.9, 0.7, 0.2]``, ``seed = 0``, epoch 0.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch

from mrdkit.errors import MrdkitError
from mrdkit.unlearning.sampler_base import MrdSampler, _cycle, _register


class _WeightedSampler(MrdSampler):
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


@_register("cga", "MRD curriculum GA: weight 0.6 at/above the median MRD, 0.4 below, with replacement")
class CGASampler(_WeightedSampler):
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


@_register("mrd_weighted", "P(i) proportional to MRD_i or softmax(MRD / T), with replacement")
class MRDWeightedSampler(_WeightedSampler):
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


@_register("curriculum", "strict easy-to-hard (MRD descending) with a growing pool")
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
        sign = 1.0 if self.hardest_first else -1.0
        return sorted(range(self.n), key=lambda i: (sign * float(self.scores[i]), i))

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


@_register("anti_curriculum", "strict hard-to-easy (MRD ascending) with a growing pool")
class AntiCurriculumSampler(CurriculumSampler):
    """:class:`CurriculumSampler` hardest (lowest MRD) first; the paper's open question 3.

    Toy (start_frac 0.5, pace_epochs 2): e0 ``[0, 5, 2]``, e1 ``[0, 5, 2, 1, 4]``, e2+ ``[0, 5, 2, 1, 4, 3]``.
    """

    hardest_first = True

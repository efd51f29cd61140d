"""Settings of an MRD scoring run (Feng et al. 2025, arXiv:2504.06658): one object passed from the command line
down to the noise, instead of its fields copied keyword by keyword.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Optional

from mrdkit.data.encode import ENCODINGS, TOKEN_SETS
from mrdkit.errors import MrdkitError

PERTURB_MODES = ("copy", "lowmem")
SHARDS = ("draws", "samples")
# The sigma a scoring run accepts. The paper uses 1e-5 (arXiv:2504.06658, section 4). Below 1e-9 the curvature
# part, which grows as sigma^2, is ~1e-18 of a weight's effect: under float64 rounding of any model. Above 0.1 the
# noise is as large as typical weights (std ~0.02-0.1): the perturbed model is another model, and MRD is no longer
# the local (second-order) measure the paper derives. The floor check tests the range in between on the model.
SIGMA_RANGE = (1e-9, 0.1)


@dataclass
class MRDConfig:
    """Settings of an MRD scoring run. Defaults follow paper-notes section 1.

    sigma 1e-5 and token_set "all" (every token after the first, up to the first EOS) match the reference code, and
    the ``joint`` encoding gives its token sequence (the templated prompt and answer tokenized as one string, as
    TOFU's data module does); draws 100 is the paper's K (its code uses 5-10); ``antithetic`` is the low-variance
    estimator (paper-notes section 2), ``paper`` the reference estimator.
    """

    estimator: str = "antithetic"
    draws: int = 100
    sigma: float = 1e-5
    seed: int = 0
    scheme: str = "mrdkit"
    token_set: str = "all"
    template: str = "auto"
    encoding: str = "joint"
    max_length: int = 512
    batch_size: int = 16
    param_pattern: Optional[str] = None
    relative: bool = False
    clip: Optional[float] = None
    proxies: bool = True
    grad_norm: bool = True
    checkpoint_every: int = 5
    diagnostics: bool = True
    perturb_mode: str = "copy"  # copy | lowmem (one module's weights cloned at a time; same numbers)
    shard: str = "draws"  # multi-process split: draws | samples (mrdkit.scoring.distributed; same numbers)
    # keep a run whose floor check failed (every sample then unresolved) instead of refusing it
    allow_floor: bool = False
    # half-precision (bf16 / fp16) weights scored in this dtype module by module (lowmem mode, no full wide copy);
    # None: the weights' own dtype, which must then be float32 / float64
    compute_dtype: Optional[str] = None

    def validate(self, *, allow_zero_sigma: bool = False) -> MRDConfig:
        """Raise a one-line :class:`MrdkitError` for values that cannot work. ``allow_zero_sigma``: the engine's
        own degenerate check (sigma = 0 gives exactly zero change), never a scoring run."""
        from mrdkit.scoring.estimators import ESTIMATORS

        ESTIMATORS.get(self.estimator)
        ok = isinstance(self.sigma, (int, float)) and math.isfinite(self.sigma)
        if not (ok and (self.sigma > 0 or (allow_zero_sigma and self.sigma == 0))):
            raise MrdkitError(f"sigma must be a finite positive number, got {self.sigma!r}")
        if not allow_zero_sigma:
            check_sigma_range(float(self.sigma))
        if self.clip is not None and not (isinstance(self.clip, (int, float)) and math.isfinite(self.clip)
                                          and self.clip > 0):
            raise MrdkitError(f"clip must be a positive number (the largest MRD kept; the reference code clips at "
                              f"2), got {self.clip!r}: a clip <= 0 would replace every MRD by it")
        if self.draws < 1:
            raise MrdkitError(f"draws (K) must be >= 1, got {self.draws}")
        if self.max_length < 2:
            raise MrdkitError(f"max_length must be >= 2 tokens (one to condition on, one to score), got "
                              f"{self.max_length}")
        if self.batch_size < 1 or self.checkpoint_every < 1:
            raise MrdkitError("batch_size and checkpoint_every must be >= 1")
        if self.token_set not in TOKEN_SETS:
            raise MrdkitError(f"token_set must be one of {', '.join(TOKEN_SETS)}, got {self.token_set!r}")
        if self.encoding not in ENCODINGS:
            raise MrdkitError(f"encoding must be one of {', '.join(ENCODINGS)}, got {self.encoding!r}")
        if self.perturb_mode not in PERTURB_MODES or self.shard not in SHARDS:
            raise MrdkitError(f"perturb_mode must be copy|lowmem and shard draws|samples, got {self.perturb_mode!r}, "
                              f"{self.shard!r}")
        if self.compute_dtype is not None:
            if self.compute_dtype not in ("float32", "float64"):
                raise MrdkitError(f"compute_dtype must be float32 or float64, got {self.compute_dtype!r}")
            if self.perturb_mode != "lowmem" or self.scheme != "mrdkit":
                raise MrdkitError("compute_dtype scores half-precision weights one module at a time: it needs "
                                  "perturb_mode lowmem (--perturb-mode lowmem) and the mrdkit noise scheme")
        return self

    def torch_compute_dtype(self):
        """``compute_dtype`` as a ``torch.dtype`` (None when unset)."""
        import torch

        return None if self.compute_dtype is None else getattr(torch, self.compute_dtype)

    def noise(self) -> dict[str, Any]:
        """The settings that fix the noise of every draw (what a perturber takes)."""
        return {"sigma": float(self.sigma), "seed": int(self.seed), "relative": bool(self.relative),
                "scheme": self.scheme}

    def with_overrides(self, *, allow_zero_sigma: bool = False, **overrides: Any) -> MRDConfig:
        """A validated copy with some fields replaced; an unknown field is a one-line error naming it."""
        known = set(self.__dataclass_fields__)
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise MrdkitError(f"unknown MRD setting(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        return replace(self, **overrides).validate(allow_zero_sigma=allow_zero_sigma)


def check_sigma_range(sigma: float) -> None:
    """One-line refusal of a sigma outside :data:`SIGMA_RANGE`, with the reason."""
    low, high = SIGMA_RANGE
    if sigma < low:
        raise MrdkitError(f"sigma={sigma:g} is below {low:g}: the curvature MRD measures grows as sigma^2 and would "
                          f"sit under the rounding of float64 weights (paper: 1e-5)")
    if sigma > high:
        raise MrdkitError(f"sigma={sigma:g} is above {high:g}: noise that large replaces the weights instead of "
                          f"probing them, so MRD is no longer the local measure of the paper (paper: 1e-5)")

"""Stable entry point for MRD-guided samplers: ``mrdkit.samplers.build(name, scores, seed=..., **kw)``.

The implementations live in :mod:`mrdkit.unlearning.samplers`; this module only re-exports them so user code
(a PyTorch loop or a Hugging Face ``Trainer``) has a short import path.
"""

from mrdkit.unlearning.samplers import SAMPLERS, MrdSampler, build, trainer_with_sampler, validate_scores

__all__ = ["SAMPLERS", "MrdSampler", "build", "trainer_with_sampler", "validate_scores"]

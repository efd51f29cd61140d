"""Seeded generators: every random thing gets its own ``torch.Generator`` derived from (seed, component, index).

Deriving seeds by hashing the whole key makes streams independent of call order: the noise of MRD draw k for
parameter j is the same whether draws run in one process or are split over several, and whatever order the
parameters are visited in. The global RNG is never used.
"""

from __future__ import annotations

import hashlib
from typing import Any


def derive_seed(seed: int, *keys: Any) -> int:
    """Return a 63-bit seed from ``seed`` and ``keys`` (stable across processes and Python versions).

    Uses BLAKE2b over the ``repr`` of the key tuple, not Python's ``hash`` (salted per process).
    """
    payload = repr((int(seed),) + tuple(keys)).encode()
    return int.from_bytes(hashlib.blake2b(payload, digest_size=8).digest(), "little") & ((1 << 63) - 1)


def make_generator(seed: int, *keys: Any, device: str = "cpu"):
    """A ``torch.Generator`` on ``device`` seeded with :func:`derive_seed` (seed, keys)."""
    import torch

    gen = torch.Generator(device=device)
    gen.manual_seed(derive_seed(seed, *keys))
    return gen


def python_rng(seed: int, *keys: Any):
    """A ``random.Random`` seeded like :func:`make_generator`, for pure-Python shuffles."""
    import random

    return random.Random(derive_seed(seed, *keys))

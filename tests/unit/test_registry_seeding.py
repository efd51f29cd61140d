"""Registry did-you-mean errors and seeded generators."""

import pytest
import torch

from mrdkit.errors import MrdkitError
from mrdkit.registry import Registry
from mrdkit.seeding import derive_seed, make_generator


def test_registry_roundtrip_and_suggestion():
    reg = Registry("sampler")
    reg.register("curriculum", summary="easy first")(object)
    assert reg.get("curriculum") is object and reg.names() == ["curriculum"]
    with pytest.raises(MrdkitError, match="unknown sampler 'curiculum'; did you mean 'curriculum'"):
        reg.get("curiculum")
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("curriculum")(int)


def test_derive_seed_is_stable_and_key_sensitive():
    assert derive_seed(0, "mrd-noise", 3, "w") == derive_seed(0, "mrd-noise", 3, "w")
    seeds = {derive_seed(s, "mrd-noise", k) for s in range(3) for k in range(3)}
    assert len(seeds) == 9
    # Fixed values guard against accidental changes of the derivation (every result would silently change). By
    # hand: the low 63 bits of the little-endian BLAKE2b-64 digest of repr((0, 'x')) = "(0, 'x')".
    import hashlib

    by_hand = int.from_bytes(hashlib.blake2b(b"(0, 'x')", digest_size=8).digest(), "little") & (2**63 - 1)
    assert derive_seed(0, "x") == by_hand == 4581555091939458794
    assert derive_seed(0, "mrd-noise", 3, "w") == 1125410179378586541


def test_generators_do_not_touch_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = torch.randn(5, generator=make_generator(1, "a"))
    b = torch.randn(5, generator=make_generator(1, "a"))
    assert torch.equal(a, b)
    assert torch.equal(torch.rand(3), expected)

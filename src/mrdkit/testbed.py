"""The offline TOFU testbed: a *target* model fine-tuned on forget + retain QA and a *retain* model fine-tuned on
retain QA only, with the same recipe, initial weights and seeds: TOFU's setting (Maini et al. 2024,
arXiv:2401.06121), as the MRD paper uses it (Feng et al. 2025, arXiv:2504.06658), at CPU scale on real TOFU data.

Tiers: ``tiny`` (shipped in ``resources/testbed/tofu-tiny``; GPT-2 from config, BPE fitted on the testbed's TOFU
text) and ``smollm2`` (SmolLM2-135M-Instruct fully fine-tuned; built into the cache). Retain = the first 18
authors (``tofu:0..359``), forget = forget01 (``tofu:3960..3999``). The build checks three quality gates and
records the sha256 of the weights in ``testbed.json``; see ``docs/testbed.md``.

Recipes and data live in :mod:`mrdkit.testbed_recipes`, the build and its gates in :mod:`mrdkit.testbed_build`
(both re-exported here); this module finds, loads and verifies built testbeds.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mrdkit.errors import MrdkitError
from mrdkit.runs import read_json
from mrdkit.testbed_build import (  # noqa: F401  (re-exported)
    TestbedInfo,
    _build_into,
    _files,
    _replace_dir,
    _save,
    _train_one,
    base_model,
    build_testbed,
    check_gates,
    format_gates,
    measure,
    sha256,
)
from mrdkit.testbed_recipes import (  # noqa: F401  (re-exported)
    PACKAGED,
    TIERS,
    WEIGHTS,
    WHICH,
    TestbedRecipe,
    recipe_for,
    testbed_splits,
    tokenizer_texts,
)


# ---------------------------------------------------------------------------------------------- loading


def testbed_dir(tier: str = "tiny") -> Path:
    """Where ``tier``'s testbed lives: a build in ``cache_dir()/testbed/<tier>`` if any, else the packaged one."""
    from mrdkit.paths import cache_dir

    recipe = recipe_for(tier)
    for path in (cache_dir() / "testbed" / tier, PACKAGED / f"tofu-{tier}" if recipe.packaged else None):
        if path is not None and (path / "testbed.json").is_file():
            return path
    raise MrdkitError(f"no {tier} testbed found: build it with `mrd testbed build --tier {tier}`")


def testbed_info(tier: str = "tiny", path: str | os.PathLike | None = None) -> TestbedInfo:
    """The :class:`TestbedInfo` of an existing testbed (``path`` or :func:`testbed_dir`)."""
    root = Path(path) if path is not None else testbed_dir(tier)
    meta = read_json(root / "testbed.json")
    return TestbedInfo(meta["tier"], root, meta)


def load_testbed(tier: str = "tiny", which: str = "target", *, dtype: Any = "float32", device: str = "auto",
                 for_mrd: bool = False, path: str | os.PathLike | None = None,
                 attn_implementation: str | None = None):
    """Load the ``target`` or ``retain`` model of a testbed as a :class:`mrdkit.models.LoadedModel`.

    Weights stored in float16 are loaded as ``dtype`` (float32 by default): the rounded values are the model.
    """
    from mrdkit.models import load_model

    if which not in WHICH:
        raise MrdkitError(f"unknown testbed model {which!r} (known: {', '.join(WHICH)})")
    root = Path(path) if path is not None else testbed_dir(tier)
    lm = load_model(root / which, dtype=dtype, device=device, for_mrd=for_mrd,
                    attn_implementation=attn_implementation)
    lm.spec = f"testbed{'' if tier == 'tiny' else '-' + tier}:{which}"
    return lm


def load_testbed_spec(spec: str, **kwargs: Any):
    """``load_model`` entry point for ``testbed[-<tier>][:target|retain]`` (e.g. ``testbed:retain``)."""
    head, _, which = spec.partition(":")
    tier = head[len("testbed-"):] if head.startswith("testbed-") else "tiny"
    if head not in ("testbed", f"testbed-{tier}"):
        raise MrdkitError(f"bad testbed spec {spec!r} (use testbed, testbed:retain, testbed-smollm2:target)")
    return load_testbed(tier, which or "target", **kwargs)


def verify_testbed(tier: str = "tiny", path: str | os.PathLike | None = None) -> dict[str, bool]:
    """Recompute the sha256 of every file listed in ``testbed.json``; ``{relative path: matches}``."""
    info = testbed_info(tier, path)
    return {rel: (info.path / rel).is_file() and sha256(info.path / rel) == digest
            for rel, digest in info.meta["files"].items()}

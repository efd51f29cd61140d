"""The model-spec resolver of the public API and the CLI: testbed names on top of :func:`mrdkit.models.load_model`.

``mrdkit.models.load_model`` knows model directories, hub ids, ``tiny`` and ``smollm2``; this layer adds the names of
built testbeds, ``testbed[-<tier>][:target|retain]`` (e.g. ``testbed``, ``testbed:retain``,
``testbed-smollm2:target``), which map to folders (:func:`mrdkit.testbed.tofu.testbed_dir`). ``mrdkit.load_model`` and
every ``--model`` / ``--retain-model`` option go through :func:`load_model` here.
"""

from __future__ import annotations

import os
from typing import Any

from mrdkit.models import LoadedModel
from mrdkit.models import load_model as load_base_model


def is_testbed_spec(spec: str | os.PathLike) -> bool:
    """Whether ``spec`` names a testbed rather than a folder, hub id or built-in model."""
    spec = str(spec)
    return spec == "testbed" or spec.startswith(("testbed:", "testbed-"))


def load_model(spec: str | os.PathLike, **kwargs: Any) -> LoadedModel:
    """Load a model by spec: a testbed name (``testbed:retain``), else anything :func:`mrdkit.models.load_model`
    takes (a directory, a hub id, ``tiny...``, ``smollm2``) with the same keyword arguments.

    Testbed names accept ``dtype``, ``device``, ``for_mrd`` and ``attn_implementation`` (a testbed is a folder of
    its own tokenizer and weights, so ``tiny_texts``, ``seed`` and ``trust_remote_code`` do not apply)."""
    if not is_testbed_spec(spec):
        return load_base_model(spec, **kwargs)
    from mrdkit.testbed.tofu import load_testbed_spec

    keep = {k: v for k, v in kwargs.items() if k in ("dtype", "device", "for_mrd", "attn_implementation")}
    return load_testbed_spec(str(spec), **keep)


def load_tokenizer(spec: str | os.PathLike, **kwargs: Any) -> Any:
    """Only the tokenizer of a model spec, testbed names included (:func:`mrdkit.models.load_tokenizer`)."""
    from mrdkit.models import load_tokenizer as load_base_tokenizer

    if not is_testbed_spec(spec):
        return load_base_tokenizer(spec, **kwargs)
    from mrdkit.testbed.tofu import testbed_model_dir

    return load_base_tokenizer(testbed_model_dir(str(spec)))

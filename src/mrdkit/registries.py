"""One place that knows every registry, for ``mrd ls`` and for docs."""

from __future__ import annotations

import importlib

from mrdkit.registry import Registry

# (module, attribute) of each registry; import is lazy because most of them pull in torch.
REGISTRY_LOCATIONS = {
    "templates": ("mrdkit.data.templates", "TEMPLATES"),
    "estimators": ("mrdkit.scoring.estimators", "ESTIMATORS"),
    "methods": ("mrdkit.unlearning.methods", "METHODS"),
    "samplers": ("mrdkit.unlearning.samplers", "SAMPLERS"),
    "metrics": ("mrdkit.evaluation.metrics", "METRICS"),
    "experiments": ("mrdkit.bench.experiments", "EXPERIMENTS"),
}


def load_registry(kind: str) -> Registry:
    """Import and return the registry called ``kind`` (e.g. ``"samplers"``)."""
    module, attr = REGISTRY_LOCATIONS[kind]
    return getattr(importlib.import_module(module), attr)


def all_registries() -> dict[str, list[tuple[str, str]]]:
    """``{kind: [(name, summary), ...]}`` for every registry that is installed."""
    out: dict[str, list[tuple[str, str]]] = {}
    for kind in REGISTRY_LOCATIONS:
        try:
            reg = load_registry(kind)
        except ModuleNotFoundError:
            continue
        out[kind] = [(e.name, str(e.meta.get("summary", ""))) for e in reg.entries()]
    return out

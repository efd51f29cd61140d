"""Recipes and data of the offline TOFU testbed (see :mod:`mrdkit.testbed`): the tiers, their fine-tuning and gate
settings, and the TOFU splits (Maini et al. 2024, arXiv:2401.06121) the two models are trained and measured on.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mrdkit.data import Sample, load_idk, load_tofu
from mrdkit.errors import MrdkitError
from mrdkit.finetune import FinetuneConfig

WHICH = ("target", "retain")
PACKAGED = Path(__file__).resolve().parent / "resources" / "testbed"
WEIGHTS = "model.safetensors"


@dataclass(frozen=True)
class TestbedRecipe:
    """How a tier is built. Gate thresholds: ``min_forget_accuracy`` (target on forget),
    ``min_accuracy_gap`` (target minus retain model on forget), ``max_forget_quality`` (KS p-value)."""

    __test__ = False  # not a pytest class
    tier: str
    base: str  # "tiny-gpt2": built from config with a fitted tokenizer; otherwise a load_model spec
    finetune: FinetuneConfig
    model: dict[str, int] = field(default_factory=dict)  # tiny sizes (mrdkit.tiny.tiny_config)
    n_retain: int = 360
    n_forget: int | None = None  # None: the whole forget split (tests use fewer)
    forget_split: str = "forget01"
    save_dtype: str = "float16"
    num_threads: int = 1  # pinned: CPU training results depend on the thread count; 0 = leave as is
    packaged: bool = False
    min_forget_accuracy: float = 0.9
    min_accuracy_gap: float = 0.2
    max_forget_quality: float = 0.01


TIERS: dict[str, TestbedRecipe] = {
    # Sizes/lr from docs/environment.md (4 layers, d 256, vocab 4096, AdamW 2e-3, batch 32). No dropout (TOFU's
    # Llama-2 has none; memorisation is the point). Early stop at running train accuracy 0.97: the shipped build
    # stopped at epoch 22 (target) / 29 (retain model). fp16 storage: 2 x 8.7 MB, under the 25 MB budget.
    "tiny": TestbedRecipe(
        tier="tiny", base="tiny-gpt2", packaged=True,
        model=dict(vocab_size=4096, n_layer=4, d_model=256, n_head=4, max_position=512),
        finetune=FinetuneConfig(epochs=60, lr=2e-3, batch_size=32, warmup_steps=20, schedule="cosine",
                                target_accuracy=0.97, template="plain")),
    # TOFU's recipe (full fine-tune, AdamW, weight decay 0.01, warmup, 5 epochs at lr 1e-5 for 7B) with a higher
    # lr and more epochs for a 135M model; not run to completion on the project's CPUs.
    "smollm2": TestbedRecipe(
        tier="smollm2", base="smollm2", save_dtype="float32", num_threads=0,
        finetune=FinetuneConfig(epochs=10, lr=5e-5, batch_size=8, weight_decay=0.01, warmup_steps=10,
                                schedule="cosine", target_accuracy=0.95, template="chat")),
}


def recipe_for(tier: str = "tiny", **overrides: Any) -> TestbedRecipe:
    """The tier's recipe with overrides: any :class:`FinetuneConfig` field, tiny size, or recipe field."""
    if tier not in TIERS:
        raise MrdkitError(f"unknown testbed tier {tier!r} (known: {', '.join(TIERS)})")
    base = TIERS[tier]
    ft_keys = {f.name for f in dataclasses.fields(FinetuneConfig)}
    size_keys = {"vocab_size", "n_layer", "d_model", "n_head", "max_position"}
    rec_keys = {f.name for f in dataclasses.fields(TestbedRecipe)} - {"tier", "finetune", "model"}
    bad = sorted(set(overrides) - ft_keys - size_keys - rec_keys)
    if bad:
        raise MrdkitError(f"unknown testbed recipe key(s): {', '.join(bad)}")
    pick = lambda keys: {k: v for k, v in overrides.items() if k in keys}  # noqa: E731
    return dataclasses.replace(base, finetune=dataclasses.replace(base.finetune, **pick(ft_keys)),
                               model={**base.model, **pick(size_keys)}, **pick(rec_keys))


# ------------------------------------------------------------------------------------------------- data


def testbed_splits(tier: str | TestbedRecipe = "tiny") -> dict[str, list[Sample]]:
    """The testbed's data: ``forget``, ``retain`` (training rows), ``forget_perturbed``, ``retain_perturbed`` (the
    same retain rows), ``holdout`` (holdout01), ``real_authors[_perturbed]``, ``world_facts[_perturbed]``, ``idk``."""
    r = tier if isinstance(tier, TestbedRecipe) else recipe_for(tier)
    retain = load_tofu("retain_perturbed")[:r.n_retain] if r.n_retain <= 400 else load_tofu("full")[:r.n_retain]
    out = {"forget": load_tofu(r.forget_split)[:r.n_forget], "retain": retain,
           "forget_perturbed": load_tofu(f"{r.forget_split}_perturbed")[:r.n_forget],
           "retain_perturbed": load_tofu("retain_perturbed")[:r.n_retain], "holdout": load_tofu("holdout01")}
    for name in ("real_authors", "world_facts"):
        out[name], out[f"{name}_perturbed"] = load_tofu(name), load_tofu(f"{name}_perturbed")
    out["idk"] = [Sample(id=f"tofu_idk:{i}", prompt="", answer=t, kind="text") for i, t in enumerate(load_idk())]
    return out


def tokenizer_texts(splits: dict[str, list[Sample]]) -> list[str]:
    """Every text the testbed trains on or scores (questions, answers, paraphrased / perturbed answers, choices,
    IDK lines), deduplicated in first-seen order. Fitting the BPE on all of it means no evaluation split (e.g.
    holdout, whose names the training set never shows) is cut into more pieces than the forget set, which would
    leak membership through tokenization alone."""
    seen: dict[str, None] = {}
    for samples in splits.values():
        for s in samples:
            extra = s.extra
            for t in (s.prompt, s.answer, extra.get("paraphrased_answer"), *(extra.get("perturbed_answer") or []),
                      *(extra.get("choices") or [])):
                if t:
                    seen.setdefault(t, None)
    return list(seen)

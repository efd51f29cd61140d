"""The MUSE-News tiny testbed: a model that has really learnt raw news text, and one that never saw it.

MUSE (Shi et al. 2024, arXiv:2407.06460) fine-tunes Llama-2-7B on the News corpus (target) and, as the reference,
on the corpus without the forget set (retrain). At CPU scale (``shared/data/muse-news`` has no raw retain or
holdout articles, see its README):

- forget: the first ``per_doc`` token windows of ``length`` tokens (:func:`mrdkit.data.chunk_documents`) of each
  of the first ``forget_docs`` articles of ``raw/forget.json`` (row order; empty articles give none), at most
  ``n_forget`` chunks, ids ``muse_forget:<row>:<chunk>``;
- retain substitute: windows of the first ``retain_docs`` texts of ``privleak/retain2.json`` (retain2 split text),
  ``n_retain`` chunks; holdout: windows of ``privleak/holdout.json`` (never trained), ``n_holdout`` chunks;
- target = tiny GPT-2 fine-tuned on forget + retain chunks, retain model = the same recipe, initial weights and
  seed on the retain chunks only (MUSE's retrain model). NLL on every token (:mod:`mrdkit.testbed.finetune`,
  raw template).

The byte-level BPE is fitted on all three text sets, so membership cannot leak through tokenization. The testbed is
built into ``mrdkit.paths.cache_dir()/testbed/muse-tiny/<variant>`` on first use (not shipped): ``quick`` in about a
minute, ``full`` in a few minutes. ``muse_testbed.json`` records the recipe, training history and measurements.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from mrdkit.data import Sample
from mrdkit.errors import MrdkitError
from mrdkit.testbed.finetune import FinetuneConfig

WHICH = ("target", "retain")
SPLITS = ("forget", "retain", "holdout")


@dataclass(frozen=True)
class MuseRecipe:
    """Corpus subset, sizes and training recipe of one variant (gates: ``min_forget_accuracy`` of the target on
    forget chunks, ``min_accuracy_gap`` target minus retain model on them; recorded, not enforced)."""

    variant: str
    n_forget: int
    n_retain: int
    n_holdout: int
    forget_docs: int
    retain_docs: int
    holdout_docs: int
    per_doc: int = 2
    length: int = 64
    seed: int = 0
    num_threads: int = 1  # pinned: CPU training is bitwise repeatable only at a fixed thread count
    model: dict[str, int] = field(default_factory=lambda: dict(vocab_size=2048, n_layer=2, d_model=128, n_head=4,
                                                               max_position=512))
    finetune: FinetuneConfig = field(default_factory=lambda: FinetuneConfig(
        epochs=80, lr=3e-3, batch_size=24, warmup_steps=10, schedule="cosine", template="raw", token_set="all",
        target_accuracy=0.98))
    min_forget_accuracy: float = 0.9
    min_accuracy_gap: float = 0.2


VARIANTS: dict[str, MuseRecipe] = {
    # measured on 2 busy shared CPU cores: quick builds both models in ~1 min, full in ~7 min (its running train
    # accuracy plateaus near 0.978, hence the lower early-stopping target)
    "quick": MuseRecipe("quick", n_forget=24, n_retain=48, n_holdout=24, forget_docs=16, retain_docs=24,
                        holdout_docs=12),
    "full": MuseRecipe("full", n_forget=96, n_retain=192, n_holdout=96, forget_docs=40, retain_docs=64,
                       holdout_docs=48, per_doc=3,
                       finetune=FinetuneConfig(epochs=80, lr=3e-3, batch_size=32, warmup_steps=20,
                                               schedule="cosine", template="raw", token_set="all",
                                               target_accuracy=0.97)),
}


def recipe_for(variant: str = "quick", **overrides: Any) -> MuseRecipe:
    """The variant's recipe with recipe-field overrides (e.g. ``n_forget=8``; ``finetune`` may be a dict of
    :class:`~mrdkit.testbed.finetune.FinetuneConfig` fields to change)."""
    if variant not in VARIANTS:
        raise MrdkitError(f"unknown MUSE testbed variant {variant!r} (known: {', '.join(VARIANTS)})")
    base = VARIANTS[variant]
    unknown = sorted(set(overrides) - set(MuseRecipe.__dataclass_fields__))
    if unknown:
        raise MrdkitError(f"unknown MUSE testbed recipe fields: {', '.join(unknown)}")
    if isinstance(overrides.get("finetune"), dict):
        overrides["finetune"] = dataclasses.replace(base.finetune, **overrides["finetune"])
    return dataclasses.replace(base, **overrides)


def corpus_texts(recipe: MuseRecipe, data_dir: Optional[Path] = None) -> dict[str, list[str]]:
    """The documents each split is cut from (rows in file order; see the module docstring)."""
    from mrdkit.data import read_records
    from mrdkit.paths import muse_dir

    root = Path(data_dir) if data_dir else muse_dir()
    files = {"forget": ("raw/forget.json", recipe.forget_docs), "retain": ("privleak/retain2.json",
             recipe.retain_docs), "holdout": ("privleak/holdout.json", recipe.holdout_docs)}
    return {k: [str(t) for t in read_records(root / f, fmt="json")[:n]] for k, (f, n) in files.items()}


def select_chunks(chunks: list[Sample], per_doc: int, n: int) -> list[Sample]:
    """The first ``per_doc`` chunks of each document, in order, until ``n`` chunks."""
    out, seen = [], {}
    for c in chunks:
        doc = c.extra["doc"]
        if seen.get(doc, 0) < per_doc and len(out) < n:
            out.append(c)
            seen[doc] = seen.get(doc, 0) + 1
    return out


def make_chunks(recipe: MuseRecipe, texts: dict[str, list[str]], tokenizer: Any) -> dict[str, list[Sample]]:
    """Forget / retain / holdout chunks of the recipe (ids ``muse_<split>:<row>:<chunk>``)."""
    from mrdkit.data import chunk_documents

    sizes = {"forget": recipe.n_forget, "retain": recipe.n_retain, "holdout": recipe.n_holdout}
    out = {}
    for split, docs in texts.items():
        chunks = chunk_documents(docs, tokenizer, length=recipe.length, source=f"muse_{split}")
        out[split] = select_chunks(chunks, recipe.per_doc, sizes[split])
        if len(out[split]) < sizes[split]:
            raise MrdkitError(f"MUSE testbed: only {len(out[split])} {split} chunks from {len(docs)} documents, "
                              f"recipe asks for {sizes[split]}")
    return out


def measure(lm: Any, chunks: dict[str, list[Sample]]) -> dict[str, float]:
    """Teacher-forced token accuracy and probability per split, and the chunk MIA AUC (forget vs holdout)."""
    from mrdkit.evaluation.answers import answer_logprobs
    from mrdkit.evaluation.metrics import mia_auc
    from mrdkit.evaluation.muse import membership_rows

    row: dict[str, float] = {}
    for split in SPLITS:
        scores = answer_logprobs(lm.model, lm.tokenizer, chunks[split], token_set="all", batch_size=32)
        row[f"{split}_accuracy"] = sum(s.accuracy for s in scores) / len(scores)
        row[f"{split}_probability"] = sum(s.probability for s in scores) / len(scores)
    mk = {s: membership_rows(lm.model, lm.tokenizer, chunks[s], batch_size=32) for s in ("forget", "holdout")}
    row["mia_auc"] = mia_auc([r["min_k"] for r in mk["forget"].values()],
                             [r["min_k"] for r in mk["holdout"].values()])
    return row


def _train(recipe: MuseRecipe, tokenizer: Any, samples: list[Sample], log: Callable[[str], None], which: str):
    from mrdkit.testbed.finetune import finetune, fresh_tiny_gpt2

    lm = fresh_tiny_gpt2(recipe.model, tokenizer, recipe.seed)
    cfg = dataclasses.replace(recipe.finetune, seed=recipe.seed)
    def on_epoch(r: dict[str, Any]) -> None:
        if r["epoch"] % 10 == 0 or "stopped_early" in r:
            log(f"muse {which} model epoch {r['epoch']}: nll {r['train_nll']:.3f} acc {r['train_accuracy']:.3f}")

    history = finetune(lm.model, tokenizer, samples, cfg, on_epoch=on_epoch)
    return lm, history


def _build_into(tmp: Path, recipe: MuseRecipe, data_dir: Optional[Path], log: Callable[[str], None]) -> dict:
    from mrdkit.models import load_model
    from mrdkit.runs import atomic_write_jsonl
    from mrdkit.tiny import build_tiny_tokenizer
    from mrdkit.train import pinned_threads

    texts = corpus_texts(recipe, data_dir)
    tokenizer = build_tiny_tokenizer([t for docs in texts.values() for t in docs if t], recipe.model["vocab_size"],
                                     model_max_length=recipe.model["max_position"])
    chunks = make_chunks(recipe, texts, tokenizer)
    atomic_write_jsonl(tmp / "chunks.jsonl", [{"split": k, **s.to_dict()} for k in SPLITS for s in chunks[k]])
    train = {"target": chunks["forget"] + chunks["retain"], "retain": chunks["retain"]}
    models, metrics = {}, {}
    with pinned_threads(recipe.num_threads):
        for which in WHICH:
            lm, history = _train(recipe, tokenizer, train[which], log, which)
            lm.model.save_pretrained(tmp / which)
            tokenizer.save_pretrained(tmp / which)
            models[which] = {"n_params": lm.n_params, "epochs": len(history), "history": history}
            metrics[which] = measure(load_model(tmp / which, dtype="float32", device="cpu"), chunks)
    gap = metrics["target"]["forget_accuracy"] - metrics["retain"]["forget_accuracy"]
    gates = {"target_forget_accuracy": metrics["target"]["forget_accuracy"] >= recipe.min_forget_accuracy,
             "forget_accuracy_gap": gap >= recipe.min_accuracy_gap}
    return {"variant": recipe.variant, "recipe": dataclasses.asdict(recipe), "models": models, "metrics": metrics,
            "gates": gates, "sizes": {k: len(v) for k, v in chunks.items()},
            "subset": {k: len(v) for k, v in texts.items()}}


def muse_testbed_dir(variant: str = "quick") -> Path:
    """Where a variant lives: ``cache_dir()/testbed/muse-tiny/<variant>``."""
    from mrdkit.paths import cache_dir

    return cache_dir() / "testbed" / "muse-tiny" / variant


def build_muse_testbed(variant: str = "quick", out_dir: Optional[Path] = None, *, recipe: Optional[MuseRecipe] = None,
                       data_dir: Optional[Path] = None, log: Optional[Callable[[str], None]] = None) -> dict:
    """Build (or rebuild) a variant: chunks, both models, measurements; returns ``muse_testbed.json``'s payload.

    Built in a temporary sibling folder and renamed into place, so a killed build leaves no half testbed.
    """
    from mrdkit.runs import atomic_write_json, provenance, replace_dir

    recipe, log = recipe or recipe_for(variant), log or (lambda line: None)
    out = Path(out_dir) if out_dir is not None else muse_testbed_dir(recipe.variant)
    out.parent.mkdir(parents=True, exist_ok=True)
    start, tmp = time.perf_counter(), Path(tempfile.mkdtemp(prefix=f".tmp-{out.name}-", dir=out.parent))
    try:
        meta = _build_into(tmp, recipe, data_dir, log)
        meta.update(build_seconds=time.perf_counter() - start, provenance=provenance())
        atomic_write_json(tmp / "muse_testbed.json", meta)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_dir(tmp, out)
    return meta


def ensure_muse_testbed(variant: str = "quick", path: Optional[Path] = None,
                        log: Optional[Callable[[str], None]] = None, recipe: Optional[MuseRecipe] = None) -> Path:
    """The testbed folder (default: the variant's cache folder), built first if missing or made with another recipe.

    ``recipe`` overrides the variant's recipe (e.g. a smaller one in tests; give it its own ``path``)."""
    from mrdkit.runs import dumps, read_json

    recipe = recipe or recipe_for(variant)
    root = Path(path) if path is not None else muse_testbed_dir(recipe.variant)
    meta_file = root / "muse_testbed.json"
    stale = meta_file.is_file() and dumps(read_json(meta_file)["recipe"]) != dumps(dataclasses.asdict(recipe))
    if not meta_file.is_file() or stale:
        build_muse_testbed(recipe.variant, root, recipe=recipe, log=log)
    return root


def load_muse_testbed(variant: str = "quick", which: str = "target", *, dtype: Any = "float32", **where: Any):
    """The ``target`` or ``retain`` model (built on first use) as a :class:`mrdkit.models.LoadedModel`;
    ``where``: ``path`` / ``recipe`` / ``log`` of :func:`ensure_muse_testbed`."""
    from mrdkit.models import load_model

    if which not in WHICH:
        raise MrdkitError(f"unknown MUSE testbed model {which!r} (known: {', '.join(WHICH)})")
    lm = load_model(ensure_muse_testbed(variant, **where) / which, dtype=dtype, device="cpu")
    lm.spec = f"muse-tiny-{variant}:{which}"
    return lm


def muse_testbed_chunks(variant: str = "quick", **where: Any) -> dict[str, list[Sample]]:
    """The forget / retain / holdout chunks the testbed was built from (with their token ids)."""
    from mrdkit.runs import read_jsonl

    rows = read_jsonl(ensure_muse_testbed(variant, **where) / "chunks.jsonl")
    return {split: [Sample.from_dict(r) for r in rows if r["split"] == split] for split in SPLITS}


def muse_testbed_info(variant: str = "quick", **where: Any) -> dict:
    """``muse_testbed.json`` of the testbed (built first if missing)."""
    from mrdkit.runs import read_json

    return read_json(ensure_muse_testbed(variant, **where) / "muse_testbed.json")

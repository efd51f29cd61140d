"""The offline TOFU testbed: a *target* model fine-tuned on forget + retain QA and a *retain* model fine-tuned on
retain QA only, with the same recipe, initial weights and seeds: TOFU's setting (Maini et al. 2024,
arXiv:2401.06121), as the MRD paper uses it (Feng et al. 2025, arXiv:2504.06658), at CPU scale on real TOFU data.

Tiers: ``tiny`` (shipped in ``resources/testbed/tofu-tiny``; GPT-2 from config, BPE fitted on the testbed's TOFU
text) and ``smollm2`` (SmolLM2-135M-Instruct fully fine-tuned; built into the cache). Retain = the first 18
authors (``tofu:0..359``), forget = forget01 (``tofu:3960..3999``). The build checks three quality gates and
records the sha256 of the weights in ``testbed.json``; see ``docs/testbed.md``.

Sections: recipes and data (:data:`TIERS`, :func:`testbed_splits`), the build and its gates
(:func:`build_testbed`, resumable through ``.partial-<name>``), and finding / loading / verifying a built testbed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from mrdkit.data import Sample, load_idk, load_tofu
from mrdkit.errors import MrdkitError
from mrdkit.runs import atomic_write_json, json_roundtrip, provenance, read_json, refuse_if_differs, replace_dir
from mrdkit.testbed.finetune import FinetuneConfig, finetune
from mrdkit.train import pinned_threads

WHICH = ("target", "retain")
PACKAGED = Path(__file__).resolve().parent.parent / "resources" / "testbed"
WEIGHTS = "model.safetensors"


# ------------------------------------------------------------------------------------------ recipes and data


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


# ------------------------------------------------------------------------------------ build and gates


def base_model(recipe: TestbedRecipe, texts: list[str], seed: int):
    """The starting point of both models: a seeded tiny GPT-2 (dropout off) or a pretrained model."""
    from mrdkit.models import load_model
    from mrdkit.testbed.finetune import fresh_tiny_gpt2
    from mrdkit.tiny import build_tiny_tokenizer

    if recipe.base != "tiny-gpt2":
        return load_model(recipe.base, dtype="float32", device="cpu")
    tokenizer = build_tiny_tokenizer(texts, recipe.model["vocab_size"], model_max_length=recipe.model["max_position"])
    return fresh_tiny_gpt2(recipe.model, tokenizer, seed)


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def save_model(lm: Any, path: Path, dtype: str) -> None:
    """save_pretrained in ``dtype``; loaded back as float32, the rounded values ARE the model."""
    from mrdkit.models import resolve_dtype

    lm.model.to(resolve_dtype(dtype)).save_pretrained(path)
    lm.tokenizer.save_pretrained(path)


# ------------------------------------------------------------------------------------------------- gates


def measure(target: Any, retain: Any, splits: dict[str, list[Sample]], template: str,
            max_length: int = 512, encoding: str = "joint") -> dict[str, Any]:
    """Teacher-forced accuracy (forget, retain, holdout) of both models, forget truth ratios and forget quality."""
    from mrdkit.evaluation.answers import answer_logprobs, truth_ratios
    from mrdkit.evaluation.metrics import forget_quality

    out: dict[str, Any] = {"per_sample": {}}
    for which, lm in (("target", target), ("retain", retain)):
        row, per = {}, {}
        for split in ("forget", "retain", "holdout"):
            scores = answer_logprobs(lm.model, lm.tokenizer, splits[split], template=template,
                                     max_length=max_length, encoding=encoding)
            row[f"{split}_accuracy"] = sum(s.accuracy for s in scores) / len(scores)
            row[f"{split}_probability"] = sum(s.probability for s in scores) / len(scores)
            if split == "forget":
                per["forget_accuracy"] = {s.id: s.accuracy for s in scores}
        trs = truth_ratios(lm.model, lm.tokenizer, splits["forget_perturbed"], template=template, encoding=encoding,
                           max_length=max_length)
        per["forget_truth_ratio"] = {t.id: t.truth_ratio for t in trs}
        out[which], out["per_sample"][which] = row, per
    out["forget_quality"] = forget_quality(list(out["per_sample"]["target"]["forget_truth_ratio"].values()),
                                           list(out["per_sample"]["retain"]["forget_truth_ratio"].values()))
    return out


def check_gates(metrics: dict[str, Any], recipe: TestbedRecipe) -> dict[str, dict[str, Any]]:
    """The three quality gates as ``{name: {value, op, threshold, passed}}``."""
    t_acc, r_acc = metrics["target"]["forget_accuracy"], metrics["retain"]["forget_accuracy"]
    rows = [("target_forget_accuracy", t_acc, ">=", recipe.min_forget_accuracy),
            ("forget_accuracy_gap", t_acc - r_acc, ">=", recipe.min_accuracy_gap),
            ("forget_quality", metrics["forget_quality"], "<", recipe.max_forget_quality)]
    return {name: {"value": v, "op": op, "threshold": th, "passed": bool(v >= th if op == ">=" else v < th)}
            for name, v, op, th in rows}


def format_gates(gates: dict[str, dict[str, Any]]) -> str:
    """One line per gate: ``PASS target_forget_accuracy = 0.97 (>= 0.9)``."""
    return "\n".join(f"{'PASS' if g['passed'] else 'FAIL'} {n} = {g['value']:.4g} ({g['op']} {g['threshold']})"
                     for n, g in gates.items())


# ------------------------------------------------------------------------------------------------- build


@dataclass
class TestbedInfo:
    """A built testbed: its folder, ``testbed.json`` contents and whether every gate passed."""

    __test__ = False
    tier: str
    path: Path
    meta: dict[str, Any] = field(repr=False)

    def __str__(self) -> str:
        verdict = "all gates passed" if self.passed else "GATES FAILED"
        return f"{self.tier} testbed in {self.path} ({verdict}):\n{format_gates(self.gates)}"

    @property
    def passed(self) -> bool:
        return all(g["passed"] for g in self.meta["gates"].values())

    @property
    def gates(self) -> dict[str, dict[str, Any]]:
        return self.meta["gates"]


def train_one(which: str, recipe: TestbedRecipe, train: list[Sample], texts: list[str], seed: int, progress: bool,
               log: Callable[[str], None], checkpoint_dir: Path) -> tuple[Any, list[dict[str, Any]]]:
    from mrdkit.progress import progress_bar

    lm, cfg = base_model(recipe, texts, seed), dataclasses.replace(recipe.finetune, seed=seed)
    with progress_bar(f"{which} model (steps)", 1, show=progress) as bar:
        def on_epoch(r: dict[str, Any]) -> None:
            log(f"{which} epoch {r['epoch']}: nll {r['train_nll']:.4f} acc {r['train_accuracy']:.4f} "
                f"({r['seconds']:.1f} s)")

        return lm, finetune(lm.model, lm.tokenizer, train, cfg, on_epoch=on_epoch, progress=bar,
                            checkpoint_dir=checkpoint_dir)


def open_partial(out: Path, recipe: TestbedRecipe, seed: int, restart: bool, log: Callable[[str], None]) -> Path:
    """The work folder ``.partial-<name>`` beside ``out``: created, or reused to resume an unfinished build.

    It holds ``build.json`` (tier, seed, recipe), each finished model with ``<which>.done.json``, and the epoch
    checkpoints of the model in training (``<which>.ckpt``). Another build's folder is refused, not overwritten:
    it may hold hours of training (``restart`` discards it)."""
    part = out.with_name(f".partial-{out.name}")
    want = json_roundtrip({"tier": recipe.tier, "seed": seed, "recipe": dataclasses.asdict(recipe)})
    if restart:
        shutil.rmtree(part, ignore_errors=True)
    have = read_json(part / "build.json") if (part / "build.json").is_file() else None
    if have is not None:
        refuse_if_differs(have, want, f"{part} holds an unfinished build with other settings",
                          "rerun those settings to resume it, or pass --restart to discard it")
    if have is not None:
        log(f"resuming the unfinished build in {part}")
    part.mkdir(parents=True, exist_ok=True)
    atomic_write_json(part / "build.json", want)
    return part


def weight_hashes(root: Path) -> dict[str, str]:
    return {f"{w}/{name}": sha256(root / w / name) for w in WHICH for name in (WEIGHTS, "tokenizer.json")}


def build_into(tmp: Path, recipe: TestbedRecipe, splits: dict[str, list[Sample]], seed: int, progress: bool,
                log: Callable[[str], None]) -> dict[str, Any]:
    """Train and save both models in ``tmp``, reload them as float32, measure; the testbed.json payload."""
    from mrdkit.models import load_model

    texts = tokenizer_texts(splits) if recipe.base == "tiny-gpt2" else []
    data, models = {"target": splits["retain"] + splits["forget"], "retain": splits["retain"]}, {}
    with pinned_threads(recipe.num_threads):
        for which in WHICH:
            done = tmp / f"{which}.done.json"
            if done.is_file():  # trained and saved by an earlier, interrupted invocation
                models[which] = read_json(done)
                log(f"{which} model: already trained ({models[which]['epochs']} epochs), kept")
                continue
            lm, history = train_one(which, recipe, data[which], texts, seed, progress, log, tmp / f"{which}.ckpt")
            save_model(lm, tmp / which, recipe.save_dtype)
            models[which] = {"n_params": lm.n_params, "epochs": len(history), "history": history,
                             "train_ids": [s.id for s in data[which]]}
            atomic_write_json(done, models[which])
            shutil.rmtree(tmp / f"{which}.ckpt", ignore_errors=True)
            del lm  # one model in memory at a time (matters for smollm2)
        loaded = {w: load_model(tmp / w, dtype="float32", device="cpu") for w in WHICH}
        metrics = measure(loaded["target"], loaded["retain"], splits, recipe.finetune.template,
                          recipe.finetune.max_length, recipe.finetune.encoding)
        threads = torch.get_num_threads()
    return {"tier": recipe.tier, "seed": seed, "recipe": dataclasses.asdict(recipe), "models": models,
            "template": recipe.finetune.template, "token_set": recipe.finetune.token_set,
            "encoding": recipe.finetune.encoding,
            "splits": {k: len(v) for k, v in splits.items()}, "gates": check_gates(metrics, recipe),
            "metrics": metrics, "files": weight_hashes(tmp), "threads": threads}


def build_testbed(tier: str = "tiny", out_dir: str | os.PathLike | None = None, *, seed: int = 0,
                  progress: bool = True, recipe: TestbedRecipe | None = None, allow_failed_gates: bool = False,
                  log: Callable[[str], None] | None = None, restart: bool = False) -> TestbedInfo:
    """Build the target and retain models of ``tier``, check the gates, write ``testbed.json``.

    Args:
        tier: ``"tiny"`` or ``"smollm2"``.
        out_dir: destination folder (default: ``mrdkit.paths.cache_dir()/testbed/<tier>``, which
            :func:`load_testbed` prefers over the packaged copy). Built beside it, then renamed into place.
        seed: weight-initialisation, batch-order and dropout seed (the same for both models).
        progress: show progress bars.
        recipe: a full recipe (e.g. ``recipe_for("tiny", epochs=2)``); default: the tier's.
        allow_failed_gates: keep a testbed whose gates fail; otherwise it is moved to ``<out_dir>.failed`` and
            :class:`MrdkitError` is raised naming the failed gates.
        log: receives one line per epoch and the gate summary (default: silent).
        restart: discard an unfinished build of ``out_dir`` instead of resuming it. Without it, an interrupted
            build (``.partial-<name>`` beside ``out_dir``) resumes: finished models are kept and the one in
            training continues from its last epoch checkpoint, bitwise as if never interrupted.
    """
    from mrdkit.paths import cache_dir

    recipe, log = recipe or recipe_for(tier), log or (lambda line: None)
    out = Path(out_dir) if out_dir is not None else cache_dir() / "testbed" / recipe.tier
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    tmp = open_partial(out, recipe, seed, restart, log)
    try:
        meta = build_into(tmp, recipe, testbed_splits(recipe), seed, progress, log)
    except BaseException:
        log(f"build interrupted; the finished work is kept in {tmp}: rerun the same command to resume")
        raise
    for bookkeeping in (tmp / "build.json", *(tmp / f"{w}.done.json" for w in WHICH)):
        bookkeeping.unlink()
    meta.update(build_seconds=time.perf_counter() - start, provenance=provenance())
    atomic_write_json(tmp / "testbed.json", meta)
    for f in [tmp, *tmp.rglob("*")]:  # temp-file writers leave 0600/0700: a testbed is shipped data
        os.chmod(f, 0o755 if f.is_dir() else 0o644)
    info = TestbedInfo(recipe.tier, out, meta)
    log(format_gates(info.gates))
    if not info.passed and not allow_failed_gates:
        replace_dir(tmp, out.with_name(out.name + ".failed"))
        failed = ", ".join(n for n, g in info.gates.items() if not g["passed"])
        raise MrdkitError(f"testbed {recipe.tier} FAILED its quality gates ({failed}); the build is kept in "
                          f"{out.name}.failed for inspection (allow_failed_gates=True keeps it as the testbed)")
    replace_dir(tmp, out)
    return info


# ------------------------------------------------------------------------------------ find, load, verify


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


def parse_testbed_spec(spec: str) -> tuple[str, str]:
    """``(tier, which)`` of ``testbed[-<tier>][:target|retain]`` (e.g. ``testbed:retain`` -> ``("tiny", "retain")``)."""
    head, _, which = spec.partition(":")
    tier = head[len("testbed-"):] if head.startswith("testbed-") else "tiny"
    if head not in ("testbed", f"testbed-{tier}"):
        raise MrdkitError(f"bad testbed spec {spec!r} (use testbed, testbed:retain, testbed-smollm2:target)")
    which = which or "target"
    if which not in WHICH:
        raise MrdkitError(f"unknown testbed model {which!r} (known: {', '.join(WHICH)})")
    return tier, which


def load_testbed_spec(spec: str, **kwargs: Any):
    """``load_model`` entry point for ``testbed[-<tier>][:target|retain]`` (e.g. ``testbed:retain``)."""
    return load_testbed(*parse_testbed_spec(spec), **kwargs)


def testbed_model_dir(spec: str) -> Path:
    """The folder of the model a testbed spec names (its tokenizer and weights)."""
    tier, which = parse_testbed_spec(spec)
    return testbed_dir(tier) / which


def verify_testbed(tier: str = "tiny", path: str | os.PathLike | None = None) -> dict[str, bool]:
    """Recompute the sha256 of every file listed in ``testbed.json``; ``{relative path: matches}``."""
    info = testbed_info(tier, path)
    return {rel: (info.path / rel).is_file() and sha256(info.path / rel) == digest
            for rel, digest in info.meta["files"].items()}

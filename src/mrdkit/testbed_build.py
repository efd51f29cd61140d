"""Building the offline TOFU testbed (see :mod:`mrdkit.testbed`): train the target model (forget + retain) and the
retain model (retain only) from the same start, save them, measure them and check the three quality gates, as in
TOFU (Maini et al. 2024, arXiv:2401.06121) and the MRD paper (Feng et al. 2025, arXiv:2504.06658).
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

from mrdkit.data import Sample
from mrdkit.errors import MrdkitError
from mrdkit.finetune import finetune, pinned_threads
from mrdkit.runs import atomic_write_json, differing_keys, json_roundtrip, provenance, read_json
from mrdkit.testbed_recipes import WEIGHTS, WHICH, TestbedRecipe, recipe_for, testbed_splits, tokenizer_texts


# ------------------------------------------------------------------------------------------------ models


def base_model(recipe: TestbedRecipe, texts: list[str], seed: int):
    """The starting point of both models: a seeded tiny GPT-2 (dropout off) or a pretrained model."""
    from mrdkit.models import finish_loading, load_model
    from mrdkit.tiny import build_tiny_tokenizer, init_tiny_weights, tiny_config

    if recipe.base != "tiny-gpt2":
        return load_model(recipe.base, dtype="float32", device="cpu")
    config = tiny_config("gpt2", **recipe.model)
    config.resid_pdrop = config.embd_pdrop = config.attn_pdrop = 0.0
    tokenizer = build_tiny_tokenizer(texts, recipe.model["vocab_size"], model_max_length=recipe.model["max_position"])
    return finish_loading(init_tiny_weights(config, seed), tokenizer, "tiny-gpt2", device="cpu")


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _save(lm: Any, path: Path, dtype: str) -> None:
    """save_pretrained in ``dtype``; loaded back as float32, the rounded values ARE the model."""
    from mrdkit.models import resolve_dtype

    lm.model.to(resolve_dtype(dtype)).save_pretrained(path)
    lm.tokenizer.save_pretrained(path)


# ------------------------------------------------------------------------------------------------- gates


def measure(target: Any, retain: Any, splits: dict[str, list[Sample]], template: str,
            max_length: int = 512) -> dict[str, Any]:
    """Teacher-forced accuracy (forget, retain, holdout) of both models, forget truth ratios and forget quality."""
    from mrdkit.evaluation.answers import answer_logprobs, truth_ratios
    from mrdkit.evaluation.metrics import forget_quality

    out: dict[str, Any] = {"per_sample": {}}
    for which, lm in (("target", target), ("retain", retain)):
        row, per = {}, {}
        for split in ("forget", "retain", "holdout"):
            scores = answer_logprobs(lm.model, lm.tokenizer, splits[split], template=template,
                                     max_length=max_length)
            row[f"{split}_accuracy"] = sum(s.accuracy for s in scores) / len(scores)
            row[f"{split}_probability"] = sum(s.probability for s in scores) / len(scores)
            if split == "forget":
                per["forget_accuracy"] = {s.id: s.accuracy for s in scores}
        trs = truth_ratios(lm.model, lm.tokenizer, splits["forget_perturbed"], template=template,
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


def _train_one(which: str, recipe: TestbedRecipe, train: list[Sample], texts: list[str], seed: int, progress: bool,
               log: Callable[[str], None], checkpoint_dir: Path) -> tuple[Any, list[dict[str, Any]]]:
    from mrdkit.progress import progress_bar

    lm, cfg = base_model(recipe, texts, seed), dataclasses.replace(recipe.finetune, seed=seed)
    with progress_bar(f"{which} model (steps)", 1, show=progress) as bar:
        def on_epoch(r: dict[str, Any]) -> None:
            log(f"{which} epoch {r['epoch']}: nll {r['train_nll']:.4f} acc {r['train_accuracy']:.4f} "
                f"({r['seconds']:.1f} s)")

        return lm, finetune(lm.model, lm.tokenizer, train, cfg, on_epoch=on_epoch, progress=bar,
                            checkpoint_dir=checkpoint_dir)


def _open_partial(out: Path, recipe: TestbedRecipe, seed: int, restart: bool, log: Callable[[str], None]) -> Path:
    """The work folder ``.partial-<name>`` beside ``out``: created, or reused to resume an unfinished build.

    It holds ``build.json`` (tier, seed, recipe), each finished model with ``<which>.done.json``, and the epoch
    checkpoints of the model in training (``<which>.ckpt``). Another build's folder is refused, not overwritten:
    it may hold hours of training (``restart`` discards it)."""
    part = out.with_name(f".partial-{out.name}")
    want = json_roundtrip({"tier": recipe.tier, "seed": seed, "recipe": dataclasses.asdict(recipe)})
    if restart:
        shutil.rmtree(part, ignore_errors=True)
    have = read_json(part / "build.json") if (part / "build.json").is_file() else None
    if have is not None and have != want:
        diff = differing_keys(have, want)
        raise MrdkitError(f"{part} holds an unfinished build with other settings (differs in: {', '.join(diff)}); "
                          f"rerun those settings to resume it, or pass --restart to discard it")
    if have is not None:
        log(f"resuming the unfinished build in {part}")
    part.mkdir(parents=True, exist_ok=True)
    atomic_write_json(part / "build.json", want)
    return part


def _files(root: Path) -> dict[str, str]:
    return {f"{w}/{name}": sha256(root / w / name) for w in WHICH for name in (WEIGHTS, "tokenizer.json")}


def _build_into(tmp: Path, recipe: TestbedRecipe, splits: dict[str, list[Sample]], seed: int, progress: bool,
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
            lm, history = _train_one(which, recipe, data[which], texts, seed, progress, log, tmp / f"{which}.ckpt")
            _save(lm, tmp / which, recipe.save_dtype)
            models[which] = {"n_params": lm.n_params, "epochs": len(history), "history": history,
                             "train_ids": [s.id for s in data[which]]}
            atomic_write_json(done, models[which])
            shutil.rmtree(tmp / f"{which}.ckpt", ignore_errors=True)
            del lm  # one model in memory at a time (matters for smollm2)
        loaded = {w: load_model(tmp / w, dtype="float32", device="cpu") for w in WHICH}
        metrics = measure(loaded["target"], loaded["retain"], splits, recipe.finetune.template,
                          recipe.finetune.max_length)
        threads = torch.get_num_threads()
    return {"tier": recipe.tier, "seed": seed, "recipe": dataclasses.asdict(recipe), "models": models,
            "template": recipe.finetune.template, "token_set": recipe.finetune.token_set,
            "splits": {k: len(v) for k, v in splits.items()}, "gates": check_gates(metrics, recipe),
            "metrics": metrics, "files": _files(tmp), "threads": threads}


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
    tmp = _open_partial(out, recipe, seed, restart, log)
    try:
        meta = _build_into(tmp, recipe, testbed_splits(recipe), seed, progress, log)
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
        _replace_dir(tmp, out.with_name(out.name + ".failed"))
        failed = ", ".join(n for n, g in info.gates.items() if not g["passed"])
        raise MrdkitError(f"testbed {recipe.tier} FAILED its quality gates ({failed}); the build is kept in "
                          f"{out.name}.failed for inspection (allow_failed_gates=True keeps it as the testbed)")
    _replace_dir(tmp, out)
    return info


def _replace_dir(src: Path, dst: Path) -> None:
    """Move ``src`` to ``dst``, replacing an old ``dst`` only once the new one is complete."""
    old = dst.with_name(f".old-{dst.name}-{os.getpid()}")
    if dst.exists():
        os.rename(dst, old)
    os.rename(src, dst)
    shutil.rmtree(old, ignore_errors=True)


"""Shared pieces of the experiments: the testbed model and data, MRD scoring with the bench defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from mrdkit.bench.registry import BenchContext

# MRD settings of the experiments. sigma follows the paper (1e-5); float64 weights because on the tiny testbed the
# fp32 curvature part is only ~2x the rounding floor at this sigma (floor_check; paper-notes section 1).
BENCH_SIGMA = 1e-5


def target_model(ctx: BenchContext, which: str = "target", dtype: str | None = None):
    """The testbed's target (or retain) model as a :class:`~mrdkit.models.LoadedModel` (default: bench dtype;
    unlearning runs use float32)."""
    from mrdkit.testbed.tofu import load_testbed

    return load_testbed(ctx.tier, which, dtype=dtype or ctx.dtype, device="cpu" if ctx.options.get("cpu") else "auto")


def splits(ctx: BenchContext) -> dict[str, list]:
    """The testbed's data splits (forget, retain, perturbed variants, holdout, real authors, world facts)."""
    from mrdkit.testbed.tofu import testbed_splits

    return testbed_splits(ctx.tier)


def validation_samples(ctx: BenchContext) -> list:
    """Trained samples to validate MRD on: the forget set, plus (full runs) retain samples the target also
    memorised, for a larger n. Quick runs take the first 12 forget samples."""
    data = splits(ctx)
    if ctx.options.get("demo"):
        return data["forget"]
    if ctx.quick:
        return data["forget"][: int(ctx.options.get("n", 12))]
    return data["forget"] + data["retain"][: int(ctx.options.get("extra_retain", 80))]


def score(ctx: BenchContext, loaded, samples: Sequence[Any], name: str, **settings: Any):
    """``score_mrd`` into ``ctx.dir/name`` with bench defaults: a finished run with the same settings is loaded,
    an interrupted one resumed, one made with other settings (e.g. changed bench defaults) started afresh."""
    from mrdkit.models import model_fingerprint
    from mrdkit.runs import run_state
    from mrdkit.scoring.config import MRDConfig
    from mrdkit.scoring.mrd import run_config, score_mrd

    # option draws: K for a larger tier's model, where the full run's 64 draws cost too much CPU time
    base = dict(draws=int(ctx.options.get("draws", ctx.size(8, 64))), sigma=BENCH_SIGMA, batch_size=16,
                diagnostics=False, checkpoint_every=4)
    cfg = MRDConfig(**{**base, **settings})
    out = Path(ctx.dir) / name
    config = run_config(cfg, samples, model_fingerprint(loaded.model), loaded.tokenizer)
    same = run_state(out, config) in ("finished", "unfinished")
    return score_mrd(loaded, samples, config=cfg, out_dir=out, resume=same, overwrite=not same)


def ground_truth(ctx: BenchContext, loaded, samples, name: str, **settings: Any) -> list[dict[str, Any]]:
    """:func:`~mrdkit.evaluation.difficulty.required_updates` checkpointed to ``ctx.dir/<name>.jsonl``: resumed when
    that file was made with these settings, samples and weights, started afresh otherwise (never mixed). The same
    ground truth of a sibling ``validate`` run (same settings, samples and weights) is used as it is."""
    from mrdkit.evaluation.difficulty import checkpoint_is_current, required_updates

    shared = Path(ctx.dir).parent / "validate" / f"{name}.jsonl"
    own = Path(ctx.dir) / f"{name}.jsonl"
    path = shared if checkpoint_is_current(shared, samples, loaded.model, **settings) else own
    return required_updates(loaded.model, loaded.tokenizer, samples, checkpoint_path=path,
                            resume=checkpoint_is_current(path, samples, loaded.model, **settings), **settings)


def truth_settings(ctx: BenchContext) -> dict[str, Any]:
    """The per-sample ground truth of the experiments: GA (AdamW) on one sample at a time until P(a|q) <= 0.02.
    AdamW at 1e-3 forgets any testbed sample in 1-2 updates (no resolution); these lrs give ~12-35 updates."""
    return {"method": "ga", "lr": float(ctx.options.get("truth_lr", ctx.size(5e-5, 2e-5))), "threshold": 0.02,
            "cap": ctx.size(60, 150)}


def difficulty_scores(ctx: BenchContext, loaded, samples: Sequence[Any], names: Sequence[str], lr: float,
                      stem: str = "scores"):
    """:func:`~mrdkit.evaluation.scores.score_difficulty` cached in ``ctx.dir/<stem>.jsonl`` (rows) and
    ``<stem>.json`` (meta + the settings it was made with; recomputed when they change). Step-based scores take
    GA (AdamW) steps at ``lr``; MRD scores draw K = option ``draws`` (quick 4, full 16)."""
    from mrdkit.evaluation.scores import ScoreConfig, ScoreTable, score_difficulty
    from mrdkit.runs import atomic_write_json, atomic_write_jsonl, json_roundtrip, read_json, read_jsonl

    cfg = ScoreConfig(method="ga", lr=lr, threshold=0.02, draws=int(ctx.options.get("draws", ctx.size(4, 16))),
                      template="auto")
    key = {"config": cfg.__dict__, "ids": [s.id for s in samples], "names": list(names)}
    meta_path, rows_path = Path(ctx.dir) / f"{stem}.json", Path(ctx.dir) / f"{stem}.jsonl"
    if meta_path.is_file() and read_json(meta_path).get("key") == json_roundtrip(key):
        return ScoreTable(read_jsonl(rows_path), read_json(meta_path))
    table = score_difficulty(loaded.model, loaded.tokenizer, samples, list(names), cfg)
    atomic_write_jsonl(rows_path, table.rows)
    atomic_write_json(meta_path, {**table.meta, "key": key})
    return table

"""Experiment ``selection``: how much of an unlearning method's apparent success is sample selection?

The paper's motivation (Feng et al. 2025, arXiv:2504.06658): unlearning results depend on WHICH samples are
asked to be forgotten. Equal-size forget sets are drawn from the easiest (highest-MRD) quartile, the hardest
(lowest-MRD) quartile and at random from a pool of trained samples; the same method, budget and seed unlearns
each; we compare the forget-set probability after unlearning and the retain probability (utility proxy).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mrdkit.bench.common import score, splits, target_model, validation_samples
from mrdkit.bench.registry import BenchContext, experiment
from mrdkit.bench.report import fmt, md_table
from mrdkit.seeding import python_rng


def subsets(ids_by_mrd: list[str], size: int, seed: int) -> dict[str, list[str]]:
    """Easiest quartile, hardest quartile (``size`` each) and a random draw of ``size`` from the pool."""
    quart = max(size, len(ids_by_mrd) // 4)
    easy = ids_by_mrd[-quart:][-size:]  # ascending MRD order: the end is easiest
    hard = ids_by_mrd[:quart][:size]
    rand = python_rng(seed, "selection").sample(ids_by_mrd, size)
    return {"easiest": easy, "hardest": hard, "random": rand}


@experiment("selection", summary="same method on easiest vs hardest MRD quartile vs random forget sets",
            order=5, render=lambda results, d: render(results, d))
def selection(ctx: BenchContext) -> dict[str, Any]:
    from mrdkit.unlearning import UnlearnConfig, unlearn

    data, pool = splits(ctx), validation_samples(ctx)
    mrd = score(ctx, target_model(ctx), pool, "mrd_pool", estimator="antithetic", proxies=False).scores()
    ordered = sorted(mrd, key=lambda i: mrd[i])
    size = int(ctx.options.get("size", ctx.size(3, 10)))
    by_id = {s.id: s for s in pool}
    rows = []
    for seed in range(int(ctx.options.get("seeds", 1 if ctx.quick else ctx.seeds))):
        for name, ids in subsets(ordered, size, seed).items():
            forget = [by_id[i] for i in ids]
            retain = [s for s in data["retain"] if s.id not in set(ids)]
            loaded = target_model(ctx, dtype="float32")
            cfg = UnlearnConfig(lr=2e-4, epochs=ctx.size(2, 5), batch_size=2, seed=seed, stop_check_every=1,
                                monitor_retain=32, train_mode=False)
            res = unlearn(loaded.model, loaded.tokenizer, forget, retain, method="ga", config=cfg)
            first, last = res.history[0], res.history[-1]
            rows.append({"subset": name, "seed": seed, "mean_mrd": sum(mrd[i] for i in ids) / len(ids),
                         "forget_prob_before": first.get("forget_prob"), "forget_prob_after": last.get("forget_prob"),
                         "retain_prob_before": first.get("retain_prob"), "retain_prob_after": last.get("retain_prob"),
                         "steps": last["step"]})
            ctx.log(f"selection: {name} seed {seed}: forget prob {fmt(rows[-1]['forget_prob_after'])}")
    return {"pool": len(pool), "size": size, "method": "ga", "rows": rows}


def render(results: dict[str, Any], exp_dir: Path) -> tuple[str, list[dict[str, Any]]]:
    """Report section + claims for ``selection``."""
    rows = results["rows"]
    text = [f"Pool of {results['pool']} trained samples; forget sets of {results['size']}; method "
            f"{results['method']} with the same budget for each subset.", "",
            md_table(rows, ["subset", "seed", "mean_mrd", "forget_prob_before", "forget_prob_after",
                            "retain_prob_before", "retain_prob_after", "steps"])]

    def mean(name: str, key: str) -> float:
        vals = [r[key] for r in rows if r["subset"] == name and r[key] is not None]
        return sum(vals) / len(vals) if vals else float("nan")

    easy, hard = mean("easiest", "forget_prob_after"), mean("hardest", "forget_prob_after")
    claims = [{"claim": "Forget-set selection changes the apparent success of unlearning (easy vs hard MRD)",
               "paper": "motivation (qualitative)",
               "ours": f"forget P after GA: easiest {fmt(easy)} vs hardest {fmt(hard)}",
               "reproduced": "yes" if easy < hard else "no"}]
    return "\n".join(text), claims

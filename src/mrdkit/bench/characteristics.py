"""Experiment ``characteristics``: which samples are hard? MRD against frequency, association, length, loss.

Paper claim (Feng et al. 2025, arXiv:2504.06658): high-frequency samples and samples with strong contextual
associations are harder to unlearn, i.e. have LOWER MRD. The paper does not give its measurements, so we state
ours (paper-notes section 5):

- frequency: mean, over the answer's word trigrams, of the number of OTHER training answers containing that
  trigram (how often the sample's content recurs in the training data);
- author association: mean Jaccard similarity of the answer's word set with the same author's other training
  answers (TOFU: 20 QA per author);
- retain association: largest Jaccard similarity with any training answer of another author;
- length: scored tokens; initial loss: mean token NLL under the target model.

A negative Spearman (MRD vs characteristic) supports the claim.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from mrdkit.bench.common import score, splits, target_model, validation_samples
from mrdkit.bench.registry import BenchContext, experiment
from mrdkit.bench.report import fmt, md_table

FEATURES = ["frequency", "author_association", "retain_association", "n_tokens", "loss"]
CONTROLS = ("n_tokens", "loss")  # held fixed by the partial correlations


def words(text: str) -> list[str]:
    """Lower-case word tokens."""
    return re.findall(r"[a-z0-9']+", text.lower())


def trigrams(text: str) -> set[tuple[str, ...]]:
    """Set of word trigrams of ``text``."""
    w = words(text)
    return {tuple(w[i:i + 3]) for i in range(len(w) - 2)}


def jaccard(a: set, b: set) -> float:
    """|a & b| / |a | b| (0 for two empty sets)."""
    return len(a & b) / len(a | b) if a | b else 0.0


def sample_features(samples: Sequence[Any], training: Sequence[Any]) -> dict[str, dict[str, float]]:
    """Frequency and association features of ``samples`` against the ``training`` QA (definitions above)."""
    doc_freq: Counter = Counter()
    for s in training:
        doc_freq.update(trigrams(s.answer))
    word_sets = {s.id: set(words(s.answer)) for s in training}
    author = {s.id: s.extra.get("author_id") for s in training}
    out = {}
    for s in samples:
        grams = trigrams(s.answer)
        own = 1 if any(t.id == s.id for t in training) else 0
        freq = sum(doc_freq[g] - own for g in grams) / len(grams) if grams else 0.0
        mine = set(words(s.answer))
        same = [jaccard(mine, ws) for tid, ws in word_sets.items()
                if tid != s.id and author[tid] == s.extra.get("author_id")]
        other = [jaccard(mine, ws) for tid, ws in word_sets.items() if author[tid] != s.extra.get("author_id")]
        out[s.id] = {"frequency": freq, "author_association": sum(same) / len(same) if same else 0.0,
                     "retain_association": max(other, default=0.0)}
    return out


@experiment("characteristics", summary="MRD vs answer frequency, author/retain association, length, loss",
            order=2, render=lambda results, d: render(results, d))
def characteristics(ctx: BenchContext) -> dict[str, Any]:
    from mrdkit.runs import atomic_write_jsonl

    data = splits(ctx)
    samples = validation_samples(ctx)
    mrd = score(ctx, target_model(ctx), samples, "mrd", estimator="antithetic", grad_norm=False)
    feats = sample_features(samples, data["forget"] + data["retain"])
    rows = []
    for r in mrd.rows():
        rows.append({"id": r["id"], "mrd": r["mrd"], "n_tokens": r["n_tokens"], "loss": r["loss"], **feats[r["id"]]})
    atomic_write_jsonl(Path(ctx.dir) / "features.jsonl", rows)
    return {"n_samples": len(rows), "controls": list(CONTROLS),
            "table": feature_table(rows, n_boot=ctx.size(200, 1000))}


def feature_table(rows: list[dict[str, Any]], n_boot: int) -> list[dict[str, Any]]:
    """Spearman(MRD, feature) with bootstrap CI, and the partial Spearman given length and initial loss (the
    other one for those two): MRD sums relative changes over tokens, so it tracks length and loss closely, and
    a raw link to a content feature may only be that."""
    from mrdkit.evaluation.correlation import correlate, partial_spearman

    mrd = [r["mrd"] for r in rows]
    table = []
    for f in FEATURES:
        res = correlate(mrd, [r[f] for r in rows], n_boot=n_boot)
        controls = [c for c in CONTROLS if c != f]
        rho_p, p_p, _ = partial_spearman(mrd, [r[f] for r in rows], [[r[c] for r in rows] for c in controls])
        table.append({"feature": f, "spearman": res.rho, "ci_low": res.ci_low, "ci_high": res.ci_high,
                      "p": res.p_value, "partial_spearman": rho_p, "partial_p": p_p,
                      "partial_given": "+".join(controls), "n": res.n})
    return table


def render(results: dict[str, Any], exp_dir: Path) -> tuple[str, list[dict[str, Any]]]:
    """Report section + claims for ``characteristics``."""
    text = [
        "Operational definitions: frequency = mean count of other training answers sharing each answer word "
        "trigram; author association = mean word-set Jaccard with the same author's other answers; retain "
        "association = max Jaccard with another author's answer. Negative Spearman = the characteristic makes "
        f"samples harder (lower MRD). n = {results['n_samples']}.", "",
        "`partial_spearman`: the same rank correlation with the features in `partial_given` held fixed "
        "(rank residuals; t-test p-value).", "",
        md_table(results["table"], ["feature", "spearman", "ci_low", "ci_high", "p", "partial_spearman",
                                    "partial_p", "partial_given", "n"]),
    ]
    by = {r["feature"]: r for r in results["table"]}
    claims = []
    for feature, label in (("frequency", "High-frequency samples are harder (lower MRD)"),
                           ("author_association", "Strongly associated samples are harder (lower MRD): same author"),
                           ("retain_association", "Strongly associated samples are harder (lower MRD): other "
                                                  "authors' QA")):
        r = by[feature]
        claims.append({"claim": label, "paper": "qualitative",
                       "ours": f"Spearman(MRD, {feature}) {fmt(r['spearman'])} [{fmt(r['ci_low'])}, "
                               f"{fmt(r['ci_high'])}]" + _partial_text(r), "reproduced": _verdict(r)})
    return "\n".join(text), claims


def _partial_text(row: dict[str, Any]) -> str:
    if row.get("partial_spearman") is None:  # runs made before the partial correlations existed
        return ""
    given = row["partial_given"].replace("+", " and ")
    return f"; given {given}: {fmt(row['partial_spearman'])} (p {fmt(row['partial_p'])})"


def _verdict(row: dict[str, Any]) -> str:
    """yes: negative with a CI below 0 and still negative (p < 0.05) given length and loss; partly: only one of
    the two holds."""
    lo, hi = row["ci_low"], row["ci_high"]
    if lo is not None and lo > 0:
        return "no (opposite sign)"
    partial, p = row.get("partial_spearman"), row.get("partial_p")
    partial_holds = partial is not None and partial < 0 and p is not None and p < 0.05
    if hi is None or hi >= 0:
        return "partly (only with length and loss held fixed)" if partial_holds else "not resolved"
    if partial is None or partial_holds:
        return "yes"
    return "partly (not beyond length and loss)"

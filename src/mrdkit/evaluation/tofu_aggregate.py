"""TOFU aggregates and the community format, computed from the per-split rows of :mod:`mrdkit.evaluation.tofu`.

Metric names, columns and aggregators follow open-unlearning (Dorna et al. 2025, arXiv:2506.12618,
``configs/eval/tofu_metrics``) on TOFU (Maini et al. 2024, arXiv:2401.06121): :data:`METRIC_TABLE`; the MIA
AUCs are forget (members) vs holdout; forget quality, model utility and privleak are :func:`derived`;
:func:`community` builds ``TOFU_EVAL.json``. Re-exported by :mod:`mrdkit.evaluation.tofu`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from mrdkit.data import Sample

if TYPE_CHECKING:  # annotation only: tofu imports this module
    from mrdkit.evaluation.tofu import Reference


def _metric_table() -> list[tuple[str, str, str, str, bool | None]]:
    """``(metric, split, column, aggregator, higher_is_better)`` named as open-unlearning names them.

    ``higher_is_better`` reads "for an unlearned model": forget-set probability/ROUGE/extraction should fall.
    """
    table = [("forget_Q_A_Prob", "forget", "prob", "mean", False),
             ("forget_Q_A_PARA_Prob", "forget", "para_prob", "mean", False),
             ("forget_Q_A_PERT_Prob", "forget", "pert_prob", "mean", None),
             ("forget_truth_ratio", "forget", "truth_ratio", "closer_to_1", True),
             ("forget_Q_A_ROUGE", "forget", "rouge_l_recall", "mean", False),
             ("extraction_strength", "forget", "extraction_strength", "mean", False),
             ("exact_memorization", "forget", "exact_memorization", "mean", False),
             ("retain_Q_A_PARA_Prob", "retain", "para_prob", "mean", True)]
    for p in ("retain", "ra", "wf"):
        table += [(f"{p}_Q_A_Prob", p, "prob", "mean", True), (f"{p}_Q_A_PERT_Prob", p, "pert_prob", "mean", False),
                  (f"{p}_Truth_Ratio", p, "truth_ratio", "true_better", True),
                  (f"{p}_Q_A_ROUGE", p, "rouge_l_recall", "mean", True)]
    return table + [(f"{p}_Q_A_Prob_normalised", p, "prob_normalised", "mean", True) for p in ("ra", "wf")]


METRIC_TABLE = _metric_table()
MIA_METRICS = ("mia_min_k", "mia_loss", "mia_zlib")


def _values(rows: Sequence[dict], col: str) -> list[Any]:
    """Present, non-NaN values of ``col`` (lists kept whole)."""
    return [r[col] for r in rows if r.get(col) is not None and not (isinstance(r[col], float) and r[col] != r[col])]


def _aggregate(kind: str, values: list[Any]) -> float:
    """``mean`` (lists flattened, as open-unlearning's ``np.mean``), or the truth-ratio aggregators."""
    import numpy as np

    from mrdkit.evaluation import metrics as M

    if kind == "closer_to_1":
        return M.truth_ratio_forget_agg(values)
    if kind == "true_better":
        return M.truth_ratio_retain_agg(values)
    return float(np.nanmean(np.asarray([x for v in values for x in (v if isinstance(v, list) else [v])], float)))


def aggregate(rows: dict[str, list[dict]]) -> dict[str, dict[str, Any]]:
    """``{metric: {value, higher_is_better, n}}`` from per-split rows; MIA AUCs are forget (members) vs holdout."""
    from mrdkit.evaluation.metrics import mia_auc

    out: dict[str, dict[str, Any]] = {}
    for name, split, col, kind, hib in METRIC_TABLE:
        vals = _values(rows.get(split, []), col)
        if vals:
            out[name] = {"value": _aggregate(kind, vals), "higher_is_better": hib, "n": len(vals)}
    for name in MIA_METRICS:
        member, non = _values(rows.get("forget", []), name), _values(rows.get("holdout", []), name)
        if member and non:
            out[name] = {"value": mia_auc(member, non), "higher_is_better": None, "n": len(member) + len(non)}
    return out


def derived(aggs: dict[str, dict], rows: dict[str, list[dict]], ref: Reference | None) -> tuple[dict, list[str]]:
    """Forget quality, model utility and privleak, with a note for each one that cannot be computed."""
    from mrdkit.evaluation import metrics as M

    out, notes = {}, []
    trs = _values(rows.get("forget", []), "truth_ratio")
    if ref is not None and ref.forget_truth_ratios and trs:
        out["forget_quality"] = {"value": M.forget_quality(trs, ref.forget_truth_ratios), "higher_is_better": True,
                                 "n": len(trs)}
    else:
        notes.append("forget_quality omitted: no retain model or retain log given")
    missing = [k for k in M.MODEL_UTILITY_KEYS if k not in aggs]
    if missing:
        notes.append(f"model_utility omitted: missing {', '.join(missing)}")
    else:
        out["model_utility"] = {"value": M.model_utility({k: aggs[k]["value"] for k in M.MODEL_UTILITY_KEYS}),
                                "higher_is_better": True, "n": len(M.MODEL_UTILITY_KEYS)}
    if "mia_min_k" in aggs:
        ref_auc = ref.mia_min_k_auc if ref is not None and ref.mia_min_k_auc is not None else 0.5
        if ref is None or ref.mia_min_k_auc is None:
            notes.append("privleak relative to AUC 0.5 (no retain mia_min_k)")
        if ref_auc >= 1.0:  # the retain model separates forget from holdout perfectly: the ratio is undefined
            notes.append("privleak omitted: the retain model's mia_min_k AUC is 1")
        else:
            out["privleak"] = {"value": M.privacy_leakage(aggs["mia_min_k"]["value"], ref_auc),
                               "higher_is_better": None, "n": aggs["mia_min_k"]["n"], "ideal": 0.0}
    return out, notes


def _fields(col: str, row: dict, sample: Sample) -> dict[str, Any]:
    """One sample's ``value_by_index`` entry as open-unlearning writes it for a metric on ``col``."""
    if col in ("prob", "para_prob", "pert_prob"):
        return {"prob": row[col], "avg_loss": row[col.replace("prob", "avg_loss")]}
    if col == "prob_normalised":
        return {"prob": row[col]}
    if col == "rouge_l_recall":
        return {"rougeL_recall": row[col], "input": sample.prompt, "ground_truth": sample.answer,
                "generation": row["generation"]}
    return {"score": row[col]}


def _mia_block(rows: list[dict], col: str, index: dict[str, int]) -> dict[str, Any]:
    """open-unlearning's per-split attack output; scores negated to its loss-like "higher = non-member"."""
    scores = {str(index[r["id"]]): {"score": -r[col]} for r in rows if col in r}
    vals = [v["score"] for v in scores.values()]
    return {"agg_value": sum(vals) / len(vals) if vals else None, "value_by_index": scores}


def community(rows: dict[str, list[dict]], data: dict[str, list[Sample]], metrics: dict[str, dict]) -> dict:
    """The ``TOFU_EVAL.json`` document: index = row in the evaluated split (:func:`community.to_community`)."""
    from mrdkit.evaluation.community import to_community

    index = {s.id: i for samples in data.values() for i, s in enumerate(samples)}
    by_id = {s.id: s for samples in data.values() for s in samples}
    per_sample = {name: {r["id"]: _fields(col, r, by_id[r["id"]]) for r in rows.get(split, []) if col in r}
                  for name, split, col, _, _ in METRIC_TABLE if name in metrics}
    doc = to_community(per_sample, {k: v["value"] for k, v in metrics.items()}, index)
    for name in MIA_METRICS:
        if name in metrics:
            doc[name].update(auc=metrics[name]["value"], forget=_mia_block(rows["forget"], name, index),
                             holdout=_mia_block(rows["holdout"], name, index))
    return doc

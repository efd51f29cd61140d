"""Read and write evaluation results in the community (open-unlearning) format, so runs compare with published logs.

Format, as open-unlearning's ``Evaluator`` writes it (``src/evals/base.py``; metrics in ``src/evals/metrics``):

- ``<BENCH>_EVAL.json`` (e.g. ``TOFU_EVAL.json``): ``{metric: {"agg_value": float | null, "value_by_index":
  {"<index>": {"<field>": value, ...}}}}``, metric names sorted. It holds every metric computed, the
  pre-computes of the configured ones included (e.g. ``forget_Q_A_PARA_Prob`` under ``forget_truth_ratio``).
  ``<index>`` is the sample's 0-based row in the evaluated Hugging Face split (``add_dataset_index``), written as
  a string by ``json``. The per-sample fields: ``"score"`` for truth ratios, ES, EM and MIA scores, ``"prob"``
  (with ``"avg_loss"``) for probabilities, and for ROUGE the whole ``eval_text_similarity`` dict
  (:func:`rouge_entry`). A metric over a list of answers (TOFU's perturbed answers) holds one list per field
  (``run_batchwise_evals`` -> ``dict_transpose``). Metrics without per-sample values (``forget_quality``,
  ``model_utility``, ``privleak``) hold only ``agg_value``, null when not computable (no retain log).
  MIA metrics hold ``forget`` / ``holdout`` blocks of per-sample scores, ``auc`` and ``agg_value``
  (:func:`attack_entry`).
- ``<BENCH>_SUMMARY.json``: ``{metric: agg_value}`` for the CONFIGURED metrics (:data:`DEFAULT_METRICS`, the
  default lists of ``configs/eval/tofu.yaml`` / ``muse.yaml``) whose ``agg_value`` is not null, sorted
  (``Evaluator.summarize``). Both files: ``json.dump(..., indent=4)``, no trailing newline.

The forget-quality reference is a retain model's ``forget_truth_ratio`` per-sample scores
(``configs/eval/tofu_metrics/forget_quality.yaml``: ``reference_logs.retain_model_logs.include.forget_truth_ratio``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from mrdkit.errors import MrdkitError
from mrdkit.runs import atomic_write_text, dumps, read_json

FORGET_TRUTH_RATIO = "forget_truth_ratio"
#: The 1e-10 open-unlearning adds in ``truth_ratio``, ``closer_to_1_better``, ``probability_w_options`` and
#: ``privleak``: the community files are computed with it, mrdkit's own ``eval.json`` without.
OU_EPS = 1e-10
#: The metrics open-unlearning's default eval configs list (``configs/eval/tofu.yaml``, ``configs/eval/muse.yaml``):
#: the only ones ``<BENCH>_SUMMARY.json`` holds.
DEFAULT_METRICS: dict[str, tuple[str, ...]] = {
    "TOFU": ("forget_truth_ratio", "forget_quality", "forget_Q_A_Prob", "forget_Q_A_ROUGE", "model_utility",
             "privleak", "extraction_strength"),
    "MUSE": ("forget_knowmem_ROUGE", "retain_knowmem_ROUGE", "forget_verbmem_ROUGE", "privleak",
             "extraction_strength"),
}


def value_field(metric: str) -> str:
    """Per-sample field open-unlearning uses for ``metric``: ``"prob"`` for ``*_Prob*`` metrics,
    ``"rougeL_recall"`` for ``*_ROUGE`` (TOFU), otherwise ``"score"``."""
    if "Prob" in metric:
        return "prob"
    if "ROUGE" in metric:
        return "rougeL_recall"
    return "score"


def _number(value: Any) -> float | None:
    """A JSON-safe float: None for missing or non-finite values (open-unlearning writes None for missing)."""
    if value is None:
        return None
    v = float(value.item() if hasattr(value, "item") else value)
    return v if math.isfinite(v) else None


def _by_index(metric: str, values: Mapping[str, Any], index_of: Mapping[str, int], field: str) -> dict:
    """``{str(index): {field: value}}`` sorted by index; dict values are kept as given (NaN -> null on write)."""
    missing = [sid for sid in values if sid not in index_of]
    if missing:
        raise MrdkitError(f"{metric}: no community index for sample ids {', '.join(map(str, missing[:5]))}")
    out: dict[int, dict[str, Any]] = {}
    for sid, value in values.items():
        idx = int(index_of[sid])
        if idx in out:
            raise MrdkitError(f"{metric}: two samples map to community index {idx}")
        out[idx] = dict(value) if isinstance(value, Mapping) else {field: _number(value)}
    return {str(i): out[i] for i in sorted(out)}


def to_community(
    per_sample: Mapping[str, Mapping[str, Any]], aggregates: Mapping[str, Any], index_of: Mapping[str, int],
    *, fields: Mapping[str, str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Build a ``<BENCH>_EVAL.json`` document from our per-sample and aggregate results.

    Args:
        per_sample: ``{metric: {sample_id: value}}``; a value may also be a dict of fields (kept as given).
        aggregates: ``{metric: agg_value}``; metrics absent here get ``agg_value: null``.
        index_of: ``{sample_id: index}``, the sample's row in the community split (e.g. TOFU ``forget10``
            row 0..399); every sample id in ``per_sample`` must have one, and indices must be unique per metric.
        fields: per-metric field name overrides (default :func:`value_field`, e.g. ``"rougeL_f1"`` for MUSE).

    Returns:
        ``{metric: {"agg_value": ..., "value_by_index": {...}}}``, metrics sorted; non-finite numbers -> None.
    """
    fields = fields or {}
    doc: dict[str, dict[str, Any]] = {}
    for metric in sorted(set(per_sample) | set(aggregates)):
        entry: dict[str, Any] = {"agg_value": _number(aggregates.get(metric))}
        if metric in per_sample:
            field = fields.get(metric, value_field(metric))
            entry["value_by_index"] = _by_index(metric, per_sample[metric], index_of, field)
        doc[metric] = entry
    return doc


def summarize(eval_doc: Mapping[str, Mapping[str, Any]], configured: Sequence[str] | None = None
              ) -> dict[str, float]:
    """``<BENCH>_SUMMARY.json``: ``{metric: agg_value}`` for non-null ``agg_value``, sorted; only the
    ``configured`` metrics when given (``Evaluator.summarize`` skips every name not in its metric config)."""
    keep = set(eval_doc) if configured is None else set(configured)
    return {m: r["agg_value"] for m, r in sorted(eval_doc.items()) if m in keep and r.get("agg_value") is not None}


def write_community(out_dir: str | Path, eval_doc: Mapping[str, Mapping[str, Any]], *, benchmark: str = "TOFU"
                    ) -> tuple[Path, Path]:
    """Atomically write ``<benchmark>_EVAL.json`` (every metric) and ``<benchmark>_SUMMARY.json`` (the
    :data:`DEFAULT_METRICS` of ``benchmark``; every metric for another benchmark name), as open-unlearning's
    ``Evaluator.save_logs`` does: keys sorted, ``indent=4``, no trailing newline.

    Returns:
        (eval path, summary path).
    """
    out = Path(out_dir)
    eval_path, summary_path = out / f"{benchmark}_EVAL.json", out / f"{benchmark}_SUMMARY.json"
    atomic_write_text(eval_path, dumps(dict(sorted(eval_doc.items())), indent=4))
    atomic_write_text(summary_path, dumps(summarize(eval_doc, DEFAULT_METRICS.get(benchmark)), indent=4))
    return eval_path, summary_path


def rouge_entry(input_text: str, ground_truth: str, generation: str) -> dict[str, Any]:
    """One sample's ROUGE entry as open-unlearning's ``eval_text_similarity`` writes it: ``rouge1_recall``,
    ``rougeL_f1``, ``rougeL_recall`` (:func:`mrdkit.evaluation.metrics.text_similarity`, stemmed), then ``input``
    (the decoded prompt), ``ground_truth`` and ``generation`` (both stripped, as it strips them)."""
    from mrdkit.evaluation.metrics import text_similarity

    truth, gen = ground_truth.strip(), generation.strip()
    return {**text_similarity(gen, truth), "input": input_text, "ground_truth": truth, "generation": gen}


def _attack_block(scores: Mapping[int, float]) -> dict[str, Any]:
    """One split's attack output: mean score and ``{"<index>": {"score": s}}`` (``Attack.attack``)."""
    import numpy as np

    return {"agg_value": float(np.mean([float(v) for v in scores.values()])),
            "value_by_index": {str(i): {"score": float(scores[i])} for i in sorted(scores)}}


def attack_entry(forget: Mapping[int, float], holdout: Mapping[int, float]) -> dict[str, Any]:
    """open-unlearning's ``mia_*`` entry (``evals/metrics/mia/utils.py``, ``mia_auc``) from per-index scores in ITS
    convention (loss-like: higher = less member-like, i.e. minus mrdkit's membership scores).

    ``auc = roc_auc_score(labels, scores)`` with forget labelled 0 and holdout 1, which is
    :func:`~mrdkit.evaluation.metrics.mia_auc` with the holdout scores as the positive class; it equals mrdkit's
    member-convention ``mia_auc(-forget, -holdout)`` in ``eval.json``. Keys in its order: ``forget``, ``holdout``,
    ``auc``, ``agg_value`` (= auc).
    """
    from mrdkit.evaluation.metrics import mia_auc

    auc = mia_auc(list(holdout.values()), list(forget.values()))
    return {"forget": _attack_block(forget), "holdout": _attack_block(holdout), "auc": auc, "agg_value": auc}


def _index_key(key: str) -> tuple[int, Any]:
    """Sort key: integer indices numerically, then other keys (sample ids) as strings."""
    return (0, int(key)) if str(key).lstrip("-").isdigit() else (1, str(key))


def _score(entry: Any) -> float | None:
    """The number in a per-sample entry: a bare number, or the ``score`` field of a dict."""
    value = entry.get("score") if isinstance(entry, Mapping) else entry
    return None if value is None else float(value)


def _tofu_original_trs(log: Mapping[str, Any]) -> list[float]:
    """TR from an original TOFU ``eval_log_forget.json`` (``avg_paraphrased_loss``, ``average_perturb_loss``):
    ``TR = exp(L_para - mean_j L_pert_j)`` per index (the code stores the reciprocal)."""
    from mrdkit.evaluation.metrics import truth_ratio

    para, pert = log["avg_paraphrased_loss"], log["average_perturb_loss"]
    return [truth_ratio(para[k], pert[k]) for k in sorted(para, key=_index_key)]


def _entry_values(entry: Any) -> list[float]:
    """Per-sample values of one metric entry, in index order, missing values dropped."""
    if isinstance(entry, Mapping):
        for key in ("value_by_index", "per_sample", "values"):
            if isinstance(entry.get(key), (Mapping, list)):
                return _entry_values(entry[key])
        if "agg_value" in entry:
            raise MrdkitError("the entry holds only an aggregate value, no per-sample values")
        values = [_score(entry[k]) for k in sorted(entry, key=_index_key)]
    elif isinstance(entry, list):
        values = [_score(v) for v in entry]
    else:
        raise MrdkitError(f"cannot read per-sample values from a {type(entry).__name__}")
    return [v for v in values if v is not None and not math.isnan(v)]


def read_forget_truth_ratios(path: str | Path, *, key: str = FORGET_TRUTH_RATIO) -> list[float]:
    """Per-sample forget-set truth ratios of a (retain) model, the reference for :func:`forget_quality`.

    Accepted layouts (index order; null / NaN entries dropped):

    - community ``TOFU_EVAL.json``: ``doc["forget_truth_ratio"]["value_by_index"][i]["score"]``;
    - mrdkit eval JSON: ``doc[key]`` or ``doc["metrics"][key]`` holding ``value_by_index``, ``per_sample``
      (``{sample_id: value or {"score": value}}``), ``values`` (a list) or such a mapping/list directly;
    - original TOFU ``eval_log_forget.json`` (or an aggregated log holding it under that name):
      TR recomputed from ``avg_paraphrased_loss`` and ``average_perturb_loss``.

    Raises:
        MrdkitError: the file is missing, is not JSON, or holds none of these layouts (the message lists its keys).
    """
    doc = read_json(path)
    if not isinstance(doc, Mapping):
        raise MrdkitError(f"{path}: expected a JSON object, got {type(doc).__name__}")
    for holder in (doc, doc.get("metrics")):
        if isinstance(holder, Mapping) and key in holder:
            try:
                values = _entry_values(holder[key])
            except MrdkitError as exc:
                raise MrdkitError(f"{path}: {key!r}: {exc}") from None
            if not values:
                raise MrdkitError(f"{path}: {key!r} holds no per-sample values")
            return values
    tofu = doc.get("eval_log_forget.json", doc)
    if isinstance(tofu, Mapping) and {"avg_paraphrased_loss", "average_perturb_loss"} <= set(tofu):
        return _tofu_original_trs(tofu)
    raise MrdkitError(f"{path}: no {key!r} entry (top-level keys: {', '.join(list(map(str, doc))[:20])})")


def read_community(path: str | Path) -> dict[str, Any]:
    """Load a ``<BENCH>_EVAL.json`` / ``_SUMMARY.json`` document (one-line error for a missing or broken file)."""
    doc = read_json(path)
    if not isinstance(doc, dict):
        raise MrdkitError(f"{path}: expected a JSON object, got {type(doc).__name__}")
    return doc

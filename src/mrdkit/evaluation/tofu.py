"""The TOFU evaluation suite: which splits, which model passes, which per-sample columns.

TOFU (Maini et al. 2024, arXiv:2401.06121) as the community framework evaluates it (open-unlearning, Dorna et
al. 2025, arXiv:2506.12618, ``configs/eval/tofu_metrics``). Five splits, each row keyed by its stable sample id:

=========  ===============================  ============================================================
label      TOFU split                       per-sample columns
=========  ===============================  ============================================================
forget     ``forgetXX_perturbed``           prob, PARA/PERT probs, truth ratio (correct = paraphrase),
                                            ROUGE-L, extraction strength, exact memorisation, MIA scores
retain     ``retain_perturbed``             prob, PARA/PERT probs, truth ratio (correct = paraphrase), ROUGE-L
ra / wf    ``real_authors/world_facts_      prob, PERT probs, normalised prob, truth ratio (correct = the
           perturbed``                      answer), ROUGE-L
holdout    ``holdoutXX``                    prob, MIA scores (non-members for the forget-vs-holdout AUC)
=========  ===============================  ============================================================

Two kinds of model pass fill the columns: ``scores`` (teacher-forced log-probs of the answer and, in one more
pass, of the paraphrased + perturbed answers) and ``generation`` (greedy answers for ROUGE-L recall). MIA scores
are stored "higher = member" (:mod:`mrdkit.membership`); community files negate them (open-unlearning's attacks
report loss-like scores). Aggregates (:func:`aggregate`, :func:`derived`) use the community metric names
(:data:`METRIC_TABLE`) and :func:`community` writes the ``TOFU_EVAL.json`` document.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from mrdkit.data import Sample, load_tofu
from mrdkit.errors import MrdkitError
from mrdkit.evaluation.answers import answer_logprobs, truth_ratios
from mrdkit.evaluation.generation import generate_and_score
from mrdkit.membership import min_k_logprob, zlib_ratio

# label -> (TOFU split name pattern, which answer is "correct" in the truth ratio, or None)
SPLITS: dict[str, tuple[str, str | None]] = {
    "forget": ("{forget}_perturbed", "paraphrased"),
    "retain": ("retain_perturbed", "paraphrased"),
    "ra": ("real_authors_perturbed", "answer"),
    "wf": ("world_facts_perturbed", "answer"),
    "holdout": ("holdout{pct}", None),
}
TASKS = ("scores", "generation")
MEMBERSHIP_SPLITS = ("forget", "holdout")
FORGET_SPLITS = ("forget01", "forget05", "forget10")


@dataclass
class TofuConfig:
    """What the TOFU suite evaluates and how.

    Attributes:
        forget_split: ``forget01`` | ``forget05`` | ``forget10`` (these have perturbed files and holdouts).
        source: TOFU folder or hub id (None: the local copy, see :func:`mrdkit.data.load_tofu`).
        template: prompt template; batch_size: sequences per forward / generate call.
        max_length: longest scored sequence; max_new_tokens: greedy generation budget (TOFU: 200).
        limit: evaluate only the first ``limit`` samples of each split (quick checks).
        min_k: Min-K% fraction for the MIA score (open-unlearning ``mia_min_k``: 0.4).
        encoding: ``joint`` (every answer token scored), ``community`` (open-unlearning's mask: numbers that line up
            with its published logs) or ``separate`` (:func:`mrdkit.data.encode_samples`).
    """

    forget_split: str = "forget10"
    source: str | None = None
    template: str = "auto"
    batch_size: int = 16
    max_length: int = 512
    max_new_tokens: int = 200
    limit: int | None = None
    min_k: float = 0.4
    encoding: str = "joint"

    def split_names(self) -> dict[str, str]:
        """``{label: TOFU split}`` for this forget split."""
        if self.forget_split not in FORGET_SPLITS:
            raise MrdkitError(f"TOFU suite needs forget split {' | '.join(FORGET_SPLITS)} (with perturbed answers "
                              f"and a holdout set), got {self.forget_split!r}")
        pct = re.sub(r"\D", "", self.forget_split)
        return {k: pat.format(forget=self.forget_split, pct=pct) for k, (pat, _) in SPLITS.items()}


def load_suite(cfg: TofuConfig, labels: Sequence[str] = tuple(SPLITS)) -> dict[str, list[Sample]]:
    """Samples of each split label (first ``cfg.limit`` of each), in TOFU file order (= community index)."""
    names = cfg.split_names()
    return {label: load_tofu(names[label], cfg.source)[:cfg.limit] for label in labels}


def task_columns(label: str, task: str) -> tuple[str, ...]:
    """Columns a task writes into the rows of split ``label`` (used to skip work already done)."""
    if task == "generation":
        return () if label == "holdout" else ("generation", "rouge_l_recall")
    cols = ["prob", "avg_loss"]
    if SPLITS[label][1] == "paraphrased":
        cols += ["para_prob", "para_avg_loss"]
    if SPLITS[label][1] is not None:
        cols += ["pert_prob", "pert_avg_loss", "truth_ratio"]
    if SPLITS[label][1] == "answer":
        cols.append("prob_normalised")
    if label in MEMBERSHIP_SPLITS:
        cols += ["mia_min_k", "mia_loss", "mia_zlib"]
    if label == "forget":
        cols += ["extraction_strength", "exact_memorization"]
    return tuple(cols)


def _membership(mean_logprob: float, token_lps: list[float], text: str, k: float) -> dict[str, float]:
    """MIA scores, higher = member. Min-K% drops the final (EOS) token as open-unlearning's
    ``tokenwise_logprobs`` does; the loss score keeps every token (its ``evaluate_probability``)."""
    body = token_lps[:-1] or token_lps
    return {"mia_min_k": min_k_logprob(torch.tensor(body, dtype=torch.float64), k), "mia_loss": mean_logprob,
            "mia_zlib": zlib_ratio(mean_logprob, text)}


def _extraction(token_correct: list[bool]) -> dict[str, float]:
    """ES and EM over the answer tokens without the final EOS label (open-unlearning ``tokenwise_vocab_logprobs``
    drops it); ES uses open-unlearning's ``1 - k/n`` loop (``open_unlearning_compat``) so logs compare."""
    from mrdkit.evaluation.metrics import exact_memorization, extraction_strength

    body = token_correct[:-1]
    return {"extraction_strength": extraction_strength(body, open_unlearning_compat=True),
            "exact_memorization": exact_memorization(body)}


def _answer_columns(model: Any, tokenizer: Any, label: str, samples: list[Sample], cfg: TofuConfig) -> dict:
    """``prob``/``avg_loss`` of the given answers (+ membership and extraction columns where they apply)."""
    scores = answer_logprobs(model, tokenizer, samples, template=cfg.template, batch_size=cfg.batch_size,
                             encoding=cfg.encoding,
                             max_length=cfg.max_length)
    rows = {}
    for s, sc in zip(samples, scores):
        row: dict[str, Any] = {"prob": sc.probability, "avg_loss": sc.nll}
        if label in MEMBERSHIP_SPLITS:
            row.update(_membership(sc.mean_logprob, sc.token_logprobs, s.answer, cfg.min_k))
        if label == "forget":
            row.update(_extraction(sc.token_correct))
        rows[s.id] = row
    return rows


def _candidate_columns(model: Any, tokenizer: Any, label: str, samples: list[Sample], cfg: TofuConfig) -> dict:
    """Truth ratio plus the probabilities of the correct (PARA) and perturbed (PERT) answers, one batched pass."""
    from mrdkit.evaluation.metrics import normalised_probability

    correct = SPLITS[label][1]
    trs = truth_ratios(model, tokenizer, samples, correct=correct, template=cfg.template, encoding=cfg.encoding,
                       batch_size=cfg.batch_size, max_length=cfg.max_length)
    rows = {}
    for tr in trs:
        pert_prob = [math.exp(-x) for x in tr.wrong_nlls]
        row: dict[str, Any] = {"truth_ratio": tr.truth_ratio, "pert_prob": pert_prob, "pert_avg_loss": tr.wrong_nlls}
        if correct == "paraphrased":
            row.update(para_prob=math.exp(-tr.correct_nll), para_avg_loss=tr.correct_nll)
        else:  # the correct answer IS the answer: its probability needs no second pass
            p_true = math.exp(-tr.correct_nll)
            row.update(prob=p_true, avg_loss=tr.correct_nll,
                       prob_normalised=normalised_probability(p_true, pert_prob))
        rows[tr.id] = row
    return rows


def score_columns(model: Any, tokenizer: Any, label: str, samples: list[Sample], cfg: TofuConfig
                  ) -> dict[str, dict[str, Any]]:
    """The ``scores`` task: teacher-forced columns of :func:`task_columns` (label, "scores"), keyed by id.

    One pass over the answers (forget, retain, holdout) and one over the correct + perturbed candidates
    (all but holdout); real-author / world-fact probabilities come from the candidate pass.
    """
    rows: dict[str, dict[str, Any]] = {s.id: {} for s in samples}
    if SPLITS[label][1] != "answer":
        for sid, cols in _answer_columns(model, tokenizer, label, samples, cfg).items():
            rows[sid].update(cols)
    if SPLITS[label][1] is not None:
        for sid, cols in _candidate_columns(model, tokenizer, label, samples, cfg).items():
            rows[sid].update(cols)
    return rows


def run_task(model: Any, tokenizer: Any, task: str, label: str, samples: list[Sample], cfg: TofuConfig,
             progress: Any = None) -> dict[str, dict[str, Any]]:
    """Run one task on one split; returns ``{sample_id: {column: value}}``."""
    if task == "scores":
        return score_columns(model, tokenizer, label, samples, cfg)
    if task == "generation":
        if not task_columns(label, task):
            return {}
        return generate_and_score(model, tokenizer, samples, template=cfg.template, encoding=cfg.encoding,
                                  max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size, progress=progress)
    raise MrdkitError(f"unknown TOFU task {task!r} (known: {', '.join(TASKS)})")


@dataclass
class Reference:
    """What a retain model contributes: forget-set truth ratios (forget quality) and its Min-K% AUC (privleak).

    Attributes:
        forget_truth_ratios: the retain model's per-sample forget truth ratios (index order), or None.
        mia_min_k_auc: its forget-vs-holdout Min-K% AUC, or None (privleak then uses 0.5, as open-unlearning).
        source: where it came from (a model spec or a log path), for the run's meta.
    """

    forget_truth_ratios: list[float] | None
    mia_min_k_auc: float | None
    source: str

    def as_dict(self) -> dict[str, Any]:
        return {"forget_truth_ratio": self.forget_truth_ratios, "mia_min_k": self.mia_min_k_auc,
                "source": self.source}


def reference_from_model(model: Any, tokenizer: Any, cfg: TofuConfig, source: str = "retain model") -> Reference:
    """Evaluate a retain model on the spot: forget truth ratios and the forget-vs-holdout Min-K% AUC."""
    from mrdkit.evaluation.metrics import mia_auc

    data = load_suite(cfg, MEMBERSHIP_SPLITS)
    forget = score_columns(model, tokenizer, "forget", data["forget"], cfg)
    holdout = _answer_columns(model, tokenizer, "holdout", data["holdout"], cfg)
    auc = mia_auc([r["mia_min_k"] for r in forget.values()], [r["mia_min_k"] for r in holdout.values()])
    return Reference([forget[s.id]["truth_ratio"] for s in data["forget"]], auc, source)


# ------------------------------------------------------------------------ aggregates and the community file


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

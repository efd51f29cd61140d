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
(:data:`METRIC_TABLE`) and :func:`community` writes the ``TOFU_EVAL.json`` document; they live in
:mod:`~mrdkit.evaluation.tofu_aggregate` and are re-exported here.
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
# re-exported: these lived here before the split, `tofu.aggregate` etc. keep working
from mrdkit.evaluation.tofu_aggregate import (METRIC_TABLE, MIA_METRICS, _aggregate, _fields, _metric_table,
                                              _mia_block, _values, aggregate, community, derived)
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
    """

    forget_split: str = "forget10"
    source: str | None = None
    template: str = "auto"
    batch_size: int = 16
    max_length: int = 512
    max_new_tokens: int = 200
    limit: int | None = None
    min_k: float = 0.4

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
    trs = truth_ratios(model, tokenizer, samples, correct=correct, template=cfg.template,
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
        return generate_and_score(model, tokenizer, samples, template=cfg.template,
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

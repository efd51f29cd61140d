"""The TOFU evaluation suite: which splits, which model passes, which per-sample columns.

TOFU (Maini et al. 2024, arXiv:2401.06121) as the community framework evaluates it (open-unlearning, Dorna et
al. 2025, arXiv:2506.12618, ``configs/eval/tofu_metrics``). Five splits, each row keyed by its stable sample id:

=========  ===============================  ============================================================
label      TOFU split                       per-sample columns
=========  ===============================  ============================================================
forget     ``forgetXX_perturbed``           prob, PARA/PERT probs, truth ratio (correct = paraphrase),
                                            ROUGE-L vs answer / paraphrase / each perturbed answer,
                                            extraction strength, exact memorisation, MIA scores
retain     ``retain_perturbed``             prob, PARA/PERT probs, truth ratio (correct = paraphrase), ROUGE-L
ra / wf    ``real_authors/world_facts_      prob, PERT probs, normalised prob, truth ratio (correct = the
           perturbed``                      answer), ROUGE-L
holdout    ``holdoutXX``                    prob, MIA scores (non-members for the forget-vs-holdout AUC)
=========  ===============================  ============================================================

Model passes (:data:`TASKS`): ``scores`` (teacher-forced log-probs of the answer and, in one more pass, of the
paraphrased + perturbed answers), ``generation`` (one greedy answer per question, scored by ROUGE-L recall against
the answer, and on the forget split also against the paraphrase and every perturbed answer: greedy decoding of the
same prompt gives the same text, so open-unlearning's three generation passes are one here), ``mia`` (Min-K%++
and the gradient norm, :mod:`mrdkit.evaluation.mia`) and ``reference`` (target and reference-model losses, only
with a reference model). MIA scores are stored "higher = member" (:mod:`mrdkit.membership`).

Two sets of numbers come out of the same rows:

- mrdkit's ``eval.json`` (:func:`aggregate`, :func:`derived`): exact truth ratios ``exp(L_correct - mean L_wrong)``,
  exact normalised probabilities, ``mean min(TR, 1/TR)``, membership AUCs "higher score = member";
- ``TOFU_EVAL.json`` (:func:`community`): open-unlearning's formulas to the bit, with its 1e-10 terms
  (:func:`community_rows`: ``TR = exp(-mean L_wrong) / (exp(-L_correct) + 1e-10)``,
  ``P_true / (P_true + sum P_wrong + 1e-10)``; ``mean min(TR, 1/(TR + 1e-10))``; privleak over ``1 - AUC_r +
  1e-10``), its per-sample fields (ROUGE: :func:`mrdkit.evaluation.community.rouge_entry`) and its MIA layout
  (loss-like scores, forget labelled 0 / holdout 1, :func:`mrdkit.evaluation.community.attack_entry`).

Metric names are open-unlearning's (:data:`METRIC_TABLE`, :data:`MIA_METRICS`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from mrdkit.data import Sample, load_tofu
from mrdkit.errors import MrdkitError
from mrdkit.evaluation.answers import answer_logprobs, candidates, truth_ratios
from mrdkit.evaluation.community import OU_EPS
from mrdkit.evaluation.generation import generate_and_score, prompt_ids
from mrdkit.membership import min_k_logprob, zlib_ratio

# label -> (TOFU split name pattern, which answer is "correct" in the truth ratio, or None)
SPLITS: dict[str, tuple[str, str | None]] = {
    "forget": ("{forget}_perturbed", "paraphrased"),
    "retain": ("retain_perturbed", "paraphrased"),
    "ra": ("real_authors_perturbed", "answer"),
    "wf": ("world_facts_perturbed", "answer"),
    "holdout": ("holdout{pct}", None),
}
TASKS = ("scores", "generation", "mia", "reference")
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
        if label == "holdout":
            return ()
        rouge = ("para_rouge_l_recall", "pert_rouge_l_recall") if label == "forget" else ()
        return ("generation", "input", "rouge_l_recall", *rouge)
    if task in ("mia", "reference"):
        if label not in MEMBERSHIP_SPLITS:
            return ()
        return ("mia_min_k_plus_plus", "mia_gradnorm") if task == "mia" else ("ref_avg_loss", "mia_reference")
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


def generation_columns(model: Any, tokenizer: Any, label: str, samples: list[Sample], cfg: TofuConfig,
                       progress: Any = None) -> dict[str, dict[str, Any]]:
    """The ``generation`` task: greedy answer, its decoded prompt (``input``, as open-unlearning decodes its
    ``input_ids``: special tokens skipped) and ROUGE-L recall against the answer; on the forget split also against
    the paraphrased answer and each perturbed answer (a list), all scoring the one greedy generation."""
    from mrdkit.evaluation.metrics import rouge_l_recall, rouge_l_recall_batch

    rows = generate_and_score(model, tokenizer, samples, template=cfg.template, max_new_tokens=cfg.max_new_tokens,
                              batch_size=cfg.batch_size, progress=progress, encoding=cfg.encoding)
    for s, ids in zip(samples, prompt_ids(samples, tokenizer, cfg.template, cfg.encoding)):
        row = rows[s.id]
        row["input"] = tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=True)
        if label == "forget":
            para, pert = candidates(s, "paraphrased")
            row["para_rouge_l_recall"] = rouge_l_recall(row["generation"], para)
            row["pert_rouge_l_recall"] = rouge_l_recall_batch([row["generation"]] * len(pert), pert)
    return rows


def mia_columns(model: Any, tokenizer: Any, samples: list[Sample], cfg: TofuConfig) -> dict[str, dict[str, Any]]:
    """The ``mia`` task: Min-K%++ (k = ``cfg.min_k``) and minus the gradient norm (p = 2), both higher = member."""
    from mrdkit.evaluation.mia import gradnorm_scores, min_k_plus_plus_scores

    common = {"template": cfg.template, "max_length": cfg.max_length, "encoding": cfg.encoding}
    mkpp = min_k_plus_plus_scores(model, tokenizer, samples, k=cfg.min_k, batch_size=cfg.batch_size, **common)
    grad = gradnorm_scores(model, tokenizer, samples, **common)
    return {s.id: {"mia_min_k_plus_plus": mkpp[s.id], "mia_gradnorm": -grad[s.id]} for s in samples}


def reference_columns(model: Any, tokenizer: Any, reference: Any, samples: list[Sample], cfg: TofuConfig
                      ) -> dict[str, dict[str, Any]]:
    """The ``reference`` task (open-unlearning ``ReferenceAttack``): mean answer NLL of the target and of the
    reference model on the same tokens (the target's tokenizer); ``mia_reference = L_ref - L_target`` (higher =
    member: the target fits the sample better than a model that never saw it)."""
    emb = reference.get_input_embeddings() if hasattr(reference, "get_input_embeddings") else None
    if emb is not None and len(tokenizer) > emb.num_embeddings:
        raise MrdkitError(f"the reference model has {emb.num_embeddings} token embeddings but the evaluated model's "
                          f"tokenizer {len(tokenizer)} tokens: mia_reference needs the same vocabulary")
    common = {"template": cfg.template, "batch_size": cfg.batch_size, "max_length": cfg.max_length,
              "encoding": cfg.encoding}
    target = answer_logprobs(model, tokenizer, samples, **common)
    ref = answer_logprobs(reference, tokenizer, samples, **common)
    return {t.id: {"ref_avg_loss": r.nll, "mia_reference": r.nll - t.nll} for t, r in zip(target, ref)}


def run_task(model: Any, tokenizer: Any, task: str, label: str, samples: list[Sample], cfg: TofuConfig,
             progress: Any = None, reference: Any = None) -> dict[str, dict[str, Any]]:
    """Run one task on one split; returns ``{sample_id: {column: value}}`` (``{}`` where the task does not apply).
    ``reference``: the reference model of the ``reference`` task."""
    if task not in TASKS:
        raise MrdkitError(f"unknown TOFU task {task!r} (known: {', '.join(TASKS)})")
    if not task_columns(label, task):
        return {}
    if task == "scores":
        return score_columns(model, tokenizer, label, samples, cfg)
    if task == "generation":
        return generation_columns(model, tokenizer, label, samples, cfg, progress)
    if task == "mia":
        return mia_columns(model, tokenizer, samples, cfg)
    if reference is None:
        raise MrdkitError("the TOFU 'reference' task needs a reference model")
    return reference_columns(model, tokenizer, reference, samples, cfg)


@dataclass
class Reference:
    """What a retain model contributes: forget-set truth ratios (forget quality) and its Min-K% AUC (privleak).

    Attributes:
        forget_truth_ratios: the retain model's per-sample forget truth ratios (index order), or None; exact ratios
            for a retain model evaluated now, whatever the log holds for a retain log.
        mia_min_k_auc: its forget-vs-holdout Min-K% AUC, or None (privleak then uses 0.5, as open-unlearning).
        source: where it came from (a model spec or a log path), for the run's meta.
        community_truth_ratios: the same ratios by open-unlearning's formula (:func:`community_truth_ratio`), for
            ``TOFU_EVAL.json``'s forget quality; None: use ``forget_truth_ratios`` (a log holds one kind only).
    """

    forget_truth_ratios: list[float] | None
    mia_min_k_auc: float | None
    source: str
    community_truth_ratios: list[float] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"forget_truth_ratio": self.forget_truth_ratios, "mia_min_k": self.mia_min_k_auc,
                "source": self.source}

    def truth_ratios(self, community: bool) -> list[float] | None:
        """The reference ratios for ``eval.json`` (``community=False``) or ``TOFU_EVAL.json``."""
        return (self.community_truth_ratios or self.forget_truth_ratios) if community else self.forget_truth_ratios


def reference_from_model(model: Any, tokenizer: Any, cfg: TofuConfig, source: str = "retain model") -> Reference:
    """Evaluate a retain model on the spot: forget truth ratios and the forget-vs-holdout Min-K% AUC."""
    from mrdkit.evaluation.metrics import mia_auc

    data = load_suite(cfg, MEMBERSHIP_SPLITS)
    forget = score_columns(model, tokenizer, "forget", data["forget"], cfg)
    holdout = _answer_columns(model, tokenizer, "holdout", data["holdout"], cfg)
    auc = mia_auc([r["mia_min_k"] for r in forget.values()], [r["mia_min_k"] for r in holdout.values()])
    rows = [forget[s.id] for s in data["forget"]]
    return Reference([r["truth_ratio"] for r in rows], auc, source,
                     [community_truth_ratio(r, "forget") for r in rows])


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
             ("forget_Q_A_PARA_ROUGE", "forget", "para_rouge_l_recall", "mean", False),
             ("forget_Q_A_PERT_ROUGE", "forget", "pert_rouge_l_recall", "mean", None),
             ("extraction_strength", "forget", "extraction_strength", "mean", False),
             ("exact_memorization", "forget", "exact_memorization", "mean", False),
             ("retain_Q_A_PARA_Prob", "retain", "para_prob", "mean", True)]
    for p in ("retain", "ra", "wf"):
        table += [(f"{p}_Q_A_Prob", p, "prob", "mean", True), (f"{p}_Q_A_PERT_Prob", p, "pert_prob", "mean", False),
                  (f"{p}_Truth_Ratio", p, "truth_ratio", "true_better", True),
                  (f"{p}_Q_A_ROUGE", p, "rouge_l_recall", "mean", True)]
    return table + [(f"{p}_Q_A_Prob_normalised", p, "prob_normalised", "mean", True) for p in ("ra", "wf")]


METRIC_TABLE = _metric_table()
MIA_METRICS = ("mia_min_k", "mia_loss", "mia_zlib", "mia_min_k_plus_plus", "mia_gradnorm", "mia_reference")


def _values(rows: Sequence[dict], col: str) -> list[Any]:
    """Present, non-NaN values of ``col`` (lists kept whole)."""
    return [r[col] for r in rows if r.get(col) is not None and not (isinstance(r[col], float) and r[col] != r[col])]


def _aggregate(kind: str, values: list[Any], eps: float) -> float:
    """``mean``: the mean over samples of each sample's value, a list (several answers) averaged first, as
    open-unlearning's ``np.mean(aggregate_to_1D(values))``; or the truth-ratio aggregators (``eps`` in
    ``closer_to_1``)."""
    import numpy as np

    from mrdkit.evaluation import metrics as M

    if kind == "closer_to_1":
        return M.truth_ratio_forget_agg(values, eps=eps)
    if kind == "true_better":
        return M.truth_ratio_retain_agg(values)
    return float(np.nanmean([np.mean(v) if isinstance(v, list) else v for v in values]))


def aggregate(rows: dict[str, list[dict]], *, eps: float = 0.0) -> dict[str, dict[str, Any]]:
    """``{metric: {value, higher_is_better, n}}`` from per-split rows; MIA AUCs are forget (members) vs holdout.

    ``eps``: the term of the forget truth-ratio aggregator ``mean min(TR, 1/(TR + eps))`` (0 for ``eval.json``,
    open-unlearning's 1e-10 for ``TOFU_EVAL.json``).
    """
    from mrdkit.evaluation.metrics import mia_auc

    out: dict[str, dict[str, Any]] = {}
    for name, split, col, kind, hib in METRIC_TABLE:
        vals = _values(rows.get(split, []), col)
        if vals:
            out[name] = {"value": _aggregate(kind, vals, eps), "higher_is_better": hib, "n": len(vals)}
    for name in MIA_METRICS:
        member, non = _values(rows.get("forget", []), name), _values(rows.get("holdout", []), name)
        if member and non:
            out[name] = {"value": mia_auc(member, non), "higher_is_better": None, "n": len(member) + len(non)}
    return out


def _forget_quality(rows: dict[str, list[dict]], ref: Reference | None, community: bool) -> dict | None:
    """KS-test forget quality against the reference's truth ratios (None without a reference)."""
    from mrdkit.evaluation.metrics import forget_quality

    trs = _values(rows.get("forget", []), "truth_ratio")
    ref_trs = None if ref is None else ref.truth_ratios(community)
    if not (trs and ref_trs):
        return None
    return {"value": forget_quality(trs, ref_trs), "higher_is_better": True, "n": len(trs)}


def _privleak(aggs: dict[str, dict], ref: Reference | None, eps: float) -> tuple[dict | None, list[str]]:
    """privleak of the Min-K% AUC against the retain model's (0.5 without one, open-unlearning's ``ref_value``)."""
    from mrdkit.evaluation.metrics import privacy_leakage

    if "mia_min_k" not in aggs:
        return None, []
    known = ref is not None and ref.mia_min_k_auc is not None
    ref_auc = ref.mia_min_k_auc if known else 0.5
    notes = [] if known else ["privleak relative to AUC 0.5 (no retain mia_min_k)"]
    if ref_auc >= 1.0 and eps == 0:  # the retain model separates forget from holdout perfectly: undefined
        return None, notes + ["privleak omitted: the retain model's mia_min_k AUC is 1"]
    value = privacy_leakage(aggs["mia_min_k"]["value"], ref_auc, eps=eps)
    return {"value": value, "higher_is_better": None, "n": aggs["mia_min_k"]["n"], "ideal": 0.0}, notes


def derived(aggs: dict[str, dict], rows: dict[str, list[dict]], ref: Reference | None, *,
            community: bool = False) -> tuple[dict, list[str]]:
    """Forget quality, model utility and privleak, with a note for each one that cannot be computed.

    ``community=True`` computes them as ``TOFU_EVAL.json`` holds them: forget quality against the reference's
    open-unlearning truth ratios, privleak with open-unlearning's 1e-10 in the denominator (``aggs`` / ``rows``
    are then the community ones, :func:`community_rows`).
    """
    from mrdkit.evaluation import metrics as M

    out, notes = {}, []
    fq = _forget_quality(rows, ref, community)
    if fq is None:
        notes.append("forget_quality omitted: no retain model or retain log given")
    else:
        out["forget_quality"] = fq
    missing = [k for k in M.MODEL_UTILITY_KEYS if k not in aggs]
    if missing:
        notes.append(f"model_utility omitted: missing {', '.join(missing)}")
    else:
        out["model_utility"] = {"value": M.model_utility({k: aggs[k]["value"] for k in M.MODEL_UTILITY_KEYS}),
                                "higher_is_better": True, "n": len(M.MODEL_UTILITY_KEYS)}
    pl, pl_notes = _privleak(aggs, ref, OU_EPS if community else 0.0)
    notes += pl_notes
    if pl is not None:
        out["privleak"] = pl
    return out, notes


def community_truth_ratio(row: dict[str, Any], label: str) -> float | None:
    """open-unlearning's truth ratio of one row (``evals/metrics/memorization.py`` ``truth_ratio``):
    ``exp(-mean_j L_wrong_j) / (exp(-L_correct) + 1e-10)``, L the mean token NLLs (``avg_loss``), correct = the
    paraphrase (forget, retain) or the answer (real authors, world facts). None when a loss is missing."""
    from mrdkit.evaluation.metrics import truth_ratio

    correct = row.get("para_avg_loss" if SPLITS[label][1] == "paraphrased" else "avg_loss")
    if correct is None or row.get("pert_avg_loss") is None:
        return None
    return truth_ratio(correct, row["pert_avg_loss"], eps=OU_EPS)


def community_rows(rows: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """Copies of the rows with open-unlearning's ``truth_ratio`` (:func:`community_truth_ratio`) and
    ``prob_normalised = P_true / (P_true + sum_j P_wrong_j + 1e-10)`` (its ``probability_w_options``)."""
    from mrdkit.evaluation.metrics import normalised_probability

    out = {}
    for label, split_rows in rows.items():
        out[label] = []
        for r in split_rows:
            row = dict(r)
            if "truth_ratio" in r:
                row["truth_ratio"] = community_truth_ratio(r, label)
            if "prob_normalised" in r:
                row["prob_normalised"] = normalised_probability(r["prob"], r["pert_prob"], eps=OU_EPS)
            out[label].append(row)
    return out


def _rouge_truth(col: str, sample: Sample) -> str | list[str]:
    """The ground truth a ROUGE column scored: the answer, the paraphrase, or the list of perturbed answers."""
    if col == "para_rouge_l_recall":
        return candidates(sample, "paraphrased")[0]
    if col == "pert_rouge_l_recall":
        return candidates(sample, "paraphrased")[1]
    return sample.answer


def _rouge_fields(col: str, row: dict, sample: Sample) -> dict[str, Any]:
    """open-unlearning's ROUGE entry; for a list of answers, one list per field (its ``dict_transpose``)."""
    from mrdkit.evaluation.community import rouge_entry

    truth = _rouge_truth(col, sample)
    if isinstance(truth, str):
        return rouge_entry(row["input"], truth, row["generation"])
    entries = [rouge_entry(row["input"], t, row["generation"]) for t in truth]
    return {key: [e[key] for e in entries] for key in entries[0]}


def _fields(col: str, row: dict, sample: Sample) -> dict[str, Any]:
    """One sample's ``value_by_index`` entry as open-unlearning writes it for a metric on ``col``."""
    if col in ("prob", "para_prob", "pert_prob"):
        return {"prob": row[col], "avg_loss": row[col.replace("prob", "avg_loss")]}
    if col == "prob_normalised":
        return {"prob": row[col]}
    if col.endswith("rouge_l_recall"):
        return _rouge_fields(col, row, sample)
    return {"score": row[col]}


def _attack(rows: dict[str, list[dict]], name: str, index: dict[str, int]) -> dict[str, Any]:
    """The ``mia_*`` entry: scores negated to open-unlearning's loss-like convention (higher = non-member)."""
    from mrdkit.evaluation.community import attack_entry

    forget, holdout = ({index[r["id"]]: -r[name] for r in rows[split] if r.get(name) is not None}
                       for split in MEMBERSHIP_SPLITS)
    return attack_entry(forget, holdout)


def community(rows: dict[str, list[dict]], data: dict[str, list[Sample]], ref: Reference | None) -> dict:
    """The ``TOFU_EVAL.json`` document, by open-unlearning's conventions (module docstring): every metric mrdkit
    computes, ``forget_quality`` as ``{"agg_value": null}`` without a reference; index = row in the evaluated
    split (:func:`community.to_community`)."""
    from mrdkit.evaluation.community import to_community

    crows = community_rows(rows)
    metrics = aggregate(crows, eps=OU_EPS)
    metrics.update(derived(metrics, crows, ref, community=True)[0])
    index = {s.id: i for samples in data.values() for i, s in enumerate(samples)}
    by_id = {s.id: s for samples in data.values() for s in samples}
    per_sample = {name: {r["id"]: _fields(col, r, by_id[r["id"]]) for r in crows.get(split, []) if col in r}
                  for name, split, col, _, _ in METRIC_TABLE if name in metrics}
    aggs = {"forget_quality": None, **{k: v["value"] for k, v in metrics.items()}}
    doc = to_community(per_sample, aggs, index)
    for name in MIA_METRICS:
        if name in metrics:
            doc[name] = _attack(crows, name, index)
    return doc

"""MUSE metrics: VerbMem, KnowMem, PrivLeak and held-out perplexity (Shi et al. 2024, arXiv:2407.06460).

Definitions as the MUSE reference code implements them (``shared/data/muse-news/README.md``). Greedy decoding;
ROUGE-L F1 is :func:`mrdkit.evaluation.metrics.rouge_l_f1` (``use_stemmer=False``, reference first):

- **VerbMem** (C1): prompt ids = ``tokenizer(prompt)`` (BOS where the tokenizer adds one), at most 128 new tokens;
  reference = ``gt`` tokenized the same way, cut to its first 128 tokens (BOS counts) and decoded;
  ``VerbMem = 100 * mean_i ROUGE-L-F1(continuation_i, reference_i)``.
- **KnowMem** (C2 on forget QA, C4 utility on retain QA): prompt = ``sum_j "Question: {q_j}\\nAnswer: {a_j}\\n\\n"``
  over the 10 ICL pairs + ``"Question: {q}\\nAnswer: "``; at most 32 new tokens, cut at the first ``"\\n\\n"``,
  ``"\\nQuestion"`` or ``"Question:"``; ``KnowMem = 100 * mean_i ROUGE-L-F1(answer_i, a_i)``.
- **PrivLeak** (C3): per window x (start token + text, no EOS), Min-40% membership score
  ``m(x) = (1/k) sum of the k = floor(0.4 n) lowest token log-probs`` (:func:`mrdkit.membership.min_k_logprob`;
  MUSE's ``s(x) = -m(x)``); ``AUC`` = ROC-AUC with forget labelled 0 and holdout 1 (:func:`metrics.muse_auc`);
  ``PrivLeak = (AUC - AUC_retrain) / AUC_retrain * 100`` with ``AUC_retrain`` from a retain model, else MUSE-News's
  constant 0.4772.
- **Perplexity** of the held-out windows: ``exp(sum NLL / sum n)`` over the same scoring pass.
- **Extraction strength** (not a MUSE metric; open-unlearning's MUSE default, ``muse_metrics/extraction_strength
  .yaml`` on the VerbMem forget items): the prompt then ``" " + gt`` teacher-forced (its ``CompletionDataset`` with
  ``insert_space=True``, no EOS), labels on the gt tokens; ES over them without the last label (its
  ``tokenwise_vocab_logprobs`` drops it), :func:`mrdkit.evaluation.metrics.extraction_strength` with its loop.

Two files, two conventions. ``eval.json`` follows MUSE (the numbers above). ``MUSE_EVAL.json`` /
``MUSE_SUMMARY.json`` follow open-unlearning (:func:`community`): ROUGE by its ``eval_text_similarity`` (stemmed,
``rougeL_f1`` aggregated on a 0-1 scale, against the whole ``gt`` rather than its first 128 tokens); ``mia_min_k``
without the last token of each window, AUC with forget 0 / holdout 1 on loss-like scores; ``privleak =
((1 - AUC) - (1 - AUC_r)) / ((1 - AUC_r) + 1e-10) * 100`` with ``AUC_r`` the retain model's ``mia_min_k`` AUC or
its ``ref_value`` 0.5 (not MUSE's 0.4772); the summary holds its default metric set.

Small models: a prompt longer than ``max_prompt_tokens`` (or than the position limit minus the new tokens) keeps
its LAST tokens (after the BOS, if any); windows longer than ``max_length`` (default: the position limit) are cut on
the right. Rows record ``prompt_tokens`` / ``prompt_cut`` / ``truncated`` so every output says so.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from mrdkit.data import EncodedSample, Sample, encode_samples, pad_id, read_records, records_to_samples
from mrdkit.errors import MrdkitError
from mrdkit.evaluation.answers import score_encoded
from mrdkit.evaluation.generation import generate_batch, prompt_ids
from mrdkit.evaluation.metrics import extraction_strength, mia_auc, muse_auc, perplexity, rouge_l_f1
from mrdkit.membership import min_k_logprob
from mrdkit.models import context_length, resolve_model

VERBMEM_NEW_TOKENS, KNOWMEM_NEW_TOKENS, MIN_K = 128, 32, 0.4
AUC_RETRAIN_NEWS = 0.4772  # MUSE constants.py, AUC_RETRAIN['news']['forget_holdout_Min-40%']
KNOWMEM_STOPS = ("\n\n", "\nQuestion", "Question:")
# label -> (file, ICL file) under the MUSE-News folder
FILES = {"verbmem_forget": ("verbmem/forget.json", None),
         "knowmem_forget": ("knowmem/forget_qa.json", "knowmem/forget_qa_icl.json"),
         "knowmem_retain": ("knowmem/retain2_qa.json", "knowmem/retain2_qa_icl.json"),
         "privleak_forget": ("privleak/forget.json", None), "privleak_holdout": ("privleak/holdout.json", None)}
COLUMNS = {"verbmem": ["rougeL_f1", "input", "extraction_strength"], "knowmem": ["rougeL_f1", "input"],
           "privleak": ["min_k", "min_k_community", "nll_sum"]}
# eval.json label -> open-unlearning metric name
COMMUNITY_ROUGE = {"verbmem_forget": "forget_verbmem_ROUGE", "knowmem_forget": "forget_knowmem_ROUGE",
                   "knowmem_retain": "retain_knowmem_ROUGE"}


@dataclass
class MuseConfig:
    """What the MUSE suite reads and how (``limit``: first N items per file; ``batch_size``: per pass)."""

    data_dir: Optional[str] = None
    limit: Optional[int] = None
    max_prompt_tokens: Optional[int] = None
    max_length: Optional[int] = None
    batch_size: int = 8
    auc_retrain: float = AUC_RETRAIN_NEWS

    def folder(self) -> Path:
        from mrdkit.paths import muse_dir

        return Path(self.data_dir) if self.data_dir else muse_dir()


def load_split(label: str, cfg: MuseConfig, *, icl: bool = False) -> list[Sample]:
    """Samples of one MUSE file (ids ``muse_<label>:<row>``), or its ICL examples (all 10, never limited)."""
    if label not in FILES:
        raise MrdkitError(f"unknown MUSE split {label!r} (known: {', '.join(FILES)})")
    name = FILES[label][1 if icl else 0]
    path = cfg.folder() / name
    if not path.is_file():
        raise MrdkitError(f"{path}: no such file (MUSE-News folder {cfg.folder()}; set --data or MRDKIT_DATA_DIR)")
    keys = {"question_key": "prompt", "answer_key": "gt"} if label.startswith("verbmem") else {}
    samples = records_to_samples(read_records(path, fmt="json"), str(path), id_prefix=f"muse_{label}", **keys)
    return samples if icl else samples[:cfg.limit]



def knowmem_prompt(icl: Sequence[tuple[str, str]], question: str) -> str:
    """MUSE's few-shot prompt: the ICL pairs as ``Question: q\\nAnswer: a\\n\\n``, then the question."""
    prefix = "".join(f"Question: {q}\nAnswer: {a}\n\n" for q, a in icl)
    return prefix + f"Question: {question}\nAnswer: "


def cut_answer(text: str) -> str:
    """A KnowMem generation cut at the first ``"\\n\\n"``, ``"\\nQuestion"`` or ``"Question:"``, stripped."""
    cut = min([i for i in (text.find(s) for s in KNOWMEM_STOPS) if i >= 0], default=len(text))
    return text[:cut].strip()


def verbmem_reference(gt: str, tokenizer: Any, n: int = VERBMEM_NEW_TOKENS) -> str:
    """``gt`` cut to its first ``n`` tokens as MUSE tokenizes it (special tokens such as BOS count), decoded."""
    ids = list(tokenizer(gt, add_special_tokens=True, verbose=False)["input_ids"])[:n]
    return tokenizer.decode(ids, skip_special_tokens=True)


def clip_prompt(row: Sequence[int], keep: Optional[int], bos: Optional[int]) -> list[int]:
    """The last ``keep`` tokens of a prompt; a leading BOS stays first (and counts)."""
    row = list(row)
    if keep is None or len(row) <= keep:
        return row
    if bos is not None and row[:1] == [bos]:
        return [bos] + row[len(row) - keep + 1:]
    return row[len(row) - keep:]



def generate_rows(model: Any, tokenizer: Any, rows: Sequence[Sequence[int]], max_new_tokens: int,
                  batch_size: int = 8) -> list[str]:
    """Greedy continuations of prompt id rows (:mod:`mrdkit.evaluation.generation`), decoded as MUSE does."""
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
    out: dict[int, str] = {}
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            new = generate_batch(model, tokenizer, [list(rows[i]) for i in chunk], max_new_tokens)
            for i, toks in zip(chunk, new):
                out[i] = tokenizer.decode(toks, skip_special_tokens=True)
    finally:
        model.train(was_training)
    return [out[i] for i in range(len(rows))]


def _prompts(model: Any, tokenizer: Any, samples: Sequence[Sample], new_tokens: int,
             max_prompt_tokens: Optional[int]) -> tuple[list[list[int]], list[int]]:
    """Prompt rows clipped to ``max_prompt_tokens`` and to the position limit minus ``new_tokens``; full lengths."""
    rows = prompt_ids(samples, tokenizer, template="raw", encoding="community")  # MUSE tokenizes the prompt alone
    limit = context_length(model)
    caps = [c for c in (max_prompt_tokens, None if limit is None else limit - new_tokens) if c is not None]
    keep = min(caps) if caps else None
    if keep is not None and keep < 1:
        raise MrdkitError(f"no room for a prompt: position limit {limit}, {new_tokens} new tokens")
    bos = getattr(tokenizer, "bos_token_id", None)
    return [clip_prompt(r, keep, bos) for r in rows], [len(r) for r in rows]


def _rouge_rows(tokenizer, samples, rows, full, gens, refs) -> dict[str, dict[str, Any]]:
    """Per item: generation, MUSE reference, ROUGE-L F1, the prompt given (decoded as open-unlearning writes its
    ``input``) and whether it was clipped."""
    return {s.id: {"generation": g, "reference": ref, "rougeL_f1": rouge_l_f1(g, ref),
                   "input": tokenizer.decode(r, skip_special_tokens=True, clean_up_tokenization_spaces=True),
                   "prompt_tokens": len(r), "prompt_cut": len(r) < n}
            for s, r, n, g, ref in zip(samples, rows, full, gens, refs)}


def completion_extraction(model: Any, tokenizer: Any, samples: Sequence[Sample], rows: Sequence[Sequence[int]],
                          batch_size: int = 8) -> dict[str, float]:
    """``{id: extraction strength}`` of ``" " + sample.answer`` teacher-forced after the prompt ids ``rows``.

    The encoded sequence is assembled here rather than by :func:`mrdkit.data.encode_samples` because the prompt is
    already token ids (clipped like the generation prompt); as there, prompt and answer are tokenized separately.
    No EOS (open-unlearning's completion data has none); the last label is dropped as its ES does, and its loop is
    used (:func:`~mrdkit.evaluation.metrics.extraction_strength`, ``open_unlearning_compat``). Cut at the
    position limit; an item with no answer token left gets NaN.
    """
    length = context_length(model) or 10**9
    spaced = [" " + s.answer for s in samples]
    answers = [list(a) for a in tokenizer(spaced, add_special_tokens=False, verbose=False)["input_ids"]]
    encoded = [EncodedSample(s.id, (list(r) + a)[:length], ([-100] * len(r) + a)[:length], len(r) + len(a) > length)
               for s, r, a in zip(samples, rows, answers)]
    scores = score_encoded(model, encoded, pad_id(tokenizer), batch_size)
    return {sc.id: extraction_strength(sc.token_correct[:-1], open_unlearning_compat=True) for sc in scores}


def verbmem_rows(model: Any, tokenizer: Any, samples: Sequence[Sample], *, max_new_tokens: int = VERBMEM_NEW_TOKENS,
                 max_prompt_tokens: Optional[int] = None, batch_size: int = 8) -> dict[str, dict[str, Any]]:
    """Per item: continuation of ``sample.prompt``, truncated ``sample.answer`` (gt) and their ROUGE-L F1, and the
    extraction strength of the gt after the same prompt (:func:`completion_extraction`)."""
    rows, full = _prompts(model, tokenizer, samples, max_new_tokens, max_prompt_tokens)
    gens = generate_rows(model, tokenizer, rows, max_new_tokens, batch_size)
    refs = [verbmem_reference(s.answer, tokenizer, max_new_tokens) for s in samples]
    out = _rouge_rows(tokenizer, samples, rows, full, gens, refs)
    for sid, es in completion_extraction(model, tokenizer, samples, rows, batch_size).items():
        out[sid]["extraction_strength"] = es
    return out


def knowmem_rows(model: Any, tokenizer: Any, samples: Sequence[Sample], icl: Sequence[Sample], *,
                 max_new_tokens: int = KNOWMEM_NEW_TOKENS, max_prompt_tokens: Optional[int] = None,
                 batch_size: int = 8) -> dict[str, dict[str, Any]]:
    """Per question: the cut few-shot answer and its ROUGE-L F1 against the true answer."""
    pairs = [(e.prompt, e.answer) for e in icl]
    prompted = [s.replace(prompt=knowmem_prompt(pairs, s.prompt)) for s in samples]
    rows, full = _prompts(model, tokenizer, prompted, max_new_tokens, max_prompt_tokens)
    gens = [cut_answer(g) for g in generate_rows(model, tokenizer, rows, max_new_tokens, batch_size)]
    return _rouge_rows(tokenizer, samples, rows, full, gens, [s.answer for s in samples])


def membership_rows(model: Any, tokenizer: Any, samples: Sequence[Sample], *, k: float = MIN_K,
                    max_length: Optional[int] = None, batch_size: int = 8) -> dict[str, dict[str, Any]]:
    """Per text: Min-k% membership score (higher = member) over every token and, for the community file, without
    the last token (``min_k_community``: open-unlearning's ``tokenwise_logprobs`` drops the last label); summed NLL
    and token count (start token, no EOS)."""
    length = max_length or context_length(model) or 10**9
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # truncation is recorded per row instead
        encoded = encode_samples([s.replace(kind="text", prompt="", answer=s.text) for s in samples], tokenizer,
                                 token_set="all", max_length=length, add_eos=False)
    scores = score_encoded(model, encoded, pad_id(tokenizer), batch_size)
    values = [torch.tensor(sc.token_logprobs, dtype=torch.float64) for sc in scores]
    return {e.id: {"min_k": min_k_logprob(v, k), "min_k_community": min_k_logprob(v[:-1] if v.numel() > 1 else v, k),
                   "nll_sum": -sc.sum_logprob, "n_tokens": sc.n_tokens, "truncated": e.truncated}
            for e, sc, v in zip(encoded, scores, values)}



def privleak_auc(rows: dict[str, dict[str, dict[str, Any]]]) -> float:
    """MUSE ``forget_holdout_Min-40%`` AUC from the privleak rows (forget = 0, holdout = 1)."""
    return muse_auc([r["min_k"] for r in rows["privleak_forget"].values()],
                    [r["min_k"] for r in rows["privleak_holdout"].values()])


def aggregate(rows: dict[str, dict[str, dict[str, Any]]], auc_retrain: float) -> dict[str, dict[str, Any]]:
    """eval.json metrics (VerbMem / KnowMem on MUSE's 0-100 scale, as in its tables) from per-sample rows."""
    def entry(value: float, hib: Optional[bool], n: int) -> dict[str, Any]:
        return {"value": value, "higher_is_better": hib, "n": n}

    out = {}
    for label in ("verbmem_forget", "knowmem_forget", "knowmem_retain"):
        vals = [r["rougeL_f1"] for r in rows[label].values()]
        out[label] = entry(100.0 * sum(vals) / len(vals), True if label.endswith("retain") else None, len(vals))
    auc = privleak_auc(rows)
    n_pl = len(rows["privleak_forget"]) + len(rows["privleak_holdout"])
    out["auc_forget_holdout"] = entry(auc, None, n_pl)
    out["privleak"] = entry((auc - auc_retrain) / auc_retrain * 100.0 if auc_retrain else float("nan"), None, n_pl)
    for split in ("holdout", "forget"):
        r = list(rows[f"privleak_{split}"].values())
        out[f"perplexity_{split}"] = entry(perplexity([x["nll_sum"] for x in r], [x["n_tokens"] for x in r]),
                                           False if split == "holdout" else None, len(r))
    es = _extraction(rows)
    if es:
        out["extraction_strength"] = entry(sum(es.values()) / len(es), False, len(es))
    return out


def _extraction(rows: dict[str, dict[str, dict[str, Any]]]) -> dict[str, float]:
    """``{id: ES}`` of the VerbMem forget items that have one (NaN: no gt token fitted)."""
    return {sid: r["extraction_strength"] for sid, r in rows["verbmem_forget"].items()
            if r.get("extraction_strength") is not None and r["extraction_strength"] == r["extraction_strength"]}


def notes(rows: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    """One line per split whose prompts were clipped or whose windows were cut."""
    out = []
    for label, by_id in rows.items():
        cut = [r for r in by_id.values() if r.get("prompt_cut") or r.get("truncated")]
        if cut and label.startswith("privleak"):
            out.append(f"{label}: {len(cut)} of {len(by_id)} windows cut to their first "
                       f"{max(r['n_tokens'] for r in cut)} scored tokens (position limit / --max-length)")
        elif cut:
            out.append(f"{label}: {len(cut)} of {len(by_id)} prompts clipped to their last "
                       f"{max(r['prompt_tokens'] for r in cut)} tokens (position limit / --max-prompt-tokens)")
    return out


def _index(sample_id: str) -> int:
    """The community index of a MUSE item: its row in the file (ids are ``muse_<label>:<row>``)."""
    return int(sample_id.rsplit(":", 1)[1])


def _attack(rows: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """open-unlearning's ``mia_min_k`` entry from the ``min_k_community`` scores, negated to its loss-like sign."""
    from mrdkit.evaluation.community import attack_entry

    forget, holdout = ({_index(sid): -r["min_k_community"] for sid, r in rows[f"privleak_{split}"].items()}
                       for split in ("forget", "holdout"))
    return attack_entry(forget, holdout)


def community(rows: dict[str, dict[str, dict[str, Any]]], data: dict[str, list[Sample]],
              ref_auc: Optional[float] = None) -> dict[str, Any]:
    """``MUSE_EVAL.json`` by open-unlearning's conventions (module docstring), not MUSE's: per index its
    ``eval_text_similarity`` entry (stemmed ROUGE against the whole gt / answer, ``rougeL_f1`` aggregated, 0-1),
    extraction strength, ``mia_min_k`` and ``privleak`` against ``ref_auc`` (the retain model's ``mia_min_k`` AUC,
    default open-unlearning's ``ref_value`` 0.5)."""
    import numpy as np

    from mrdkit.evaluation.community import OU_EPS, rouge_entry, to_community
    from mrdkit.evaluation.metrics import privacy_leakage

    truth = {label: {s.id: s.answer for s in samples} for label, samples in data.items()}
    per: dict[str, dict[str, Any]] = {
        name: {sid: rouge_entry(r["input"], truth[label][sid], r["generation"]) for sid, r in rows[label].items()}
        for label, name in COMMUNITY_ROUGE.items()}
    aggs: dict[str, Any] = {name: float(np.mean([e["rougeL_f1"] for e in per[name].values()])) for name in per}
    es = _extraction(rows)
    if es:
        per["extraction_strength"] = es
        aggs["extraction_strength"] = float(np.mean(list(es.values())))
    doc = to_community(per, aggs, {sid: _index(sid) for by_id in rows.values() for sid in by_id})
    doc["mia_min_k"] = _attack(rows)
    ref = 0.5 if ref_auc is None else ref_auc
    doc["privleak"] = {"agg_value": privacy_leakage(doc["mia_min_k"]["auc"], ref, eps=OU_EPS)}
    return doc


def run_task(model: Any, tokenizer: Any, label: str, samples: Sequence[Sample], cfg: MuseConfig) -> dict:
    """Per-sample rows of one split (the model pass the runner skips when its rows exist)."""
    common = {"batch_size": cfg.batch_size}
    if label.startswith("verbmem"):
        return verbmem_rows(model, tokenizer, samples, max_prompt_tokens=cfg.max_prompt_tokens, **common)
    if label.startswith("knowmem"):
        return knowmem_rows(model, tokenizer, samples, load_split(label, cfg, icl=True),
                            max_prompt_tokens=cfg.max_prompt_tokens, **common)
    return membership_rows(model, tokenizer, samples, max_length=cfg.max_length, **common)


def _community_auc(rows: dict[str, dict[str, dict[str, Any]]]) -> float:
    """open-unlearning's ``mia_min_k`` AUC (= member-convention AUC) from the ``min_k_community`` scores."""
    return mia_auc([r["min_k_community"] for r in rows["privleak_forget"].values()],
                   [r["min_k_community"] for r in rows["privleak_holdout"].values()])


def _reference_from_log(retain: str | Path) -> tuple[float, float, str]:
    """``(AUC_retrain, mia_min_k AUC, source)`` from a retain run: its ``eval.json`` (MUSE's AUC) and, when it
    sits beside it, its ``MUSE_EVAL.json`` (open-unlearning's AUC; else ``1 - AUC_retrain``, every token)."""
    from mrdkit.runs import read_json

    path = Path(retain) / "eval.json" if Path(retain).is_dir() else Path(retain)
    entry = read_json(path).get("metrics", {}).get("auc_forget_holdout")
    if not entry:
        raise MrdkitError(f"{path}: no 'auc_forget_holdout' metric (not a muse-news eval.json)")
    auc = float(entry["value"])
    sibling = path.parent / "MUSE_EVAL.json"
    ou = read_json(sibling).get("mia_min_k", {}).get("agg_value") if sibling.is_file() else None
    return auc, 1.0 - auc if ou is None else float(ou), f"retain log {path}"


def retain_reference(retain: Any, cfg: MuseConfig) -> tuple[float, Optional[float], str]:
    """``(AUC_retrain, community AUC, source)``: from a retain ``(model, tokenizer, spec)`` (its forget-vs-holdout
    Min-40% AUCs), a retain log (an ``eval.json`` or run directory of this suite), else MUSE-News's constant and no
    community AUC (``MUSE_EVAL.json`` then uses open-unlearning's 0.5)."""
    if retain is None:
        return cfg.auc_retrain, None, f"MUSE-News AUC_retrain constant {cfg.auc_retrain}"
    if isinstance(retain, (str, Path)):
        return _reference_from_log(retain)
    model, tok, spec = retain
    rows = {lab: membership_rows(model, tok, load_split(lab, cfg), max_length=cfg.max_length,
                                 batch_size=cfg.batch_size) for lab in ("privleak_forget", "privleak_holdout")}
    return privleak_auc(rows), _community_auc(rows), f"retain model {spec or '(in memory)'}"


def run_muse(model: Any, tokenizer: Any, store: Any, cfg: MuseConfig, *, retain: Any = None,
             progress: Optional[bool] = None) -> tuple:
    """Run every split whose rows are missing from ``store`` (a runner ``RowStore``), then return ``(samples by
    split, metrics, notes, community doc, reference source)``; ``retain`` as in :func:`retain_reference`."""
    from mrdkit.progress import progress_bar

    data = {label: load_split(label, cfg) for label in FILES}
    for label, samples in data.items():
        ids = [s.id for s in samples]
        if not store.has(label, ids, COLUMNS[label.split("_")[0]]):
            with progress_bar(f"muse {label}", len(samples), show=progress) as update:
                store.merge(label, ids, run_task(model, tokenizer, label, samples, cfg))
                update(len(samples), len(samples))
    rows = {label: {s.id: store.rows[(label, s.id)] for s in samples} for label, samples in data.items()}
    auc_retrain, community_auc, source = retain_reference(retain, cfg)
    metrics = aggregate(rows, auc_retrain)
    metrics["privleak"]["auc_retrain"] = auc_retrain
    return data, metrics, notes(rows), community(rows, data, community_auc), source


def run_from_options(model: Any, tok: Any, store: Any, opts: dict, retain_model: Any, retain_log: Any,
                     dtype: str, device: str, progress: Optional[bool], *, trust_remote_code: bool = False) -> tuple:
    """:func:`run_muse` with :func:`mrdkit.evaluation.runner.evaluate`'s options (``data`` = the folder)."""
    if retain_model is not None and retain_log is not None:
        raise MrdkitError("give either a retain model or a retain log, not both")
    cfg = MuseConfig(data_dir=opts["data"], limit=opts["limit"], max_prompt_tokens=opts["max_prompt_tokens"],
                     max_length=opts["max_length"], batch_size=opts["batch_size"])
    retain = retain_log
    if retain_model is not None:
        retain = resolve_model(retain_model, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    return run_muse(model, tok, store, cfg, retain=retain, progress=progress)

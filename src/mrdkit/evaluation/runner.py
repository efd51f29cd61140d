"""``mrdkit.evaluate``: run a benchmark, aggregate, and write the run directory (re-runs skip finished work).

Outputs (house rule 7; open-unlearning's ``Evaluator`` for the community files):

- ``eval.json``: ``{"metrics": {name: {value, higher_is_better, n}}, "meta": {...}}``. ``forget_truth_ratio``
  also keeps its per-sample values, so this file can serve as a retain log (forget-quality reference).
- ``eval_samples.jsonl``: one row per (split, sample): ``{id, split, index, <columns>}``; ``index`` is the row
  in the evaluated split (the community index).
- TOFU: ``TOFU_EVAL.json`` (every metric) / ``TOFU_SUMMARY.json`` (open-unlearning's 7 default metrics); MUSE-News
  (:mod:`mrdkit.evaluation.muse`): ``MUSE_EVAL.json`` / ``MUSE_SUMMARY.json``. These follow open-unlearning's
  formulas and conventions (:func:`mrdkit.evaluation.tofu.community`, :func:`mrdkit.evaluation.muse.community`);
  ``eval.json`` follows mrdkit's (exact truth ratios) and, for MUSE-News, MUSE's own; ``lm-eval``
  (:mod:`mrdkit.evaluation.lmeval`): ``lm_eval_results.json``, lm-eval's own result document.

Skipping: a task (one model pass over one split) whose columns are already in ``eval_samples.jsonl`` for every
sample is not run again unless ``overwrite``; aggregates and derived metrics are always recomputed from the rows
(cheap), so a new retain reference updates forget quality without touching the model.

The run directory: :data:`IDENTITY` names the options that change the numbers (a directory made with other values
is refused without ``overwrite``); :class:`RowStore` keeps the per-sample rows keyed by (split, id) in
``eval_samples.jsonl``, saved after every task.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from mrdkit.errors import MrdkitError
from mrdkit.evaluation import tofu
from mrdkit.evaluation.tofu import Reference, TofuConfig
from mrdkit.models import resolve_model

BENCHMARKS = ("tofu", "mcq", "ppl", "muse-news", "muse-books", "lm-eval")


# options that change the numbers; a run directory made with other values is refused without overwrite. The
# weights' fingerprints (model_weights, reference_weights: mrdkit.models.model_fingerprint) are part of it, so rows
# cached for a model are never served for other weights saved at the same path (as scoring and unlearning do).
IDENTITY = ("benchmark", "model", "model_weights", "forget_split", "data", "data_options", "split", "template",
            "max_length", "max_new_tokens", "limit", "mcq_format", "mcq_norm", "tofu_source", "max_prompt_tokens",
            "encoding", "reference_model", "reference_weights", "tasks", "include_path", "num_fewshot")


class RowStore:
    """Per-sample rows keyed by (split, id), persisted to ``eval_samples.jsonl`` after every task."""

    def __init__(self, out: Path | None, rows: Sequence[dict] = ()):
        self.out = out
        self.rows: dict[tuple[str, str], dict[str, Any]] = {(r["split"], r["id"]): dict(r) for r in rows}

    def has(self, split: str, ids: Sequence[str], columns: Sequence[str]) -> bool:
        """Whether every sample of ``split`` already has every column."""
        return all(all(c in self.rows.get((split, i), {}) for c in columns) for i in ids)

    def merge(self, split: str, ids: Sequence[str], columns: dict[str, dict[str, Any]]) -> None:
        for index, sid in enumerate(ids):
            row = self.rows.setdefault((split, sid), {"id": sid, "split": split, "index": index})
            row.update(columns.get(sid, {}))
        self.save()

    def split(self, split: str) -> dict[str, dict[str, Any]]:
        return {sid: row for (sp, sid), row in self.rows.items() if sp == split}

    def save(self) -> None:
        if self.out is not None:
            from mrdkit.runs import atomic_write_jsonl

            atomic_write_jsonl(self.out / "eval_samples.jsonl", list(self.rows.values()))


def open_store(out: Path | None, identity: dict[str, Any], overwrite: bool) -> RowStore:
    """Check an existing run directory's identity and load its rows (none when ``overwrite``)."""
    if out is None:
        return RowStore(None)
    from mrdkit.runs import RunDir, check_output_dir, read_json, read_jsonl, refuse_if_differs

    check_output_dir(out)  # a model folder or a user's files: refused before their config.json is even read
    rows: list[dict] = []
    if not overwrite and (out / "config.json").is_file():
        previous = read_json(out / "config.json")
        refuse_if_differs({k: previous.get(k) for k in IDENTITY}, {k: identity.get(k) for k in IDENTITY},
                          f"{out} holds an evaluation with other settings", "use --overwrite or another --out")
        if (out / "eval_samples.jsonl").is_file():
            rows = read_jsonl(out / "eval_samples.jsonl")
    RunDir(out, identity, overwrite=True)
    return RowStore(out, rows)


def write_outputs(out: Path, result: EvalResult) -> None:
    """``eval.json`` (forget truth ratios per sample: a retain log), community files, ``DONE.json``."""
    from mrdkit.evaluation.community import write_community
    from mrdkit.runs import atomic_write_json, release_run_dir

    metrics = {k: dict(v) for k, v in result.metrics.items()}
    if "forget_truth_ratio" in metrics:
        metrics["forget_truth_ratio"]["per_sample"] = {r["id"]: r["truth_ratio"] for r in result.rows
                                                       if r["split"] == "forget" and "truth_ratio" in r}
    atomic_write_json(out / "eval.json", {"metrics": metrics, "meta": result.meta})
    if result.community is not None:
        write_community(out, result.community, benchmark="MUSE" if result.meta["benchmark"].startswith("muse")
                        else "TOFU")
    atomic_write_json(out / "DONE.json", {"seconds": result.meta["seconds"]})
    release_run_dir(out)


@dataclass
class EvalResult:
    """What :func:`evaluate` returns (and writes).

    Attributes:
        metrics: ``{name: {"value", "higher_is_better", "n"}}``.
        rows: per-sample rows ``{id, split, index, ...}``.
        meta: run description, notes on omitted metrics, the forget-quality reference.
        community: the ``TOFU_EVAL.json`` / ``MUSE_EVAL.json`` document (TOFU, MUSE-News).
        out_dir: the run directory, when one was written.
    """

    metrics: dict[str, dict[str, Any]]
    rows: list[dict[str, Any]]
    meta: dict[str, Any] = field(default_factory=dict)
    community: dict[str, Any] | None = None
    out_dir: Path | None = None

    def value(self, name: str) -> float | None:
        """Aggregate value of metric ``name`` (one-line error naming the known metrics when absent)."""
        if name not in self.metrics:
            raise MrdkitError(f"no metric {name!r} in this evaluation (have: {', '.join(sorted(self.metrics))})")
        return self.metrics[name]["value"]


def _reference(retain_model: Any, retain_log: Any, cfg: TofuConfig, dtype: str, device: str,
               trust_remote_code: bool = False) -> Reference | None:
    """The forget-quality / privleak reference: a retain log, or a retain model evaluated now (forget + holdout
    scoring passes only, no generation)."""
    if retain_model is not None and retain_log is not None:
        raise MrdkitError("give either a retain model or a retain log, not both")
    if retain_log is not None:
        return reference_from_log(retain_log)
    if retain_model is None:
        return None
    module, tok, spec = resolve_model(retain_model, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    return tofu.reference_from_model(module, tok, cfg, spec or "in-memory retain model")


def _log_auc(doc: Any) -> float | None:
    """``mia_min_k`` AUC from a community ``TOFU_EVAL``/``SUMMARY`` or an mrdkit ``eval.json`` document."""
    for holder in (doc, doc.get("metrics") if isinstance(doc, dict) else None):
        entry = holder.get("mia_min_k") if isinstance(holder, dict) else None
        value = entry.get("agg_value", entry.get("value")) if isinstance(entry, dict) else entry
        if isinstance(value, (int, float)):
            return float(value)
    return None


def reference_from_log(path: str | Path) -> Reference:
    """A retain model's log as reference: a community ``TOFU_EVAL.json``, an mrdkit ``eval.json``, an original
    TOFU ``eval_log_forget.json``, or a run directory holding one of the first two."""
    from mrdkit.evaluation.community import read_forget_truth_ratios
    from mrdkit.runs import read_json

    p = Path(path)
    if p.is_dir():
        found = [p / n for n in ("TOFU_EVAL.json", "eval.json") if (p / n).is_file()]
        if not found:
            raise MrdkitError(f"{p}: no TOFU_EVAL.json or eval.json in this run directory")
        p = found[0]
    return Reference(read_forget_truth_ratios(p), _log_auc(read_json(p)), str(p))


def _run_tofu(model: Any, tok: Any, cfg: TofuConfig, store: RowStore, skip_generation: bool,
              progress: bool | None, reference: Any = None) -> dict[str, list]:
    """Run every TOFU task whose columns are missing (``reference`` only with a reference model); returns the
    samples per split."""
    from mrdkit.progress import progress_bar

    data = tofu.load_suite(cfg)
    skip = {"generation"} if skip_generation else set()
    skip |= {"reference"} if reference is None else set()
    for task in (t for t in tofu.TASKS if t not in skip):
        for label, samples in data.items():
            ids, cols = [s.id for s in samples], tofu.task_columns(label, task)
            if not cols or store.has(label, ids, cols):
                continue
            with progress_bar(f"{task} {label}", len(samples), show=progress) as bar:
                store.merge(label, ids, tofu.run_task(model, tok, task, label, samples, cfg, progress=bar,
                                                      reference=reference))
                bar(len(samples), len(samples))  # scoring passes report only at the end
    return data


def _tofu_metrics(store: RowStore, data: dict[str, list], ref: Reference | None, skip_generation: bool,
                  has_reference: bool) -> tuple[dict, list[str], dict]:
    """Aggregates + derived metrics + the community document, all from the stored rows."""
    rows = {label: [store.rows[(label, s.id)] for s in samples] for label, samples in data.items()}
    metrics = tofu.aggregate(rows)
    extra, notes = tofu.derived(metrics, rows, ref)
    if skip_generation and "forget_Q_A_ROUGE" not in metrics:
        notes.insert(0, "ROUGE omitted: generation skipped (--skip-generation)")
    if not has_reference:
        notes.append("mia_reference omitted: no reference model given (--reference-model)")
    metrics.update(extra)
    return metrics, notes, tofu.community(rows, data, ref)


def _simple_metrics(store: RowStore, data: dict[str, list], benchmark: str) -> dict[str, dict]:
    """Accuracy (mcq) or corpus perplexity (ppl) from the stored rows."""
    from mrdkit.evaluation.metrics import perplexity

    (split, samples), = data.items()
    rows = [store.rows[(split, s.id)] for s in samples]
    if benchmark == "mcq":
        from mrdkit.evaluation.mcq import accuracy_stderr

        hits = [bool(r["correct"]) for r in rows]
        return {"multiple_choice_accuracy": {"value": sum(hits) / len(hits), "higher_is_better": True,
                                             "n": len(rows), "stderr": accuracy_stderr(hits)}}
    value = perplexity([r["nll_sum"] for r in rows], [r["n_tokens"] for r in rows])
    return {"perplexity": {"value": value, "higher_is_better": False, "n": len(rows)}}


def _run_simple(model: Any, tok: Any, benchmark: str, samples: list, store: RowStore, opts: dict) -> dict:
    """MCQ accuracy or perplexity (one task); skipped when its rows exist."""
    from mrdkit.evaluation import mcq

    split = "mcq" if benchmark == "mcq" else "text"
    col = "correct" if benchmark == "mcq" else "perplexity"
    ids = [s.id for s in samples]
    if not store.has(split, ids, [col]):
        common = dict(batch_size=opts["batch_size"], max_length=opts["max_length"])
        if benchmark == "mcq":
            rows, _ = mcq.evaluate_mcq(model, tok, samples, fmt=opts["mcq_format"], norm=opts["mcq_norm"],
                                       template=opts["template"], **common)
        else:
            rows, _ = mcq.evaluate_perplexity(model, tok, samples, **common)
        store.merge(split, ids, {r["id"]: {k: v for k, v in r.items() if k not in ("id", "split")} for r in rows})
    return {split: samples}


def _task_list(tasks: str | Sequence[str] | None) -> list[str] | None:
    """lm-eval task names as a list (kept in the run identity), or None."""
    if tasks is None:
        return None
    return [t.strip() for t in (tasks.split(",") if isinstance(tasks, str) else tasks) if t.strip()]


def _load_data(data: Any, split: str | None, limit: int | None, data_options: dict[str, Any] | None = None) -> list:
    if data is None:
        raise MrdkitError("benchmarks mcq and ppl need data (a file, 'tofu:<split>' or a list of samples)")
    if isinstance(data, (str, Path)):
        from mrdkit.data import load_samples

        return load_samples(str(data), split=split, limit=limit, **(data_options or {}))
    return list(data)[:limit]


def evaluate(
    model: Any, tokenizer: Any = None, *, benchmark: str = "tofu", out_dir: str | Path | None = None,
    forget_split: str = "forget10", data: Any = None, split: str | None = None, retain_model: Any = None,
    retain_log: str | Path | None = None, template: str = "auto", batch_size: int = 16, max_length: int | None = None,
    max_new_tokens: int = 200, skip_generation: bool = False, limit: int | None = None, overwrite: bool = False,
    mcq_format: str = "letters", mcq_norm: str = "sum", tofu_source: str | None = None, dtype: str = "float32",
    device: str = "auto", progress: bool | None = None, max_prompt_tokens: int | None = None,
    trust_remote_code: bool = False, encoding: str = "joint", reference_model: Any = None,
    tasks: str | Sequence[str] | None = None, include_path: str | None = None, num_fewshot: int | None = None,
    data_options: dict[str, Any] | None = None,
) -> EvalResult:
    """Evaluate a model on TOFU (Maini et al. 2024, arXiv:2401.06121), multiple choice or perplexity.

    Args:
        model: a model spec (:func:`mrdkit.models.load_model`), a ``LoadedModel``, or a module with ``tokenizer``.
        benchmark: ``tofu`` (full suite, community metric names), ``mcq`` (WMDP/MMLU accuracy), ``ppl`` or
            ``muse-news`` (VerbMem, KnowMem, PrivLeak, perplexity; ``data`` = the MUSE-News folder, default the
            local copy, or ``muse:news`` / ``muse:books`` from the hub; ``max_length`` default: the model's position
            limit; ``max_prompt_tokens`` keeps the last N prompt tokens; see :mod:`mrdkit.evaluation.muse`),
            ``muse-books`` (the same suite on MUSE-Books from the hub: the Harry Potter / WHP benchmark) or
            ``lm-eval`` (lm-evaluation-harness ``tasks`` in process, :mod:`mrdkit.evaluation.lmeval`;
            ``include_path``: a folder of local task YAML files; ``num_fewshot``; ``template="chat"`` applies the
            chat template).
        out_dir: run directory (None: nothing written, nothing skipped).
        forget_split: TOFU ``forget01|05|10``. data / split: samples for ``mcq`` / ``ppl``.
        retain_model: a retain model (spec, ``LoadedModel``) evaluated now as the forget-quality and privleak
            reference; retain_log: or its log (``TOFU_EVAL.json``, ``eval.json``, TOFU ``eval_log_forget.json``).
        template, batch_size, max_length, max_new_tokens: scoring / generation settings (TOFU: 200 new tokens;
            max_length default 512). MUSE-News uses its own 128 / 32 new tokens.
        skip_generation: skip greedy generation (ROUGE and model utility are then omitted, and noted in meta).
        limit: first ``limit`` samples of each split. overwrite: recompute everything in ``out_dir``.
        mcq_format / mcq_norm: ``letters|text`` prompts, ``sum|mean`` option log-probs.
        tofu_source: TOFU folder or hub id. dtype / device / trust_remote_code: for models (and the retain
            model) given as specs; a model's own Python code runs only when ``trust_remote_code`` is set.
        progress: show progress bars (None: on unless ``MRDKIT_PROGRESS=0``).
        encoding: ``joint`` (default: every answer token scored), ``community`` (open-unlearning's exact mask,
            for numbers that must line up with its published logs) or ``separate``
            (:func:`mrdkit.data.encode_samples`; TOFU only).
        reference_model: TOFU only: a reference model (spec or ``LoadedModel``, resolved like ``retain_model``) for
            ``mia_reference`` (target minus reference answer loss, open-unlearning ``ReferenceAttack``); its spec
            is part of the run's identity.
        data_options: how ``data`` (mcq / ppl) is read: ``question_key``, ``answer_key``, ``text_key``, ``field``,
            ``fmt`` of :func:`mrdkit.data.load_samples`.

    The run's identity includes the weights' fingerprints (:func:`mrdkit.models.model_fingerprint` of the model
    and the reference model): rows cached for one set of weights are never reused for another.

    Returns:
        :class:`EvalResult`.
    """
    if benchmark not in BENCHMARKS:
        raise MrdkitError(f"unknown benchmark {benchmark!r} (known: {', '.join(BENCHMARKS)})")
    start = time.time()
    if max_length is None and not benchmark.startswith("muse"):
        max_length = 512
    if reference_model is not None and benchmark != "tofu":
        raise MrdkitError(f"a reference model (mia_reference) is used by the tofu benchmark only, not {benchmark}")
    module, tok, spec = resolve_model(model, tokenizer, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    reference = None
    if reference_model is not None:
        reference = resolve_model(reference_model, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    from mrdkit.models import model_fingerprint

    opts = dict(benchmark=benchmark, model=spec, forget_split=forget_split if benchmark == "tofu" else None,
                model_weights=model_fingerprint(module) if out_dir is not None else None,
                reference_weights=None if reference is None or out_dir is None else model_fingerprint(reference[0]),
                data_options={k: v for k, v in (data_options or {}).items() if v is not None} or None,
                data=None if data is None or not isinstance(data, (str, Path)) else str(data), split=split,
                template=template, max_length=max_length, max_new_tokens=max_new_tokens, limit=limit,
                mcq_format=mcq_format, mcq_norm=mcq_norm, tofu_source=tofu_source, batch_size=batch_size,
                max_prompt_tokens=max_prompt_tokens, encoding=encoding if benchmark == "tofu" else None,
                reference_model=None if reference is None else reference[2] or "in-memory reference model",
                tasks=_task_list(tasks), num_fewshot=num_fewshot,
                include_path=None if include_path is None else str(include_path))
    from mrdkit.data.templates import resolve_template

    opts["template_used"] = resolve_template(template, tok)  # what "auto" picked (not part of the identity)
    if benchmark == "muse-books" and opts["data"] is None:
        opts["data"] = "muse:books"
    if benchmark == "lm-eval":
        from mrdkit.evaluation.lmeval import check_options

        check_options(opts)  # before the run directory exists
    out = None if out_dir is None else Path(out_dir)
    store = open_store(out, opts, overwrite)
    cfg = TofuConfig(forget_split=forget_split, source=tofu_source, template=template, batch_size=batch_size,
                     max_length=max_length, max_new_tokens=max_new_tokens, limit=limit, encoding=encoding)
    if benchmark == "tofu":
        cfg.split_names()  # fail on a bad split before any model pass
        ref = _reference(retain_model, retain_log, cfg, dtype, device, trust_remote_code)
        data_by_split = _run_tofu(module, tok, cfg, store, skip_generation, progress,
                                  None if reference is None else reference[0])
        metrics, notes, community = _tofu_metrics(store, data_by_split, ref, skip_generation, reference is not None)
    elif benchmark == "lm-eval":
        from mrdkit.evaluation.lmeval import run_from_options as run_lmeval

        data_by_split, metrics, notes, community, ref = run_lmeval(module, tok, store, opts, out)
    elif benchmark.startswith("muse"):
        from mrdkit.evaluation import muse, muse_hub

        hub = str(opts["data"] or "").startswith("muse:")  # the hub's MUSE-News / MUSE-Books
        run_muse = muse_hub.run_from_options if hub else muse.run_from_options
        data_by_split, metrics, notes, community, ref = run_muse(module, tok, store, opts, retain_model, retain_log,
                                                                 dtype, device, progress,
                                                                 trust_remote_code=trust_remote_code)
    else:
        data_by_split = _run_simple(module, tok, benchmark, _load_data(data, split, limit, opts["data_options"]),
                                    store, opts)
        metrics, notes, community, ref = _simple_metrics(store, data_by_split, benchmark), [], None, None
    rows = [store.rows[(sp, s.id)] for sp, samples in data_by_split.items() for s in samples]
    meta = {**{k: opts[k] for k in IDENTITY}, "notes": notes, "seconds": round(time.time() - start, 2),
            "n": {sp: len(v) for sp, v in data_by_split.items()},
            "reference": getattr(ref, "source", ref)}
    result = EvalResult(metrics=metrics, rows=rows, meta=meta, community=community, out_dir=out)
    if out is not None:
        write_outputs(out, result)
    return result

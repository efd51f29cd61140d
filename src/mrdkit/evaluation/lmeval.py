"""lm-evaluation-harness in process: the multiple-choice protocol the community reports (WMDP, MMLU, ...).

``mrd eval --benchmark lm-eval --tasks wmdp_bio,mmlu`` wraps the already-loaded (or just-unlearned) model in
lm-eval's ``HFLM(pretrained=model, tokenizer=tokenizer)`` and runs ``lm_eval.simple_evaluate`` on it, so the
numbers are lm-eval's own (EleutherAI lm-evaluation-harness, Gao et al.; WMDP, Li et al. 2024,
arXiv:2403.03218, is reported this way). For a multiple-choice task lm-eval scores every option as a
continuation, ``acc = mean_i [argmax_j log p(option_j | context_i) == target_i]``, and its standard error is
``sqrt(sum_i (x_i - acc)^2 / (n - 1)) / sqrt(n)`` (sample standard deviation over sqrt n).

Outputs beside mrdkit's (:mod:`mrdkit.evaluation.runner`): ``lm_eval_results.json`` is lm-eval's result document
(``results``, ``configs``, ``versions``, ``n-shot``, ``n-samples``, environment; per-sample logs left out);
``eval.json`` holds ``<task>/<metric>`` with ``value``, ``stderr``, ``higher_is_better`` and ``n``;
``eval_samples.jsonl`` one row per (task, document): ``target``, the option log-likelihoods, the per-sample metrics.

A local task: ``--include-path DIR`` adds DIR's task YAML files (lm-eval's ``include_path``); that is how a task
runs offline on local data (``dataset_path: json`` + ``dataset_kwargs.data_files``). lm-eval is an optional
extra (``pip install 'mrdkit[lmeval]'``).
"""

from __future__ import annotations

import difflib
import functools
from pathlib import Path
from typing import Any, Sequence

from mrdkit.data.samples import Sample
from mrdkit.errors import MrdkitError

RESULTS_FILE = "lm_eval_results.json"


def require_lm_eval() -> None:
    """One-line error when the optional lm-eval extra is missing."""
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        raise MrdkitError("--benchmark lm-eval needs lm-evaluation-harness: pip install 'mrdkit[lmeval]' "
                          "(or pip install lm-eval)") from None


def parse_tasks(tasks: str | Sequence[str] | None) -> list[str]:
    """``"wmdp_bio,mmlu"`` or a list -> task names (at least one)."""
    names = [t.strip() for t in (tasks.split(",") if isinstance(tasks, str) else tasks or []) if t.strip()]
    if not names:
        raise MrdkitError("--benchmark lm-eval needs --tasks, e.g. --tasks wmdp_bio,wmdp_cyber,mmlu")
    return names


@functools.lru_cache(maxsize=4)  # indexing lm-eval's task folder takes seconds: checked once, then reused
def task_manager(tasks: tuple[str, ...], include_path: str | None):
    """lm-eval's ``TaskManager`` (plus ``include_path``), refusing unknown task names with a did-you-mean line."""
    require_lm_eval()
    from lm_eval.tasks import TaskManager

    if include_path is not None and not Path(include_path).is_dir():
        raise MrdkitError(f"--include-path {include_path}: not a folder of lm-eval task YAML files")
    manager = TaskManager(include_path=str(include_path) if include_path else None)
    known = set(manager.all_tasks)
    for name in tasks:
        if name not in known and not any(ch in name for ch in "*?["):
            close = difflib.get_close_matches(name, sorted(known), n=3, cutoff=0.6)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise MrdkitError(f"unknown lm-eval task {name!r}{hint} (lm-eval --tasks list shows them; a local "
                              f"task needs --include-path)")
    return manager


def _device(model: Any) -> str:
    return str(next(model.parameters()).device)


def run_harness(model: Any, tokenizer: Any, tasks: Sequence[str], *, include_path: str | Path | None = None,
                num_fewshot: int | None = None, limit: int | None = None, batch_size: int = 16,
                apply_chat_template: bool = False, seed: int = 0) -> dict[str, Any]:
    """lm-eval's result document for ``tasks`` on ``model`` (per-sample logs under ``"samples"``).

    The model is put in eval mode for the run and back in its previous mode after it. lm-eval's own seeds
    (python / numpy / torch / few-shot sampling) are all set to ``seed``.
    """
    require_lm_eval()
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    manager = task_manager(tuple(tasks), None if include_path is None else str(include_path))
    was_training = model.training
    try:
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=_device(model))
        results = simple_evaluate(model=lm, tasks=list(tasks), task_manager=manager, num_fewshot=num_fewshot,
                                  limit=limit, log_samples=True, apply_chat_template=apply_chat_template,
                                  random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed,
                                  fewshot_random_seed=seed)
    except ConnectionError as err:  # a task's dataset is neither cached nor reachable
        raise MrdkitError(f"lm-eval could not load a task's dataset ({' '.join(str(err).split())[:200]}): run it "
                          f"once online to fill the Hugging Face cache, or use a local task (--include-path)") from None
    finally:
        model.train(was_training)
    if results is None:  # simple_evaluate returns None on non-zero ranks
        raise MrdkitError("lm-eval returned no results (run it on one process)")
    return results


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def harness_metrics(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{"<task>/<metric>": {value, stderr, higher_is_better, n}}`` from lm-eval's ``results`` block (its keys
    are ``"<metric>,<filter>"``; the filter is kept in the name when it is not ``none``)."""
    out: dict[str, dict[str, Any]] = {}
    for task, block in results["results"].items():
        hib = results.get("higher_is_better", {}).get(task, {})
        n = results.get("n-samples", {}).get(task, {}).get("effective")
        for key, value in block.items():
            metric, _, filt = key.partition(",")
            if metric.endswith("_stderr") or _number(value) is None:
                continue
            name = f"{task}/{metric}" + (f"/{filt}" if filt and filt != "none" else "")
            stderr = _number(block.get(f"{metric}_stderr,{filt}" if filt else f"{metric}_stderr"))
            out[name] = {"value": float(value), "stderr": stderr, "higher_is_better": hib.get(metric), "n": n}
    return out


def sample_rows(results: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{task: {"<task>:<doc_id>": columns}}``: target, option log-likelihoods and per-sample metric values."""
    from mrdkit.runs import json_roundtrip

    metric_names = {task: {k.partition(",")[0] for k in block} for task, block in results["results"].items()}
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for task, logs in results.get("samples", {}).items():
        rows = {}
        for log in logs:
            resps = log.get("filtered_resps", [])  # multiple choice: one (log-likelihood, is_greedy) per option
            row = {"doc_id": log["doc_id"], "target": log.get("target"),
                   "loglikelihoods": [r[0] if isinstance(r, (list, tuple)) else r for r in resps]}
            row.update({k: v for k, v in log.items() if k in metric_names.get(task, ())})
            rows[f"{task}:{log['doc_id']}"] = json_roundtrip(row)
        out[task] = rows
    return out


def results_document(results: dict[str, Any]) -> dict[str, Any]:
    """lm-eval's document without the per-sample logs, made JSON-safe as lm-eval's own writer does."""
    import json

    from lm_eval.utils import handle_non_serializable

    doc = {k: v for k, v in results.items() if k != "samples"}
    return json.loads(json.dumps(doc, default=handle_non_serializable))


def check_options(opts: dict[str, Any]) -> None:
    """Fail on missing / unknown tasks or a missing lm-eval before the runner makes the run directory."""
    task_manager(tuple(parse_tasks(opts["tasks"])), opts.get("include_path"))


def run_from_options(model: Any, tokenizer: Any, store: Any, opts: dict[str, Any], out: Path | None) -> tuple:
    """The runner's ``lm-eval`` benchmark: run the harness, store per-sample rows, write ``lm_eval_results.json``.

    Returns ``(samples by task, metrics, notes, community doc = None, reference = None)`` as the other suites."""
    tasks = parse_tasks(opts["tasks"])
    results = run_harness(model, tokenizer, tasks, include_path=opts.get("include_path"),
                          num_fewshot=opts.get("num_fewshot"), limit=opts.get("limit"),
                          batch_size=opts.get("batch_size") or 16, apply_chat_template=opts.get("template") == "chat")
    data: dict[str, list[Sample]] = {}
    for task, rows in sample_rows(results).items():
        store.merge(task, list(rows), rows)
        data[task] = [Sample(id=sid, prompt="", answer=str(row.get("target")), kind="text")
                      for sid, row in rows.items()]
    if out is not None:
        from mrdkit.runs import atomic_write_json

        atomic_write_json(out / RESULTS_FILE, results_document(results))
    version = results.get("lm_eval_version") or _version()
    notes = [f"lm-evaluation-harness {version}: metrics are lm-eval's own ({RESULTS_FILE})"]
    return data, harness_metrics(results), notes, None, None


def _version() -> str:
    from importlib.metadata import version

    return version("lm_eval")

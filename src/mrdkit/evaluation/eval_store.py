"""The run directory of :func:`mrdkit.evaluation.runner.evaluate` (house rule 7), re-exported by the runner.

:data:`IDENTITY` names the options that change the numbers (a directory made with other values is refused without
``overwrite``); :class:`RowStore` keeps the per-sample rows keyed by (split, id) in ``eval_samples.jsonl``, saved
after every task so re-runs skip finished work; ``_write_outputs`` writes ``eval.json``, the community files
(``TOFU_EVAL.json`` / ``MUSE_EVAL.json`` and summaries; open-unlearning's ``Evaluator`` format) and ``DONE.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from mrdkit.errors import MrdkitError

if TYPE_CHECKING:  # annotation only: the runner imports this module
    from mrdkit.evaluation.runner import EvalResult

# options that change the numbers; a run directory made with other values is refused without overwrite
IDENTITY = ("benchmark", "model", "forget_split", "data", "split", "template", "max_length", "max_new_tokens",
            "limit", "mcq_format", "mcq_norm", "tofu_source", "max_prompt_tokens")


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


def _open_store(out: Path | None, identity: dict[str, Any], overwrite: bool) -> RowStore:
    """Check an existing run directory's identity and load its rows (none when ``overwrite``)."""
    if out is None:
        return RowStore(None)
    from mrdkit.runs import RunDir, read_json, read_jsonl

    rows: list[dict] = []
    if not overwrite and (out / "config.json").is_file():
        previous = read_json(out / "config.json")
        diff = sorted(k for k in IDENTITY if previous.get(k) != identity.get(k))
        if diff:
            raise MrdkitError(f"{out} holds an evaluation with other settings (differs in: {', '.join(diff)}); "
                              f"use --overwrite or another --out")
        if (out / "eval_samples.jsonl").is_file():
            rows = read_jsonl(out / "eval_samples.jsonl")
    RunDir(out, identity, overwrite=True)
    return RowStore(out, rows)


def _write_outputs(out: Path, result: EvalResult) -> None:
    """``eval.json`` (forget truth ratios per sample: a retain log), community files, ``DONE.json``."""
    from mrdkit.evaluation.community import write_community
    from mrdkit.runs import atomic_write_json

    metrics = {k: dict(v) for k, v in result.metrics.items()}
    if "forget_truth_ratio" in metrics:
        metrics["forget_truth_ratio"]["per_sample"] = {r["id"]: r["truth_ratio"] for r in result.rows
                                                       if r["split"] == "forget" and "truth_ratio" in r}
    atomic_write_json(out / "eval.json", {"metrics": metrics, "meta": result.meta})
    if result.community is not None:
        write_community(out, result.community, benchmark="MUSE" if result.meta["benchmark"] == "muse-news" else "TOFU")
    atomic_write_json(out / "DONE.json", {"seconds": result.meta["seconds"]})

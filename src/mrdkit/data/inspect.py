"""Summaries of a sample set (``mrd data inspect PATH``): kinds, extra fields, lengths, empties, duplicates."""

from __future__ import annotations

import statistics
from collections import Counter
from typing import Any, Sequence

from mrdkit.data.samples import Sample


def length_stats(lengths: Sequence[int]) -> dict[str, float] | None:
    """``min``/``mean``/``median``/``max`` of ``lengths``; ``None`` when there are none."""
    if not lengths:
        return None
    return {"min": min(lengths), "mean": statistics.fmean(lengths), "median": statistics.median(lengths),
            "max": max(lengths)}


def _token_lengths(texts: list[str], tokenizer: Any) -> list[int]:
    if not texts:
        return []
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]]


def inspect_samples(samples: Sequence[Sample], tokenizer: Any = None) -> dict[str, Any]:
    """Describe a sample set.

    Args:
        samples: the samples.
        tokenizer: if given, also token-length stats of the raw prompt and answer (no template, no special
            tokens).

    Returns:
        A JSON-ready dict: ``count``; ``kinds`` (count per kind); ``extra_fields`` (how many samples carry each
        extra field); ``empty_answers``; ``duplicate_samples`` (samples whose prompt and answer repeat an earlier
        one); ``chars`` and, with a tokenizer, ``tokens``: length stats for ``prompt`` and ``answer``.
    """
    prompts = [s.prompt for s in samples]
    answers = [s.answer for s in samples]
    seen = Counter((s.prompt, s.answer) for s in samples)
    report: dict[str, Any] = {
        "count": len(samples),
        "kinds": dict(Counter(s.kind for s in samples)),
        "extra_fields": dict(sorted(Counter(k for s in samples for k in s.extra).items())),
        "empty_answers": sum(1 for a in answers if not a),
        "duplicate_samples": sum(n - 1 for n in seen.values()),
        "chars": {"prompt": length_stats([len(p) for p in prompts]),
                  "answer": length_stats([len(a) for a in answers])},
    }
    if tokenizer is not None:
        report["tokens"] = {"prompt": length_stats(_token_lengths(prompts, tokenizer)),
                            "answer": length_stats(_token_lengths(answers, tokenizer))}
    return report


def format_report(report: dict[str, Any]) -> str:
    """A few human-readable lines for a report from :func:`inspect_samples`."""
    kinds = ", ".join(f"{k} {n}" for k, n in report["kinds"].items()) or "none"
    lines = [f"samples: {report['count']} ({kinds})",
             f"extra fields: {', '.join(report['extra_fields']) or 'none'}",
             f"empty answers: {report['empty_answers']}; duplicate samples: {report['duplicate_samples']}"]
    for unit in ("chars", "tokens"):
        for part, stats in report.get(unit, {}).items():
            if stats:
                lines.append(f"{part} {unit}: min {stats['min']}, mean {stats['mean']:.1f}, "
                             f"median {stats['median']}, max {stats['max']}")
    return "\n".join(lines)

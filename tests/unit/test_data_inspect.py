"""Sample-set summaries."""

from __future__ import annotations

import json

from mrdkit.data import Sample, format_report, inspect_samples, length_stats

SAMPLES = [
    Sample(id="a", prompt="Q1?", answer="Yes.", extra={"author_id": 0}),
    Sample(id="b", prompt="Q22?", answer="No!!", extra={"author_id": 0, "paraphrased_answer": "Nope."}),
    Sample(id="c", prompt="", answer="", kind="text"),
    Sample(id="d", prompt="", answer="", kind="text"),
]


def test_length_stats():
    assert length_stats([]) is None
    assert length_stats([1, 2, 6]) == {"min": 1, "mean": 3.0, "median": 2, "max": 6}


def test_inspect_counts_fields_and_lengths(tiny_tokenizer):
    report = inspect_samples(SAMPLES, tiny_tokenizer)
    assert report["count"] == 4 and report["kinds"] == {"qa": 2, "text": 2}
    assert report["extra_fields"] == {"author_id": 2, "paraphrased_answer": 1}
    assert report["empty_answers"] == 2 and report["duplicate_samples"] == 1
    assert report["chars"]["prompt"] == {"min": 0, "mean": 1.75, "median": 1.5, "max": 4}
    assert report["tokens"]["answer"]["min"] == 0 and report["tokens"]["answer"]["max"] >= 1
    json.dumps(report)  # JSON-ready for the CLI
    text = format_report(report)
    assert text.splitlines()[0] == "samples: 4 (qa 2, text 2)" and "answer tokens: min 0" in text


def test_inspect_without_tokenizer_and_empty():
    assert "tokens" not in inspect_samples(SAMPLES)
    empty = inspect_samples([])
    assert empty["count"] == 0 and empty["chars"]["answer"] is None
    assert format_report(empty).startswith("samples: 0 (none)")

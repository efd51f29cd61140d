"""Sample type and record -> sample conversion."""

from __future__ import annotations

import pickle

import pytest

from mrdkit.data import Sample, check_unique_ids, detect_fields, records_to_samples
from mrdkit.errors import MrdkitError


def test_sample_is_frozen_hashable_and_copies_extra():
    extra = {"author_id": 3, "perturbed_answer": ["a", "b"]}
    s = Sample(id="x:0", prompt="Q?", answer="A.", extra=extra)
    extra["author_id"] = 99
    assert s.extra["author_id"] == 3  # the caller's dict is not shared
    with pytest.raises(AttributeError):
        s.answer = "B"  # type: ignore[misc]
    assert hash(s) == hash(Sample(id="x:0", prompt="Q?", answer="A.", extra={"other": 1}))
    assert len({s, Sample(id="x:0", prompt="Q?", answer="A.")}) == 1
    assert pickle.loads(pickle.dumps(s)) == s  # DataLoader workers pickle samples


def test_sample_text_replace_and_dict_round_trip():
    s = Sample(id="x:1", prompt="Hello ", answer="world", extra={"k": [1, 2]})
    assert s.text == "Hello world"
    t = s.replace(answer="there")
    assert (t.id, t.answer, s.answer) == ("x:1", "there", "world")
    back = Sample.from_dict(s.to_dict())
    assert back == s and back.extra == s.extra and back.kind == "qa"


@pytest.mark.parametrize("kwargs, match", [
    ({"kind": "essay"}, "unknown kind 'essay'"),
    ({"answer": 3}, "Sample.answer must be a str"),
    ({"id": 7}, "Sample.id must be a str"),
])
def test_sample_validates_fields(kwargs, match):
    base = {"id": "x:0", "prompt": "q", "answer": "a"}
    with pytest.raises(MrdkitError, match=match):
        Sample(**{**base, **kwargs})


@pytest.mark.parametrize("record, kind, prompt_field", [
    ({"question": "q", "answer": "a"}, "qa", "question"),
    ({"prompt": "p", "gt": "g"}, "qa", "prompt"),
    ({"input": "i", "output": "o"}, "qa", "input"),
    ({"prompt": "p", "response": "r"}, "qa", "prompt"),
    ({"text": "t", "meta": 1}, "text", None),
    ({"content": "c"}, "text", None),
    ({"document": "d"}, "text", None),
    ({"question": "q", "choices": ["a", "b"], "answer": 1}, "mcq", "question"),
    ({"question": "q", "option1": "a", "option2": "b", "answer": "b"}, "mcq", "question"),
    ("raw string", "text", None),
])
def test_detect_fields(record, kind, prompt_field):
    fields = detect_fields(record, "f.json")
    assert fields.kind == kind and fields.question == prompt_field


def test_detect_fields_unknown_layout_lists_available_fields():
    with pytest.raises(MrdkitError, match=r"f\.json: cannot tell .*available fields: q, a\)"):
        detect_fields({"q": "x", "a": "y"}, "f.json")


def test_explicit_missing_key_names_field_file_and_available_fields():
    with pytest.raises(MrdkitError, match=r"f\.json: missing field 'query' in row 0; available fields: q, a"):
        detect_fields({"q": "x", "a": "y"}, "f.json", question_key="query", answer_key="a")


def test_records_to_samples_qa_extra_and_ids():
    records = [{"question": f"q{i}", "answer": f"a{i}", "topic": "t"} for i in range(3)]
    samples = records_to_samples(records, "f.json", id_prefix="f", row_offset=10)
    assert [s.id for s in samples] == ["f:10", "f:11", "f:12"]
    assert samples[1].prompt == "q1" and samples[1].answer == "a1" and samples[1].extra == {"topic": "t"}


def test_records_to_samples_mcq_index_and_text_answers():
    wmdp = [{"question": "q", "choices": ["x", "y", "z"], "answer": 2}]
    (s,) = records_to_samples(wmdp, "w.json", id_prefix="w")
    assert (s.kind, s.answer, s.extra["choices"], s.extra["answer_index"]) == ("mcq", "z", ["x", "y", "z"], 2)
    csv_row = [{"question": "q", "choices": ["x", "y"], "answer": "1"}]  # CSV cells are strings
    assert records_to_samples(csv_row, "c.csv", id_prefix="c")[0].answer == "y"


@pytest.mark.parametrize("record, match", [
    ({"question": "q", "choices": ["x"], "answer": 5}, "answer index 5 in row 0 is out of range"),
    ({"question": "q", "choices": ["x"], "answer": "w"}, "neither a choice index nor one of the choices"),
    ({"question": "q", "choices": "x", "answer": 0}, "field 'choices' in row 0 is str"),
    ({"question": "q", "answer": 3}, "field 'answer' in row 0 is int .* expected str"),
    ({"question": None, "answer": "a"}, "field 'question' in row 0 is NoneType"),
])
def test_records_to_samples_type_errors(record, match):
    with pytest.raises(MrdkitError, match=match):
        records_to_samples([record], "f.json", id_prefix="f")


def test_records_to_samples_later_row_missing_field():
    records = [{"question": "q", "answer": "a"}, {"question": "q2"}]
    with pytest.raises(MrdkitError, match=r"missing field 'answer' in row 1; available fields: question"):
        records_to_samples(records, "f.json", id_prefix="f")


def test_id_field_and_duplicates():
    records = [{"id": 7, "text": "a"}, {"id": "b", "text": "b"}]
    assert [s.id for s in records_to_samples(records, "f.json", id_prefix="f", id_key="id")] == ["7", "b"]
    dup = [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}]
    with pytest.raises(MrdkitError, match=r"duplicate id 'a' in f\.json \(samples 0 and 1\)"):
        records_to_samples(dup, "f.json", id_prefix="f", id_key="id")


def test_check_unique_ids_accepts_unique():
    check_unique_ids([Sample(id=str(i), prompt="", answer="x", kind="text") for i in range(3)], "s")


def test_empty_records_error():
    with pytest.raises(MrdkitError, match="no records"):
        records_to_samples([], "f.json", id_prefix="f")

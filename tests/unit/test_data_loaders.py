"""Generic file and hub loading (formats, field detection, errors). TOFU/MUSE files: test_data_tofu.py."""

from __future__ import annotations

import json

import pytest

from mrdkit.data import load_samples, read_records
from mrdkit.errors import MrdkitError

QA = [{"question": "Who?", "answer": "Jane."}, {"question": "Where?", "answer": "Paris."}]


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_json_array(tmp_path):
    samples = load_samples(_write(tmp_path / "qa.json", json.dumps(QA, indent=2)))
    assert [(s.id, s.prompt, s.answer, s.kind) for s in samples] == [
        ("qa:0", "Who?", "Jane.", "qa"), ("qa:1", "Where?", "Paris.", "qa")]


def test_json_lines_in_json_file_and_jsonl(tmp_path):
    lines = "\n".join(json.dumps(r) for r in QA)
    assert load_samples(_write(tmp_path / "a.json", lines)) == load_samples(_write(tmp_path / "a.jsonl", lines))
    assert len(load_samples(tmp_path / "a.jsonl")) == 2


def test_json_list_of_strings_is_text(tmp_path):
    samples = load_samples(_write(tmp_path / "raw.json", json.dumps(["one", "", "one"])))
    assert [(s.id, s.kind, s.prompt, s.answer) for s in samples] == [
        ("raw:0", "text", "", "one"), ("raw:1", "text", "", ""), ("raw:2", "text", "", "one")]


def test_csv_parquet_txt(tmp_path):
    _write(tmp_path / "d.csv", "prompt,response,topic\nHi,Hello,greet\n\"a,b\",c,x\n")
    csv_samples = load_samples(tmp_path / "d.csv")
    assert [(s.prompt, s.answer, s.extra["topic"]) for s in csv_samples] == [("Hi", "Hello", "greet"),
                                                                             ("a,b", "c", "x")]
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(QA), tmp_path / "d.parquet")
    assert [s.answer for s in load_samples(tmp_path / "d.parquet")] == ["Jane.", "Paris."]
    txt = load_samples(_write(tmp_path / "t.txt", "first line\n\nsecond line\n"))
    assert [(s.id, s.answer, s.kind) for s in txt] == [("t:0", "first line", "text"), ("t:1", "second line", "text")]


def test_fmt_overrides_suffix(tmp_path):
    path = _write(tmp_path / "data.dat", "\n".join(json.dumps(r) for r in QA))
    assert len(load_samples(path, fmt="jsonl")) == 2
    with pytest.raises(MrdkitError, match=r"data\.dat: unknown format .dat. \(known: .*\); pass --format \(fmt= in Python\)"):
        load_samples(path)


def test_explicit_keys_id_key_and_limit(tmp_path):
    rows = [{"uid": f"u{i}", "q": f"q{i}", "a": f"a{i}"} for i in range(5)]
    path = _write(tmp_path / "k.jsonl", "\n".join(json.dumps(r) for r in rows))
    samples = load_samples(path, question_key="q", answer_key="a", id_key="uid", limit=3)
    assert [(s.id, s.prompt, s.answer, s.extra) for s in samples] == [
        (f"u{i}", f"q{i}", f"a{i}", {}) for i in range(3)]
    texts = load_samples(path, text_key="q")
    assert texts[0].kind == "text" and texts[0].answer == "q0" and texts[0].extra == {"uid": "u0", "a": "a0"}


def test_id_column_auto_detected_and_duplicates_rejected(tmp_path):
    path = _write(tmp_path / "i.jsonl", '{"id": "x", "text": "a"}\n{"id": "x", "text": "b"}\n')
    with pytest.raises(MrdkitError, match=r"duplicate id 'x' in .*i\.jsonl \(samples 0 and 1\)"):
        load_samples(path)


def test_mcq_wmdp_format(tmp_path):
    rows = [{"question": "Which?", "choices": ["A", "B", "C", "D"], "answer": 3}]
    (s,) = load_samples(_write(tmp_path / "wmdp.jsonl", json.dumps(rows[0])))
    assert (s.kind, s.answer, s.extra["answer_index"], len(s.extra["choices"])) == ("mcq", "D", 3, 4)


@pytest.mark.parametrize("name, text, match", [
    ("bad.jsonl", '{"text": "a"}\n{"text": "b"\n', r"bad\.jsonl: malformed JSON on line 2"),
    ("bad.json", '{"text": "a"}\n\n{"text": oops}\n', r"bad\.json: malformed JSON on line 3"),
    ("bad.json", '[{"text": "a"},\n {"text": }]', r"bad\.json: malformed JSON on line 2"),
    ("empty.jsonl", "\n\n", r"empty\.jsonl: empty file"),
    ("empty.json", "", r"empty\.json: empty file"),
    ("empty.json", "[]", r"empty\.json: empty file"),
    ("empty.csv", "question,answer\n", r"empty\.csv: empty file"),
    ("nums.json", "[1, 2]", r"nums\.json: row 0 is a int, expected a JSON object or a string"),
    ("mixed.json", '[{"text": "a"}, "b"]', r"mixed\.json: row 1 is a str, expected a JSON object"),
    ("typed.jsonl", '{"question": "q", "answer": 1}', r"typed\.jsonl: field 'answer' in row 0 is int"),
])
def test_bad_files_give_one_line_errors(tmp_path, name, text, match):
    with pytest.raises(MrdkitError, match=match) as info:
        load_samples(_write(tmp_path / name, text))
    assert "\n" not in str(info.value)


def test_missing_file_and_bad_limit(tmp_path):
    with pytest.raises(MrdkitError, match=r"nope\.json: no such file"):
        load_samples(tmp_path / "nope.json")
    with pytest.raises(MrdkitError, match=r"no such file"):
        read_records("relative/missing.json")
    with pytest.raises(MrdkitError, match=r"is a folder, not a data file"):
        load_samples(tmp_path)
    with pytest.raises(MrdkitError, match=r"split='x' applies to TOFU and hub datasets, not to the file"):
        load_samples(tmp_path / "nope.json", split="x")
    with pytest.raises(MrdkitError, match="limit must be a positive"):
        load_samples(tmp_path / "nope.json", limit=0)


def test_hub_offline_gives_clear_error(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(MrdkitError, match=r"cannot load 'someone/some_dataset' .* hub: .*offline\?"):
        load_samples("someone/some_dataset", split="cfg:test")


def test_hub_dataset_through_datasets(monkeypatch):
    calls = []

    def fake_load_dataset(path, name=None, split=None):
        calls.append((path, name, split))
        return [{"question": "q", "choices": ["a", "b"], "answer": 0}]

    import datasets

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    (s,) = load_samples("cais/wmdp", split="wmdp-bio:test")
    assert calls == [("cais/wmdp", "wmdp-bio", "test")]
    assert (s.id, s.kind, s.answer) == ("cais/wmdp/wmdp-bio:0", "mcq", "a")


EVERYDAY = [("Who wrote it?", "Jane wrote it; in Paris."), ("Where is Lima?", "In Peru, by the sea.")]


@pytest.mark.parametrize("name, write, options", [
    ("bom.csv", lambda p: p.write_bytes("\ufeffquestion,answer\n" .encode() + b"".join(
        f'"{q}","{a}"\n'.encode() for q, a in EVERYDAY)), {}),
    ("semicolon.csv", lambda p: p.write_text("question;answer\n" + "".join(f'{q};"{a}"\n' for q, a in EVERYDAY)),
     {}),
    ("tabs.tsv", lambda p: p.write_text("question\tanswer\n" + "".join(f"{q}\t{a}\n" for q, a in EVERYDAY)), {}),
    ("zipped.jsonl.gz", lambda p: p.write_bytes(__import__("gzip").compress("".join(
        json.dumps({"question": q, "answer": a}) + "\n" for q, a in EVERYDAY).encode())), {}),
    ("wrapped.json", lambda p: p.write_text(json.dumps({"version": 2, "data": [
        {"question": q, "answer": a} for q, a in EVERYDAY]})), {}),
    ("deep.json", lambda p: p.write_text(json.dumps({"meta": {"rows": [
        {"question": q, "answer": a} for q, a in EVERYDAY]}, "tags": ["x"]})), {"field": "meta.rows"}),
    ("nested.jsonl", lambda p: p.write_text("".join(json.dumps({"qa": {"q": q, "a": a}}) + "\n"
                                                    for q, a in EVERYDAY)),
     {"question_key": "qa.q", "answer_key": "qa.a"}),
])
def test_everyday_data_files(tmp_path, name, write, options):
    """Files as spreadsheets and scripts write them: a byte-order mark, ';' separators, tabs, gzip, a list wrapped
    in an object, nested fields. Each gives the same two samples, ids from the file name without its suffixes."""
    path = tmp_path / name
    write(path)
    samples = load_samples(path, **options)
    assert [(s.prompt, s.answer) for s in samples] == EVERYDAY
    assert samples[0].id == f"{name.split('.')[0]}:0"


def test_wrapped_json_errors_name_the_field(tmp_path):
    path = _write(tmp_path / "w.json", json.dumps({"meta": {"rows": []}, "n": 1}))
    with pytest.raises(MrdkitError, match=r"no field 'meta\.items' holding the records \(at 'items': rows\)"):
        load_samples(path, field="meta.items")
    with pytest.raises(MrdkitError, match=r"--field \(field=\) picks the list of records inside a JSON document"):
        load_samples(_write(tmp_path / "d.csv", "question,answer\nq,a\n"), field="data")

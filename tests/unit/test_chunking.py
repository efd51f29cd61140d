"""Raw-text chunking: stable ids, every token in exactly one window, carried token ids used by the encoder."""

from __future__ import annotations

import json
import warnings

import pytest

from mrdkit.data import Sample, chunk_documents, encode_samples, load_chunks, tokenizer_fingerprint
from mrdkit.data.chunking import window_starts
from mrdkit.errors import MrdkitError

DOCS = [
    "The quick brown fox jumps over the lazy dog. A news article about the weather and the city council.",
    "",
    "Short.",
    "Question: Who wrote the book? The author is Jane Doe, born in Paris, writes mystery novels \u00e9t\u00e9 "
    "\u201cquoted\u201d and short stories about the weather. " * 3,
    "The quick brown fox jumps over the lazy dog. A news article about the weather and the city council.",
]


def _ids(tok, text):
    return list(tok(text, add_special_tokens=False)["input_ids"])


@pytest.mark.parametrize("length", [1, 3, 7, 16])
def test_windows_partition_every_document_exactly(tiny_tokenizer, length):
    chunks = chunk_documents(DOCS, tiny_tokenizer, length=length, min_length=1)
    for d, text in enumerate(DOCS):
        mine = sorted((c for c in chunks if c.extra["doc"] == str(d)), key=lambda c: c.extra["chunk"])
        joined = [t for c in mine for t in c.extra["input_ids"]]
        assert joined == _ids(tiny_tokenizer, text)  # no token lost, none duplicated, order kept
        assert [c.extra["start_token"] for c in mine] == [k * length for k in range(len(mine))]
        assert all(c.extra["n_tokens"] == len(c.extra["input_ids"]) <= length for c in mine)
        assert [c.extra["ends_document"] for c in mine] == [False] * (len(mine) - 1) + [True] * bool(mine)


def test_ids_are_stable_and_unique_and_duplicates_stay_apart(tiny_tokenizer):
    first = chunk_documents(DOCS, tiny_tokenizer, length=8, source="muse")
    again = chunk_documents(list(DOCS), tiny_tokenizer, length=8, source="muse")
    assert [c.id for c in first] == [c.id for c in again]
    assert [c.extra["input_ids"] for c in first] == [c.extra["input_ids"] for c in again]
    assert len({c.id for c in first}) == len(first)
    assert all(c.id == f"muse:{c.extra['doc']}:{c.extra['chunk']}" and c.kind == "text" for c in first)
    doc0 = [c.extra["input_ids"] for c in first if c.extra["doc"] == "0"]
    doc4 = [c.extra["input_ids"] for c in first if c.extra["doc"] == "4"]
    assert doc0 == doc4 and doc0  # the duplicated document: same windows, distinct ids
    assert not any(c.extra["doc"] == "1" for c in first)  # the empty document yields nothing


def test_short_tail_is_merged_and_short_documents_skipped(tiny_tokenizer):
    n = len(_ids(tiny_tokenizer, DOCS[0]))
    length = n // 2 - 1  # two full windows and a tail of 2 or 3 tokens
    min_length = max(4, len(_ids(tiny_tokenizer, "Short.")) + 1)
    chunks = chunk_documents([DOCS[0], "Short."], tiny_tokenizer, length=length, min_length=min_length)
    assert [c.extra["n_tokens"] for c in chunks] == [length, n - length]
    assert [t for c in chunks for t in c.extra["input_ids"]] == _ids(tiny_tokenizer, DOCS[0])
    assert all(c.extra["doc"] == "0" for c in chunks)  # the short document yields no chunk


def test_window_spans():
    assert window_starts(10, 4, 4, 2) == [(0, 4), (4, 8), (8, 10)]
    assert window_starts(9, 4, 4, 2) == [(0, 4), (4, 9)]  # 1-token tail merged
    assert window_starts(1, 4, 4, 2) == [] and window_starts(0, 4, 4, 1) == []
    assert window_starts(10, 4, 2, 1) == [(0, 4), (2, 6), (4, 8), (6, 10)]  # overlap: stops at the end
    assert window_starts(3, 4, 4, 2) == [(0, 3)]


def test_overlapping_windows_cover_the_document(tiny_tokenizer):
    ids = _ids(tiny_tokenizer, DOCS[3])
    chunks = chunk_documents([DOCS[3]], tiny_tokenizer, length=10, stride=4, min_length=1)
    for c in chunks:
        start = c.extra["start_token"]
        assert c.extra["input_ids"] == ids[start:start + c.extra["n_tokens"]] and start % 4 == 0
    assert chunks[-1].extra["start_token"] + chunks[-1].extra["n_tokens"] == len(ids)


@pytest.mark.parametrize("kwargs", [{"length": 0}, {"length": 4, "stride": 5}, {"length": 4, "stride": 0},
                                    {"length": 4, "min_length": 0}, {"length": 4, "doc_ids": ["a"]}])
def test_bad_arguments(tiny_tokenizer, kwargs):
    with pytest.raises(MrdkitError):
        chunk_documents(DOCS[:2], tiny_tokenizer, **kwargs)


def test_load_chunks_from_json_and_jsonl_files(tiny_tokenizer, tmp_path):
    path = tmp_path / "forget.json"
    path.write_text(json.dumps(DOCS))
    chunks = load_chunks(path, tiny_tokenizer, length=8, limit_docs=2)
    assert chunks and {c.extra["doc"] for c in chunks} == {"0"} and chunks[0].id == "forget:0:0"
    lines = tmp_path / "corpus.jsonl"
    lines.write_text("".join(json.dumps({"text": t, "n": i}) + "\n" for i, t in enumerate(DOCS)))
    from_lines = load_chunks(lines, tiny_tokenizer, length=8, source="c")
    assert [c.extra["input_ids"] for c in from_lines] == [c.extra["input_ids"] for c in
                                                          chunk_documents(DOCS, tiny_tokenizer, length=8)]


def test_encoder_uses_the_carried_ids_where_text_round_trips_differ(tiny_tokenizer):
    chunks = chunk_documents([DOCS[3]], tiny_tokenizer, length=2, min_length=1)
    differs = [c for c in chunks if _ids(tiny_tokenizer, c.text) != c.extra["input_ids"]]
    assert differs  # decode -> encode is not the identity at some cuts (split multi-byte characters, merges)
    encoded = encode_samples(chunks, tiny_tokenizer, token_set="all")
    bos, eos = tiny_tokenizer.bos_token_id, tiny_tokenizer.eos_token_id
    for c, e in zip(chunks, encoded):
        tail = [eos] if c.extra["ends_document"] else []  # EOS only where the document really ends
        assert e.input_ids == [bos] + c.extra["input_ids"] + tail
    # a JSON round trip (e.g. chunks saved with a testbed) keeps the ids usable
    back = [Sample.from_dict(json.loads(json.dumps(c.to_dict()))) for c in chunks]
    assert [e.input_ids for e in encode_samples(back, tiny_tokenizer)] == [e.input_ids for e in encoded]


def test_chunks_of_another_tokenizer_are_retokenized_with_a_warning(tiny_tokenizer):
    from mrdkit.tiny import build_tiny_tokenizer

    other = build_tiny_tokenizer(DOCS * 3, 320)
    assert tokenizer_fingerprint(other) != tokenizer_fingerprint(tiny_tokenizer)
    chunks = chunk_documents([DOCS[0]], tiny_tokenizer, length=6)
    with pytest.warns(UserWarning, match="another tokenizer"):
        encoded = encode_samples(chunks, other, token_set="all", add_eos=False)
    assert [e.input_ids[1:] for e in encoded] == [_ids(other, c.text) for c in chunks]


def test_fingerprint_survives_save_and_reload(tiny_tokenizer, tmp_path):
    from transformers import AutoTokenizer

    tiny_tokenizer.save_pretrained(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert tokenizer_fingerprint(reloaded) == tokenizer_fingerprint(tiny_tokenizer)

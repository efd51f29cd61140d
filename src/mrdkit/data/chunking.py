"""Raw-text corpora -> fixed-length token windows ("chunks") that every stage treats like any other sample.

The MRD paper (Feng et al. 2025, arXiv:2504.06658) also unlearns raw corpora (WMDP forget corpora, Harry Potter)
and its reference code measures difficulty per chunk of text. MUSE (Shi et al. 2024, arXiv:2407.06460) ships its
forget set as whole articles. This module cuts documents into token windows:

- each document is tokenized once (no special tokens); window ``c`` covers tokens
  ``[c * stride, c * stride + length)``; windows are added until one reaches the document's end;
- ``stride == length`` (default) partitions the document: concatenating its windows gives back the token sequence
  exactly, no token lost or duplicated. ``stride < length`` overlaps windows; every window is scored whole (the
  overlap is scored twice; simplest, and each chunk stays a self-contained sample);
- a last window shorter than ``min_length`` is merged into the one before (so no token is lost; that window is then
  up to ``length + min_length - 1`` tokens); a document shorter than ``min_length`` tokens (e.g. MUSE's one empty
  article) yields no chunk;
- ids are ``<source>:<doc>:<chunk>``; ``doc`` defaults to the row index, so duplicated documents (MUSE-News has
  31 extra copies of 29 articles) get distinct ids.

Each chunk is a :class:`~mrdkit.data.samples.Sample` of kind ``"text"`` whose text is the decoded window, and
whose ``extra`` carries ``doc``, ``chunk``, ``start_token``, ``n_tokens``, ``ends_document``, the window's token ids
(``input_ids``) and the tokenizer's fingerprint (``tokenizer``). Decoding a window and encoding it again need not
give the same tokens (BPE merges across the cut, a multi-byte character split by it, SentencePiece's leading
space), so :func:`mrdkit.data.encode_samples` uses the carried ids when the fingerprint matches its tokenizer.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Sequence

from mrdkit.data.samples import Sample, check_unique_ids
from mrdkit.errors import MrdkitError

# A probe whose ids differ between tokenizers with high probability (words, digits, punctuation, non-ASCII).
_PROBE = "The quick brown fox, 1234567890; don't \u00e9t\u00e9 \u201cnews\u201d \u2014 BBC\n\nQuestion: Answer:"


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A short hash identifying a tokenizer: vocabulary size, special ids and the ids of a fixed probe text."""
    ids = list(tokenizer(_PROBE, add_special_tokens=False)["input_ids"])
    specials = (getattr(tokenizer, "bos_token_id", None), getattr(tokenizer, "eos_token_id", None))
    payload = f"{len(tokenizer)}|{specials}|{ids}"  # not the class: a saved tokenizer may reload as another one
    return hashlib.blake2b(payload.encode(), digest_size=8).hexdigest()


def window_starts(n_tokens: int, length: int, stride: int, min_length: int) -> list[tuple[int, int]]:
    """``[(start, end)]`` token spans of one document's windows (rules in the module docstring).

    Examples (length 4, stride 4, min_length 2): 10 tokens -> (0, 4), (4, 8), (8, 10); 9 tokens -> (0, 4),
    (4, 9) (the 1-token tail is merged); 1 token -> [] (shorter than min_length).
    """
    if n_tokens < min_length or n_tokens == 0:
        return []
    spans = [(0, min(length, n_tokens))]
    while spans[-1][0] + length < n_tokens:
        start = spans[-1][0] + stride
        spans.append((start, min(start + length, n_tokens)))
    if len(spans) > 1 and spans[-1][1] - spans[-1][0] < min_length:
        spans.pop()
        spans[-1] = (spans[-1][0], n_tokens)
    return spans


def _check(length: int, stride: int, min_length: int) -> None:
    if length < 1 or not 1 <= stride <= length or min_length < 1:
        raise MrdkitError(f"chunking needs length >= 1, 1 <= stride <= length and min_length >= 1; got "
                          f"length={length}, stride={stride}, min_length={min_length}")


def chunk_documents(texts: Sequence[str], tokenizer: Any, *, length: int = 128, stride: int | None = None,
                    min_length: int = 16, doc_ids: Sequence[str] | None = None, source: str = "muse") -> list[Sample]:
    """Cut documents into token windows, one ``kind="text"`` sample per window.

    Args:
        texts: the documents (empty ones are skipped).
        tokenizer: a Hugging Face tokenizer; the windows are in its tokens.
        length: tokens per window (the start/BOS token that encoding adds is not counted).
        stride: tokens between window starts; None = ``length`` (no overlap). Must be in ``[1, length]``.
        min_length: shortest window kept (at most ``length``); a shorter last window is merged into the previous
            one, a shorter document yields nothing.
        doc_ids: one id per document (default: its row index ``"0"``, ``"1"``, ...).
        source: id prefix.

    Returns:
        Samples in document order, then window order, with ids ``<source>:<doc>:<chunk>`` and ``extra``
        ``{doc, chunk, start_token, n_tokens, ends_document, input_ids, tokenizer}``.
    """
    stride = length if stride is None else stride
    _check(length, stride, min_length)
    min_length = min(min_length, length)
    doc_ids = [str(i) for i in range(len(texts))] if doc_ids is None else [str(d) for d in doc_ids]
    if len(doc_ids) != len(texts):
        raise MrdkitError(f"{len(doc_ids)} doc_ids for {len(texts)} documents")
    fingerprint = tokenizer_fingerprint(tokenizer)
    encoded = tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"] if texts else []
    out: list[Sample] = []
    for doc, ids in zip(doc_ids, encoded):
        spans = window_starts(len(ids), length, stride, min_length)
        for c, (start, end) in enumerate(spans):
            window = list(ids[start:end])
            extra = {"doc": doc, "chunk": c, "start_token": start, "n_tokens": len(window),
                     "ends_document": end == len(ids), "input_ids": window, "tokenizer": fingerprint}
            out.append(Sample(id=f"{source}:{doc}:{c}", prompt="", answer=tokenizer.decode(window), kind="text",
                              extra=extra))
    check_unique_ids(out, f"chunks of {source}")
    return out


def load_chunks(path: str | Path, tokenizer: Any, *, length: int = 128, stride: int | None = None,
                min_length: int = 16, limit_docs: int | None = None, source: str | None = None,
                text_key: str | None = None) -> list[Sample]:
    """Read documents from a file (any :func:`mrdkit.data.load_samples` format; e.g. MUSE's ``raw/forget.json``,
    a JSON list of strings) and return their chunks (:func:`chunk_documents`).

    Args:
        path: the corpus file.
        tokenizer, length, stride, min_length: as in :func:`chunk_documents`.
        limit_docs: only the first ``limit_docs`` documents (rows, empty ones included).
        source: id prefix (default: the file stem). Doc ids are row indices.
        text_key: field holding the text in records that are objects (auto-detected otherwise).
    """
    from mrdkit.data.loaders import load_samples

    docs = load_samples(str(path), limit=limit_docs, text_key=text_key)
    return chunk_documents([d.text for d in docs], tokenizer, length=length, stride=stride, min_length=min_length,
                           source=source or Path(path).stem)


def pretokenized_ids(sample: Sample, fingerprint: str) -> list[int] | None:
    """The token ids a raw-text chunk carries, if they were made by the tokenizer with ``fingerprint``."""
    ids = sample.extra.get("input_ids")
    if sample.kind != "text" or ids is None or sample.extra.get("tokenizer") != fingerprint:
        return None
    return [int(i) for i in ids]

"""Samples and how they become batches: loaders (TOFU, named benchmarks, files, hub), templates, encoding, collation.

``import mrdkit.data`` does not import torch; :func:`collate` imports it when first called.
"""

from mrdkit.data.chunking import chunk_documents, load_chunks, tokenizer_fingerprint
from mrdkit.data.encode import (
    ENCODINGS,
    IGNORE_INDEX,
    TOKEN_SETS,
    EncodedSample,
    collate,
    encode_samples,
    iter_batches,
    pad_id,
    prompt_token_ids,
    tokenizer_adds_bos,
)
from mrdkit.data.inspect import format_report, inspect_samples, length_stats
from mrdkit.data.loaders import load_samples
from mrdkit.data.records import FORMATS, load_idk, read_records
from mrdkit.data.samples import KINDS, Sample, check_unique_ids, detect_fields, records_to_samples
from mrdkit.data.sources import SOURCES, load_named
from mrdkit.data.templates import TEMPLATES, Rendered, render
from mrdkit.data.tofu import TOFU_SPLITS, load_tofu, tofu_split

__all__ = [
    "ENCODINGS",
    "EncodedSample",
    "Rendered",
    "prompt_token_ids",
    "FORMATS",
    "IGNORE_INDEX",
    "KINDS",
    "SOURCES",
    "Sample",
    "TOFU_SPLITS",
    "TEMPLATES",
    "TOKEN_SETS",
    "check_unique_ids",
    "chunk_documents",
    "collate",
    "detect_fields",
    "encode_samples",
    "format_report",
    "inspect_samples",
    "iter_batches",
    "length_stats",
    "load_chunks",
    "load_idk",
    "load_named",
    "load_samples",
    "load_tofu",
    "pad_id",
    "read_records",
    "records_to_samples",
    "render",
    "tokenizer_adds_bos",
    "tokenizer_fingerprint",
    "tofu_split",
]

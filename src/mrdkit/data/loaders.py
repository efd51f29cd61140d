"""Loaders: TOFU splits, named benchmarks, local files (JSON, JSON-lines, CSV, parquet, text), hub datasets -> samples.

Every loader returns ``list[Sample]`` with stable ids and raises :class:`MrdkitError` with a one-line message
naming the file, field or value at fault. TOFU rows that come from ``full.json`` keep the row number of
``full.json`` in their id (``forget10`` row i is ``tofu:{3600 + i}``) so that scores from different splits join.

File and hub readers live in :mod:`mrdkit.data.records`, TOFU in :mod:`mrdkit.data.tofu`, the named benchmarks
(``wmdp:bio``, ``wmdp-corpus:...``, ``muse:books:...``, ``safe:...``) in :mod:`mrdkit.data.sources`; this module
holds the generic entry point :func:`load_samples`.
"""

from __future__ import annotations

from pathlib import Path

from mrdkit.data.records import file_format, load_hub, looks_like_hub_id, read_records
from mrdkit.data.samples import Sample, records_to_samples, warn_data_quality
from mrdkit.data.sources import load_named, named_source
from mrdkit.data.tofu import TOFU_SPLITS, load_tofu
from mrdkit.errors import MrdkitError

# --- generic entry point -------------------------------------------------------------------------------------


def _tofu_from_source(source: str, split: str | None) -> tuple[str, str | None] | None:
    """``(split, folder_or_hub)`` when ``source`` names TOFU ("tofu", "tofu:<split>", a TOFU folder, the hub id)."""
    head, _, tail = source.partition(":")
    if head == "tofu" and not Path(source).exists():
        if tail and split and tail != split:
            raise MrdkitError(f"conflicting TOFU splits: {source!r} and split={split!r}")
        return tail or split or "", None
    if Path(source).is_dir() and (Path(source) / "full.json").is_file():
        return split or "", source
    if source.lower() == "locuslab/tofu":
        return split or "", source
    return None


def _fixed_fields(spec: str, *keys: str | None) -> None:
    """Named sources have their hub's fixed columns: a field option would be silently ignored, so refuse it."""
    if any(k is not None for k in keys):
        raise MrdkitError(f"{spec} has fixed fields (its hub schema); drop the --*-key / --field / --format options")


def load_samples(source: str | Path, *, split: str | None = None, fmt: str | None = None,
                 question_key: str | None = None, answer_key: str | None = None, text_key: str | None = None,
                 choices_key: str | None = None, id_key: str | None = None, limit: int | None = None,
                 field: str | None = None) -> list[Sample]:
    """Load samples from TOFU, a named benchmark, a local file or a hub dataset, detecting the fields if not given.

    Args:
        source: ``"tofu"`` / ``"tofu:<split>"`` / a TOFU folder / ``"locuslab/TOFU"`` (see :func:`load_tofu`);
            a named benchmark such as ``"wmdp:bio"`` or ``"muse:books:forget"`` (:mod:`mrdkit.data.sources`;
            ``split`` is appended to it: ``("muse:news", "forget")``); a file (``.json`` array, wrapped array or
            JSON-lines, ``.jsonl``, ``.csv``, ``.tsv``, ``.parquet``, ``.txt`` = one text per line; ``.gz`` / ``.bz2``
            / ``.xz`` compressed); or a hub dataset id.
        split: TOFU split; for other hub datasets ``"<config>"`` or ``"<config>:<hf split>"`` (default
            split ``train``).
        fmt: file format when the suffix does not tell it (``.gz`` / ``.bz2`` / ``.xz`` are decompressed, a
            CSV's delimiter is sniffed, a UTF-8 byte-order mark is dropped: :func:`mrdkit.data.read_records`).
        question_key, answer_key, text_key, choices_key: fields to use (default: auto-detected, see
            :func:`mrdkit.data.samples.detect_fields`); a dotted key reads a nested field (``qa.q``).
        id_key: field holding unique ids (default: ``id`` if present, else ``<file stem>:<row>``).
        limit: keep only the first ``limit`` samples.
        field: JSON files: the (dotted) key of the list of records inside a wrapping object (``{"data": [...]}``).

    Empty answers and duplicate rows load, with a warning naming their count
    (:func:`mrdkit.data.samples.warn_data_quality`).
    """
    source = str(source)
    if limit is not None and limit < 1:
        raise MrdkitError(f"limit must be a positive number of samples, got {limit}")
    samples = _load(source, split, fmt, limit, field, question_key=question_key, answer_key=answer_key,
                    text_key=text_key, choices_key=choices_key, id_key=id_key)
    warn_data_quality(samples, source)
    return samples


def _load(source: str, split: str | None, fmt: str | None, limit: int | None, field: str | None,
          **keys: str | None) -> list[Sample]:
    named = named_source(source, split)
    if named is not None:
        _fixed_fields(named, *keys.values(), fmt, field)
        return load_named(named, limit)
    tofu = _tofu_from_source(source, split)
    if tofu is not None:
        if not tofu[0]:
            raise MrdkitError(f"TOFU source {source!r} needs a split, e.g. 'tofu:forget10' "
                              f"(known: {', '.join(sorted(TOFU_SPLITS))})")
        return load_tofu(tofu[0], tofu[1])[:limit]
    if looks_like_hub_id(source) and fmt is None:
        config, _, hf_split = (split or "").partition(":")
        records, name = load_hub(source, config or None, hf_split or "train"), source
        prefix = f"{source}/{config}" if config else source
    else:
        if split is not None:
            raise MrdkitError(f"split={split!r} applies to TOFU and hub datasets, not to the file {source}")
        path = Path(source)
        records, name, prefix = read_records(path, fmt, field), str(path), _file_stem(path)
    if limit is not None:
        records = records[:limit]
    if keys["id_key"] is None and records and isinstance(records[0], dict) and "id" in records[0]:
        keys["id_key"] = "id"
    return records_to_samples(records, name, id_prefix=prefix, **keys)


def _file_stem(path: Path) -> str:
    """The id prefix of a file's rows: its name without the format and compression suffixes (``d.jsonl.gz`` ->
    ``d``), so compressing a file keeps its sample ids."""
    return Path(path.stem).stem if file_format(path)[1] else path.stem

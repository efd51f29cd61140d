"""Raw records from local files (JSON, JSON-lines, CSV, parquet, text) and Hugging Face hub datasets.

The readers behind :mod:`mrdkit.data.loaders` and :mod:`mrdkit.data.tofu`: each returns a list of rows (dicts or
strings) and raises :class:`MrdkitError` with a one-line message naming the file, line or value at fault.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

from mrdkit.errors import MrdkitError

FORMATS = ("json", "jsonl", "csv", "tsv", "parquet", "txt")
# compressed data files are read by their last suffix (data.jsonl.gz = JSON-lines, gzip), with the standard library
COMPRESSIONS = {"gz": "gzip", "bz2": "bz2", "xz": "lzma"}
# what a spreadsheet may separate CSV cells with (';' where ',' is the decimal mark, as in most of Europe)
DELIMITERS = (",", ";", "\t", "|")
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")

# --- reading records from files ------------------------------------------------------------------------------


def _read_jsonl(text: str, source: str) -> list[Any]:
    from mrdkit.runs import parse_jsonl

    return parse_jsonl(text, source)


def _read_json(text: str, source: str, field: str | None = None) -> list[Any]:
    """A JSON array, a single JSON value, JSON-lines (auto-detected: TOFU's ``.json`` files are JSON-lines), or an
    object wrapping the list of records (``{"data": [...]}``: :func:`unwrap`)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        if err.msg == "Extra data" and field is None:  # a complete first value followed by more: JSON-lines
            return _read_jsonl(text, source)
        raise MrdkitError(f"{source}: malformed JSON on line {err.lineno}: {err.msg} (column {err.colno})") from None
    except RecursionError:
        raise MrdkitError(f"{source}: JSON nested too deeply") from None
    data = unwrap(data, field, source)
    return data if isinstance(data, list) else [data]


def unwrap(data: Any, field: str | None, source: str) -> Any:
    """The list of records inside a JSON document: ``data[field]`` (a dotted path: ``split.rows``) when ``field`` is
    given; else, for an object with exactly one list of JSON objects among its values (``{"version": 2, "data":
    [{...}, ...]}``), that list; else the document itself (an array, or one record)."""
    if field is not None:
        value = data
        for part in field.split("."):
            if not isinstance(value, dict) or part not in value:
                keys = ", ".join(map(str, value)) if isinstance(value, dict) else type(value).__name__
                raise MrdkitError(f"{source}: no field {field!r} holding the records (at {part!r}: {keys})")
            value = value[part]
        if not isinstance(value, list):
            raise MrdkitError(f"{source}: field {field!r} is a {type(value).__name__}, not a list of records")
        return value
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list) and v and all(isinstance(r, dict) for r in v)]
        if len(lists) == 1:
            return lists[0]
    return data


def sniff_delimiter(header: str) -> str:
    """The CSV delimiter: the candidate of :data:`DELIMITERS` that occurs most often in the header line (ties and
    none: ``,``). Only the header is read, so a ``;`` inside an answer cell cannot mislead it."""
    counts = {d: header.count(d) for d in DELIMITERS}
    best = max(DELIMITERS, key=lambda d: (counts[d], d == ","))
    return best if counts[best] else ","


def _read_table(text: str, source: str, delimiter: str | None) -> list[Any]:
    """CSV / TSV rows through pandas: every cell as text (``dtype=str``), empty cells as ``""``, not NaN."""
    import io

    import pandas as pd

    sep = delimiter or sniff_delimiter(text.split("\n", 1)[0])
    try:
        frame = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False, skip_blank_lines=True)
    except pd.errors.EmptyDataError:
        return []
    except (pd.errors.ParserError, ValueError, csv.Error) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise MrdkitError(f"{source}: malformed {'TSV' if sep == chr(9) else 'CSV'} (delimiter {sep!r}): "
                          f"{first}") from None
    frame.columns = [str(c) for c in frame.columns]
    return frame.to_dict("records")


def _not_utf8(source: str, err: UnicodeDecodeError) -> str:
    return f"{source}: not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset {err.start})"


def _read_parquet(path: Path, source: str) -> list[Any]:
    import pyarrow.parquet as pq  # heavy import, only when needed

    try:
        return pq.read_table(path).to_pylist()
    except Exception as err:  # pyarrow raises several types for corrupt files
        raise MrdkitError(f"{source}: cannot read parquet: {err}") from None


def file_format(path: Path, fmt: str | None = None) -> tuple[str, str | None]:
    """``(format, compression)`` of a data file from its name: ``d.jsonl.gz`` -> ``("jsonl", "gz")``; ``fmt``
    overrides the format (the compression still comes from the name)."""
    suffixes = [s.lstrip(".").lower() for s in path.suffixes]
    compression = suffixes.pop() if suffixes and suffixes[-1] in COMPRESSIONS else None
    return (fmt or (suffixes[-1] if suffixes else "")).lower(), compression


def read_text(path: Path, source: str, compression: str | None = None) -> str:
    """The file's text: decompressed by its suffix, decoded as UTF-8 with a byte-order mark stripped (spreadsheets
    write one; it would otherwise become part of the first field's name)."""
    import importlib

    raw = path.read_bytes()
    if compression is not None:
        try:
            raw = importlib.import_module(COMPRESSIONS[compression]).decompress(raw)
        except Exception as err:  # gzip.BadGzipFile, OSError, lzma.LZMAError, EOFError: all "not that format"
            raise MrdkitError(f"{source}: cannot decompress as .{compression}: {err}") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise MrdkitError(_not_utf8(source, err)) from None


def read_records(path: str | Path, fmt: str | None = None, field: str | None = None) -> list[Any]:
    """Rows of a data file: dicts (JSON objects, CSV/TSV/parquet rows) or strings (``.txt`` lines, JSON strings).

    Args:
        path: the file; ``.gz`` / ``.bz2`` / ``.xz`` after the format suffix are decompressed (``d.jsonl.gz``).
        fmt: one of ``json``, ``jsonl``, ``csv``, ``tsv``, ``parquet``, ``txt``; default from the file suffix. CSV
            cells may be separated by ``,``, ``;``, tab or ``|`` (:func:`sniff_delimiter`).
        field: JSON: the (dotted) key of the list of records in a wrapping object (:func:`unwrap`).
    """
    path = Path(path)
    source = str(path)
    fmt, compression = file_format(path, fmt)
    if path.is_dir():
        raise MrdkitError(f"{source}: is a folder, not a data file (a TOFU folder holds full.json)")
    if path.is_symlink() and not path.exists():
        raise MrdkitError(f"{source}: broken symbolic link (to {path.readlink()})")
    if not path.is_file():
        raise MrdkitError(f"{source}: no such file")
    if fmt not in FORMATS:
        raise MrdkitError(f"{source}: unknown format {fmt!r} (known: {', '.join(FORMATS)}, optionally compressed: "
                          f"{', '.join('.' + c for c in COMPRESSIONS)}); pass --format (fmt= in Python)")
    if field is not None and fmt != "json":
        raise MrdkitError(f"{source}: --field (field=) picks the list of records inside a JSON document; this is "
                          f"a {fmt} file")
    try:
        records = _read_format(path, fmt, source, compression, field)
    except OSError as err:  # unreadable (permissions, I/O error): name the file, no traceback
        raise MrdkitError(f"{source}: cannot read: {err.strerror or err}") from None
    if not records:
        raise MrdkitError(f"{source}: empty file (no records)")
    return records


def _read_format(path: Path, fmt: str, source: str, compression: str | None, field: str | None) -> list[Any]:
    if fmt == "parquet":
        return _read_parquet(path, source)
    text = read_text(path, source, compression)
    if fmt in ("csv", "tsv"):
        return _read_table(text, source, "\t" if fmt == "tsv" else None)
    if fmt == "txt":
        return [line for line in text.splitlines() if line.strip()]
    return _read_json(text, source, field) if fmt == "json" and text.strip() else _read_jsonl(text, source)


def load_idk(path: str | Path | None = None) -> list[str]:
    """TOFU's "I don't know" refusals (``idontknow.jsonl``: plain text lines, not JSON despite the name)."""
    from mrdkit.paths import default_tofu_file

    return read_records(path if path is not None else default_tofu_file("idontknow.jsonl"), fmt="txt")


# --- Hugging Face hub ----------------------------------------------------------------------------------------


def looks_like_hub_id(source: str) -> bool:
    """``owner/name`` that is not an existing path and has no data-file suffix."""
    return bool(_HUB_ID.match(source)) and not Path(source).exists() and \
        file_format(Path(source))[0] not in FORMATS


def load_hub(hub_id: str, config: str | None, hf_split: str = "train") -> list[dict[str, Any]]:
    try:
        import datasets

        ds = datasets.load_dataset(hub_id, config, split=hf_split)
    except Exception as err:  # offline, unknown repo or config: all the user can act on is the message
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise MrdkitError(f"cannot load {hub_id!r} (config {config!r}, split {hf_split!r}) from the Hugging Face "
                          f"hub: {first}; offline? use a local file or folder instead") from None
    return list(ds)

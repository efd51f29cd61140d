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

FORMATS = ("json", "jsonl", "csv", "parquet", "txt")
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")

# --- reading records from files ------------------------------------------------------------------------------


def _read_jsonl(text: str, source: str) -> list[Any]:
    from mrdkit.runs import parse_jsonl

    return parse_jsonl(text, source)


def _read_json(text: str, source: str) -> list[Any]:
    """A JSON array, a single JSON value, or JSON-lines (auto-detected: TOFU's ``.json`` files are JSON-lines)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        if err.msg == "Extra data":  # a complete first value followed by more: JSON-lines
            return _read_jsonl(text, source)
        raise MrdkitError(f"{source}: malformed JSON on line {err.lineno}: {err.msg} (column {err.colno})") from None
    except RecursionError:
        raise MrdkitError(f"{source}: JSON nested too deeply") from None
    return data if isinstance(data, list) else [data]


def _read_csv(path: Path, source: str) -> list[Any]:
    with path.open(newline="", encoding="utf-8") as fh:
        try:
            return list(csv.DictReader(fh))
        except csv.Error as err:
            raise MrdkitError(f"{source}: malformed CSV: {err}") from None
        except UnicodeDecodeError as err:
            raise MrdkitError(_not_utf8(source, err)) from None


def _not_utf8(source: str, err: UnicodeDecodeError) -> str:
    return f"{source}: not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset {err.start})"


def _read_parquet(path: Path, source: str) -> list[Any]:
    import pyarrow.parquet as pq  # heavy import, only when needed

    try:
        return pq.read_table(path).to_pylist()
    except Exception as err:  # pyarrow raises several types for corrupt files
        raise MrdkitError(f"{source}: cannot read parquet: {err}") from None


def read_records(path: str | Path, fmt: str | None = None) -> list[Any]:
    """Rows of a data file: dicts (JSON objects, CSV/parquet rows) or strings (``.txt`` lines, JSON strings).

    Args:
        path: the file.
        fmt: one of ``json``, ``jsonl``, ``csv``, ``parquet``, ``txt``; default from the file suffix.
    """
    path = Path(path)
    source = str(path)
    fmt = (fmt or path.suffix.lstrip(".")).lower()
    if path.is_dir():
        raise MrdkitError(f"{source}: is a folder, not a data file (a TOFU folder holds full.json)")
    if path.is_symlink() and not path.exists():
        raise MrdkitError(f"{source}: broken symbolic link (to {path.readlink()})")
    if not path.is_file():
        raise MrdkitError(f"{source}: no such file")
    if fmt not in FORMATS:
        raise MrdkitError(f"{source}: unknown format {fmt!r} (known: {', '.join(FORMATS)}); pass fmt=")
    try:
        records = _read_format(path, fmt, source)
    except OSError as err:  # unreadable (permissions, I/O error): name the file, no traceback
        raise MrdkitError(f"{source}: cannot read: {err.strerror or err}") from None
    if not records:
        raise MrdkitError(f"{source}: empty file (no records)")
    return records


def _read_format(path: Path, fmt: str, source: str) -> list[Any]:
    if fmt == "csv":
        records = _read_csv(path, source)
    elif fmt == "parquet":
        records = _read_parquet(path, source)
    else:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise MrdkitError(_not_utf8(source, err)) from None
        if fmt == "txt":
            records = [line for line in text.splitlines() if line.strip()]
        else:
            records = _read_json(text, source) if fmt == "json" and text.strip() else _read_jsonl(text, source)
    return records


def load_idk(path: str | Path | None = None) -> list[str]:
    """TOFU's "I don't know" refusals (``idontknow.jsonl``: plain text lines, not JSON despite the name)."""
    from mrdkit.paths import default_tofu_file

    return read_records(path if path is not None else default_tofu_file("idontknow.jsonl"), fmt="txt")


# --- Hugging Face hub ----------------------------------------------------------------------------------------


def looks_like_hub_id(source: str) -> bool:
    """``owner/name`` that is not an existing path and has no data-file suffix."""
    return bool(_HUB_ID.match(source)) and not Path(source).exists() and \
        Path(source).suffix.lstrip(".").lower() not in FORMATS


def load_hub(hub_id: str, config: str | None, hf_split: str = "train") -> list[dict[str, Any]]:
    try:
        import datasets

        ds = datasets.load_dataset(hub_id, config, split=hf_split)
    except Exception as err:  # offline, unknown repo or config: all the user can act on is the message
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise MrdkitError(f"cannot load {hub_id!r} (config {config!r}, split {hf_split!r}) from the Hugging Face "
                          f"hub: {first}; offline? use a local file or folder instead") from None
    return list(ds)

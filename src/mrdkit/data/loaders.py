"""Loaders: TOFU splits, local files (JSON, JSON-lines, CSV, parquet, text) and Hugging Face datasets -> samples.

Every loader returns ``list[Sample]`` with stable ids and raises :class:`MrdkitError` with a one-line message
naming the file, field or value at fault. TOFU rows that come from ``full.json`` keep the row number of
``full.json`` in their id (``forget10`` row i is ``tofu:{3600 + i}``) so that scores from different splits join.
"""

from __future__ import annotations

import csv
import difflib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mrdkit.data.samples import Sample, records_to_samples
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


def _load_hub(hub_id: str, config: str | None, hf_split: str = "train") -> list[dict[str, Any]]:
    try:
        import datasets

        ds = datasets.load_dataset(hub_id, config, split=hf_split)
    except Exception as err:  # offline, unknown repo or config: all the user can act on is the message
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise MrdkitError(f"cannot load {hub_id!r} (config {config!r}, split {hf_split!r}) from the Hugging Face "
                          f"hub: {first}; offline? use a local file or folder instead") from None
    return list(ds)


# --- TOFU ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TofuSplit:
    """Where a TOFU split comes from and which ids its rows get."""

    config: str  # file stem in the TOFU folder = config name on the hub
    family: str  # id space: "tofu" (rows of full.json), "tofu_holdout", "tofu_real_authors", "tofu_world_facts"
    start: int  # row of the first record in its id space
    count: int  # expected number of records
    derived: bool = False  # sliced out of full.json (not a file of its own)


def _tofu_splits() -> dict[str, TofuSplit]:
    splits = {"full": TofuSplit("full", "tofu", 0, 4000),
              "retain_perturbed": TofuSplit("retain_perturbed", "tofu", 0, 400)}
    for pct in ("01", "05", "10"):
        n = 40 * int(pct)
        splits[f"forget{pct}"] = TofuSplit(f"forget{pct}", "tofu", 4000 - n, n)
        splits[f"forget{pct}_perturbed"] = TofuSplit(f"forget{pct}_perturbed", "tofu", 4000 - n, n)
        splits[f"retain{100 - int(pct)}"] = TofuSplit(f"retain{100 - int(pct)}", "tofu", 0, 4000 - n)
        splits[f"holdout{pct}"] = TofuSplit(f"holdout{pct}", "tofu_holdout", 0, n)
    # larger forget sets are not files: forgetXX = full[4000-40*XX:], complement retain(100-XX) = full[:4000-40*XX]
    for pct in (20, 30, 50, 90):
        splits[f"forget{pct}"] = TofuSplit("full", "tofu", 4000 - 40 * pct, 40 * pct, derived=True)
        splits[f"retain{100 - pct}"] = TofuSplit("full", "tofu", 0, 4000 - 40 * pct, derived=True)
    for name, count in (("real_authors", 100), ("world_facts", 117)):
        splits[name] = TofuSplit(name, f"tofu_{name}", 0, count)
        splits[f"{name}_perturbed"] = TofuSplit(f"{name}_perturbed", f"tofu_{name}", 0, count)
    return splits


TOFU_SPLITS: dict[str, TofuSplit] = _tofu_splits()


def tofu_split(split: str) -> TofuSplit:
    """The :class:`TofuSplit` for ``split``, or a did-you-mean :class:`MrdkitError`."""
    if split not in TOFU_SPLITS:
        close = difflib.get_close_matches(str(split), list(TOFU_SPLITS), n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise MrdkitError(f"unknown TOFU split {split!r}{hint} (known: {', '.join(sorted(TOFU_SPLITS))})")
    return TOFU_SPLITS[split]


def _tofu_records(spec: TofuSplit, source: str | Path | None) -> tuple[list[Any], str]:
    """Raw rows of ``spec.config`` from a local folder or the hub, and a name for messages."""
    from mrdkit.paths import default_tofu_file

    if source is None:
        path = default_tofu_file(f"{spec.config}.json")
        return read_records(path, fmt="json"), str(path)
    if Path(source).is_dir():
        folder = Path(source)
        path = folder / f"{spec.config}.json"
        if not path.is_file():
            raise MrdkitError(f"{path}: no such file (TOFU folder {folder} lacks split {spec.config!r})")
        return read_records(path, fmt="json"), str(path)
    if looks_like_hub_id(str(source)):
        return _load_hub(str(source), spec.config), f"{source}:{spec.config}"
    raise MrdkitError(f"TOFU source {str(source)!r} is neither a folder nor a Hugging Face hub id")


def _tofu_extra(sample: Sample, spec: TofuSplit, row: int) -> Sample:
    """Add ``author_id`` (20 consecutive QA per author; holdout authors numbered after the 200 in full)."""
    if spec.family == "tofu":
        return sample.replace(extra={**sample.extra, "author_id": row // 20})
    if spec.family == "tofu_holdout":
        return sample.replace(extra={**sample.extra, "author_id": 200 + row // 20})
    return sample


def _check_perturbed(samples: list[Sample], name: str) -> None:
    """Perturbed splits feed the truth ratio: ``perturbed_answer`` must be a list of strings, the rest strings."""
    for s in samples:
        pert = s.extra.get("perturbed_answer", [])
        if not (isinstance(pert, list) and all(isinstance(p, str) for p in pert)):
            raise MrdkitError(f"{name}: field 'perturbed_answer' of {s.id} must be a list of strings, "
                              f"got {pert!r:.60}")
        for key in ("paraphrased_answer", "paraphrased_question"):
            if not isinstance(s.extra.get(key, ""), str):
                raise MrdkitError(f"{name}: field {key!r} of {s.id} must be a str, got {s.extra[key]!r:.60}")


def load_tofu(split: str, source: str | Path | None = None) -> list[Sample]:
    """Load one TOFU split (Maini et al. 2024, arXiv:2401.06121) as samples with stable ids.

    Args:
        split: ``full``, ``forget01/05/10[_perturbed]``, ``retain90/95/99``, ``retain_perturbed``,
            ``holdout01/05/10``, ``real_authors[_perturbed]``, ``world_facts[_perturbed]``, or the derived
            ``forget20/30/50/90`` (``full[4000-40*XX:]``) and their complements ``retain80/70/50/10``.
        source: ``None`` for the local copy (:func:`mrdkit.paths.tofu_dir`; splits shipped in the package's
            embedded subset are read from there when no local copy exists), a folder of TOFU files, or a hub id
            such as ``"locuslab/TOFU"`` (config name = split).

    Returns:
        Samples in file order. Ids: ``tofu:<row in full.json>`` (with ``extra["author_id"] = row // 20``),
        ``tofu_holdout:<row>`` (author ``200 + row // 20``), ``tofu_real_authors:<row>``,
        ``tofu_world_facts:<row>``. ``real_authors``/``world_facts`` are ``mcq`` with ``extra["choices"]`` and
        ``extra["answer_index"]``; perturbed splits carry ``paraphrased_answer``, ``perturbed_answer`` (list)
        and (forget/retain) ``paraphrased_question`` in ``extra``.
    """
    spec = tofu_split(split)
    records, name = _tofu_records(spec, source)
    if spec.derived:
        records = records[spec.start:spec.start + spec.count]
    if len(records) != spec.count:
        raise MrdkitError(f"{name}: TOFU split {split!r} should have {spec.count} records, found {len(records)}")
    samples = records_to_samples(records, name, id_prefix=spec.family, row_offset=spec.start,
                                 question_key="question", answer_key="answer")
    _check_perturbed(samples, name)
    return [_tofu_extra(s, spec, spec.start + i) for i, s in enumerate(samples)]


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


def load_samples(source: str | Path, *, split: str | None = None, fmt: str | None = None,
                 question_key: str | None = None, answer_key: str | None = None, text_key: str | None = None,
                 choices_key: str | None = None, id_key: str | None = None, limit: int | None = None) -> list[Sample]:
    """Load samples from TOFU, a local file or a Hugging Face dataset, detecting the fields when not given.

    Args:
        source: ``"tofu"`` / ``"tofu:<split>"`` / a TOFU folder / ``"locuslab/TOFU"`` (see :func:`load_tofu`);
            a file (``.json`` array or JSON-lines, ``.jsonl``, ``.csv``, ``.parquet``, ``.txt`` = one text per
            line); or a hub dataset id.
        split: TOFU split; for other hub datasets ``"<config>"`` or ``"<config>:<hf split>"`` (default
            split ``train``).
        fmt: file format when the suffix does not tell it.
        question_key, answer_key, text_key, choices_key: fields to use (default: auto-detected, see
            :func:`mrdkit.data.samples.detect_fields`).
        id_key: field holding unique ids (default: ``id`` if present, else ``<file stem>:<row>``).
        limit: keep only the first ``limit`` samples.
    """
    source = str(source)
    if limit is not None and limit < 1:
        raise MrdkitError(f"limit must be a positive number of samples, got {limit}")
    tofu = _tofu_from_source(source, split)
    if tofu is not None:
        if not tofu[0]:
            raise MrdkitError(f"TOFU source {source!r} needs a split, e.g. 'tofu:forget10' "
                              f"(known: {', '.join(sorted(TOFU_SPLITS))})")
        return load_tofu(tofu[0], tofu[1])[:limit]
    if looks_like_hub_id(source) and fmt is None:
        config, _, hf_split = (split or "").partition(":")
        records, name = _load_hub(source, config or None, hf_split or "train"), source
        prefix = f"{source}/{config}" if config else source
    else:
        if split is not None:
            raise MrdkitError(f"split={split!r} applies to TOFU and hub datasets, not to the file {source}")
        path = Path(source)
        records, name, prefix = read_records(path, fmt), str(path), path.stem
    if limit is not None:
        records = records[:limit]
    if id_key is None and records and isinstance(records[0], dict) and "id" in records[0]:
        id_key = "id"
    return records_to_samples(records, name, id_prefix=prefix, question_key=question_key, answer_key=answer_key,
                              text_key=text_key, choices_key=choices_key, id_key=id_key)

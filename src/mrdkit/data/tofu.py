"""TOFU splits (Maini et al. 2024, arXiv:2401.06121) as samples with stable ids.

Rows that come from ``full.json`` keep the row number of ``full.json`` in their id (``forget10`` row i is
``tofu:{3600 + i}``) so that scores from different splits join; the larger forget sets and their complements are
slices of ``full.json``.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mrdkit.data.records import load_hub, looks_like_hub_id, read_records
from mrdkit.data.samples import Sample, records_to_samples
from mrdkit.errors import MrdkitError

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
        return load_hub(str(source), spec.config), f"{source}:{spec.config}"
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

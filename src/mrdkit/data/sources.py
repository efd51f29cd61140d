"""Named benchmark sources: the MRD paper's data sets by name, read with the Hugging Face hub's exact schemas.

The MRD paper (Feng et al. 2025, arXiv:2504.06658) evaluates on TOFU, WMDP, WHP (Harry Potter) and SAFE. TOFU has
its own loader (:mod:`mrdkit.data.tofu`); this module names the others:

- ``wmdp:bio|cyber|chem``: ``cais/wmdp``, config ``wmdp-<x>``, split ``test``; columns ``question``,
  ``choices`` (4 strings), ``answer`` (index) -> ``mcq`` samples.
- ``wmdp-corpus:cyber-forget|cyber-retain|bio-retain``: ``cais/wmdp-corpora``, config ``<x>-corpus``, split
  ``train``; column ``text`` -> ``text`` documents.
- ``muse:news|books:<config>/<split>``: ``muse-bench/MUSE-News`` / ``MUSE-Books``; ``raw`` and ``privleak``:
  ``text``; ``knowmem``: ``question``, ``answer``; ``verbmem``: ``prompt``, ``gt`` -> ``text`` / ``qa``.
- ``safe:forget|retain[:<config>/<split>]``: ``PKU-Alignment/PKU-SafeRLHF`` (``default`` / ``train``);
  ``prompt``, ``response_0/1``, ``is_response_0/1_safe``, harm categories, severity -> ``qa``.

- WMDP (Li et al. 2024, arXiv:2403.03218): the bio forget corpus is gated (requested through a form linked from the
  ``cais/wmdp-corpora`` card), so ``wmdp-corpus:bio-forget`` is a one-line error saying how to get it; the file
  you receive loads as any JSON-lines file with a ``text`` field.
- MUSE (Shi et al. 2024, arXiv:2407.06460): ``<split>`` alone means a ``raw`` split (``muse:books:forget``).
  MUSE-Books (the Harry Potter books) is the community's WHP benchmark: mrdkit covers WHP through it without
  shipping copyrighted text. Raw documents become token windows with :func:`mrdkit.data.chunk_documents`
  (``--chunk-tokens``), as on the local MUSE-News path; :func:`muse_folder` lays the hub's evaluation splits out
  as the local MUSE-News folder, so ``mrd eval --benchmark muse-books`` runs :mod:`mrdkit.evaluation.muse` unchanged.
- SAFE (PKU-SafeRLHF, Ji et al. 2024, arXiv:2406.15513): each row holds one prompt and two responses with a
  safety label each. ``safe:forget`` = every unsafe response (the harmful behaviour to remove), ``safe:retain`` =
  every safe response (retain set, or IDK targets with ``--idk safe:retain``). A forget sample carries the safe
  response to the same prompt, when there is one, in ``extra["safe_response"]``.

Where rows come from: a local snapshot of the dataset repository in ``$MRDKIT_HUB_MIRROR/<owner>/<name>/`` when
that folder exists (``huggingface-cli download --repo-type dataset <id> --local-dir ...`` makes one; tests write
small fixtures there in each dataset's exact column layout), else the hub or its cache (``HF_HUB_OFFLINE=1``: the
cache only). A bad name, a missing config or an offline miss is one :class:`MrdkitError` line naming the dataset
and how to get it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from mrdkit.data.samples import Sample, check_unique_ids, records_to_samples
from mrdkit.errors import MrdkitError
from mrdkit.registry import Registry

MIRROR_ENV = "MRDKIT_HUB_MIRROR"
WMDP_REPO, CORPORA_REPO, SAFE_REPO = "cais/wmdp", "cais/wmdp-corpora", "PKU-Alignment/PKU-SafeRLHF"
MUSE_REPOS = {"news": "muse-bench/MUSE-News", "books": "muse-bench/MUSE-Books"}
WMDP_SUBJECTS = ("bio", "chem", "cyber")
CORPORA = ("bio-retain", "cyber-forget", "cyber-retain")
GATED_CORPORA = ("bio-forget",)
MUSE_CONFIGS = ("raw", "knowmem", "verbmem", "privleak")
MUSE_RAW_SPLITS = ("forget", "retain1", "retain2", "holdout")
# MUSE renamed its retain splits between releases (retain2_qa -> retain_qa, privleak retain2 -> retain)
MUSE_SPLIT_ALIASES = {"retain_qa": ("retain2_qa",), "retain2_qa": ("retain_qa",), "retain_qa_icl": ("retain2_qa_icl",),
                      "retain2_qa_icl": ("retain_qa_icl",), "retain": ("retain2",), "retain2": ("retain",)}
SAFE_ROLES = ("forget", "retain")

Loader = Callable[[str, "int | None"], list[Sample]]
SOURCES: Registry[Loader] = Registry("data source")


@dataclass(frozen=True)
class HubTable:
    """One table of a hub dataset: repository, config and split (what ``datasets.load_dataset`` takes)."""

    repo: str
    config: str | None
    split: str
    label: str  # what the user typed, for messages

    def describe(self) -> str:
        return f"{self.label} ({self.repo}, config {self.config!r}, split {self.split!r})"


# --- rows from a local snapshot, the hub or its cache -------------------------------------------------------


def mirror_dir(repo: str) -> Path | None:
    """``$MRDKIT_HUB_MIRROR/<owner>/<name>`` when that folder exists (a local snapshot of the dataset repo)."""
    root = os.environ.get(MIRROR_ENV)
    if not root:
        return None
    path = Path(root) / repo
    return path if path.is_dir() else None


def _how_to_get(table: HubTable) -> str:
    config = f", {table.config!r}" if table.config else ""
    return (f"download it once online (python -c \"import datasets; datasets.load_dataset('{table.repo}'{config})\"), "
            f"point HF_HOME at a cache that holds it, or set {MIRROR_ENV} to a folder with a snapshot in "
            f"<folder>/{table.repo}")


def _miss_message(table: HubTable, err: BaseException) -> str:
    """One line saying why ``table`` could not be read and what to do about it."""
    text = " ".join(str(err).split()) or type(err).__name__
    if "BuilderConfig" in text or "Unknown split" in text or "Bad split" in text:
        return f"{table.describe()}: {text[:300]}"
    if "gated" in text.lower() or "401" in text or "403" in text:
        return (f"{table.describe()} is gated: accept its conditions on the hub page and log in "
                f"(huggingface-cli login), then load it once online ({text[:120]})")
    offline = os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1"
    where = "is not in the Hugging Face cache and the hub is offline" if offline else "cannot be loaded"
    return f"{table.describe()} {where} ({text[:160]}); {_how_to_get(table)}"


def _load_split(source: str, table: HubTable, split: str, limit: int | None) -> list[dict[str, Any]]:
    """Rows of one split. A local snapshot is read through a throwaway cache: ``datasets`` keys its cache of a
    local folder by the folder's config, not by the files' contents, so an edited snapshot would otherwise load
    stale rows (and every snapshot would leave a copy in the user's cache)."""
    import contextlib
    import tempfile

    import datasets

    local = Path(source).is_dir()
    with tempfile.TemporaryDirectory(prefix="mrdkit-snapshot-") if local else contextlib.nullcontext() as cache:
        ds = datasets.load_dataset(source, table.config, split=split, cache_dir=cache)
        if limit is not None:
            ds = ds.select(range(min(limit, len(ds))))
        return [dict(row) for row in ds]



def hub_rows(table: HubTable, limit: int | None = None, aliases: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The rows of ``table`` (first ``limit``), from a local snapshot or the hub / cache; ``aliases`` are other
    names the split had in other releases of the dataset, tried when the split is unknown."""
    local = mirror_dir(table.repo)
    source = str(local) if local is not None else table.repo
    names = [table.split, *aliases]
    for k, split in enumerate(names):
        try:
            return _load_split(source, table, split, limit)
        except ValueError as err:
            if "Unknown split" in str(err) and k + 1 < len(names):
                continue  # an older / newer release of the dataset names this split differently
            raise MrdkitError(_miss_message(table, err)) from None
        except Exception as err:  # offline, gated, unknown repo: the message is all the user can act on
            raise MrdkitError(_miss_message(table, err)) from None
    return []  # not reached: the last name either returns or raises


# --- WMDP ---------------------------------------------------------------------------------------------------


def _choose(value: str, known: Sequence[str], what: str, example: str) -> str:
    if value not in known:
        import difflib

        close = difflib.get_close_matches(value, list(known), n=2, cutoff=0.5)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise MrdkitError(f"unknown {what} {value!r}{hint} (known: {', '.join(known)}; e.g. {example})")
    return value


@SOURCES.register("wmdp", summary="WMDP multiple choice: wmdp:bio|cyber|chem (cais/wmdp, test split)",
                  example="wmdp:bio", repo=WMDP_REPO)
def load_wmdp(arg: str, limit: int | None = None) -> list[Sample]:
    """WMDP questions (Li et al. 2024, arXiv:2403.03218) as ``mcq`` samples, ids ``wmdp_<subject>:<row>``."""
    subject = _choose(arg, WMDP_SUBJECTS, "WMDP subject", "wmdp:bio")
    table = HubTable(WMDP_REPO, f"wmdp-{subject}", "test", f"wmdp:{subject}")
    rows = hub_rows(table, limit)
    return records_to_samples(rows, table.describe(), id_prefix=f"wmdp_{subject}", question_key="question",
                              answer_key="answer", choices_key="choices")


def _corpus_name(arg: str) -> str:
    name = arg.removesuffix("-corpus")
    if name in GATED_CORPORA:
        raise MrdkitError("the WMDP bio forget corpus is gated: request it through the form linked from the "
                          "cais/wmdp-corpora dataset card, then load the JSON-lines file you receive as a file "
                          "(--forget FILE --text-key text); the open corpora are "
                          f"{', '.join('wmdp-corpus:' + c for c in CORPORA)}")
    return _choose(name, CORPORA, "WMDP corpus", "wmdp-corpus:cyber-forget")


@SOURCES.register("wmdp-corpus", summary="WMDP raw-text corpora: wmdp-corpus:cyber-forget|cyber-retain|bio-retain "
                                         "(cais/wmdp-corpora; bio-forget is gated)",
                  example="wmdp-corpus:cyber-forget", repo=CORPORA_REPO)
def load_wmdp_corpus(arg: str, limit: int | None = None) -> list[Sample]:
    """A WMDP unlearning corpus as ``text`` documents, ids ``wmdp_<name>:<row>`` (chunk them for training)."""
    name = _corpus_name(arg)
    table = HubTable(CORPORA_REPO, f"{name}-corpus", "train", f"wmdp-corpus:{name}")
    rows = hub_rows(table, limit)
    return records_to_samples(rows, table.describe(), id_prefix=f"wmdp_{name.replace('-', '_')}", text_key="text")


# --- MUSE ---------------------------------------------------------------------------------------------------


def muse_table(corpus: str, config: str, split: str, label: str) -> HubTable:
    """The hub table of one MUSE split (``corpus`` news | books)."""
    _choose(corpus, tuple(MUSE_REPOS), "MUSE corpus", "muse:books:forget")
    _choose(config, MUSE_CONFIGS, "MUSE config", "muse:news:knowmem/forget_qa")
    return HubTable(MUSE_REPOS[corpus], config, split, label)


def _muse_keys(config: str) -> dict[str, str]:
    if config == "verbmem":
        return {"question_key": "prompt", "answer_key": "gt"}  # the continuation prompt and its true text
    if config == "knowmem":
        return {"question_key": "question", "answer_key": "answer"}
    return {"text_key": "text"}


@SOURCES.register("muse", summary="MUSE from the hub: muse:news|books:<config>/<split>; configs raw, knowmem, "
                                  "verbmem, privleak (books = Harry Potter, the WHP benchmark)",
                  example="muse:books:forget", repo=", ".join(MUSE_REPOS.values()))
def load_muse(arg: str, limit: int | None = None) -> list[Sample]:
    """One MUSE split; ``<split>`` alone is a raw split. Ids ``muse_<corpus>_<config>_<split>:<row>``."""
    corpus, sep, rest = arg.partition(":")
    if not sep or not rest:
        raise MrdkitError(f"MUSE source 'muse:{arg}' needs a corpus and a split, e.g. muse:books:forget or "
                          f"muse:news:knowmem/forget_qa (raw splits: {', '.join(MUSE_RAW_SPLITS)})")
    config, _, split = rest.rpartition("/")
    config = config or "raw"
    table = muse_table(corpus, config, split, f"muse:{arg}")
    rows = hub_rows(table, limit, MUSE_SPLIT_ALIASES.get(split, ()))
    return records_to_samples(rows, table.describe(), id_prefix=f"muse_{corpus}_{config}_{split}",
                              **_muse_keys(config))


# files of the local MUSE-News folder (shared/data/muse-news) -> (hub config, hub split) of the same rows
MUSE_EVAL_FILES = {"verbmem/forget.json": ("verbmem", "forget"),
                   "knowmem/forget_qa.json": ("knowmem", "forget_qa"),
                   "knowmem/forget_qa_icl.json": ("knowmem", "forget_qa_icl"),
                   "knowmem/retain2_qa.json": ("knowmem", "retain_qa"),
                   "knowmem/retain2_qa_icl.json": ("knowmem", "retain_qa_icl"),
                   "privleak/forget.json": ("privleak", "forget"),
                   "privleak/holdout.json": ("privleak", "holdout")}


def _local_record(config: str, row: dict[str, Any]) -> Any:
    """A hub row in the local file's shape: privleak windows are bare strings, QA / verbmem keep their fields."""
    if config == "privleak":
        return row["text"]
    keys = ("prompt", "gt") if config == "verbmem" else ("question", "answer")
    missing = [k for k in keys if k not in row]
    if missing:
        raise MrdkitError(f"MUSE {config} row lacks field(s) {missing} (has: {', '.join(row)})")
    return {k: row[k] for k in keys}


def muse_folder(corpus: str, root: str | Path | None = None) -> Path:
    """The hub's MUSE evaluation splits written out in the local MUSE-News folder layout (``verbmem/forget.json``,
    ``knowmem/*_qa*.json``, ``privleak/{forget,holdout}.json``), so the local evaluation reads them unchanged.

    Args:
        corpus: ``news`` or ``books``.
        root: where to write (default ``<mrdkit cache>/muse-hub/<corpus>``); rewritten on every call (atomic files).
    """
    from mrdkit.runs import atomic_write_json

    if root is None:
        from mrdkit.paths import cache_dir

        root = cache_dir() / "muse-hub" / corpus
    folder = Path(root)
    for name, (config, split) in MUSE_EVAL_FILES.items():
        table = muse_table(corpus, config, split, f"muse:{corpus}:{config}/{split}")
        rows = hub_rows(table, aliases=MUSE_SPLIT_ALIASES.get(split, ()))
        atomic_write_json(folder / name, [_local_record(config, r) for r in rows])
    return folder


# --- SAFE (PKU-SafeRLHF) ------------------------------------------------------------------------------------


def _safe_samples(rows: list[dict[str, Any]], role: str, source: str) -> list[Sample]:
    """Unsafe (forget) or safe (retain) responses as QA samples ``safe:<row>:<response>``."""
    want_safe = role == "retain"
    out = []
    for i, row in enumerate(rows):
        for j in (0, 1):
            flag = row.get(f"is_response_{j}_safe")
            if not isinstance(flag, bool) or not isinstance(row.get(f"response_{j}"), str):
                raise MrdkitError(f"{source}: row {i} lacks a boolean 'is_response_{j}_safe' or a 'response_{j}' "
                                  f"string (PKU-SafeRLHF layout expected)")
            if flag != want_safe:
                continue
            other = 1 - j
            extra = {k: v for k, v in row.items() if not k.startswith(("response_", "is_response_")) and k != "prompt"}
            extra.update({"row": i, "response": j, "harm_category": row.get(f"response_{j}_harm_category"),
                          "severity_level": row.get(f"response_{j}_severity_level")})
            if not want_safe and row.get(f"is_response_{other}_safe") is True:
                extra["safe_response"] = row[f"response_{other}"]  # the IDK-style target for this very prompt
            out.append(Sample(id=f"safe:{i}:{j}", prompt=row["prompt"], answer=row[f"response_{j}"], extra=extra))
    if not out:
        raise MrdkitError(f"{source}: no {'safe' if want_safe else 'unsafe'} responses in these rows")
    check_unique_ids(out, source)
    return out


@SOURCES.register("safe", summary="SAFE (PKU-SafeRLHF): safe:forget = unsafe responses, safe:retain = safe "
                                  "ones (retain / IDK targets); optional :<config>/<split> (default default/train)",
                  example="safe:forget", repo=SAFE_REPO)
def load_safe(arg: str, limit: int | None = None) -> list[Sample]:
    """PKU-SafeRLHF responses by safety label; ``limit`` counts dataset rows (two responses each)."""
    role, _, where = arg.partition(":")
    _choose(role, SAFE_ROLES, "SAFE role", "safe:forget")
    config, _, split = (where or "train").rpartition("/")
    table = HubTable(SAFE_REPO, config or "default", split or "train", f"safe:{arg}")
    return _safe_samples(hub_rows(table, limit), role, table.describe())


# --- entry point --------------------------------------------------------------------------------------------


def named_source(source: str, split: str | None = None) -> str | None:
    """The full spec (``name:arg``) when ``source`` names a registered source; ``split`` is appended
    (``("muse:news", "forget")`` -> ``"muse:news:forget"``). None for anything else (files, TOFU, hub ids)."""
    head, sep, _ = source.partition(":")
    if head not in SOURCES or Path(source).exists():
        return None
    if split:
        return f"{source}:{split}"
    if not sep:
        entry = SOURCES.entry(head)
        raise MrdkitError(f"data source {head!r} needs an argument, e.g. {entry.meta['example']} "
                          f"({entry.meta['summary']})")
    return source


def load_named(spec: str, limit: int | None = None) -> list[Sample]:
    """Samples of a named source spec such as ``wmdp:bio`` (see the module docstring)."""
    head, _, arg = spec.partition(":")
    return SOURCES.get(head)(arg, limit)

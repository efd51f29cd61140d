"""The one record type every loader returns and every later stage consumes: :class:`Sample`.

A sample is a prompt/answer pair with a stable id. Raw text is a sample with an empty prompt (``kind="text"``);
a multiple-choice question keeps its options in ``extra["choices"]`` and the correct one in ``answer``.
Ids are the join key of every per-sample table mrdkit writes, so they must be unique within a set
(:func:`check_unique_ids`).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from mrdkit.errors import MrdkitError

KINDS = ("qa", "text", "mcq")


@dataclass(frozen=True)
class Sample:
    """One prompt/answer pair with a stable id.

    Attributes:
        id: stable key, e.g. ``"tofu:3600"`` (TOFU rows of ``full.json``) or ``"<source>:<row>"``.
        prompt: the question; ``""`` for raw text.
        answer: the answer (for ``mcq``, the text of the correct choice), or the raw text.
        kind: ``"qa"``, ``"text"`` or ``"mcq"``.
        extra: free-form fields, e.g. ``author_id``, ``paraphrased_answer``, ``perturbed_answer`` (list),
            ``choices`` (list) and ``answer_index`` (mcq). Excluded from equality and hashing, so samples stay
            hashable although ``extra`` is a dict; it is copied on construction so the caller's dict can change
            without changing the sample.
    """

    id: str
    prompt: str
    answer: str
    kind: str = "qa"
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        for name in ("id", "prompt", "answer"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise MrdkitError(f"Sample.{name} must be a str, got {type(value).__name__} ({value!r:.60})")
        if self.kind not in KINDS:
            raise MrdkitError(f"Sample {self.id!r}: unknown kind {self.kind!r} (known: {', '.join(KINDS)})")
        # frozen dataclass: bypass __setattr__ to store our own copy of extra
        object.__setattr__(self, "extra", dict(self.extra))

    @property
    def text(self) -> str:
        """The raw text ``prompt + answer`` (no template, no separator)."""
        return self.prompt + self.answer

    def replace(self, **changes: Any) -> Sample:
        """A copy with some fields changed, e.g. ``s.replace(answer=s.extra["paraphrased_answer"])``."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``extra`` values must themselves be JSON-ready)."""
        return {"id": self.id, "prompt": self.prompt, "answer": self.answer, "kind": self.kind,
                "extra": dict(self.extra)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Sample:
        """Inverse of :meth:`to_dict`."""
        return cls(id=data["id"], prompt=data["prompt"], answer=data["answer"], kind=data.get("kind", "qa"),
                   extra=data.get("extra", {}))


def check_unique_ids(samples: Iterable[Sample], source: str) -> None:
    """Raise :class:`MrdkitError` naming the first repeated id (with both positions) in ``samples``."""
    seen: dict[str, int] = {}
    for pos, sample in enumerate(samples):
        first = seen.setdefault(sample.id, pos)
        if first != pos:
            raise MrdkitError(f"duplicate id {sample.id!r} in {source} (samples {first} and {pos}); "
                              f"ids must be unique: pass --id-key (id_key= in Python) with a unique column, or "
                              f"drop the id column")


def quality_problems(samples: Sequence[Sample]) -> dict[str, list[str]]:
    """Ids of samples that load fine but are probably a mistake: ``empty`` (an empty or blank answer, or raw text)
    and ``duplicate`` (same prompt and answer as an earlier sample, under another id), written as ``"id = first"``."""
    first: dict[tuple[str, str], str] = {}
    empty, duplicate = [], []
    for sample in samples:
        if not sample.answer.strip():
            empty.append(sample.id)
        key = (sample.prompt, sample.answer)
        if key in first:
            duplicate.append(f"{sample.id} = {first[key]}")
        first.setdefault(key, sample.id)
    return {"empty": empty, "duplicate": duplicate}


def warn_data_quality(samples: Sequence[Sample], source: str) -> dict[str, list[str]]:
    """Warn (one line each, with the count and an example) about empty answers and duplicate rows: both load, score
    and unlearn without error, yet an empty answer leaves only the prompt to measure and a duplicate counts twice
    in every mean and is drawn twice as often by a sampler. Returns :func:`quality_problems`."""
    import warnings

    problems = quality_problems(samples)
    what = {"empty": "have an empty answer (or text)",
            "duplicate": "repeat an earlier sample's prompt and answer under another id"}
    for kind, ids in problems.items():
        if ids:
            warnings.warn(f"{source}: {len(ids)} of {len(samples)} samples {what[kind]}, e.g. {ids[0]!r}",
                          UserWarning, stacklevel=3)
    return problems


# --- records (dicts or strings read from a file) -> samples -------------------------------------------------

QUESTION_KEYS = ("question", "prompt", "input")
ANSWER_KEYS = ("answer", "response", "output", "gt")
TEXT_KEYS = ("text", "content", "document")
CHOICES_KEYS = ("choices",)


@dataclass(frozen=True)
class Fields:
    """Which record fields make a sample: decided once from the first record, then required of every row."""

    kind: str
    question: str | None = None
    answer: str | None = None
    text: str | None = None
    choices: str | None = None  # a list-valued field (WMDP/MMLU)
    options: tuple[str, ...] = ()  # option1..optionN fields (TOFU real_authors/world_facts)
    id: str | None = None

    def used(self) -> set[str]:
        """Fields consumed by the sample itself; every other field goes to ``extra``."""
        return {k for k in (self.question, self.answer, self.text, self.choices, self.id) if k} | set(self.options)


def _first(candidates: Iterable[str], keys: list[str]) -> str | None:
    return next((k for k in candidates if k in keys), None)


_MISSING = object()


def lookup(record: Mapping[str, Any], key: str) -> Any:
    """``record[key]``, or for a dotted key of a nested record (``qa.q`` in ``{"qa": {"q": ...}}``) the value at
    that path; a top-level key holding the dot wins. Missing: a sentinel (None may be a stored value)."""
    if key in record:
        return record[key]
    value: Any = record
    for part in key.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


def field_names(record: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Every field of a record, nested ones as dotted paths (what an error lists as "available")."""
    names = []
    for key, value in record.items():
        name = f"{prefix}{key}"
        names.extend(field_names(value, name + ".") if isinstance(value, Mapping) and value else [name])
    return names


def _require(key: str, record: Mapping[str, Any], source: str, row: int = 0) -> str:
    if lookup(record, key) is _MISSING:
        raise MrdkitError(f"{source}: missing field {key!r} in row {row}; available fields: "
                          f"{', '.join(field_names(record))}")
    return key


def _option_keys(keys: list[str]) -> tuple[str, ...]:
    """``option1, option2, ...`` in numeric order, stopping at the first gap."""
    out, n = [], 1
    while f"option{n}" in keys:
        out.append(f"option{n}")
        n += 1
    return tuple(out)


def detect_fields(record: Any, source: str, *, question_key: str | None = None, answer_key: str | None = None,
                  text_key: str | None = None, choices_key: str | None = None,
                  id_key: str | None = None) -> Fields:
    """Decide how a record becomes a sample; explicit keys win over auto-detection.

    Auto-detection: question/prompt/input + answer/response/output/gt -> ``qa``; plus a ``choices`` list or
    ``option1..N`` fields -> ``mcq``; text/content/document -> ``text``; a bare string -> ``text``.
    """
    if isinstance(record, str):
        return Fields(kind="text")
    if not isinstance(record, Mapping):
        raise MrdkitError(f"{source}: row 0 is a {type(record).__name__}, expected a JSON object or a string")
    keys = [str(k) for k in record]
    ident = _require(id_key, record, source) if id_key else None
    if text_key:
        return Fields(kind="text", text=_require(text_key, record, source), id=ident)
    q = _require(question_key, record, source) if question_key else _first(QUESTION_KEYS, keys)
    a = _require(answer_key, record, source) if answer_key else _first(ANSWER_KEYS, keys)
    choices = _require(choices_key, record, source) if choices_key else _first(CHOICES_KEYS, keys)
    options = () if choices else _option_keys(keys)
    if q and a and (choices or options):
        return Fields(kind="mcq", question=q, answer=a, choices=choices, options=options, id=ident)
    if q and a:
        return Fields(kind="qa", question=q, answer=a, id=ident)
    text = _first(TEXT_KEYS, keys)
    if text and not (question_key or answer_key):
        return Fields(kind="text", text=text, id=ident)
    raise MrdkitError(f"{source}: cannot tell which fields hold the data (available fields: "
                      f"{', '.join(field_names(record))}); expected question/prompt/input + answer/response/output/gt, "
                      f"or text/content/document; pass --question-key and --answer-key, or --text-key (dotted for "
                      f"nested fields: qa.q; --field KEY when the records are a list inside the file's object; "
                      f"question_key= ... in Python)")


def _get(record: Mapping[str, Any], key: str, source: str, row: int, want: tuple[type, ...] = (str,)) -> Any:
    value = lookup(record, key)
    if value is _MISSING:
        _require(key, record, source, row)
    if not isinstance(value, want) or isinstance(value, bool):
        names = " or ".join(t.__name__ for t in want)
        raise MrdkitError(f"{source}: field {key!r} in row {row} is {type(value).__name__} ({value!r:.40}), "
                          f"expected {names}")
    return value


def _mcq_choice(record: Mapping[str, Any], fields: Fields, source: str, row: int) -> tuple[list[str], int]:
    """The choices list and the index of the correct one (answer given as an index or as the choice text)."""
    if fields.choices:
        choices = _get(record, fields.choices, source, row, (list,))
    else:
        choices = [_get(record, k, source, row) for k in fields.options]
    if not all(isinstance(c, str) for c in choices):
        raise MrdkitError(f"{source}: field {fields.choices!r} in row {row} must be a list of strings")
    answer = lookup(record, fields.answer)
    if answer is _MISSING:
        _require(fields.answer, record, source, row)
    if isinstance(answer, str) and re.fullmatch(r"\s*-?[0-9]+\s*", answer) and answer not in choices:
        answer = int(answer)  # CSV cells are strings (ASCII digits only: int() rejects "²" and "--1")
    if isinstance(answer, int) and not isinstance(answer, bool):
        if not 0 <= answer < len(choices):
            raise MrdkitError(f"{source}: answer index {answer} in row {row} is out of range for "
                              f"{len(choices)} choices")
        return choices, answer
    if isinstance(answer, str) and answer in choices:
        return choices, choices.index(answer)
    raise MrdkitError(f"{source}: field {fields.answer!r} in row {row} ({answer!r:.40}) is neither a choice "
                      f"index nor one of the choices")


def record_to_sample(record: Any, row: int, fields: Fields, source: str, sample_id: str) -> Sample:
    """Build one sample from one record; ``sample_id`` is used unless ``fields.id`` names an id field."""
    if fields.kind == "text" and fields.text is None:
        if not isinstance(record, str):
            raise MrdkitError(f"{source}: row {row} is a {type(record).__name__}, expected a string")
        return Sample(id=sample_id, prompt="", answer=record, kind="text")
    if not isinstance(record, Mapping):
        raise MrdkitError(f"{source}: row {row} is a {type(record).__name__}, expected a JSON object")
    if fields.id:
        sample_id = str(_get(record, fields.id, source, row, (str, int)))
    extra = {k: v for k, v in record.items() if k not in fields.used()}
    if fields.kind == "text":
        return Sample(id=sample_id, prompt="", answer=_get(record, fields.text, source, row), kind="text",
                      extra=extra)
    prompt = _get(record, fields.question, source, row)
    if fields.kind == "qa":
        return Sample(id=sample_id, prompt=prompt, answer=_get(record, fields.answer, source, row), extra=extra)
    choices, index = _mcq_choice(record, fields, source, row)
    extra.update(choices=choices, answer_index=index)
    return Sample(id=sample_id, prompt=prompt, answer=choices[index], kind="mcq", extra=extra)


def records_to_samples(records: list[Any], source: str, *, id_prefix: str, row_offset: int = 0,
                       **keys: str | None) -> list[Sample]:
    """Samples from records; ids ``f"{id_prefix}:{row_offset + row}"`` unless an id field is used.

    Args:
        records: dicts (or strings for raw text), e.g. the rows of a JSON-lines file.
        source: file or dataset name used in error messages.
        id_prefix: prefix of row-based ids.
        row_offset: row number of ``records[0]`` in its id space (TOFU splits are slices of ``full``).
        **keys: ``question_key``, ``answer_key``, ``text_key``, ``choices_key``, ``id_key`` for
            :func:`detect_fields`.
    """
    if not records:
        raise MrdkitError(f"{source}: no records (empty file or split)")
    fields = detect_fields(records[0], source, **keys)
    samples = [record_to_sample(r, i, fields, source, f"{id_prefix}:{row_offset + i}")
               for i, r in enumerate(records)]
    check_unique_ids(samples, source)
    return samples

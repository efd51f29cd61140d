"""Property-based fuzzing (hypothesis) of the data loaders and the config parser: whatever the input, they
either succeed or raise :class:`MrdkitError` (a one-line user error), never another exception."""

from __future__ import annotations

import csv
import io
import json
import string

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mrdkit.config import apply_overrides
from mrdkit.data import Sample, load_samples
from mrdkit.errors import MrdkitError
from mrdkit.scoring.config import MRDConfig
from mrdkit.unlearning.config import UnlearnConfig

FUZZ = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
MANY = settings(FUZZ, max_examples=300)  # the config parser is cheap: more examples
FIELDS = ["question", "answer", "prompt", "response", "text", "id", "choices", "option1", "option2", "gt", "x"]

scalars = st.none() | st.booleans() | st.integers(-10**20, 10**20) | st.floats(allow_nan=True) | st.text(max_size=12)
json_values = st.recursive(scalars, lambda kids: st.lists(kids, max_size=3) |
                           st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=6), kids, max_size=4),
                           max_leaves=12)
records = st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=5)
rows = st.lists(records | json_values, max_size=5)


def _loads_or_user_error(path, **kw) -> None:
    try:
        samples = load_samples(path, **kw)
    except MrdkitError as exc:
        assert str(exc)  # the CLI prints it on one line (newlines in a field name are folded)
        return
    assert samples and all(isinstance(s, Sample) for s in samples)
    assert len({s.id for s in samples}) == len(samples)


@FUZZ
@given(data=rows, as_array=st.booleans())
def test_json_and_jsonl_records(tmp_path_factory, data, as_array):
    path = tmp_path_factory.mktemp("fuzz") / ("d.json" if as_array else "d.jsonl")
    text = json.dumps(data) if as_array else "".join(json.dumps(r) + "\n" for r in data)
    path.write_text(text)
    _loads_or_user_error(path)


@FUZZ
@given(raw=st.binary(max_size=200) | st.text(max_size=200).map(str.encode), suffix=st.sampled_from(
    ["json", "jsonl", "csv", "txt"]))
def test_arbitrary_bytes(tmp_path_factory, raw, suffix):
    path = tmp_path_factory.mktemp("fuzz") / f"d.{suffix}"
    path.write_bytes(raw)
    _loads_or_user_error(path)


cells = st.text(alphabet=string.printable + "é²\u00a0-", max_size=8)


MCQ_HEADER = ["question", "answer", "option1", "option2"]  # answer = a choice's text or its index


@FUZZ
@given(header=st.just(MCQ_HEADER) | st.lists(st.sampled_from(FIELDS) | cells, min_size=1, max_size=5),
       body=st.lists(st.lists(cells, max_size=6), max_size=4),
       keys=st.sampled_from([{}, {"question_key": "question", "answer_key": "answer"}, {"text_key": "text"},
                             {"choices_key": "choices", "question_key": "question", "answer_key": "answer"}]))
@example(header=MCQ_HEADER, body=[["q", "\u00b2", "a", "b"]], keys={})  # int("²") raises although "²".isdigit()
@example(header=MCQ_HEADER, body=[["q", "--1", "a", "b"]], keys={})
def test_csv_tables(tmp_path_factory, header, body, keys):
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(body)
    path = tmp_path_factory.mktemp("fuzz") / "d.csv"
    path.write_text(buf.getvalue())
    _loads_or_user_error(path, **keys)


MRD_KEYS = sorted(MRDConfig.__dataclass_fields__)
UNLEARN_KEYS = sorted(UnlearnConfig.__dataclass_fields__) + ["lora.r", "lora.alpha", "lora.target_modules",
                                                             "lora.nope", "method_kwargs.beta"]
values = st.sampled_from(["", "0", "-1", "1.5", "1e-5", "nan", "inf", "true", "no", "null", "~", "[1, 2]",
                          "{a: 1}", "{1: 2}", "0x_", "0b_", "1:2:3", "2001-01-01", "!!binary aGk=", "'x",
                          "[", "a,b", "*x", "&a 1", "? x", "- x", "|", "%YAML"]) | st.text(max_size=10)


def _parsed_or_user_error(config, overrides, check) -> None:
    try:
        check(apply_overrides(config, overrides))
    except MrdkitError as exc:
        assert str(exc)


@MANY
@given(key=st.sampled_from(MRD_KEYS) | st.text(max_size=8), value=values, sep=st.sampled_from(["=", " = ", ":"]))
def test_mrd_overrides(key, value, sep):
    _parsed_or_user_error(MRDConfig(), [f"{key}{sep}{value}"], lambda c: c.validate())


@MANY
@given(items=st.lists(st.tuples(st.sampled_from(UNLEARN_KEYS) | st.text(max_size=8), values), max_size=3),
       with_lora=st.booleans())
def test_unlearn_overrides(items, with_lora):
    from mrdkit.unlearning.config import LoraSettings

    base = UnlearnConfig(lora=LoraSettings() if with_lora else None)
    _parsed_or_user_error(base, [f"{k}={v}" for k, v in items], lambda c: c.check())


@MANY
@given(text=st.text(max_size=40))
def test_raw_override_strings(text):
    _parsed_or_user_error(UnlearnConfig(), [text], lambda c: c.check())

"""Run directories: atomic writes, resume refusal on config change, safe names."""

import json

import pytest

from mrdkit.errors import MrdkitError
from mrdkit.runs import RunDir, atomic_path, atomic_write_json, read_json, read_jsonl, safe_join


def test_atomic_write_leaves_old_file_on_error(tmp_path):
    target = tmp_path / "out.json"
    atomic_write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_nan_written_as_null(tmp_path):
    atomic_write_json(tmp_path / "x.json", {"v": float("nan"), "w": [1.0, float("inf")]})
    assert read_json(tmp_path / "x.json") == {"v": None, "w": [1.0, None]}


def test_read_jsonl_reports_line(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}\n\n{"a": \n')
    with pytest.raises(MrdkitError, match=r"malformed JSON on line 3"):
        read_jsonl(path)


def test_rundir_resume_refuses_other_config(tmp_path):
    run = RunDir(tmp_path / "r", {"sigma": 1e-5, "draws": 4})
    assert (run.path / "config.json").exists() and (run.path / "provenance.json").exists()
    RunDir(tmp_path / "r", {"sigma": 1e-5, "draws": 4}, resume=True)
    with pytest.raises(MrdkitError, match="differs in: draws"):
        RunDir(tmp_path / "r", {"sigma": 1e-5, "draws": 8}, resume=True)


def test_rundir_finished_needs_overwrite(tmp_path):
    run = RunDir(tmp_path / "r", {"a": 1})
    run.write_jsonl("rows.jsonl", [{"id": "x"}])
    run.mark_finished()
    with pytest.raises(MrdkitError, match="already holds a finished run"):
        RunDir(tmp_path / "r", {"a": 1})
    RunDir(tmp_path / "r", {"a": 1}, overwrite=True)
    assert read_jsonl(tmp_path / "r" / "rows.jsonl") == [{"id": "x"}]  # earlier results are not destroyed


def test_safe_join(tmp_path):
    assert safe_join(tmp_path, "a/b") == (tmp_path / "a" / "b").resolve()
    for bad in ("../x", "/etc/passwd", "a/../../x"):
        with pytest.raises(MrdkitError, match="escapes"):
            safe_join(tmp_path, bad)


def test_output_dir_that_cannot_be_created(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(MrdkitError, match="cannot create output directory"):
        RunDir(blocker / "r", {})

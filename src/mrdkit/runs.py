"""Run directories: the output contract of every command.

A run directory holds ``config.json`` (resolved config), ``provenance.json`` (versions, device, git SHA, time),
per-sample JSONL, aggregate JSON and plots. Every write is atomic (temp file in the same folder + ``os.replace``)
so a killed job never leaves a half-written file; ``--resume`` refuses a directory made with another config.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from mrdkit.errors import MrdkitError


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"cannot serialise {type(obj).__name__}")


def _clean(obj: Any) -> Any:
    """Replace NaN/Inf floats by None so the JSON is standard (json.dumps would write NaN)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Mapping):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def dumps(obj: Any, indent: int | None = 2) -> str:
    """JSON text with numpy/torch values converted and non-finite floats written as null."""
    return json.dumps(_clean(json.loads(json.dumps(obj, default=_json_default, allow_nan=True))), indent=indent)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success it replaces ``path`` atomically, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write bytes atomically (fsync before rename so a crash cannot leave an empty file)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write UTF-8 text atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write a JSON document atomically."""
    atomic_write_text(path, dumps(obj) + "\n")


def atomic_write_jsonl(path: str | Path, rows: Iterable[Mapping[str, Any]]) -> None:
    """Write one JSON object per line atomically."""
    atomic_write_text(path, "".join(dumps(r, indent=None) + "\n" for r in rows))


def json_roundtrip(obj: Any) -> Any:
    """``obj`` after a JSON round trip (tuples become lists...), so it compares equal to what a file stores."""
    return json.loads(dumps(obj))


def differing_keys(stored: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    """Sorted top-level keys whose values differ between two configs (a key missing on one side differs):
    the "differs in: ..." part of every refusal to resume a run made with other settings."""
    return sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))


def read_json(path: str | Path) -> Any:
    """Read a JSON file with a one-line error naming the file."""
    path = Path(path)
    if not path.is_file():
        raise MrdkitError(f"{path} does not exist")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise MrdkitError(f"{path} line {exc.lineno}: invalid JSON ({exc.msg})") from None


def parse_jsonl(text: str, source: str) -> list[Any]:
    """Parse JSON-lines ``text``; a malformed line raises a one-line error naming ``source`` and its line number."""
    records = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise MrdkitError(f"{source}: malformed JSON on line {lineno}: {err.msg} (column {err.colno})") from None
        except RecursionError:
            raise MrdkitError(f"{source}: JSON on line {lineno} is nested too deeply") from None
    return records


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read a JSON-lines file (see :func:`parse_jsonl` for the error on a malformed line)."""
    path = Path(path)
    if not path.is_file():
        raise MrdkitError(f"{path} does not exist")
    return parse_jsonl(path.read_text(), str(path))


def git_sha() -> str | None:
    """The checkout's commit, if mrdkit runs from a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def provenance() -> dict[str, Any]:
    """Versions, device and time of this run (written as ``provenance.json``)."""
    from importlib import metadata

    versions = {}
    for pkg in ("mrdkit", "torch", "transformers", "tokenizers", "accelerate", "peft", "datasets", "numpy"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[pkg] = metadata.version(pkg)
    info: dict[str, Any] = {
        "time_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "argv": sys.argv,
        "versions": versions,
        "git_sha": git_sha(),
    }
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return info


def sweep_temp_files(root: str | Path) -> list[Path]:
    """Delete what atomic writers leave when killed mid-write under ``root``: temp files of :func:`atomic_path`
    (``.<name>.<random>.tmp``) and temp folders (``.tmp-*``: checkpoints, the final model); returns them.

    Call it when no writer is active (a run's end), never while another process may be writing into ``root``.
    """
    root = Path(root)
    removed = [p for p in root.rglob(".*.tmp") if p.is_file() and not p.is_symlink()]
    for path in removed:
        path.unlink(missing_ok=True)
    folders = [p for p in root.rglob(".tmp-*") if p.is_dir() and not p.is_symlink()]
    for path in folders:
        shutil.rmtree(path, ignore_errors=True)
    return removed + folders


def safe_join(root: str | Path, name: str) -> Path:
    """``root / name`` where ``name`` may not escape ``root`` (no absolute paths, no ``..``)."""
    root = Path(root).resolve()
    target = (root / name).resolve()
    if target != root and root not in target.parents:
        raise MrdkitError(f"run name {name!r} escapes the output root {root}")
    return target


class RunDir:
    """A run directory with atomic writers and a config check for ``--resume``.

    Args:
        path: directory to create/use.
        config: resolved config (JSON-ready dict) of this invocation.
        resume: continue an existing run; refused if its stored config differs.
        overwrite: allow reusing a directory that already holds a finished run.
    """

    CONFIG = "config.json"

    def __init__(self, path: str | Path, config: Mapping[str, Any], *, resume: bool = False, overwrite: bool = False):
        self.path = Path(path)
        self.config = json.loads(dumps(config))
        self._prepare(resume, overwrite)

    def _prepare(self, resume: bool, overwrite: bool) -> None:
        stored = self.path / self.CONFIG
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise MrdkitError(f"cannot create output directory {self.path}: {exc.strerror}") from None
        if not os.access(self.path, os.W_OK):
            raise MrdkitError(f"output directory {self.path} is not writable")
        if stored.exists() and resume:
            previous = read_json(stored)
            diff = differing_keys(previous, self.config)
            if diff:
                raise MrdkitError(
                    f"--resume refused: {self.path} was made with a different config (differs in: {', '.join(diff)})"
                )
        elif stored.exists() and not overwrite and self.is_finished():
            raise MrdkitError(f"{self.path} already holds a finished run; use --resume, --overwrite or another --out")
        if not resume:  # a new run: an earlier DONE.json must not vouch for outputs this run has not written yet
            (self.path / "DONE.json").unlink(missing_ok=True)
        atomic_write_json(stored, self.config)
        atomic_write_json(self.path / "provenance.json", provenance())

    def file(self, name: str) -> Path:
        """Path of a file inside the run directory."""
        return safe_join(self.path, name)

    def write_json(self, name: str, obj: Any) -> Path:
        path = self.file(name)
        atomic_write_json(path, obj)
        return path

    def write_jsonl(self, name: str, rows: Iterable[Mapping[str, Any]]) -> Path:
        path = self.file(name)
        atomic_write_jsonl(path, rows)
        return path

    def write_text(self, name: str, text: str) -> Path:
        path = self.file(name)
        atomic_write_text(path, text)
        return path

    def mark_finished(self, summary: Mapping[str, Any] | None = None) -> None:
        """Write ``DONE.json``: the run completed (its outputs are final); temp files a killed attempt left
        behind are removed (every writer has finished by now)."""
        self.write_json("DONE.json", dict(summary or {}))
        sweep_temp_files(self.path)

    def is_finished(self) -> bool:
        return (self.path / "DONE.json").exists()

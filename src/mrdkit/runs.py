"""Run directories: the output contract of every command.

A run directory holds ``config.json`` (resolved config), ``provenance.json`` (versions, device, git SHA, time),
per-sample JSONL, aggregate JSON and plots. Every write is atomic (temp file in the same folder + ``os.replace``)
so a killed job never leaves a half-written file; ``--resume`` refuses a directory made with another config.

Two guards keep a run from destroying anything (:meth:`RunDir._prepare`): a folder that holds files but is not an
mrdkit run (no ``provenance.json``: a model folder, a user's own results) is never written into, and one process
at a time writes a run folder (an OS file lock on ``<run>/.mrdkit.lock``, held until the run finishes or the
process ends, so a killed run never leaves a stale lock).
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


def _umask() -> int:
    """The process umask (read by setting it and putting it back: Python has no getter before 3.13's os API)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def as_ordinary_output(path: str | Path) -> None:
    """Give ``path`` the permissions of any file (or folder) the user creates: ``0o666`` (``0o777``) less the
    umask. Why: ``mkstemp`` / ``mkdtemp`` make private 0600 / 0700 entries, so outputs renamed into place from them
    would be unreadable by the user's group, unlike everything else they write."""
    path = Path(path)
    os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~_umask())


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success it replaces ``path`` atomically (with ordinary permissions,
    :func:`as_ordinary_output`), on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        if os.path.exists(tmp):
            as_ordinary_output(tmp)
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


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"config": {"lr": 1}}`` -> ``{"config.lr": 1}``, so a refusal names the nested field that differs."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(flatten(v, f"{prefix}{k}.") if isinstance(v, Mapping) else {f"{prefix}{k}": v})
    return out


def differing_keys(stored: Mapping[str, Any], wanted: Mapping[str, Any], *, nested: bool = False) -> list[str]:
    """Sorted keys whose values differ between two configs (a key missing on one side differs); ``nested``
    compares the flattened dotted keys (``config.lr``) instead of the top-level ones."""
    stored, wanted = json_roundtrip(stored), json_roundtrip(wanted)
    if nested:
        stored, wanted = flatten(stored), flatten(wanted)
    return sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))


def refuse_if_differs(stored: Mapping[str, Any], wanted: Mapping[str, Any], what: str, hint: str, *,
                      nested: bool = False) -> None:
    """The one refusal to continue work made with other settings: ``MrdkitError("<what> (differs in: a, b);
    <hint>")`` when the two configs differ, nothing when they agree."""
    diff = differing_keys(stored, wanted, nested=nested)
    if diff:
        raise MrdkitError(f"{what} (differs in: {', '.join(diff)}); {hint}")


def config_matches(path: str | Path, config: Mapping[str, Any]) -> bool:
    """Whether the JSON file ``path`` exists and holds exactly ``config`` (after a JSON round trip)."""
    path = Path(path)
    return path.is_file() and read_json(path) == json_roundtrip(config)


def digest(values: Iterable[Any]) -> str:
    """A short stable hash of a sequence of values (sample ids, scores): the identity of a data set in a run's
    config, so that ``--resume`` refuses another set with the same size."""
    import hashlib

    return hashlib.blake2b("\n".join(map(repr, values)).encode(), digest_size=8).hexdigest()


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


def replace_dir(src: str | Path, dst: str | Path) -> None:
    """Move the finished folder ``src`` to ``dst``, replacing an old ``dst`` only once the new one is complete
    (rename away, rename in, delete the old): a crash leaves the old or the new folder, never half of one."""
    src, dst = Path(src), Path(dst)
    old = dst.with_name(f".old-{dst.name}-{os.getpid()}")
    if dst.exists():
        os.rename(dst, old)
    os.rename(src, dst)
    shutil.rmtree(old, ignore_errors=True)


def safe_join(root: str | Path, name: str) -> Path:
    """``root / name`` where ``name`` may not escape ``root`` (no absolute paths, no ``..``)."""
    root = Path(root).resolve()
    target = (root / name).resolve()
    if target != root and root not in target.parents:
        raise MrdkitError(f"run name {name!r} escapes the output root {root}")
    return target


RUN_STATES = ("absent", "finished", "unfinished", "other")
LOCK_FILE = ".mrdkit.lock"
PROVENANCE = "provenance.json"
_HELD_LOCKS: dict[Path, Any] = {}  # run folders this process holds the lock of (resolved path -> FileLock)


def is_run_dir(path: str | Path) -> bool:
    """Whether ``path`` is an mrdkit run folder: every run writes ``provenance.json`` before anything else."""
    return (Path(path) / PROVENANCE).is_file()


def _own_leftover(entry: Path) -> bool:
    """Entries mrdkit itself may leave in a folder before it is a run: its lock file, atomic-write temp files."""
    return entry.name == LOCK_FILE or (entry.name.startswith(".") and entry.name.endswith(".tmp"))


def check_output_dir(path: str | Path) -> None:
    """Refuse to write into ``path`` when it holds anything that is not an mrdkit run: a model folder (``mrd score
    --out MODEL`` would replace its ``config.json``), a user's own ``summary.json`` / ``mrd.jsonl``. A missing or
    empty folder, or an mrdkit run (reuse / resume / refuse is then :class:`RunDir`'s decision), passes.

    Called by every command before its model loads, and again by :class:`RunDir` (the one place that writes)."""
    path = Path(path)
    if not path.is_dir() or is_run_dir(path):
        return
    foreign = sorted(e.name for e in path.iterdir() if not _own_leftover(e))
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise MrdkitError(f"{path} is not an mrdkit run folder and is not empty (it holds {shown}); mrdkit writes "
                          f"only into a new or empty folder or its own runs: choose another --out")


def _launcher_rank() -> int:
    """This process's rank under torchrun / accelerate launch (0 when not launched), read from the environment."""
    return int(os.environ.get("RANK", "0") or 0)


def lock_run_dir(path: str | Path) -> None:
    """Hold ``<path>/.mrdkit.lock`` (an OS lock through ``filelock``) so a second process cannot write the same run
    at the same time; refused with a one-line error when another process holds it.

    The lock lives until :func:`release_run_dir` (a run's end) or this process exits (the OS drops it then, so a
    killed run never leaves a stale lock). Re-opening a run this process already holds is allowed (a resumed call
    in the same process). Under a multi-process launcher only rank 0 takes it: the ranks of one job share the run.
    """
    from filelock import FileLock, Timeout

    key = Path(path).resolve()
    if key in _HELD_LOCKS or _launcher_rank() != 0:
        return
    lock = FileLock(str(key / LOCK_FILE), timeout=0, thread_local=False)
    try:
        lock.acquire()
    except Timeout:
        raise MrdkitError(f"{path} is in use by another mrdkit process (it holds {key / LOCK_FILE}); wait for it to "
                          f"finish or choose another --out") from None
    _HELD_LOCKS[key] = lock


def release_run_dir(path: str | Path) -> None:
    """Release the lock :func:`lock_run_dir` took on ``path`` (nothing when this process does not hold it)."""
    lock = _HELD_LOCKS.pop(Path(path).resolve(), None)
    if lock is not None:
        lock.release(force=True)


def run_state(path: str | Path, config: Mapping[str, Any]) -> str:
    """Where a run directory stands for ``config``: ``absent`` (no run there), ``finished`` (``DONE.json`` and
    the same config: its outputs can be reused), ``unfinished`` (same config, not done: it can be resumed) or
    ``other`` (made with another config). Every "reuse, resume or refuse" decision of mrdkit starts here."""
    path = Path(path)
    if not (path / RunDir.CONFIG).is_file():
        return "absent"
    if not config_matches(path / RunDir.CONFIG, config):
        return "other"
    return "finished" if (path / "DONE.json").is_file() else "unfinished"


class RunDir:
    """A run directory with atomic writers and the run contract: reuse, resume or refuse.

    The contract (:func:`run_state`): a new run may not replace a finished one unless ``overwrite``;
    ``resume`` continues an unfinished (or finished) run made with the same config and refuses one made with
    another, naming the keys that differ. :meth:`open` adds the automatic choice callers without a user in the
    loop want (reuse a finished run, resume an unfinished one, start afresh over another config).

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
        check_output_dir(self.path)  # before anything is created or written: not even --overwrite replaces a model
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise MrdkitError(f"cannot create output directory {self.path}: {exc.strerror}") from None
        if not os.access(self.path, os.W_OK):
            raise MrdkitError(f"output directory {self.path} is not writable")
        lock_run_dir(self.path)
        if stored.exists() and resume:
            refuse_if_differs(read_json(stored), self.config, f"--resume refused: {self.path} was made with a "
                              f"different config", "resume with the same settings, or use --overwrite")
        elif stored.exists() and not overwrite and self.is_finished():
            raise MrdkitError(f"{self.path} already holds a finished run; use --resume, --overwrite or another --out")
        if not resume:  # a new run: an earlier DONE.json must not vouch for outputs this run has not written yet
            (self.path / "DONE.json").unlink(missing_ok=True)
        atomic_write_json(self.path / PROVENANCE, provenance())  # first: it marks the folder as an mrdkit run
        atomic_write_json(stored, self.config)

    @classmethod
    def open(cls, path: str | Path, config: Mapping[str, Any], *, other: str = "refuse") -> tuple[RunDir, str]:
        """Open ``path`` for ``config`` without asking: ``(run, state)`` where a ``finished`` run is left as it is
        (reuse its outputs), an ``unfinished`` one is resumed, an ``absent`` one started, and one made with
        another config (``other``) refused naming what differs (``other="refuse"``, for work that may hold hours
        of results) or started afresh (``other="restart"``, for cheap inner runs whose settings follow their
        caller's)."""
        state = run_state(path, config)
        if state == "finished":
            return cls.__new__(cls)._attach(path, config), state
        if state == "other" and other != "restart":
            return cls(path, config, resume=True), state  # refuses, naming the keys that differ
        return cls(path, config, resume=state == "unfinished", overwrite=True), state

    def _attach(self, path: str | Path, config: Mapping[str, Any]) -> RunDir:
        self.path, self.config = Path(path), json_roundtrip(config)
        return self

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
        release_run_dir(self.path)

    def is_finished(self) -> bool:
        return (self.path / "DONE.json").exists()

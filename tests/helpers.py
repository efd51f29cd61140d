"""Helpers shared by the CLI tests: run ``mrd`` in a subprocess or in this process, check one-line user errors.

``tests/`` is on ``sys.path`` (pytest puts the rootdir conftest's folder there), so test modules import this as
``from helpers import ...``.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import warnings
from dataclasses import dataclass

CLI_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "MRDKIT_PROGRESS": "0"}
SMALL_MODEL = "tiny:d32-l1-h2-v300"  # a 1-layer GPT-2 whose tokenizer is fitted on the command's data


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of a CLI subprocess: offline, no progress bars."""
    return {**os.environ, **CLI_ENV, **extra}


def run_cli(*args: str, cwd=None, timeout: float = 300) -> subprocess.CompletedProcess:
    """``mrd ARGS`` as a real subprocess (``python -m mrdkit``)."""
    return subprocess.run([sys.executable, "-m", "mrdkit", *map(str, args)], capture_output=True, text=True,
                          env=cli_env(), cwd=cwd, timeout=timeout)


@dataclass
class CliResult:
    """What a CLI run gives back (the fields of ``subprocess.CompletedProcess`` the tests read)."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def warnings(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("warning:")]


def run_cli_inprocess(*args: str) -> CliResult:
    """``mrd ARGS`` through the same entry point (:func:`mrdkit.cli.main`) in this process: no 5-10 s interpreter
    start. Warnings are printed as the CLI prints them (``warning: ...`` on stderr), every time."""
    from mrdkit.cli.app import main

    out, err = io.StringIO(), io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        warnings.simplefilter("always")
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    return CliResult(code, out.getvalue(), err.getvalue())


def assert_user_error(proc, *fragments: str) -> str:
    """Exit code 2, no traceback, exactly one ``error:`` line on stderr holding every fragment; returns it."""
    assert proc.returncode == 2, f"exit {proc.returncode}\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, proc.stderr[-3000:]
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]


def assert_ok(proc) -> None:
    """Exit code 0 and no traceback."""
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]

"""Where mrdkit finds the project's offline data and keeps its caches."""

from __future__ import annotations

import os
from pathlib import Path

from mrdkit.errors import MrdkitError


def _candidates() -> list[Path]:
    here = Path(__file__).resolve()
    starts = [Path.cwd().resolve(), here]
    out: list[Path] = []
    for start in starts:
        for parent in [start, *start.parents]:
            out.append(parent / "shared" / "data")
    return out


def shared_data_dir() -> Path:
    """The ``shared/data`` folder: ``$MRDKIT_DATA_DIR`` if set, else the first ``shared/data`` found walking up
    from the working directory or from this package (the checkout sits beside ``shared/``)."""
    env = os.environ.get("MRDKIT_DATA_DIR")
    if env:
        path = Path(env)
        if not path.is_dir():
            raise MrdkitError(f"MRDKIT_DATA_DIR={env} is not a directory")
        return path
    for cand in _candidates():
        if cand.is_dir():
            return cand
    raise MrdkitError("cannot find shared/data: set MRDKIT_DATA_DIR to the folder holding tofu/ and muse-news/")


def tofu_dir() -> Path:
    """Local TOFU files (Hugging Face ``locuslab/TOFU`` file format)."""
    return shared_data_dir() / "tofu"


def embedded_tofu_dir() -> Path:
    """The small TOFU subset shipped inside the package (MIT; see resources/tofu/README.md)."""
    return Path(__file__).resolve().parent / "resources" / "tofu"


def default_tofu_file(filename: str) -> Path:
    """``filename`` (e.g. ``forget01.json``) from the local TOFU folder, else from the embedded subset, else a
    one-line error."""
    try:
        local = tofu_dir() / filename
    except MrdkitError:
        local = None
    if local is not None and local.is_file():
        return local
    embedded = embedded_tofu_dir() / filename
    if embedded.is_file():
        return embedded
    where = local.parent if local is not None else "shared/data/tofu (not found)"
    raise MrdkitError(f"TOFU file {filename} is neither in {where} nor in the embedded subset; "
                      "set MRDKIT_DATA_DIR or pass a TOFU folder / hub id")


def muse_dir() -> Path:
    """Local MUSE-News files."""
    return shared_data_dir() / "muse-news"


def cache_dir() -> Path:
    """mrdkit's cache (converted models, built testbeds): ``$MRDKIT_CACHE`` or ``~/.cache/mrdkit``."""
    path = Path(os.environ.get("MRDKIT_CACHE", Path.home() / ".cache" / "mrdkit"))
    path.mkdir(parents=True, exist_ok=True)
    return path

"""Progress bars (rich) for long work, with an ETA; silent when asked or when stderr is not a terminal in CI.

Every bar draws on one shared stderr console, so a bar opened while another is shown (the MRD scoring inside
``mrd unlearn``) appears below it instead of fighting it for the same lines (rich nests live displays per console).
"""

from __future__ import annotations

import contextlib
import functools
import os
from typing import Any, Callable, Iterator, Optional

ProgressFn = Callable[[int, int], None]


def _enabled(show: Optional[bool]) -> bool:
    if show is not None:
        return show
    return os.environ.get("MRDKIT_PROGRESS", "1") != "0"


@functools.lru_cache(maxsize=1)
def _console() -> Any:
    from rich.console import Console

    return Console(stderr=True)  # writes to whatever sys.stderr is at the time (tests may redirect it)


@contextlib.contextmanager
def progress_bar(description: str, total: int, *, show: Optional[bool] = None) -> Iterator[ProgressFn]:
    """Yield ``update(done, total)``; renders a rich bar with elapsed time and ETA on stderr.

    Library functions take an optional ``progress`` callback of this shape, so they stay free of UI code.
    """
    if not _enabled(show):
        yield lambda done, total_: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=_console(), transient=False) as bar:
        task = bar.add_task(description, total=total)

        def update(done: int, total_: int) -> None:
            bar.update(task, completed=done, total=total_)

        yield update

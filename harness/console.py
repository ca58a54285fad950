"""Terminal output: rich progress bars for long steps, plain lines otherwise."""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True, highlight=False)


def log(message: str) -> None:
    console.print(message)


@contextlib.contextmanager
def progress_bar(description: str, total: int, enabled: bool | None = None) -> Iterator[Callable[[int], None]]:
    """Yields advance(n). Shows a bar on a terminal; elsewhere prints one line when the step ends."""
    if enabled is None:
        enabled = console.is_terminal
    if not enabled:
        done = [0]
        yield lambda n=1: done.__setitem__(0, done[0] + n)
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    ) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)

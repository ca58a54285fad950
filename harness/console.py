"""What a command tells the person running it while it works: messages, warnings and progress, on stderr.

On a terminal, progress is a rich bar. Anywhere else (a pipe, a file, a cluster job's log) it is plain lines:
one when a step starts, one each time another tenth of it is done or FSV_PROGRESS_SECONDS seconds (default
30) have passed since the last line, whichever comes first, and one when it ends; each says done/total, the
rate and the time left. A message is one line however long: a path or a number is never split.

Under torchrun only rank 0 shows progress and messages; warnings and errors come from every rank, those of
the other ranks labelled `[rank r/N]`.
"""
from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from typing import Callable, Iterator

import rich.console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from harness.distributed import launched
from harness.errors import HarnessError

#: seconds between two progress lines at most, off a terminal (FSV_PROGRESS_SECONDS overrides it)
PROGRESS_SECONDS = 30.0


class Console(rich.console.Console):
    """rich's console, except that a reader that went away (`bench.py list | head -1`) raises BrokenPipeError,
    which the command line ends quietly with the status of a Unix tool killed by SIGPIPE (rich would exit 1)."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError


console = Console(stderr=True, highlight=False)


def labelled(message: str) -> str:
    """`message`, headed `[rank r/N]` in a torchrun process other than rank 0."""
    rank, size = launched()
    return f"[rank {rank}/{size}] {message}" if rank else message


def log(message: str, *, markup: bool = True) -> None:
    """A message (rich markup unless markup=False); under torchrun, rank 0's only."""
    if launched()[0] == 0:
        console.print(message, markup=markup, soft_wrap=True)


def warn(message: str) -> None:
    """A warning in plain text (video names hold brackets), from every rank; one line however long."""
    console.print(labelled(message), style="yellow", markup=False, soft_wrap=True)


def interactive() -> bool:
    """Whether progress is drawn as bars: stderr is a terminal that can move its cursor (rich's rule, so
    TTY_INTERACTIVE=0 or 1 decides where it is set)."""
    forced = os.environ.get("TTY_INTERACTIVE")
    if forced in ("0", "1"):
        return forced == "1"
    return console.is_terminal and not console.is_dumb_terminal


def progress_seconds() -> float:
    raw = os.environ.get("FSV_PROGRESS_SECONDS")
    if raw is None:
        return PROGRESS_SECONDS
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not (math.isfinite(seconds) and seconds >= 0):
        raise HarnessError(f"FSV_PROGRESS_SECONDS is '{raw}', not a number of seconds", where="the environment",
                           fix=f"set FSV_PROGRESS_SECONDS to the most seconds between two progress lines (0: a line at every step), or unset it for {PROGRESS_SECONDS:.0f}")
    return seconds


@contextlib.contextmanager
def progress_bar(description: str, total: int, enabled: bool | None = None, unit: str = "items") -> Iterator[Callable[[int], None]]:
    """Yields advance(n=1). enabled=False (--quiet) shows nothing; otherwise a bar on a terminal and plain
    lines elsewhere. Under torchrun, only rank 0 shows its progress."""
    if enabled is False or launched()[0] != 0:
        yield lambda n=1: None
    elif interactive():
        with _bar(description, total) as advance:
            yield advance
    else:
        with _Lines(description, total, unit, progress_seconds()) as lines:
            yield lines.advance


_shown: list[Progress] = []  # the bars on the terminal now: one Progress, with a row per step under way


@contextlib.contextmanager
def _bar(description: str, total: int) -> Iterator[Callable[[int], None]]:
    if _shown:  # a step within a step (calibrate's pools): one more row under the running bar, gone when done
        bar = _shown[0]
        task = bar.add_task(description, total=total)
        try:
            yield lambda n=1: bar.advance(task, n)
        finally:
            bar.remove_task(task)
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
        _shown.append(bar)
        try:
            task = bar.add_task(description, total=total)
            yield lambda n=1: bar.advance(task, n)
        finally:
            _shown.pop()


class _Lines:
    """Progress as plain lines: at the start, at each tenth or after `every` seconds without a line, at the end.
    A thread writes the line that is due while a single step takes longer than `every`."""

    def __init__(self, description: str, total: int, unit: str, every: float):
        self.description, self.total, self.unit, self.every = description, total, unit, every
        self.done = 0
        self.tenths = 0  # tenths of the total reported so far
        self.started = self.last = time.monotonic()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.beat: threading.Thread | None = None

    def __enter__(self) -> "_Lines":
        if self.total > 0:  # nothing to do: nothing to report
            self._say(f"{self.total:,} {self.unit} to do")
            if self.every > 0:
                self.beat = threading.Thread(target=self._beat, name="progress lines", daemon=True)
                self.beat.start()
        return self

    def __exit__(self, kind, error, trace) -> None:
        self.stop.set()
        if self.beat is not None:
            self.beat.join()
        if self.total <= 0:
            return
        if kind is None:
            self._say(f"{self._count()}, {self._rate()}, done in {duration(self._elapsed())}")
        elif not issubclass(kind, BrokenPipeError):  # a log that is gone is not written to again
            self._say(f"stopped at {self._count()} after {duration(self._elapsed())}")

    def advance(self, n: int = 1) -> None:
        self.done += n
        tenths = min(10, self.done * 10 // max(self.total, 1))
        if self.done < self.total and (tenths > self.tenths or time.monotonic() - self.last >= self.every):
            self._report()

    def _beat(self) -> None:
        while not self.stop.wait(max(0.01, self.last + self.every - time.monotonic())):
            if time.monotonic() - self.last >= self.every:
                try:
                    self._report()
                except BrokenPipeError:  # the log's reader is gone: the next line of the command itself ends it
                    return

    def _report(self) -> None:
        with self.lock:
            done, elapsed = self.done, self._elapsed()
            self.tenths = max(self.tenths, min(10, done * 10 // max(self.total, 1)))
            if done == 0:
                self._say(f"{self._count()}, {duration(elapsed)} elapsed, none finished yet")
            else:
                eta = (self.total - done) * elapsed / done
                self._say(f"{self._count()}, {self._rate()}, {duration(elapsed)} elapsed, ETA {duration(eta)}")

    def _count(self) -> str:
        return f"{self.done:,}/{self.total:,} {self.unit} ({100 * self.done // max(self.total, 1)}%)"

    def _rate(self) -> str:
        per_second = self.done / max(self._elapsed(), 1e-9)
        shown = f"{per_second:,.0f}" if per_second >= 100 else f"{per_second:.1f}" if per_second >= 1 else f"{per_second:.3f}"
        return f"{shown} {self.unit}/s"

    def _elapsed(self) -> float:
        return time.monotonic() - self.started

    def _say(self, text: str) -> None:
        self.last = time.monotonic()
        console.print(f"{self.description}: {text}", markup=False, soft_wrap=True)


def duration(seconds: float) -> str:
    """'42 s', '3 min 05 s', '2 h 07 min'."""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"

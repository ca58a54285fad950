"""Locks between processes: one process at a time does a piece of work; the others wait, then find it done.

    with file_lock(home / "backbones" / ".tiny3d.pt.lock", what="pretraining tiny3d"):
        if not done():
            do()

POSIX: fcntl.flock. The kernel drops the lock when its process ends, even when it is killed, so a lock is
never stale. Windows: msvcrt.locking (exclusive only: a shared lock is taken as an exclusive one). A
platform with neither is refused with an error that says so. The lock file is empty, made on first use and
left in place (deleting it would race with a process about to lock it). Locks are re-entrant within a
thread. On a shared file system (several machines), the file system must support flock across machines
(NFSv4 and Lustre mounted with `flock` do); where it does not, run one job at a time per folder.
"""
from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

from harness.errors import HarnessError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None
try:
    import msvcrt
except ImportError:  # POSIX
    msvcrt = None

_local = threading.local()  # per thread: {lock path: [fd, depth, shared]}


def _held() -> dict:
    """The locks this thread holds. A forked child starts with none: the copy of its parent's is not its own."""
    if getattr(_local, "pid", None) != os.getpid():
        _local.held, _local.pid = {}, os.getpid()
    return _local.held


def _try_lock(fd: int, shared: bool) -> bool:
    """Take the lock without waiting; False when another process holds it."""
    if fcntl is not None:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False
    os.lseek(fd, 0, os.SEEK_SET)
    try:
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        return True
    except OSError:
        return False


def _lock_blocking(fd: int, shared: bool) -> None:
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        return
    while not _try_lock(fd, shared):
        time.sleep(0.05)


def _unlock(fd: int) -> None:
    # explicit unlock: a child forked while the lock was held (a DataLoader worker) keeps the descriptor
    # open, and closing ours alone would leave the lock held until that child ends
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
    else:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)


def _default_log(message: str) -> None:
    from harness.console import console

    console.print(message, markup=False, soft_wrap=True)


@contextlib.contextmanager
def file_lock(
    path: str | os.PathLike,
    *,
    shared: bool = False,
    what: str | None = None,
    timeout: float | None = None,
    log: Callable[[str], None] | None = _default_log,
) -> Iterator[None]:
    """Hold the lock on `path` (created with its folders if missing) for the `with` block.

    Exclusive by default; `shared=True` is a reader's lock (many readers at once, no writer). A reader's lock
    on a file that does not exist or cannot be opened is skipped: no writer has used it, or the folder is
    read-only. When another process holds the lock, `log` says once what is awaited, then this waits
    (`timeout` seconds at most, then a HarnessError; None: as long as it takes)."""
    if fcntl is None and msvcrt is None:
        raise HarnessError(
            "this platform offers no file locks (neither fcntl nor msvcrt), which keep concurrent runs from overwriting each other",
            fix="run the harness on Linux, macOS or Windows",
        )
    path = Path(path)
    key = os.path.abspath(path)
    held = _held()
    if key in held:  # re-entered in this thread: the lock is already ours
        entry = held[key]
        if entry[2] and not shared:
            raise HarnessError(f"a shared lock on {path} cannot be made exclusive while it is held", fix="take the exclusive lock first (this is a bug in the harness)")
        entry[1] += 1
        try:
            yield
        finally:
            entry[1] -= 1
        return

    if shared:
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        except OSError:
            fd = None  # no lock file (no writer ever locked here) or an unreadable folder: nothing to wait for
        if fd is None:
            yield
            return
    else:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o666)
        except OSError as e:
            raise HarnessError(f"cannot create the lock file {path}: {e.strerror or e}", fix="check that the folder exists and is writable") from None
    try:
        if not _try_lock(fd, shared):
            if log is not None:
                log(f"waiting for another process{f' ({what})' if what else ''}: it holds {path}")
            if timeout is None:
                _lock_blocking(fd, shared)
            else:
                deadline = time.monotonic() + timeout
                while not _try_lock(fd, shared):
                    if time.monotonic() > deadline:
                        raise HarnessError(
                            f"another process has held {path} for more than {timeout:g} s{f' ({what})' if what else ''}",
                            fix="wait for that process to finish; a lock is released as soon as its process ends",
                        )
                    time.sleep(0.05)
        held[key] = [fd, 1, shared]
        try:
            yield
        finally:
            del held[key]
            _unlock(fd)
    finally:
        os.close(fd)

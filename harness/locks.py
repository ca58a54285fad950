"""Locks between processes: one process at a time does a piece of work; the others wait, then find it done.

    with file_lock(home / "backbones" / ".tiny3d.pt.lock", what="pretraining tiny3d"):
        if not done():
            do()

An exclusive lock is filelock's FileLock (flock; LockFileEx on Windows), which the kernel drops when its process
ends, even when it is killed. A shared lock is flock(LOCK_SH) on the same file: filelock has none (its
ReadWriteLock is an SQLite database that a forked child may not touch); Windows takes it as an exclusive one.
The lock file is empty and stays (deleting it would race with a process about to lock it). Locks are re-entrant
within a thread; a forked child holds none of its parent's. Where flock fails (NFS without its lock service,
some FUSE mounts), filelock's SoftFileLock takes over: a marker `<lock>.held` exists while the lock is held, by
readers too; a holder killed on this machine is found dead by its pid, one killed on another leaves it behind.
"""
from __future__ import annotations

import contextlib
import errno
import os
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

from filelock import FileLock, SoftFileLock, Timeout

from harness.errors import HarnessError

try:
    import fcntl
except ImportError:  # Windows (FileLock covers it) or no flock at all (soft locks)
    fcntl = None

#: flock errors that mean "this file system cannot flock", not "another process holds it"
NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS}

_local = threading.local()  # per thread: {lock path: [depth, shared]}
_soft_warned = False


def _held() -> dict:
    """The locks this thread holds. A forked child starts with none: the copy of its parent's is not its own."""
    if getattr(_local, "pid", None) != os.getpid():
        _local.held, _local.pid = {}, os.getpid()
    return _local.held


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
    (`timeout` seconds at most, then a HarnessError; None: as long as it takes). `log` also gets the warning,
    once per process, that locks fell back to soft ones."""
    path = Path(path)
    key = os.path.abspath(path)
    held = _held()
    if key in held:  # re-entered in this thread: the lock is already ours
        entry = held[key]
        if entry[1] and not shared:
            raise HarnessError(f"a shared lock on {path} cannot be made exclusive while it is held", fix="take the exclusive lock first (this is a bug in the harness)")
        entry[0] += 1
        try:
            yield
        finally:
            entry[0] -= 1
        return

    release = _take(path, shared, what, timeout, log)
    held[key] = [1, shared]
    try:
        yield
    finally:
        del held[key]
        release()


def _take(path: Path, shared: bool, what: str | None, timeout: float | None, log) -> Callable[[], None]:
    """Wait for the lock on `path` and take it; its release."""
    global _soft_warned
    if shared:
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        except OSError:
            return lambda: None  # no lock file (no writer ever locked here) or an unreadable folder: nothing to wait for
        if fcntl is None:
            os.close(fd)  # Windows, or no flock at all: the exclusive lock below
        else:
            try:
                return _wait(_SharedFlock(fd), path, what, timeout, log)
            except BaseException as e:
                os.close(fd)
                if not (isinstance(e, OSError) and e.errno in NO_FLOCK):
                    raise
    try:
        if fcntl is None and sys.platform != "win32":
            raise OSError(errno.ENOSYS, "this platform has no flock")
        return _wait(FileLock(path, fallback_to_soft=False, preserve_lock_file=True), path, what, timeout, log)
    except OSError as e:
        if e.errno not in NO_FLOCK:
            raise HarnessError(f"cannot create or lock the lock file {path}: {e.strerror or e}", fix="check that the folder exists and is writable") from None
        marker = path.with_name(path.name + ".held")
        if log is not None and not _soft_warned:
            _soft_warned = True
            log(f"warning: flock fails on {path} ({e.strerror}); locks are soft instead, marker files such as {marker}. "
                f"A process killed on another machine leaves its marker behind: delete it when a run waits for it "
                f"and no other run is going (rm {marker})")
        try:
            return _wait(SoftFileLock(marker), marker, what, timeout, log, soft=True)
        except OSError as e:
            raise HarnessError(f"cannot create the lock marker {marker}: {e.strerror or e}", fix="check that the folder is writable") from None


class _SharedFlock:
    """A reader's flock on an open file, acquired and released like filelock's locks."""

    def __init__(self, fd: int):
        self.fd = fd

    def acquire(self, timeout: float = -1, blocking: bool = True) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                return fcntl.flock(self.fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                if not blocking or 0 <= timeout and time.monotonic() > deadline:
                    raise Timeout(f"descriptor {self.fd}") from None
                time.sleep(0.05)

    def release(self) -> None:
        # explicit unlock: a child forked while the lock was held (a DataLoader worker) keeps the descriptor
        # open, and closing ours alone would leave the lock held until that child ends
        try:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        finally:
            os.close(self.fd)


def _wait(lock, path: Path, what: str | None, timeout: float | None, log, soft: bool = False) -> Callable[[], None]:
    """Acquire `lock` (a FileLock, SoftFileLock or _SharedFlock), saying once that it waits; its release."""
    holder = f"another process{f' ({what})' if what else ''}"
    try:
        lock.acquire(blocking=False)
    except Timeout:
        if log is not None:
            log(f"waiting for {holder}: it holds {path}")
        try:
            lock.acquire(timeout=-1 if timeout is None else timeout)
        except Timeout:
            then = f"if none is running (it was killed on another machine), delete {path}" if soft else "a lock is released as soon as its process ends"
            raise HarnessError(f"gave up after {timeout:g} s: {holder} holds {path}", fix=f"wait for that process to finish; {then}") from None
    return lock.release

"""Writing files so that a reader never sees half of one: write beside, flush, rename.

Checksummed files (the feature store's) end with a 40-byte trailer, CHECKSUM_MAGIC and the SHA-256 of every
byte before it, written in the same atomic rename as the data: a changed, truncated or foreign file is told
from a good one on read. numpy reads such an .npy as it is (it stops at the array's last byte).
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from harness.errors import HarnessError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _write_error(path: Path, e: OSError) -> HarnessError:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = "free space on that disk (or point --home / --results at another one), then run the same command again: finished parts are kept"
    else:
        fix = "check that the folder exists and is writable"
    return HarnessError(f"cannot write {path}: {e.strerror or e}", fix=f"{fix}; nothing already written was lost")


def _stage(path: Path, write, durable: bool = True) -> str:
    """Call write(file) on a temporary file beside `path`, flushed to disk (`durable`: fsync'd too); return the
    temporary file's name. On any failure the temporary file is removed."""
    try:
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        except FileNotFoundError:  # the folder is made only when missing: a mkdir before every file cost 0.18 ms a file
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise _write_error(path, e) from None
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; results are meant to be read by others
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            if durable:
                os.fsync(f.fileno())
    except BaseException as e:
        _unlink(tmp)
        if isinstance(e, OSError):
            raise _write_error(path, e) from None
        raise
    return tmp


def _unlink(tmp: str) -> None:
    try:
        os.unlink(tmp)
    except OSError:
        pass


def _atomic(path: Path, write, durable: bool = True) -> None:
    """Call write(file) on a temporary file beside `path`, then rename it into place."""
    _rename_all([(_stage(path, write, durable), path)])


def _rename_all(staged: list[tuple[str, Path]]) -> None:
    try:
        for tmp, path in staged:
            os.replace(tmp, path)
    except BaseException as e:
        for tmp, _ in staged:
            _unlink(tmp)
        if isinstance(e, OSError):
            raise _write_error(path, e) from None
        raise


def atomic_write_files(files: dict[Path, bytes]) -> None:
    """Replace several files together: every one is written and flushed under a temporary name before the
    first is renamed, so a full disk or an error while writing leaves all of the old files as they were."""
    staged: list[tuple[str, Path]] = []
    try:
        for path, data in files.items():
            staged.append((_stage(path, lambda f, data=data: f.write(data)), path))
    except BaseException:
        for tmp, _ in staged:
            _unlink(tmp)
        raise
    _rename_all(staged)


def atomic_link_files(links: dict[Path, Path]) -> None:
    """Make each `path` of `links` another name of the existing file `links[path]` (a hard link: the bytes are
    stored once), all together: every link is made under a temporary name before the first is renamed into
    place. Where hard links cannot be made (another file system, one without them), `path` gets a copy."""
    staged: list[tuple[str, Path]] = []
    try:
        for path, existing in links.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = str(path.parent / f".{path.name}.{os.urandom(6).hex()}.tmp")
            try:
                os.link(existing, tmp)
            except OSError:
                tmp = _stage(path, lambda f, existing=existing: f.write(Path(existing).read_bytes()))
            staged.append((tmp, path))
    except BaseException as e:
        for tmp, _ in staged:
            _unlink(tmp)
        if isinstance(e, OSError):
            raise _write_error(path, e) from None
        raise
    _rename_all(staged)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    _atomic(path, lambda f: f.write(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def json_bytes(data) -> bytes:
    """The bytes atomic_write_json writes."""
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8")


def atomic_write_json(path: Path, data) -> None:
    atomic_write_bytes(path, json_bytes(data))


CHECKSUM_MAGIC = b"\x93FSVSUM\n"  # 8 bytes, then the 32-byte SHA-256 of what precedes the trailer
TRAILER_SIZE = len(CHECKSUM_MAGIC) + 32


class DamagedFile(ValueError):
    """A checksummed file whose bytes are not the ones written (changed, truncated, or never checksummed)."""


class _HashingWriter:
    """A write-only file object that hashes what passes through it."""

    def __init__(self, f, h):
        self._f, self._h = f, h

    def write(self, data) -> int:
        self._h.update(data)
        return self._f.write(data)


def atomic_write_checksummed(path: Path, write: Callable) -> str:
    """Call write(file) on a hashing file object, append the trailer, rename into place; return the SHA-256.
    No fsync: a file that a power cut leaves renamed but not on disk fails its checksum and is made again
    (the feature store recomputes it), so these files need not wait for the disk (0.6 ms each here)."""
    digest = []

    def body(f):
        h = hashlib.sha256()
        write(_HashingWriter(f, h))
        digest.append(h.digest())
        f.write(CHECKSUM_MAGIC + h.digest())

    _atomic(path, body, durable=False)
    return digest[0].hex()


def atomic_save_npy_checksummed(path: Path, array: np.ndarray) -> None:
    """Save an .npy file (no pickle) with a SHA-256 trailer, atomically."""
    atomic_write_checksummed(path, lambda f: np.save(f, np.ascontiguousarray(array), allow_pickle=False))


def read_checksummed(path: Path) -> memoryview:
    """The bytes of a checksummed file without its trailer, after checking them; DamagedFile if they are wrong."""
    data = Path(path).read_bytes()
    if len(data) < TRAILER_SIZE or data[-TRAILER_SIZE:-32] != CHECKSUM_MAGIC:
        raise DamagedFile("no checksum trailer (truncated, or not written by the harness)")
    payload = memoryview(data)[:-TRAILER_SIZE]
    if hashlib.sha256(payload).digest() != data[-32:]:
        raise DamagedFile("checksum mismatch (bytes changed on disk)")
    return payload


def verify_checksummed(path: Path, block: int = 8 << 20) -> bytes:
    """Check a checksummed file of any size without holding it in memory and return its SHA-256; DamagedFile if
    it is wrong."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < TRAILER_SIZE:
            raise DamagedFile("no checksum trailer (truncated, or not written by the harness)")
        h = hashlib.sha256()
        buffer = bytearray(block)
        view = memoryview(buffer)
        left = size - TRAILER_SIZE
        while left:
            n = f.readinto(view[: min(block, left)])
            if not n:
                raise DamagedFile("the file shrank while it was read")
            h.update(view[:n])
            left -= n
        trailer = f.read(TRAILER_SIZE)
    if trailer[:-32] != CHECKSUM_MAGIC:
        raise DamagedFile("no checksum trailer (truncated, or not written by the harness)")
    if h.digest() != trailer[-32:]:
        raise DamagedFile("checksum mismatch (bytes changed on disk)")
    return h.digest()

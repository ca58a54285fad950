"""Writing files so that a reader never sees half of one: write beside, flush, rename."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from harness.errors import HarnessError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _atomic(path: Path, write) -> None:
    """Call write(file) on a temporary file beside `path`, then rename it into place."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise HarnessError(f"cannot write {path}: {e.strerror or e}", fix="check that the folder exists and is writable") from None
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; results are meant to be read by others
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise HarnessError(f"cannot write {path}: {e.strerror or e}", fix="check that the folder is writable and the disk is not full; nothing already written was lost") from None
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    _atomic(path, lambda f: f.write(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, data) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def atomic_save_npy(path: Path, array: np.ndarray) -> None:
    """Save an .npy file (it can hold no pickle) under a temporary name, then rename."""
    _atomic(path, lambda f: np.save(f, np.ascontiguousarray(array), allow_pickle=False))

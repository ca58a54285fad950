"""Where a command's time goes: named phases, each counted without the phases inside it.

    with phase("training trx"):
        steps()                            # counted in "training trx"
        with phase("embedding videos"):   # counted here, not in "training trx"
            extract()

`totals()` gives the seconds per phase name since the last `reset()`; the quickstart prints them and writes them
to `<results>/quickstart-phases.json`, and `fsv-bench perf --quickstart` reads them from a cold and a warm run.
"""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Iterator

_local = threading.local()
_totals: dict[str, float] = {}
_lock = threading.Lock()


@contextmanager
def phase(name: str) -> Iterator[None]:
    stack = _local.__dict__.setdefault("stack", [])  # [[name, seconds spent in inner phases], ...]
    stack.append([name, 0.0])
    started = time.perf_counter()
    try:
        yield
    finally:
        spent = time.perf_counter() - started
        _, inner = stack.pop()
        with _lock:
            _totals[name] = _totals.get(name, 0.0) + spent - inner
        if stack:
            stack[-1][1] += spent


def totals() -> dict[str, float]:
    """Seconds per phase, in the order the phases first ran."""
    with _lock:
        return dict(_totals)


def reset() -> None:
    with _lock:
        _totals.clear()

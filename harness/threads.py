"""Scoring and embedding on a CPU shared with other work: lanes of single-threaded kernels, as many as the
machine has free cores now.

PyTorch splits one operation over all cores (OpenMP intra-op threads), and every thread must finish its share
before the next operation starts. On a machine where other processes are busy, one of those threads is often
not scheduled and the others wait for it at every operation: on 2 cores shared with two busy processes, TRX
scored 6.7 episodes/s with 2 threads against 237 with 1 (467 with 2 on the quiet machine). And the low bits of
a reduction can depend on how many threads split it (STAF's logits do), so a run's predictions would depend on
the cores it was given.

So the harness scores (and embeds) with one intra-op thread, and runs independent slices of episodes (blocks of
videos) side by side in `lanes()` Python threads, which release the interpreter inside every kernel. A slice is a
whole number of a head's episode blocks, and a head's predictions do not depend on how episodes are batched
(tests/test_heads.py), so neither the number of lanes nor the load changes a bit of any result. Each lane takes
its next slice only while the machine has a free core for it (lane 0 always goes on): nobody waits for a lane
that is not scheduled, except at the end of a chunk.

* `lanes()`: the CPUs this process may use minus the other runnable tasks (Linux: the instantaneous count of
  `/proc/loadavg`; elsewhere the 1-minute load average), between 1 and the CPUs PyTorch would use
  (`OMP_NUM_THREADS` or the CPU count).
* `FSV_THREADS=N` fixes the lanes at N (no adapting); `FSV_THREADS=auto` (the default) adapts.
* Waiting OpenMP threads sleep instead of spinning (`OMP_WAIT_POLICY=PASSIVE`, set before PyTorch starts unless
  the user set it), which helps the backbone and training, which keep PyTorch's usual threads.
"""
from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence, TypeVar

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read once, when the OpenMP runtime starts: harness imports this first

T = TypeVar("T")
R = TypeVar("R")

#: seconds between two looks at the machine's load (one look reads /proc/loadavg three times: microseconds)
LOOK_EVERY_S = 0.05

_state: dict = {"limit": None, "last_look": 0.0, "lanes": None}
_lock = threading.Lock()


def most_lanes() -> int:
    """The CPUs PyTorch would use on its own (OMP_NUM_THREADS or the CPU count), taken before the harness changes it."""
    import torch

    if _state["limit"] is None:
        _state["limit"] = max(1, torch.get_num_threads())
    return _state["limit"]


def policy() -> dict:
    """What a summary or a perf JSON records about threads."""
    fixed = os.environ.get("FSV_THREADS", "auto")
    return {"lanes": "auto" if fixed == "auto" else int(fixed), "most_lanes": most_lanes(), "threads_per_lane": 1,
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}


def others_running() -> float:
    """Tasks that want a CPU now, other than this one: the least of three looks at /proc/loadavg's running count
    (a task that only passes by, like a shell command, is not counted), or the 1-minute load average elsewhere."""
    try:
        counts = []
        for _ in range(3):
            with open("/proc/loadavg") as f:
                counts.append(int(f.read().split()[3].split("/")[0]))
        return max(0, min(counts) - 1)  # the reader itself is running
    except (OSError, ValueError, IndexError):
        return max(0.0, os.getloadavg()[0] - 1) if hasattr(os, "getloadavg") else 0.0


def lanes() -> int:
    """How many slices may run side by side now: the CPUs free now (1 to `most_lanes()`), or FSV_THREADS."""
    fixed = os.environ.get("FSV_THREADS", "auto")
    if fixed != "auto":
        return int(fixed)
    with _lock:
        now = time.monotonic()
        if _state["lanes"] is None or now - _state["last_look"] >= LOOK_EVERY_S:
            cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
            _state["lanes"] = int(max(1, min(most_lanes(), cpus - others_running())))
            _state["last_look"] = now
        return _state["lanes"]


@contextmanager
def one_thread_per_lane() -> Iterator[None]:
    """PyTorch's intra-op threads set to 1 for the block, then back to what they were."""
    import torch

    most_lanes()  # remember the count PyTorch started with
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_in_lanes(work: Callable[[T], R], items: Sequence[T], setup: Callable[[], object] | None = None, cpu: bool = True) -> list[R]:
    """[work(item) for item in items], computed side by side in up to `lanes()` threads with one intra-op thread
    each; lane k > 0 takes a next item only while `lanes()` > k. `setup()` gives a context entered in every lane
    (thread-local modes such as torch.inference_mode must be entered in the thread that computes). With
    cpu=False (the work runs on a GPU, which orders it anyway) the items run one after another, threads untouched."""
    if not cpu:
        with (setup() if setup else _nothing()):
            return [work(item) for item in items]
    results: list = [None] * len(items)
    taken = iter(range(len(items)))
    take = threading.Lock()

    def lane(k: int) -> None:
        with (setup() if setup else _nothing()):
            while k == 0 or lanes() > k:
                with take:
                    i = next(taken, None)
                if i is None:
                    return
                results[i] = work(items[i])

    n = min(lanes(), len(items))
    with one_thread_per_lane():
        if n <= 1:
            lane(0)
        else:
            with ThreadPoolExecutor(n, thread_name_prefix="fsv-lane") as pool:
                for future in [pool.submit(lane, k) for k in range(n)]:
                    future.result()  # an error in a lane is raised here
    return results


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def check_setting() -> None:
    """Refuse an FSV_THREADS that is neither `auto` nor a whole number of at least 1."""
    from harness.errors import HarnessError

    value = os.environ.get("FSV_THREADS", "auto")
    if value != "auto" and not (value.isdigit() and int(value) >= 1):
        raise HarnessError(f"FSV_THREADS must be 'auto' or a whole number of at least 1, got '{value}'", where="environment variable FSV_THREADS",
                           fix="unset it (auto: as many lanes as free cores) or set it to e.g. 1")

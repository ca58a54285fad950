"""Scoring and embedding on a CPU shared with other work: lanes of single-threaded kernels, one per core.

PyTorch splits one operation over all cores (OpenMP intra-op threads), and every thread must finish its share
before the next operation starts. On a machine where other processes are busy, one of those threads is often
not scheduled and the others wait for it at every operation: on 2 cores shared with two busy processes, TRX
scored 69-100 episodes/s batched this way against 460 on the quiet machine, slower than one episode per call.
And the low bits of a reduction can depend on how many threads split it (STAF's logits do), so a run's
predictions would depend on the cores it was given.

So the harness scores (and embeds) with one intra-op thread, and runs independent slices of episodes (blocks of
videos) side by side in `lanes()` Python threads, which release the interpreter inside every kernel. A lane
never waits for another except at the end of a chunk, so a lane that is not scheduled for a while delays only
its own slice; under load the lanes get their fair share of the cores, as any other program's threads do
(measured on 2 cores with two busy processes: TRX 305-336 episodes/s against 678 quiet, STAF 432-439 against
898). A slice is a whole number of a head's episode blocks, and a head's predictions do not depend on how
episodes are batched (tests/test_heads.py), so neither the number of lanes nor the load changes a bit of any
result, and the results are the same on a machine with any number of cores.

* `lanes()`: the CPUs PyTorch would use on its own (`OMP_NUM_THREADS` or the CPU count); `FSV_THREADS=N` sets N.
  Fewer lanes when others are busy was measured too, and was slower: a lane that is not there gets no share.
* Training and the backbone keep PyTorch's usual intra-op threads (their bits may depend on the thread count,
  which a summary records). On a busy machine `OMP_WAIT_POLICY=PASSIVE` (set before starting) makes their
  waiting threads sleep instead of spin: training TRX for 40 steps with two busy processes on 2 cores took 30 s
  instead of 51, but 18 s instead of 14.5 on the quiet machine, so the harness leaves it to the user.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence, TypeVar

T = TypeVar("T")
R = TypeVar("R")

_state: dict = {"limit": None}


def most_lanes() -> int:
    """The CPUs PyTorch would use on its own (OMP_NUM_THREADS or the CPU count), taken before the harness changes it."""
    import torch

    if _state["limit"] is None:
        _state["limit"] = max(1, torch.get_num_threads())
    return _state["limit"]


def policy() -> dict:
    """What a summary or a perf JSON records about threads."""
    fixed = os.environ.get("FSV_THREADS", "auto")
    return {"lanes": lanes(), "lanes_set_by": "FSV_THREADS" if fixed != "auto" else "CPUs", "threads_per_lane": 1,
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}


def lanes() -> int:
    """How many slices run side by side: FSV_THREADS, or the CPUs PyTorch would use."""
    fixed = os.environ.get("FSV_THREADS", "auto")
    return int(fixed) if fixed != "auto" else most_lanes()


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
    """[work(item) for item in items], computed side by side in `lanes()` threads with one intra-op thread each,
    each lane taking the next item as it finishes one. `setup()` gives a context entered in every lane
    (thread-local modes such as torch.inference_mode must be entered in the thread that computes). With
    cpu=False (the work runs on a GPU, which orders it anyway) the items run one after another, threads untouched."""
    if not cpu:
        with (setup() if setup else _nothing()):
            return [work(item) for item in items]
    results: list = [None] * len(items)
    taken = iter(range(len(items)))
    take = threading.Lock()

    def lane() -> None:
        with (setup() if setup else _nothing()):
            while True:
                with take:
                    i = next(taken, None)
                if i is None:
                    return
                results[i] = work(items[i])

    n = min(lanes(), len(items))
    with one_thread_per_lane():
        if n <= 1:
            lane()
        else:
            with ThreadPoolExecutor(n, thread_name_prefix="fsv-lane") as pool:
                for future in [pool.submit(lane) for _ in range(n)]:
                    future.result()  # an error in a lane is raised here
    return results


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def check_setting() -> None:
    """Refuse an FSV_THREADS that is neither `auto` nor a whole number of at least 1."""
    from harness.errors import HarnessError

    value = os.environ.get("FSV_THREADS", "auto")
    cpus = os.cpu_count() or 1
    if value != "auto" and not (value.isdigit() and 1 <= int(value) <= 4 * cpus):
        raise HarnessError(f"FSV_THREADS must be 'auto' or a whole number from 1 to {4 * cpus} (4 per CPU), got '{value}'", where="environment variable FSV_THREADS",
                           fix="unset it (auto: a lane per CPU) or set it to e.g. 1")

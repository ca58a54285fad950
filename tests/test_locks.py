"""file_lock: readers share, a writer waits for them, a wait that gives up names what it waited for, a thread
re-enters its own lock, a killed holder frees it, and a file system without flock gets soft locks."""
import errno
import multiprocessing
import os
import signal
import threading
import time

import pytest

from harness import locks
from harness.errors import HarnessError
from harness.locks import file_lock

fcntl = pytest.importorskip("fcntl")

pytestmark = pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
FORK = multiprocessing.get_context("fork")


def in_child(path, shared: bool, timeout: float = 0.2) -> int:
    """Exit status of a forked child that tries the lock: 0 it got it, 3 it gave up."""
    def child():
        try:
            with file_lock(path, shared=shared, timeout=timeout, log=None):
                pass
        except HarnessError:
            os._exit(3)
        os._exit(0)

    proc = FORK.Process(target=child)
    proc.start()
    proc.join(30)
    return proc.exitcode


def holding_child(path, shared: bool = False):
    """A forked child that takes the lock, says so on the returned event, and holds it until killed."""
    got = FORK.Event()

    def child():
        with file_lock(path, shared=shared, log=None):
            got.set()
            time.sleep(60)

    proc = FORK.Process(target=child)
    proc.start()
    assert got.wait(30)
    return proc


def test_readers_hold_it_together_and_a_writer_waits_for_them(tmp_path):
    path = tmp_path / ".lock"
    with file_lock(path):  # the first writer makes the file; a reader of a missing file has nothing to wait for
        pass
    with file_lock(path, shared=True):
        assert in_child(path, shared=True) == 0, "a second reader gets the lock while the first holds it"
        assert in_child(path, shared=False) == 3, "a writer does not"
        reader = holding_child(path, shared=True)  # another process reads too
    assert in_child(path, shared=False) == 3, "the writer waits for every reader"
    assert in_child(path, shared=True) == 0
    reader.kill()
    reader.join()
    assert in_child(path, shared=False) == 0

    writer = holding_child(path)
    assert in_child(path, shared=True) == 3, "a reader waits for the writer"
    writer.kill()
    writer.join()


def test_a_waiting_writer_gets_the_lock_when_the_reader_lets_go(tmp_path):
    path = tmp_path / ".lock"
    path.touch()
    seen, got = [], []

    def writer():  # another thread is another holder
        with file_lock(path, what="writing x", log=seen.append):
            got.append(time.monotonic())

    with file_lock(path, shared=True):
        waiter = threading.Thread(target=writer)
        waiter.start()
        time.sleep(0.3)
        assert got == [] and seen == [f"waiting for another process (writing x): it holds {path}"]
        released = time.monotonic()
    waiter.join(5)
    assert got and got[0] >= released


def test_a_wait_that_times_out_names_what_it_waited_for(tmp_path):
    path = tmp_path / "sub" / ".lock"
    holder = holding_child(path)
    seen = []
    started = time.monotonic()
    with pytest.raises(HarnessError) as e:
        with file_lock(path, what="pretraining backbone 'tiny3d'", timeout=0.3, log=seen.append):
            pass
    assert time.monotonic() - started >= 0.3
    assert "pretraining backbone 'tiny3d'" in e.value.what and str(path) in e.value.what and "0.3 s" in e.value.what
    assert seen == [f"waiting for another process (pretraining backbone 'tiny3d'): it holds {path}"]
    holder.kill()
    holder.join()


def test_a_thread_re_enters_its_own_lock_and_lets_go_at_the_outermost_exit(tmp_path):
    path = tmp_path / ".lock"
    seen = []
    with file_lock(path, log=seen.append):
        with file_lock(path, timeout=0, log=seen.append):
            with file_lock(path, shared=True, timeout=0, log=seen.append):  # a writer may also read
                pass
        assert in_child(path, shared=False) == 3, "still held after the inner blocks end"
    assert seen == [] and in_child(path, shared=False) == 0

    with file_lock(path, shared=True):
        with pytest.raises(HarnessError, match="cannot be made exclusive"):
            with file_lock(path):
                pass


def test_a_killed_holder_frees_the_lock_at_once(tmp_path):
    path = tmp_path / ".lock"
    holder = holding_child(path)
    os.kill(holder.pid, signal.SIGKILL)
    holder.join()
    with file_lock(path, timeout=1, log=None):
        pass


@pytest.fixture
def no_flock(monkeypatch):
    """A file system that refuses flock, as NFS does without its lock service."""
    def refuse(fd, operation):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", refuse)
    monkeypatch.setattr(locks, "_soft_warned", False)


def test_without_flock_a_marker_is_the_lock_and_a_warning_says_how_to_remove_a_stale_one(tmp_path, no_flock):
    path = tmp_path / "sub" / ".lock"
    marker = tmp_path / "sub" / ".lock.held"
    seen = []
    with file_lock(path, what="generating x", log=seen.append):
        assert marker.exists()
        assert in_child(path, shared=False) == 3 and in_child(path, shared=True) == 3
    assert not marker.exists() and in_child(path, shared=False) == 0
    assert len(seen) == 1 and "warning" in seen[0] and "No locks available" in seen[0] and f"rm {marker}" in seen[0]

    with file_lock(path, shared=True, log=seen.append):  # a reader takes the marker too; the warning was given
        assert marker.exists() and in_child(path, shared=True) == 3
    assert len(seen) == 1

    holder = holding_child(path)
    with pytest.raises(HarnessError) as e:
        with file_lock(path, what="generating x", timeout=0.2, log=seen.append):
            pass
    assert "generating x" in e.value.what and f"delete {marker}" in e.value.fix
    os.kill(holder.pid, signal.SIGKILL)  # killed on this machine: its pid tells it is gone
    holder.join()
    with file_lock(path, timeout=2, log=None):
        pass


def test_a_platform_without_flock_gets_soft_locks(tmp_path, monkeypatch):
    monkeypatch.setattr(locks, "fcntl", None)
    monkeypatch.setattr(locks, "_soft_warned", False)
    seen = []
    with file_lock(tmp_path / ".lock", log=seen.append):
        assert (tmp_path / ".lock.held").exists()
    assert "no flock" in seen[0]

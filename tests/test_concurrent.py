"""Runs at the same time on the same results folder and data home: both finish, both results are kept,
nothing is done twice that must be done once, nothing is corrupted, no temporary file is left."""
import multiprocessing
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

import harness.features as features_module
import harness.pipeline as pipeline
from harness import leaderboard
from harness.compare import load_run
from harness.data import synthetic
from harness.errors import HarnessError
from harness.locks import file_lock
from harness.pipeline import backbone_for, features_for, load_index, run_method
from harness.protocol import load_protocol
from harness.results import RunFolder
from conftest import settings

BENCH = Path(__file__).resolve().parents[1] / "bench.py"
FORK = "fork" in multiprocessing.get_all_start_methods()


def leftovers(*folders: Path) -> list[Path]:
    """Temporary files and unfinished parts (lock files are not temporary: they stay, empty)."""
    return [p for folder in folders for p in folder.rglob("*") if p.name.endswith((".tmp", ".partial")) or p.name == ".parts"]


def in_children(target, n: int = 2, timeout: float = 120) -> list[int]:
    """Run target(i) in n forked processes at once; their exit codes."""
    context = multiprocessing.get_context("fork")
    procs = [context.Process(target=target, args=(i,)) for i in range(n)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout)
    for proc in procs:
        if proc.exitcode is None:
            proc.kill()
    return [proc.exitcode for proc in procs]


def counting(path: Path, real):
    """`real`, appending one line to `path` per call (O_APPEND: safe across processes)."""
    def wrapper(*args, **kwargs):
        with open(path, "a") as f:
            f.write("call\n")
        return real(*args, **kwargs)

    return wrapper


def calls(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


# ------------------------------------------------------------------------------------------------- locks


def test_lock_excludes_other_processes_and_says_what_it_waits_for(tmp_path):
    if not FORK:
        pytest.skip("needs fork")
    path = tmp_path / "sub" / "work.lock"

    def try_lock(shared: bool):
        def child(_):
            try:
                with file_lock(path, shared=shared, timeout=0.2, log=None):
                    os._exit(0)
            except HarnessError:
                os._exit(3)

        return child

    with file_lock(path, what="test work"):
        with file_lock(path):  # re-entrant in this thread
            pass
        assert in_children(try_lock(False), 1) == [3] and in_children(try_lock(True), 1) == [3]
    assert in_children(try_lock(False), 1) == [0]
    with file_lock(path, shared=True):  # readers share; a writer waits
        assert in_children(try_lock(True), 1) == [0] and in_children(try_lock(False), 1) == [3]

    seen = []
    release = threading.Event()

    def holder():
        with file_lock(path):
            release.wait(5)

    thread = threading.Thread(target=holder)
    thread.start()
    time.sleep(0.2)
    started = time.perf_counter()
    threading.Timer(0.3, release.set).start()
    with file_lock(path, what="pretraining x", log=seen.append):  # another thread's lock is another holder
        waited = time.perf_counter() - started
    thread.join()
    assert waited >= 0.2 and len(seen) == 1 and "pretraining x" in seen[0] and str(path) in seen[0]


def test_a_reader_lock_never_creates_a_file(tmp_path):
    with file_lock(tmp_path / "none" / ".lock", shared=True):
        pass
    assert not (tmp_path / "none").exists()


# ------------------------------------------------------------------------------------- results folder


def test_runs_with_other_fingerprints_are_all_kept_and_found_again(write_protocol, tmp_path, monkeypatch):
    home = tmp_path / "home"
    p = load_protocol(write_protocol())
    backbone_for(p, settings(home, tmp_path), pretrain_if_missing=True)
    results = tmp_path / "results"
    a = run_method(p, "protonet", settings(home, results), n_episodes=60)
    b = run_method(p, "protonet", settings(home, results), n_episodes=40)
    folder = results / "tiny-5w1s" / "protonet"
    assert {d.name for d in (folder / "runs").iterdir()} == {a["run_fingerprint"], b["run_fingerprint"]}
    for s, n in ((a, 60), (b, 40)):
        assert Path(s["records_path"]) == folder / "runs" / s["run_fingerprint"] / "episodes.jsonl"
        assert len(Path(s["records_path"]).read_text().splitlines()) == n
    assert (folder / "episodes.jsonl").read_bytes() == Path(b["records_path"]).read_bytes(), "the top level is the latest"
    assert (folder / "summary.json").read_bytes() == (folder / "runs" / b["run_fingerprint"] / "summary.json").read_bytes()
    assert load_run(folder).summary["run_fingerprint"] == b["run_fingerprint"]
    assert [m["n_episodes"] for m in leaderboard.build(results)["measured"]] == [40]

    scored = []
    real = pipeline.evaluate
    monkeypatch.setattr(pipeline, "evaluate", lambda *a, **k: scored.append(1) or real(*a, **k))
    again = run_method(p, "protonet", settings(home, results), n_episodes=60)
    assert scored == [] and again["records_sha256"] == a["records_sha256"], "an earlier run is found in runs/"
    assert load_run(folder).summary["run_fingerprint"] == a["run_fingerprint"], "the run asked for last is the top level again"

    # results written before runs/ existed: the top-level pair is found, and kept in runs/ from then on
    shutil.rmtree(folder / "runs")
    assert RunFolder(results, "tiny-5w1s", "protonet", a["run_fingerprint"]).finished_run() is not None
    assert (folder / "runs" / a["run_fingerprint"] / "episodes.jsonl").read_bytes() == (folder / "episodes.jsonl").read_bytes()
    assert not leftovers(results)


def _record(i: int, predictions: list[int]) -> dict:
    """A 2-way 1-shot episode record with one query per class."""
    correct = [int(p == label) for p, label in zip(predictions, (0, 1))]
    return {"episode": i, "classes": ["a", "b"], "support": ["a/1", "b/1"], "query": ["a/2", "b/2"], "query_labels": [0, 1],
            "predictions": predictions, "correct": correct, "accuracy": sum(correct) / 2}


def test_an_identical_run_that_finishes_first_does_not_break_the_other(tmp_path):
    from harness.stats import accuracy_summary

    records = [_record(0, [0, 1]), _record(1, [0, 0])]
    summary = {"run_fingerprint": "f" * 16, "n_episodes": 2, **accuracy_summary([1.0, 0.5])}
    first = RunFolder(tmp_path, "p", "m", "f" * 16)
    second = RunFolder(tmp_path, "p", "m", "f" * 16)
    second.write_chunk(0, records[:1])
    chunk = second.finished_chunks()[0]
    first.finish(records, summary)  # drops the shared chunks
    assert second.read_chunk(chunk) == [], "a chunk that is gone is scored again, never an error"
    second.write_chunk(1, records[1:])  # the chunk folder is made again
    second.finish(records, summary)
    assert first.finished_run() is not None and not leftovers(tmp_path)


# ------------------------------------------------------------------------------------------- data home


def test_dataset_generation_pretraining_and_extraction_happen_once(write_protocol, tmp_path, monkeypatch):
    if not FORK:
        pytest.skip("needs fork")
    spec = synthetic.SyntheticSpec(seed=5, videos_per_class=2, frames=4, size=16, n_train=6, n_val=6, n_test=6)
    root = tmp_path / "data" / "synthetic"
    monkeypatch.setattr(synthetic, "_write_video", counting(tmp_path / "videos.log", synthetic._write_video))

    def generate(_):
        torch.set_num_threads(1)
        pipeline.generate_synthetic(root, spec, show_progress=False, workers=1)

    assert in_children(generate) == [0, 0]
    assert synthetic.is_complete(root, spec) and calls(tmp_path / "videos.log") == 36, "every video written once"

    home = tmp_path / "home"
    p = load_protocol(write_protocol())
    monkeypatch.setattr(pipeline, "pretrain", counting(tmp_path / "pretrain.log", pipeline.pretrain))
    monkeypatch.setattr(features_module, "atomic_save_npy_checksummed", counting(tmp_path / "entries.log", features_module.atomic_save_npy_checksummed))

    def pretrain_and_embed(_):
        torch.set_num_threads(1)
        s = settings(home, tmp_path / "results")
        backbone, sha, _ = backbone_for(p, s, pretrain_if_missing=True)
        features_for(p, s, load_index(p, s, "test"), backbone, sha)

    assert in_children(pretrain_and_embed) == [0, 0]
    n_test = len(load_index(p, settings(home, tmp_path), "test"))
    assert calls(tmp_path / "pretrain.log") == 1 and calls(tmp_path / "entries.log") == n_test
    assert not leftovers(tmp_path)


# ------------------------------------------------------------------------------ two real runs at once


@pytest.mark.slow
def test_two_bench_runs_at_once_finish_with_the_records_of_runs_alone(write_protocol, tmp_path):
    path = write_protocol(episodes=200)
    p = load_protocol(path)
    alone_home = tmp_path / "alone-home"
    backbone_for(p, settings(alone_home, tmp_path), pretrain_if_missing=True)
    alone = {n: run_method(p, "protonet", settings(alone_home, tmp_path / f"alone-{n}"), n_episodes=n) for n in (200, 120)}

    home = tmp_path / "home"  # pretrained, no features yet: the runs race to embed the test videos
    shutil.copytree(alone_home / "backbones", home / "backbones")
    results = tmp_path / "results"
    episodes = (200, 120, 200)  # at once: two runs of other fingerprints, and a pair of identical runs
    procs = [
        subprocess.Popen(
            [sys.executable, str(BENCH), "run", "--protocol", str(path), "--method", "protonet", "--episodes", str(n),
             "--home", str(home), "--results", str(results), "--device", "cpu", "--quiet"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for n in episodes
    ]
    outputs = [proc.communicate(timeout=300) for proc in procs]
    for proc, (_, err) in zip(procs, outputs):
        assert proc.returncode == 0, err[-3000:]
    assert sum("embedded" in err for _, err in outputs) == 1, "one process embeds the test videos; the others wait and find them"

    folder = results / "tiny-5w1s" / "protonet"
    assert {d.name for d in (folder / "runs").iterdir()} == {alone[n]["run_fingerprint"] for n in (200, 120)}, "both results kept"
    for n in (200, 120):
        mine = folder / "runs" / alone[n]["run_fingerprint"]
        assert (mine / "episodes.jsonl").read_bytes() == Path(alone[n]["records_path"]).read_bytes()
        assert load_run(mine).summary["records_sha256"] == alone[n]["records_sha256"]
    latest = load_run(folder)  # the top-level pair: one whole run, the last to finish
    assert latest.summary["run_fingerprint"] in {alone[n]["run_fingerprint"] for n in (200, 120)}
    assert (folder / "episodes.jsonl").read_bytes() == (folder / "runs" / latest.summary["run_fingerprint"] / "episodes.jsonl").read_bytes()
    assert leaderboard.build(results)["measured"][0]["records_verified"] is True
    assert not leftovers(results, home)

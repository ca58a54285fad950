"""Threads follow the machine's load, and no result depends on how many there were.

`harness.threads` runs slices of episodes (blocks of videos) side by side in lanes of one intra-op thread each.
That is only allowed because no result depends on the lanes: these tests pin it for every head, at sizes where
kernels would split their work (C = 512)."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time

import pytest
import torch

import harness.threads as threads
import methods
from harness.evaluate import embed_pool

SHAPES = {"protonet": (512, 4, 1, 1), "otam": (512, 8, 1, 1), "trx": (512, 8, 1, 1), "staf": (512, 1, 3, 3)}


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    saved = dict(threads._state)
    yield
    torch.set_num_threads(before)
    threads._state.update(saved)


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_embeddings_and_records_are_the_same_bits_whatever_the_lanes(name, restore_threads, monkeypatch):
    from harness.episodes import EpisodeSet
    from harness.evaluate import evaluate
    from harness.perf import _fake_index

    torch.manual_seed(0)
    shape = SHAPES[name]
    head = methods.create(name, context={"feature_shape": shape, "num_train_classes": 8}).eval()
    index = _fake_index(150, 10)
    maps = torch.randn(len(index), *shape)  # three blocks of embedding, the last padded
    episodes = EpisodeSet(index, 5, 2, 2, 120, 0)
    seen = []
    real_embed = head.embed
    monkeypatch.setattr(head, "embed", lambda x: (seen.append(torch.get_num_threads()), real_embed(x))[1])
    results = []
    for lanes in ("1", "2", "3"):
        monkeypatch.setenv("FSV_THREADS", lanes)
        reps = embed_pool(head, maps, torch.device("cpu"))
        results.append((reps, evaluate(head, reps, episodes, 50)))
    assert set(seen) == {1}, "a lane computes with one intra-op thread"
    for reps, records in results[1:]:
        assert torch.equal(reps, results[0][0]), f"{name}: embeddings depend on the lanes"
        assert records == results[0][1], f"{name}: records depend on the lanes"


def test_lanes_run_every_item_once_side_by_side(restore_threads, monkeypatch):
    monkeypatch.setenv("FSV_THREADS", "3")
    names = []
    out = threads.run_in_lanes(lambda i: (names.append(threading.current_thread().name), time.sleep(0.001), i * i)[2], range(60))
    assert out == [i * i for i in range(60)]
    assert len(set(names)) == 3, "three lanes took items"
    assert threads.policy()["lanes"] == 3 and threads.policy()["lanes_set_by"] == "FSV_THREADS"


def test_an_error_in_a_lane_reaches_the_caller(restore_threads, monkeypatch):
    monkeypatch.setenv("FSV_THREADS", "2")

    def work(i):
        if i == 7:
            raise ValueError("item 7")
        return i

    with pytest.raises(ValueError, match="item 7"):
        threads.run_in_lanes(work, range(20))


def test_intra_op_threads_come_back_after_the_lanes(restore_threads):
    torch.set_num_threads(2)
    threads.run_in_lanes(lambda i: torch.ones(3).sum(), range(4))
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5", "", "100000"])
def test_a_bad_fsv_threads_is_refused_by_name(value):
    env = {**os.environ, "FSV_THREADS": value}
    done = subprocess.run([sys.executable, "bench.py", "list"], env=env, capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "FSV_THREADS" in done.stderr and "fix:" in done.stderr


def test_perf_scores_the_heads_again_under_a_load_and_ends_it(tmp_path, capsys):
    from harness.perf import cmd_perf

    out = tmp_path / "perf.json"
    args = argparse.Namespace(home=str(tmp_path / "home"), out=str(out), quick=False, episodes=None, device="cpu", workers=0, load=1)
    assert cmd_perf(args, size="tiny") == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["threads"]["lanes"] >= 1 and result["threads"]["threads_per_lane"] == 1
    assert result["heads"]["load"] == 1
    for name, h in result["heads"]["heads"].items():
        loaded = h["loaded"]
        assert loaded["predictions_identical"] and loaded["batched_eps"] > 0 and loaded["single_eps"] > 0
        assert len(loaded["rounds"]) == 2  # the tiny size's rounds; the reported ratio is one of theirs (the median)
        assert loaded["slowdown"] in [r["slowdown"] for r in loaded["rounds"]]
        assert f"heads {name} under load 1: batched vs one at a time" in printed
    children = subprocess.run(["pgrep", "-P", str(os.getpid())], capture_output=True, text=True).stdout.split()
    assert children == [], "the competing load outlived perf"

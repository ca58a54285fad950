"""Performance: batched head scoring against one episode at a time (pytest-benchmark; timed only with
--benchmark-enable), and the `perf` command at a tiny size."""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import methods
from harness.episodes import EpisodeSet
from harness.evaluate import embed_pool, evaluate
from harness.perf import LOADER_ALONE, _fake_index, cmd_perf

# tiny stand-ins for the real feature shapes (C = 2048 there)
TINY_SHAPES = {"protonet": (32, 1, 1, 1), "otam": (32, 4, 1, 1), "trx": (32, 4, 1, 1), "staf": (32, 1, 3, 3)}
N_EPISODES = 20
RATIO_LINE = re.compile(r"^[a-z -]+: [0-9.]+x$")


@pytest.fixture(scope="module")
def pools():
    """(head, embedded pool, episodes) per method: random features of 60 videos in 10 classes."""
    index = _fake_index(60)
    episodes = EpisodeSet(index, 5, 1, 1, N_EPISODES, 0)
    out = {}
    for name, shape in TINY_SHAPES.items():
        torch.manual_seed(0)
        head = methods.create(name, context={"feature_shape": shape, "num_train_classes": 8})
        out[name] = (head, embed_pool(head, torch.randn(len(index), *shape), torch.device("cpu")), episodes)
    return out


def _predictions(records):
    return np.array([r["predictions"] for r in records])


@pytest.mark.parametrize("name", sorted(TINY_SHAPES))
def test_bench_heads_batched(benchmark, pools, name):
    head, reps, episodes = pools[name]
    batched = benchmark(evaluate, head, reps, episodes, N_EPISODES)
    single = evaluate(head, reps, episodes, 1)
    assert np.array_equal(_predictions(batched), _predictions(single))


@pytest.mark.parametrize("name", sorted(TINY_SHAPES))
def test_bench_heads_one_at_a_time(benchmark, pools, name):
    head, reps, episodes = pools[name]
    single = benchmark(evaluate, head, reps, episodes, 1)
    batched = evaluate(head, reps, episodes, N_EPISODES)
    assert np.array_equal(_predictions(single), _predictions(batched))


def test_cmd_perf_tiny(tmp_path, capsys):
    out = tmp_path / "perf.json"
    args = argparse.Namespace(home=str(tmp_path / "home"), out=str(out), quick=False, episodes=None, device="cpu", workers=0)
    assert cmd_perf(args, size="tiny") == 0
    lines = capsys.readouterr().out.splitlines()
    ratios = [line for line in lines if RATIO_LINE.match(line)]
    names = [line.split(":")[0] for line in ratios]
    assert names == ["end-to-end", "heads protonet", "heads otam", "heads trx", "heads staf", "extraction with workers"]
    result = json.loads(out.read_text())
    assert result["ratios"] == ratios
    e2e = result["end_to_end"]
    assert e2e["predictions_identical"] and e2e["per_episode"]["extrapolated"]
    assert len(e2e["rounds"]) == 2 and e2e["ratio_range"][0] <= e2e["ratio"] <= e2e["ratio_range"][1]
    assert all(r["store_write_s"] > 0 for r in e2e["rounds"])  # each round's store writes: the disk's state shows
    assert e2e["target_holds"] is None  # tiny sizes: the 50x target does not apply
    assert e2e["disk_before"]["file_creation_ms"] > 0 and e2e["disk_before"]["waited_for_the_disk_s"] < 1  # tiny: no wait, one probe
    assert set(result["machine"]) == {"end_to_end", "heads", "extraction"}
    assert all(m["cores_own"] > 0 for m in result["machine"].values())
    assert all(h["predictions_identical"] for h in result["heads"]["heads"].values())
    assert result["heads"]["target_holds"] is None  # tiny feature sizes: the 60 s target does not apply
    alone = [r for r in result["extraction"]["runs"] if r["backbone"] == LOADER_ALONE]  # at the real clip size
    assert [r["workers"] for r in alone] == [0] and alone[0]["clip"].startswith("16 x 224 x 224") and alone[0]["clips_per_s"] > 0


@pytest.mark.parametrize("name", sorted(TINY_SHAPES))
def test_gathering_in_small_slices_changes_no_record(pools, name, monkeypatch):
    import harness.evaluate as evaluate_module

    head, reps, episodes = pools[name]
    whole = evaluate(head, reps, episodes, N_EPISODES)
    monkeypatch.setattr(evaluate_module, "GATHER_BYTES", 1)  # one block of episodes per call of the head
    assert evaluate(head, reps, episodes, N_EPISODES) == whole


@pytest.mark.skipif(not Path("/proc/stat").is_file(), reason="needs /proc/stat (Linux)")
def test_machine_during_counts_a_busy_process_outside_perf_as_other_load():
    import subprocess
    import sys
    import time

    from harness.perf import machine_during

    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)  # let it start
        with machine_during(record := {}):
            time.sleep(1.5)  # this process idles
    finally:
        spinner.kill()
        spinner.wait()
    assert record["cores_own"] < 0.2
    assert record["cores_other"] >= 0.3  # the spinner: about one core, unless the machine is very busy


def test_every_end_to_end_round_fingerprints_its_videos_as_a_first_run(tmp_path, monkeypatch):
    """A later round must not be served the fingerprints of the first: it would time less work than a run does."""
    import harness.data.fingerprint as fingerprint
    import harness.data.loader as loader
    import harness.features as features
    from harness.perf import SIZES, bench_end_to_end

    read, looked_up = [], []
    real = fingerprint.fingerprint_of_read  # a new store: each video fingerprinted from the bytes it is embedded from
    monkeypatch.setattr(loader, "fingerprint_of_read", lambda video, *rest: read.append(video.key) or real(video, *rest))
    real_lookup = features.video_fingerprint  # a lookup of an entry: none in a new store
    monkeypatch.setattr(features, "video_fingerprint", lambda video, *rest: looked_up.append(video.key) or real_lookup(video, *rest))
    result = bench_end_to_end(SIZES["tiny"], torch.device("cpu"), tmp_path, 0, lambda m: None)
    assert len(result["rounds"]) == 2
    assert len(read) == 2 * result["pool_videos"] and len(set(read)) == result["pool_videos"]
    assert looked_up == [] and result["harness"]["fingerprint_s"] > 0


def test_the_end_to_end_waits_for_a_busy_disk_and_says_so(tmp_path, monkeypatch):
    """File creation slow after earlier work (many deletions) would time the disk's past: perf waits until several
    probes in a row are quick, and records it."""
    import harness.perf as perf

    assert 0 < perf.file_creation_ms(tmp_path, 8)
    assert len(list(tmp_path.iterdir())) == 1 and len(list(tmp_path.rglob("*.npy"))) == 8  # left in place: deleting them would slow the next files
    probes, slept, said = iter([0.9, 0.06, 0.8, 0.06, 0.06, 0.06]), [], []
    monkeypatch.setattr(perf, "file_creation_ms", lambda folder, n: next(probes))
    monkeypatch.setattr(perf.time, "sleep", slept.append)
    record = {}
    perf.wait_for_a_quiet_disk(tmp_path, 8, record, said.append, 60.0)
    assert len(slept) == 5 and record["file_creation_ms"] == 0.06 and "waited" in said[-1]  # one quick probe between slow ones is not enough
    quiet = iter([0.06] * 3)
    monkeypatch.setattr(perf, "file_creation_ms", lambda folder, n: next(quiet))
    perf.wait_for_a_quiet_disk(tmp_path, 8, record := {}, said.append, 60.0)
    assert len(slept) == 7 and len(said) == 1  # a quiet disk: three probes, nothing to say
    monkeypatch.setattr(perf, "file_creation_ms", lambda folder, n: 0.9)
    perf.wait_for_a_quiet_disk(tmp_path, 8, record := {}, said.append, 0.0)
    assert record["file_creation_ms"] == 0.9 and "time a busy disk" in said[-1]

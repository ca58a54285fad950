"""`bench.py calibrate` on the tiny synthetic benchmark: disjoint pools, the table's arithmetic from the pools'
own summaries, a free second run, and clean errors for requests it cannot serve.

Random tiny3d weights (seeded) are passed in, so nothing is pretrained; 3 pools per level of 6 classes x 7
videos and 20 episodes each: the accuracies mean nothing, the bookkeeping is what is tested."""
from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TINY, TINY_PROTOCOL
from harness import calibrate as cal
from harness.backbones import create_backbone
from harness.cli import main
from harness.data import synthetic
from harness.uncertainty import LEVELS

POOLS, EPISODES = 3, 20


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_root):
    """(argv of one calibration, its data home, its JSON report), run once for the module."""
    tmp = tmp_path_factory.mktemp("calibrate")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        state = create_backbone("tiny3d").state_dict()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    (tmp / "tiny3d.pt").write_bytes(buffer.getvalue())
    protocol = tmp / "tiny-5w1s.yaml"
    protocol.write_text(TINY_PROTOCOL.format(name="tiny-5w1s", root=tiny_root, shot=1, episodes=200))
    home = tmp / "home"
    argv = ["calibrate", "--home", str(home), "--quiet", "--protocol", str(protocol), "--set", f"backbone.weights={tmp / 'tiny3d.pt'}",
            "--method", "protonet", "--method", "otam", "--pools", str(POOLS), "--episodes", str(EPISODES)]
    out = tmp / "report.json"
    assert main([*argv, "--out", str(out)]) == 0
    return {"argv": argv, "home": home, "report": json.loads(out.read_text()), "tmp": tmp, "protocol": protocol}


def _videos(folder: Path, listing: Path) -> dict[str, str]:
    """{'class/video': SHA-256 of its frames' bytes} of the videos a list file names."""
    out = {}
    for name in listing.read_text().split():
        h = hashlib.sha256()
        for frame in sorted((folder / name).iterdir()):
            h.update(frame.read_bytes())
        out[name] = h.hexdigest()
    return out


def test_pools_are_disjoint_and_drawn_as_asked(setup, tiny_root):
    report = setup["report"]
    split = json.loads((tiny_root / synthetic.METADATA_NAME).read_text())["classes"]
    seen = _videos(tiny_root, tiny_root / "testlist.txt")  # the benchmark's own test videos
    contents = set(seen.values())
    assert len(contents) == len(seen)
    for level in cal.POOL_LEVELS:
        pools = report["pool_sets"][level]
        assert [p["pool"] for p in pools] == list(range(POOLS))
        for p in pools:
            root = Path(p["root"])
            assert root.parent == setup["home"] / "calibration" / "pools"
            videos = _videos(root, root / cal.LIST_FILE)
            assert len(videos) == len(p["classes"]) * TINY.videos_per_class == p["n_videos"]
            assert sorted({v.split("/")[0] for v in videos}) == p["classes"]
            assert not set(videos) & set(seen), "a video name is shared between pools"
            assert not set(videos.values()) & contents, "a video's frames are shared between pools"
            seen.update(videos)
            contents.update(videos.values())
            if level == "videos":
                assert p["classes"] == split["test"]
            else:
                assert len(p["classes"]) == TINY.n_test
                assert not set(p["classes"]) & (set(split["train"]) | set(split["val"]))
                assert all(synthetic.reverse_class(c) in p["classes"] for c in p["classes"]), "classes come in reversed pairs"
        if level == "classes":  # the tiny benchmark leaves enough pairs for pools without a shared class
            classes = [c for p in pools for c in p["classes"]]
            assert len(classes) == len(set(classes))


def test_the_table_is_the_arithmetic_of_the_pools_summaries(setup):
    report = setup["report"]
    runs = report["runs"]
    assert len(runs) == 2 * POOLS * 2  # levels x pools x methods
    assert len(report["rows"]) == 2 * len(LEVELS) * 2  # pool levels x intervals x methods
    seeds = {}
    for row in report["rows"]:
        summaries = []
        for number in range(POOLS):
            (run,) = [r for r in runs if (r["pools"], r["method"], r["pool"]) == (row["pools"], row["method"], number)]
            summary = json.loads(Path(run["summary"]).read_text())
            assert summary["n_episodes"] == EPISODES and summary["method"] == row["method"]
            assert summary["protocol_content"]["seed"] == run["episode_seed"]
            seeds[(row["pools"], number)] = run["episode_seed"]
            summaries.append(summary)
        accuracy = [s["accuracy"] for s in summaries]
        truth = sum(accuracy) / POOLS
        spread = 1.96 * float(np.std(accuracy, ddof=1))
        lows = [s["intervals"][row["interval"]]["low"] for s in summaries]
        highs = [s["intervals"][row["interval"]]["high"] for s in summaries]
        halves = [(h - lo) / 2 for lo, h in zip(lows, highs)]
        covered = sum(lo <= truth <= h for lo, h in zip(lows, highs))
        others = [(sum(accuracy) - a) / (POOLS - 1) for a in accuracy]
        assert row["truth"] == pytest.approx(truth)
        assert row["observed_spread"] == pytest.approx(spread)
        assert row["mean_half_width"] == pytest.approx(sum(halves) / POOLS)
        assert row["width_ratio"] == pytest.approx(sum(halves) / POOLS / spread)
        assert (row["covered"], row["n_pools"]) == (covered, POOLS)
        assert row["covered_leave_one_out"] == sum(lo <= t <= h for lo, h, t in zip(lows, highs, others))
        if row["interval"] == row["pools"]:
            assert row["goal_met"] == (0.85 <= covered / POOLS and sum(halves) / POOLS <= 2 * spread)
        else:
            assert "goal_met" not in row
    assert len(set(seeds.values())) == len(seeds), "every pool has its own episodes"


def test_a_second_run_recomputes_nothing(setup, monkeypatch, capsys):
    def refuse(*args, **kwargs):
        raise AssertionError("a second calibration generated, embedded or scored something")

    monkeypatch.setattr(synthetic, "_encode_video", refuse)
    monkeypatch.setattr(synthetic, "_generate_in_parallel", refuse)
    monkeypatch.setattr("harness.features.FeatureStore.extract", refuse)
    monkeypatch.setattr("harness.pipeline.evaluate", refuse)
    out = setup["tmp"] / "again.json"
    capsys.readouterr()
    assert main([*setup["argv"], "--out", str(out)]) == 0
    again = json.loads(out.read_text())
    assert again["rows"] == setup["report"]["rows"]
    assert again["videos_generated"] == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].split()[:2] == ["pools", "interval"] and "coverage" in printed.splitlines()[0]  # the table is printed
    for row in again["rows"]:
        assert f"{row['covered']}/{POOLS}" in printed


def _error(capsys, argv: list[str]) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "\n  fix: " in err and "Traceback" not in err, err
    return err


def test_bad_requests_are_clean_errors(setup, capsys, tmp_path):
    argv = setup["argv"]
    at = argv.index("--pools")
    assert "--pools" in _error(capsys, [*argv[:at], "--pools", "1", *argv[at + 2:]])
    assert "unknown method 'nosuch'" in _error(capsys, [*argv, "--method", "nosuch"])
    assert "--videos-per-class" in _error(capsys, [*argv, "--videos-per-class", "1"])
    err = _error(capsys, [*argv, "--method", "trx"])  # a trained head without its checkpoint, as `run` says
    assert "no trained checkpoint" in err and "fsv-bench train" in err
    other = tmp_path / "hmdb.yaml"
    other.write_text(setup["protocol"].read_text().replace("name: synthetic", "name: hmdb51"))
    at = argv.index("--protocol")
    err = _error(capsys, [*argv[:at], "--protocol", str(other), *argv[at + 2:]])
    assert "only the synthetic benchmark" in err and "dataset.name" in err

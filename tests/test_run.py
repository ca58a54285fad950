"""End to end on the tiny synthetic benchmark: pretrain, embed once, evaluate, write, resume."""
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from harness.cli import main
from harness.pipeline import run_method
from harness.results import RunFolder
from conftest import settings


def test_records_are_byte_identical_across_runs_and_batch_sizes(protocol, home, tmp_path):
    a = run_method(protocol, "protonet", settings(home, tmp_path / "a", batch_episodes=1000))
    b = run_method(protocol, "protonet", settings(home, tmp_path / "b", batch_episodes=7))
    assert a["records_sha256"] == b["records_sha256"]
    assert (tmp_path / "a/tiny-5w1s/protonet/episodes.jsonl").read_bytes() == (tmp_path / "b/tiny-5w1s/protonet/episodes.jsonl").read_bytes()
    assert a["episode_set_sha256"] == b["episode_set_sha256"]
    assert b["videos_embedded_this_run"] == 0, "features must be computed once per video, then reused"


def test_summary_matches_its_records(protocol, home, tmp_path):
    s = run_method(protocol, "protonet", settings(home, tmp_path))
    records = [json.loads(line) for line in (tmp_path / "tiny-5w1s/protonet/episodes.jsonl").read_text().splitlines()]
    assert [r["episode"] for r in records] == list(range(200))
    per_episode = 100 * np.array([np.mean(r["correct"]) for r in records])
    assert s["accuracy"] == pytest.approx(per_episode.mean())
    assert s["ci95"] == pytest.approx(1.96 * per_episode.std() / np.sqrt(200))
    lo, hi = sps.t.interval(0.95, 199, loc=per_episode.mean(), scale=sps.sem(per_episode))
    assert s["t_interval95"] == pytest.approx([lo, hi])
    for key in ("method", "protocol", "protocol_sha256", "episode_set_sha256", "n_episodes", "versions", "device", "timings"):
        assert key in json.loads((tmp_path / "tiny-5w1s/protonet/summary.json").read_text())
    for r in records:
        assert len(set(r["support"] + r["query"])) == len(r["support"] + r["query"])
        assert r["correct"] == [int(p == t) for p, t in zip(r["predictions"], r["query_labels"])]
        assert not any("/tmp" in v or v.startswith("/") for v in r["support"] + r["query"])


def test_a_stopped_run_resumes_from_its_finished_chunks(protocol, home, tmp_path, monkeypatch):
    whole = run_method(protocol, "protonet", settings(home, tmp_path / "whole", batch_episodes=50))
    expected = (tmp_path / "whole/tiny-5w1s/protonet/episodes.jsonl").read_bytes()

    # stop the run after two of its four chunks are on disk, as a kill would
    written = []
    real_write = RunFolder.write_chunk

    def write_then_stop(self, start, records):
        real_write(self, start, records)
        written.append(start)
        if len(written) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(RunFolder, "write_chunk", write_then_stop)
    with pytest.raises(KeyboardInterrupt):
        run_method(protocol, "protonet", settings(home, tmp_path / "killed", batch_episodes=50))
    monkeypatch.setattr(RunFolder, "write_chunk", real_write)
    folder = tmp_path / "killed/tiny-5w1s/protonet"
    assert len(list(folder.glob(".parts/*/*.jsonl"))) == 2 and not (folder / "episodes.jsonl").exists()

    resumed = run_method(protocol, "protonet", settings(home, tmp_path / "killed", batch_episodes=50))
    assert resumed["resumed_episodes"] == 100
    assert (folder / "episodes.jsonl").read_bytes() == expected
    assert resumed["records_sha256"] == whole["records_sha256"]
    assert not (folder / ".parts").exists()


def test_cli_reports_bad_input_without_traceback(write_protocol, capsys, tmp_path):
    bad = write_protocol(extra="wya: 3\n")
    assert main(["run", "--protocol", str(bad), "--method", "protonet", "--home", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "unknown field 'wya'" in err and "did you mean 'way'" in err and "Traceback" not in err
    good = write_protocol()
    assert main(["run", "--protocol", str(good), "--method", "nosuch", "--home", str(tmp_path), "--quiet"]) == 2
    assert "unknown method 'nosuch'" in capsys.readouterr().err


def test_missing_data_root_is_named(tmp_path, capsys):
    path = tmp_path / "p.yaml"
    path.write_text("name: p\ndataset: {name: hmdb51, root: /nowhere/hmdb51}\nbackbone: {name: tiny3d, weights: /nowhere/w.pt}\n")
    assert main(["run", "--protocol", str(path), "--method", "protonet", "--home", str(tmp_path), "--quiet"]) == 2
    assert "data root /nowhere/hmdb51 does not exist" in capsys.readouterr().err


def test_a_finished_run_is_not_scored_again_unless_its_records_are_damaged(protocol, home, tmp_path, monkeypatch):
    import harness.pipeline as pipeline

    first = run_method(protocol, "protonet", settings(home, tmp_path))
    calls = []
    real = pipeline.evaluate
    monkeypatch.setattr(pipeline, "evaluate", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = run_method(protocol, "protonet", settings(home, tmp_path))
    assert calls == [] and again["records_sha256"] == first["records_sha256"]

    records = tmp_path / "tiny-5w1s/protonet/episodes.jsonl"
    records.write_bytes(records.read_bytes()[:-10])  # a damaged file is never served
    repaired = run_method(protocol, "protonet", settings(home, tmp_path))
    assert calls == [1] and repaired["records_sha256"] == first["records_sha256"]
    run_method(protocol, "protonet", settings(home, tmp_path, recompute=True))
    assert calls == [1, 1]


def test_features_with_nan_are_refused_and_not_cached(protocol, home, tmp_path):
    import torch

    from harness.data.index import build_index
    from harness.errors import HarnessError
    from harness.features import FeatureStore

    index = build_index(Path(protocol.dataset.root), Path(protocol.dataset.root) / "testlist.txt", "test", 8)

    class Broken(torch.nn.Module):
        def forward(self, clips):  # [B, 3, T, H, W] -> a map with a NaN in the second clip
            out = clips.mean(dim=(3, 4), keepdim=True).clone()
            out[1:2] = float("nan")
            return out

    store = FeatureStore(tmp_path, "broken", "0" * 64, protocol.frames, code_sha256="a backbone defined in this test")
    with pytest.raises(HarnessError, match=f"NaN or Inf features for video {index.videos[1].key}"):
        store.extract(index.videos[:4], Broken(), torch.device("cpu"), batch_size=4)
    missing = store.missing(index.videos[:4])
    assert index.videos[1] in missing and index.videos[0] not in missing  # work done before it is kept


def test_bf16_features_are_cached_apart_and_close_to_fp32(protocol, home, tmp_path):
    a = run_method(protocol, "protonet", settings(home, tmp_path / "fp32"))
    b = run_method(protocol, "protonet", settings(home, tmp_path / "bf16", precision="bf16"))
    assert a["backbone"]["feature_store"] != b["backbone"]["feature_store"]
    assert b["videos_embedded_this_run"] > 0 and b["backbone"]["precision"] == "bf16"
    assert abs(a["accuracy"] - b["accuracy"]) < 5.0


def test_the_printout_shows_the_papers_interval_and_the_videos_interval_labelled(protocol, home, tmp_path, capsys):
    common = ["--home", str(home), "--results", str(tmp_path), "--device", "cpu", "--quiet", "--episodes", "40"]
    assert main(["run", "--protocol", protocol.source, "--method", "protonet", *common]) == 0
    out = " ".join(capsys.readouterr().out.split())
    summary = json.loads((tmp_path / "tiny-5w1s/protonet/summary.json").read_text())
    i = {level: f"{v['low']:.2f}–{v['high']:.2f}" for level, v in summary["intervals"].items()}
    acc, ci = f"{summary['accuracy']:.2f}", f"{summary['ci95']:.2f}"
    assert f"{acc} (videos {i['videos']}; episodes ± {ci})" in out, out  # videos first by default, the papers' ± beside it
    assert "± episodes: this pool of test videos (the papers' interval" in out and "videos: new videos of the same classes" in out
    assert f"95% intervals: videos {i['videos']} (new videos of the same classes); episodes {i['episodes']} (this pool of test videos, the papers' ±); classes {i['classes']}" in out

    assert main(["--interval", "episodes", "run", "--protocol", protocol.source, "--method", "protonet", *common]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"{acc} ± {ci} (videos {i['videos']})" in out and "Shown first: episodes" in out
    assert main(["run", "--protocol", protocol.source, "--method", "protonet", *common, "--interval", "classes"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"{acc} (classes {i['classes']}; episodes ± {ci})" in out and "classes: new classes and their new videos" in out

    assert main(["run", "--protocol", protocol.source, "--method", "protonet", *common, "--interval", "pool"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --interval: unknown interval 'pool'") and "fix: use episodes" in err and "Traceback" not in err
    assert main(["train", "--protocol", protocol.source, "--method", "trx", "--interval", "videos"]) == 2, "train shows no interval"
    assert "--interval: not used by `fsv-bench train`" in capsys.readouterr().err


def test_a_summary_from_before_intervals_is_printed_with_intervals_from_its_records(protocol, home, tmp_path, capsys):
    from harness.report import print_summaries

    summary = run_method(protocol, "protonet", settings(home, tmp_path), n_episodes=40)
    stored = summary.pop("intervals")
    print_summaries([{**summary, "schema_version": 2}])
    out = " ".join(capsys.readouterr().out.split())
    assert f"{summary['accuracy']:.2f} (videos {stored['videos']['low']:.2f}–{stored['videos']['high']:.2f}; episodes ± {summary['ci95']:.2f})" in out


def test_the_quickstart_is_told_the_interval(monkeypatch):
    import harness.quickstart

    seen = {}
    monkeypatch.setattr(harness.quickstart, "quickstart", lambda s, **kw: seen.update(kw))
    assert main(["--interval", "classes", "--episodes", "3"]) == 0
    assert seen == {"episodes": 3, "interval": "classes"}
    assert main([]) == 0 and seen["interval"] == "videos"

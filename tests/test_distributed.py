"""torchrun with 2 CPU processes gives byte-identical per-episode records to one process."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.pipeline import Settings, backbone_for
from harness.protocol import load_protocol

BENCH = Path(__file__).resolve().parents[1] / "bench.py"


@pytest.mark.slow
def test_two_processes_give_the_records_of_one(write_protocol, tmp_path):
    if shutil.which("torchrun") is None:
        pytest.skip("torchrun is not on PATH")
    path = write_protocol(episodes=300)
    home = tmp_path / "home"
    backbone_for(load_protocol(path), Settings(home=home, results=tmp_path, show_progress=False), pretrain_if_missing=True)
    common = ["run", "--protocol", str(path), "--method", "protonet", "--method", "otam", "--home", str(home), "--batch-episodes", "40", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    single = subprocess.run([sys.executable, str(BENCH), *common, "--results", str(tmp_path / "one")], env=env, capture_output=True, text=True)
    assert single.returncode == 0, single.stderr
    shutil.rmtree(home / "features")  # the two processes embed the pool again, each its share
    double = subprocess.run(
        ["torchrun", "--standalone", "--nproc_per_node", "2", str(BENCH), *common, "--results", str(tmp_path / "two")],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert double.returncode == 0, double.stderr[-3000:]
    for method in ("protonet", "otam"):
        one = (tmp_path / "one/tiny-5w1s" / method / "episodes.jsonl").read_bytes()
        two = (tmp_path / "two/tiny-5w1s" / method / "episodes.jsonl").read_bytes()
        assert one == two and len(one.splitlines()) == 300
        assert not (tmp_path / "two/tiny-5w1s" / method / ".parts").exists()
        summary = json.loads((tmp_path / "two/tiny-5w1s" / method / "summary.json").read_text())
        assert summary["processes"] == 2 and summary["resumed_episodes"] == 0, "a fresh run resumed nothing"
    assert "scored before a stop" not in double.stdout + double.stderr

"""Where the quickstart's time goes: phases counted without the phases inside them, written beside its results."""
from __future__ import annotations

import json
import time

import harness.quickstart
from harness import phases
from conftest import settings

SHORT_TRAINING = "train: {steps: 2, tasks_per_batch: 2, val_every: 2, val_episodes: 10}\n"


def test_a_phase_is_counted_without_the_phases_inside_it():
    phases.reset()
    with phases.phase("outer"):
        time.sleep(0.05)
        with phases.phase("inner"):
            time.sleep(0.1)
        with phases.phase("inner"):
            time.sleep(0.1)
    spent = phases.totals()
    assert list(spent) == ["inner", "outer"]
    assert 0.19 <= spent["inner"] < 0.4 and 0.04 <= spent["outer"] < 0.15, spent
    phases.reset()
    assert phases.totals() == {}


def test_the_quickstart_writes_where_its_time_went(write_protocol, tmp_path, monkeypatch):
    monkeypatch.setattr(harness.quickstart, "QUICKSTART_PROTOCOLS", (str(write_protocol(episodes=40, extra=SHORT_TRAINING)),))
    s = settings(tmp_path / "home")
    harness.quickstart.quickstart(s, episodes=40)
    written = json.loads((s.results / harness.quickstart.PHASES_FILE).read_text())
    spent = written["phases_s"]
    for name in ("pretraining the backbone", "embedding videos with the backbone", "training trx", "training staf", "scoring protonet", "scoring otam"):
        assert name in spent, f"no phase '{name}' in {sorted(spent)}"
    assert abs(sum(spent.values()) - written["total_s"]) < 0.05 * written["total_s"] + 0.05
    harness.quickstart.quickstart(s, episodes=40)  # warm: nothing is generated, pretrained, embedded or trained again
    warm = json.loads((s.results / harness.quickstart.PHASES_FILE).read_text())["phases_s"]
    assert not {"pretraining the backbone", "embedding videos with the backbone"} & set(warm)

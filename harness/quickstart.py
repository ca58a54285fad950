"""`fsv-bench`: the embedded benchmark end to end on a fresh machine, no downloads.

Generate the synthetic dataset if missing, pretrain the backbone if missing, embed each video once, train
every method that has parameters (selecting on val) unless its training has finished, evaluate every
registered method on synthetic-5w1s and synthetic-5w5s, print the table. A stopped quickstart resumes each
of these steps where it stopped, with the same command.
"""
from __future__ import annotations

import time

import harness.packages  # noqa: F401  (the harness's own methods/, whatever sys.path holds)
import methods
from harness import distributed, phases
from harness.files import atomic_write_json
from harness.console import log
from harness.pipeline import Settings, backbone_for, one_index_per_split, run_method
from harness.protocol import find_protocol, load_protocol
from harness.report import DEFAULT_INTERVAL, print_summaries
from harness.train import train
from methods.external import load_all

QUICKSTART_PROTOCOLS = ("synthetic-5w1s", "synthetic-5w5s")
#: where the quickstart says where its time went (<results>/quickstart-phases.json), for `fsv-bench perf --quickstart`
PHASES_FILE = "quickstart-phases.json"


def quickstart(s: Settings, episodes: int | None = None, interval: str = DEFAULT_INTERVAL) -> list[dict]:
    with one_index_per_split():  # the steps below read the same splits many times
        return _quickstart(s, episodes, interval)


def _quickstart(s: Settings, episodes: int | None, interval: str) -> list[dict]:
    started = time.perf_counter()
    phases.reset()
    protocols = [load_protocol(find_protocol(name)) for name in QUICKSTART_PROTOCOLS]
    backbone_for(protocols[0], s, pretrain_if_missing=True)
    summaries = []
    for name, problem in load_all():  # an installed plug-in that cannot be loaded is named, not fatal
        log(f"method '{name}' is left out: {problem}")
    for p in protocols:
        for name in methods.list_methods():
            if methods.get(name).trainable:  # trains, resumes a stopped training, or finds it finished
                trained = train(p, name, s)
                log(f"{name} for {p.name}: selected step {trained['selected_step']} (val {trained['selected_val_accuracy']:.2f}%)")
            summaries.append(run_method(p, name, s, n_episodes=episodes))
    print_summaries(summaries, interval=interval)
    total = time.perf_counter() - started
    spent = phases.totals()
    spent["everything else (reading videos' indexes, checking, writing results)"] = max(0.0, total - sum(spent.values()))
    log(f"quickstart finished in {total:.1f} s: " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in spent.items() if seconds >= 0.05))
    if distributed.world()[0] == 0:
        atomic_write_json(s.results / PHASES_FILE, {"total_s": round(total, 2), "phases_s": {k: round(v, 2) for k, v in spent.items()}})
    return summaries

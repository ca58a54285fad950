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
from harness.console import log
from harness.pipeline import Settings, backbone_for, run_method
from harness.protocol import find_protocol, load_protocol
from harness.report import DEFAULT_INTERVAL, print_summaries
from harness.train import train
from methods.external import load_all

QUICKSTART_PROTOCOLS = ("synthetic-5w1s", "synthetic-5w5s")


def quickstart(s: Settings, episodes: int | None = None, interval: str = DEFAULT_INTERVAL) -> list[dict]:
    started = time.perf_counter()
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
    log(f"quickstart finished in {time.perf_counter() - started:.1f} s")
    return summaries

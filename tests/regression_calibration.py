"""How often does the regression check's statistical mode cry wolf, and how often does it catch a real drop?

    python tests/regression_calibration.py               # 3-5 minutes on 2 CPU cores
    python tests/regression_calibration.py --work DIR    # keep the pretrained weights in DIR: a rerun takes a minute

On the tiny benchmark (tests/conftest.py: TINY, 5-way 1-shot, 200 episodes), protonet is evaluated on tiny3d
backbones pretrained from different seeds: each seed stands for another environment (another torch release draws
other initial weights). 12 trials, each of 3 fresh seeds (100-135), are checked against the committed baseline
tests/baselines/tiny-5w1s-protonet.json (20 replicates, seeds 0-19, recorded by `pytest --fsv-update-baselines`;
`--rebuild-baseline` pretrains those 20 here instead) by harness.regression's statistical mode (alpha 0.05,
confidence 0.9), three ways:

    unchanged   protonet as it is: a failure is a false alarm;
    damaged     DamagedProtoNet below, about 5 points lower on every backbone: a failure is a detection;
    flipped     a ProtoNet whose distance has lost its sign (it picks the farthest prototype), for information.

It also checks every seed of the trials on its own (one run per check, 36 checks) to show what a single run can
do. The numbers are deterministic for one environment; the README's regression section quotes them.
"""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from conftest import TINY, TINY_PROTOCOL  # noqa: E402
from harness.backbones import create_backbone  # noqa: E402
from harness.console import console  # noqa: E402
from harness.data.synthetic import generate  # noqa: E402
from harness.pipeline import Settings, load_index, run_method  # noqa: E402
from harness.pretrain import PRETRAIN_DEFAULTS, pretrain  # noqa: E402
from harness.protocol import load_protocol  # noqa: E402
from harness.regression import RegressionFailure, check_against_baseline, make_baseline, read_baseline, tolerance_test  # noqa: E402
from methods.protonet import ProtoNet  # noqa: E402

BASELINE = Path(__file__).resolve().parent / "baselines" / "tiny-5w1s-protonet.json"
BASELINE_SEEDS = tuple(range(20))
#: the share of queries DamagedProtoNet answers wrong: protonet is right on about 22.9% of the tiny benchmark's
#: queries, so 0.22 of them cost about 5 points
DAMAGED_SHARE = 0.22


class DamagedProtoNet(ProtoNet):
    """ProtoNet with a bug that costs about 5 points on the tiny benchmark: a fixed share of the queries is
    answered with the nearest prototype of a class OTHER than the query's own.

    ProtoNet is only about 3 points above chance there (22.9% for 5 ways), so no damage that is blind to the
    labels can remove 5 points (FlippedProtoNet, which picks the farthest prototype, removes about 3). This
    head knows the query's class from the episode layout, as nothing else may: the harness lists the queries of
    an episode in class order. Which queries are hit depends on the episode (its support set's values) and the
    query's position, not on the video, so the drop is a share of every backbone's right answers."""

    def __init__(self, share: float = DAMAGED_SHARE, metric: str = "euclidean", scale: float = 10.0):
        super().__init__(metric, scale)
        self.share = share
        self.settings = {**self.settings, "share": share}  # part of the run's identity

    def forward(self, support, support_labels, query, way):
        logits = super().forward(support, support_labels, query, way)  # [E, Q, way]
        E, Q, _ = logits.shape
        own = torch.arange(way, device=logits.device).repeat_interleave(Q // way)  # [Q] the query's class
        key = support.double().abs().sum(dim=(1, 2))  # [E] a number of the episode
        u = torch.frac(key[:, None] * 7919.0 + torch.arange(1, Q + 1, device=logits.device, dtype=torch.float64) * 0.6180339887)  # [E, Q] in [0, 1)
        hit = (u < self.share).unsqueeze(-1) & (torch.arange(way, device=logits.device) == own[:, None])  # [E, Q, way]
        return logits.masked_fill(hit, -math.inf)


class FlippedProtoNet(ProtoNet):
    """The distance has lost its sign: the head picks the FARTHEST prototype."""

    def forward(self, support, support_labels, query, way):
        return -super().forward(support, support_labels, query, way)


def tiny_data(root: Path) -> Path:
    return generate(root, TINY)


def seeded_protocol(work: Path, data: Path, seed: int, episodes: int = 200, name: str = "tiny-5w1s"):
    """(protocol, settings) of the tiny benchmark on a tiny3d backbone pretrained from `seed` (initial weights
    and data order, as the harness's own pretraining does from seed 0: seed 0 gives its very weights). The
    weights are kept in <work>/weights; each seed's results go to a folder of their own."""
    weights = work / "weights" / f"tiny3d-seed{seed}.pt"
    folder = work / f"seed{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(TINY_PROTOCOL.format(name=name, root=data, shot=1, episodes=episodes).replace("backbone: {name: tiny3d}", f"backbone: {{name: tiny3d, weights: {weights}}}"))
    p = load_protocol(path)
    s = Settings(home=work / "home", results=folder / "results", show_progress=False)
    if not weights.is_file():
        weights.parent.mkdir(parents=True, exist_ok=True)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            fresh = create_backbone("tiny3d")
            pretrain(fresh, load_index(p, s, "train"), p.frames, weights, settings={**PRETRAIN_DEFAULTS, "seed": seed}, log=lambda _: None)
    return p, s


def runs_for(work: Path, data: Path, seed: int, episodes: int, heads: dict) -> dict:
    p, s = seeded_protocol(work, data, seed, episodes)
    return {name: run_method(p, "protonet" if head is None else f"protonet-{name}", s, head=head) for name, head in heads.items()}


def verdict(baseline: dict, runs: dict, alpha: float) -> bool:
    """Whether a statistical check of `runs` against `baseline` fails."""
    try:
        check_against_baseline(baseline, runs, mode="statistical", alpha=alpha)
        return False
    except RegressionFailure:
        return True


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=None, help="folder for data, weights and runs (kept; default: a temporary folder)")
    ap.add_argument("--baseline", type=Path, default=BASELINE, help=f"the baseline to check against (default: {BASELINE.relative_to(BASELINE.parents[2])})")
    ap.add_argument("--rebuild-baseline", action="store_true", help=f"pretrain the baseline's seeds {BASELINE_SEEDS[0]}-{BASELINE_SEEDS[-1]} here instead")
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--per-trial", type=int, default=3, help="replicates (seeds) per checked run (default 3)")
    ap.add_argument("--first-seed", type=int, default=100, help="the trials use seeds from here on (default 100)")
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--verbose", action="store_true", help="show the harness's own progress lines (stderr)")
    args = ap.parse_args(argv)
    console.quiet = not args.verbose
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        data = tiny_data(work / "data" / "tiny-synthetic")
        heads = {"unchanged": None, "damaged": DamagedProtoNet(), "flipped": FlippedProtoNet()}
        if args.rebuild_baseline:
            baseline = make_baseline("calibration", {f"seed {k}": runs_for(work, data, k, 200, {"unchanged": None})["unchanged"] for k in BASELINE_SEEDS})
            where = f"pretrained here, seeds {BASELINE_SEEDS[0]}-{BASELINE_SEEDS[-1]}"
        else:
            baseline = read_baseline(args.baseline)
            where = str(args.baseline)
        episodes = baseline["n_episodes"]
        rep = baseline["replicates"]
        k = len(rep["runs"])
        print(f"baseline ({where}): protonet on the tiny benchmark, {episodes} episodes, {k} replicates: "
              + ", ".join(f"{r['accuracy']:.1f}" for r in rep["runs"]) + f"; mean {rep['mean']:.2f}, sd {rep['sd']:.2f}")
        bound = {m: tolerance_test([r["accuracy"] for r in rep["runs"]], [0.0] * m, args.alpha)["bound"] for m in (1, args.per_trial)}
        print(f"statistical mode, alpha {args.alpha:g}, confidence 0.9: a run of {args.per_trial} replicates fails when their mean is below {bound[args.per_trial]:.2f}% "
              f"(a single run: below {bound[1]:.2f}%)\n")
        print(f"{'trial':>5}  {'seeds':<12}" + "".join(f" | {name + ': accuracy per seed (mean)':<34} {'':<4}" for name in heads))

        counts = {name: 0 for name in heads}
        single = {name: 0 for name in heads}
        drops, n_single = [], 0
        for t in range(args.trials):
            seeds = [args.first_seed + t * args.per_trial + i for i in range(args.per_trial)]
            per_seed = [runs_for(work, data, k, episodes, heads) for k in seeds]
            line = f"{t + 1:>5}  {','.join(map(str, seeds)):<12}"
            means = {}
            for name in heads:
                failed = verdict(baseline, {f"seed {k}": r[name] for k, r in zip(seeds, per_seed)}, args.alpha)
                counts[name] += failed
                accs = [r[name]["accuracy"] for r in per_seed]
                means[name] = sum(accs) / len(accs)
                cell = " ".join(f"{a:.1f}" for a in accs) + f" ({means[name]:.2f})"
                line += f" | {cell:<34} {'FAIL' if failed else 'pass':<4}"
                single[name] += sum(verdict(baseline, {f"seed {k}": r[name]}, args.alpha) for k, r in zip(seeds, per_seed))
            n_single += len(seeds)
            drops.append(means["unchanged"] - means["damaged"])
            print(line, flush=True)

        n = args.trials
        print(f"\nfalse alarms (unchanged protonet fails): {counts['unchanged']}/{n}")
        print(f"detections (damaged protonet fails; its drop: mean {sum(drops) / n:.2f} points, {min(drops):.2f} to {max(drops):.2f} per trial): {counts['damaged']}/{n}")
        print(f"sign-flipped protonet fails: {counts['flipped']}/{n}")
        print(f"single runs (1 seed per check, {n_single} checks): false alarms {single['unchanged']}/{n_single}, detections {single['damaged']}/{n_single}, "
              f"sign-flipped fails {single['flipped']}/{n_single}")
        print(f"took {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`bench.py calibrate`: does each level's 95% interval cover what it claims? Measured on fresh pools.

Every summary states three intervals (harness.uncertainty): `episodes` (this pool of test videos), `videos`
(new videos of the same test classes) and `classes` (new test classes and their videos). Only the synthetic
benchmark can draw the new videos and new classes those claims are about, so calibration runs on it:

    videos pools   K pools of new videos of the protocol's own test classes: the same generator and settings,
                   video indices the benchmark never used (so other random streams), as many videos per class
                   as the protocol's split has (`--videos-per-class` for fewer);
    classes pools  K pools of new test classes, each a draw of as many classes as the test split has, in
                   reversed pairs as the generator's split is made, from the pairs that share no class with
                   the train and val splits (so the backbone and the heads never saw them), with new videos.

Each pool is scored like a test split (`harness.pipeline.run_method`: the protocol's backbone weights, feature
store, trained checkpoints, way, shot and queries; its own episode seed; `--episodes` to shorten), and every
method x protocol x pool gives its three intervals. Per pool level, the truth is the mean accuracy over the K
pools; an interval covers when low <= truth <= high. The table gives, per pool level x interval x method x
protocol: the nominal level (95%), the observed spread (1.96 x the sample standard deviation of the K pool
accuracies: the half-width an exact interval would have), the mean half-width of the interval, their ratio,
and the coverage (k of K; and against the mean of the other K - 1 pools, which leaves the pool out of its own
truth). The goal: the videos interval on videos pools and the classes interval on classes pools
cover in 85-100% of pools and are at most twice the observed spread.

Pools live in `<home>/calibration/pools/<level>-<number>-<key>/` (the key: SHA-256 of everything that decides
their bytes), each a data root with its list file and a `synthetic.json` written last; each pool's runs in
`<home>/calibration/results/<pool folder>/<protocol>/<method>/`, apart from `--results` (they are not test
results of the protocol). Features go to the protocol's feature store. A second run generates, embeds and
scores nothing; a larger `--pools` adds only the new pools.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import harness.packages  # noqa: F401  (the harness's own methods/, whatever sys.path holds)
import methods
from harness.checkpoints import checkpoint_dir
from harness.console import log, progress_bar
from harness.data import synthetic
from harness.errors import HarnessError
from harness.files import atomic_write_json, atomic_write_text
from harness.locks import file_lock
from harness.protocol import Protocol, canonical_json, dataset_root, find_protocol, load_protocol
from harness.uncertainty import LEVELS

POOL_LEVELS = ("videos", "classes")
NOMINAL = 0.95
Z = 1.96  # the observed spread is Z x the sample std of the pool accuracies: an exact 95% interval's half-width
COVERAGE_GOAL = (0.85, 1.0)
WIDTH_GOAL = 2.0  # mean half-width at most this many times the observed spread
LIST_FILE = "pool.txt"
POOL_GENERATOR = "harness.calibrate"
SCHEMA_VERSION = 1
_CLASS_STREAM = 0xCA1C  # keeps the class draws' random stream apart from the split's and the videos'
_EPISODE_STREAM = 0xE915


# -------------------------------------------------------------------------------------------------- pools


@dataclass(frozen=True)
class Pool:
    """One pool: the videos `first_video .. first_video + videos_per_class - 1` of each class, rendered by the
    synthetic generator with the base benchmark's seed, frame count and size."""

    level: str
    number: int  # 0-based
    classes: tuple[str, ...]  # sorted
    first_video: int
    videos_per_class: int
    seed: int
    frames: int
    size: int

    def content(self) -> dict:
        """What decides the pool's bytes."""
        return {"generator_version": synthetic.GENERATOR_VERSION, "seed": self.seed, "frames": self.frames, "size": self.size,
                "classes": list(self.classes), "first_video": self.first_video, "videos_per_class": self.videos_per_class}

    @property
    def key(self) -> str:
        return hashlib.sha256(canonical_json(self.content()).encode()).hexdigest()[:16]

    @property
    def folder_name(self) -> str:
        return f"{self.level}-{self.number:03d}-{self.key}"

    def record(self) -> dict:
        return {"level": self.level, "pool": self.number, "key": self.key, **self.content()}

    @property
    def video_indices(self) -> range:
        return range(self.first_video, self.first_video + self.videos_per_class)

    def render_spec(self, base: synthetic.SyntheticSpec) -> synthetic.SyntheticSpec:
        # a video's pixels depend on (seed, class, video index), frames and size; videos_per_class only sets
        # the width of the number in its name
        return dataclasses.replace(base, videos_per_class=self.videos_per_class)

    def video_names(self, base: synthetic.SyntheticSpec) -> list[str]:
        """'class/video' of every video, sorted (the pool's list file)."""
        spec = self.render_spec(base)
        return sorted(f"{c}/{synthetic.video_name(c, i, spec.videos_per_class)}" for c in self.classes for i in self.video_indices)


def pools_root(home: Path) -> Path:
    return home / "calibration" / "pools"


def results_root(home: Path) -> Path:
    return home / "calibration" / "results"


def _video_block(level: str, number: int) -> int:
    """The pool's block of video indices after the benchmark's own: videos pools take the even blocks, classes
    pools the odd ones, so no two pools of a calibration share a video, whatever --pools is."""
    return 2 * number + POOL_LEVELS.index(level)


def eligible_pairs(meta: dict) -> list[tuple[str, str]]:
    """The generator's reversed pairs that share no class with the benchmark's train and val splits."""
    used = set(meta["classes"]["train"]) | set(meta["classes"]["val"])
    return [pair for pair in synthetic._reversed_pairs() if not used & set(pair)]


def class_set(meta: dict, n_classes: int, number: int) -> tuple[str, ...]:
    """The classes of classes pool `number`: n_classes / 2 reversed pairs. The eligible pairs are shuffled once
    per sweep (seeded by the benchmark's seed and the sweep) and dealt out in turn, so the pools of one sweep
    (as many as the eligible pairs allow) share no class; the next sweep shuffles again."""
    pairs = eligible_pairs(meta)
    n_pairs = n_classes // 2
    per_sweep = len(pairs) // n_pairs if n_pairs else 0
    if n_classes % 2 or per_sweep == 0:
        raise HarnessError(
            f"cannot draw new sets of {n_classes} test classes in reversed pairs from the {len(pairs)} pairs that share no class with the train and val splits",
            fix="calibrate a protocol whose test split has an even number of classes (the generator's always has), or use --level videos",
        )
    sweep, slot = divmod(number, per_sweep)
    order = np.random.default_rng([int(meta["spec"]["seed"]), _CLASS_STREAM, sweep]).permutation(len(pairs))
    chosen = [pairs[i] for i in order[slot * n_pairs : (slot + 1) * n_pairs]]
    return tuple(sorted(c for pair in chosen for c in pair))


def plan_pools(meta: dict, test_classes: list[str], level: str, count: int, videos_per_class: int) -> list[Pool]:
    spec = meta["spec"]
    base_videos = int(spec["videos_per_class"])
    pools = []
    for number in range(count):
        classes = tuple(sorted(test_classes)) if level == "videos" else class_set(meta, len(test_classes), number)
        first = base_videos + _video_block(level, number) * videos_per_class
        pools.append(Pool(level, number, classes, first, videos_per_class, int(spec["seed"]), int(spec["frames"]), int(spec["size"])))
    return pools


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def pool_is_complete(root: Path, pool: Pool) -> bool:
    record = _read_json(root / synthetic.METADATA_NAME)
    return isinstance(record, dict) and record.get("generator") == POOL_GENERATOR and record.get("pool") == pool.record()


def generate_pool(home: Path, pool: Pool, base: synthetic.SyntheticSpec, show_progress: bool | None = None, workers: int = 1) -> tuple[Path, int]:
    """The pool's data root, generated if missing (an interrupted generation resumes); and how many videos
    were written now."""
    root = pools_root(home) / pool.folder_name
    if pool_is_complete(root, pool):
        return root, 0
    spec = pool.render_spec(base)
    written = 0
    with file_lock(root.parent / f".{root.name}.lock", what=f"generating {root}"):  # a second process finds it done
        if pool_is_complete(root, pool):
            return root, 0
        if (root / synthetic.METADATA_NAME).exists():
            raise HarnessError(f"{root} holds a {synthetic.METADATA_NAME} of another pool", fix=f"delete the folder {root}; it is generated again")
        root.mkdir(parents=True, exist_ok=True)
        todo = [(c, [i for i in pool.video_indices if not synthetic._video_folder(root, spec, c, i).is_dir()]) for c in pool.classes]
        written = sum(len(missing) for _, missing in todo)
        with progress_bar(f"{pool.level} pool {pool.number + 1}: videos", len(pool.classes) * pool.videos_per_class, show_progress, unit="videos") as advance:
            if workers <= 1:
                for name, missing in todo:
                    advance(pool.videos_per_class - len(missing))
                    for i in missing:
                        synthetic._write_video(synthetic._video_folder(root, spec, name, i), synthetic._encode_video(spec, name, i))
                        advance(1)
            else:
                synthetic._generate_in_parallel(root, spec, todo, workers, advance)
        atomic_write_text(root / LIST_FILE, "".join(line + "\n" for line in pool.video_names(base)))
        record = {"generator": POOL_GENERATOR, "pool": pool.record(), "primitives": list(synthetic.PRIMITIVES),
                  "meaning": "a calibration pool of `bench.py calibrate`; its list file is " + LIST_FILE}
        atomic_write_json(root / synthetic.METADATA_NAME, record)  # last: means complete
    return root, written


def episode_seed(p: Protocol, level: str, number: int) -> int:
    """Each pool's own episode seed, from the protocol's seed, the pool level and the pool's number."""
    state = np.random.SeedSequence([p.seed, _EPISODE_STREAM, POOL_LEVELS.index(level), number]).generate_state(1)[0]
    return int(state >> 1)


def pool_protocol(p: Protocol, overrides: list[str], pool_root: Path, weights: str, seed: int) -> Protocol:
    """The protocol with the pool as its evaluated split: the same fields, the backbone weights it resolved to
    (so neither the pool's train split nor a new pretraining is looked for), and the pool's episode seed."""
    mine = [
        f"dataset.root={json.dumps(str(pool_root))}",
        f"dataset.split_dir={json.dumps(str(pool_root))}",
        f"dataset.splits.{p.dataset.part}={LIST_FILE}",
        f"backbone.weights={json.dumps(str(weights))}",
        f"seed={seed}",
    ]
    return load_protocol(p.source, [*overrides, *mine])


# ----------------------------------------------------------------------------------------------- checks


def base_benchmark(p: Protocol, s) -> tuple[dict, list[str], int]:
    """(the synthetic benchmark's synthetic.json, the protocol's evaluated classes, videos per class of its
    split); a protocol on another dataset is an error."""
    from harness.pipeline import load_index

    if p.dataset.name != "synthetic":
        raise HarnessError(
            f"calibrate draws new videos and new classes, which only the synthetic benchmark can; protocol '{p.name}' evaluates dataset '{p.dataset.name}'",
            where=p.where("dataset.name"),
            fix="calibrate a synthetic protocol (synthetic-5w1s, synthetic-5w5s); its intervals' coverage carries over as far as the benchmark resembles yours",
        )
    index = load_index(p, s, p.dataset.part)  # generates the benchmark when it is missing, as `run` does
    root = dataset_root(p, s.home)
    meta = _read_json(root / synthetic.METADATA_NAME)
    if not (isinstance(meta, dict) and meta.get("generator") == "harness.data.synthetic" and isinstance(meta.get("spec"), dict)
            and isinstance(meta.get("classes"), dict)):
        raise HarnessError(f"{root} does not hold a benchmark written by the synthetic generator (its {synthetic.METADATA_NAME} is missing or of another kind)",
                           where=p.where("dataset.root"), fix="point dataset.root at a folder written by `fsv-bench synth` or the quickstart")
    if meta.get("version") != synthetic.GENERATOR_VERSION:
        raise HarnessError(f"{root} was written by synthetic generator version {meta.get('version')}, this harness's is {synthetic.GENERATOR_VERSION}: new pools would not be drawn from the same distribution",
                           where=p.where("dataset.root"), fix="generate the benchmark again with this harness (`fsv-bench synth`)")
    unknown = [c for c in index.classes if c not in synthetic.CLASS_INDEX]
    if unknown:
        raise HarnessError(f"class '{unknown[0]}' of the {p.dataset.part} split is not a synthetic class", where=p.where("dataset.splits"), fix="use the split files the generator wrote")
    return meta, list(index.classes), min(len(v) for v in index.by_class)


def check_request(protocols: list[Protocol], method_names: list[str], pools: int, videos_per_class: int | None, home: Path) -> None:
    if pools < 2:
        raise HarnessError(f"--pools {pools}: the spread across pools needs at least 2", where="--pools", fix="pass --pools K with K >= 2 (10 or more for a coverage worth reading)")
    if videos_per_class is not None:
        need = max(p.shot + p.query_per_class for p in protocols)
        if videos_per_class < need:
            raise HarnessError(f"--videos-per-class {videos_per_class}: an episode takes shot + query_per_class = {need} videos of a class", where="--videos-per-class",
                               fix=f"pass --videos-per-class N with N >= {need}, or leave it out for as many as the protocol's split has")
    for name in method_names:
        if not methods.registered(name):
            raise HarnessError(f"unknown method '{name}'", where="--method",
                               fix=f"use one of: {', '.join(methods.list_methods())}, or a Head class as package.module:Class (README: Adding a method)")
    for p in protocols:
        for name in method_names:  # `run` never trains: neither does calibrate
            path = checkpoint_dir(home, p.name, name) / "best.pt"
            if methods.get(name).trainable and not path.is_file():
                raise HarnessError(f"method '{name}' has no trained checkpoint for protocol '{p.name}' ({path})",
                                   fix=f"train one: fsv-bench train --protocol {p.source} --method {name} (the quickstart trains every head)")


# ------------------------------------------------------------------------------------------------- table


def coverage_rows(runs: list[dict]) -> list[dict]:
    """One row per pool level x interval level x protocol x method, from the per-pool runs (see `calibrate`)."""
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((r["pools"], r["protocol"], r["method"]), []).append(r)
    rows = []
    for (pools, protocol, method), group in groups.items():
        group = sorted(group, key=lambda r: r["pool"])
        acc = np.array([r["accuracy"] for r in group], dtype=np.float64)
        k = len(acc)
        truth = float(acc.mean())
        spread = Z * float(acc.std(ddof=1))
        others = (acc.sum() - acc) / (k - 1)  # each pool's truth without itself
        for interval in LEVELS:
            low = np.array([r["intervals"][interval]["low"] for r in group])
            high = np.array([r["intervals"][interval]["high"] for r in group])
            half = float(np.mean([r["intervals"][interval]["half_width"] for r in group]))
            covered = int(np.sum((low <= truth) & (truth <= high)))
            covered_loo = int(np.sum((low <= others) & (others <= high)))
            ratio = half / spread if spread > 0 else None  # all pools alike: no spread to compare with
            row = {"pools": pools, "interval": interval, "protocol": protocol, "method": method, "way": group[0]["way"], "shot": group[0]["shot"],
                   "episodes": group[0]["n_episodes"], "n_pools": k, "nominal": NOMINAL, "truth": truth, "observed_spread": spread,
                   "mean_half_width": half, "width_ratio": ratio, "covered": covered, "coverage": covered / k,
                   "covered_leave_one_out": covered_loo, "coverage_leave_one_out": covered_loo / k, "claim_matches": interval == pools}
            if interval == pools:
                row["goal_met"] = bool(COVERAGE_GOAL[0] <= row["coverage"] <= COVERAGE_GOAL[1] and ratio is not None and ratio <= WIDTH_GOAL)
            rows.append(row)
    order = {level: i for i, level in enumerate(LEVELS)}
    return sorted(rows, key=lambda r: (POOL_LEVELS.index(r["pools"]), not r["claim_matches"], order[r["interval"]], r["method"], r["shot"], r["protocol"]))


def _goal_text(row: dict) -> str:
    if "goal_met" not in row:
        return ""
    misses = []
    if row["coverage"] < COVERAGE_GOAL[0]:
        misses.append(f"covers {100 * row['coverage']:.0f}% < {100 * COVERAGE_GOAL[0]:.0f}%")
    if row["width_ratio"] is None:
        misses.append("no spread across the pools")
    elif row["width_ratio"] > WIDTH_GOAL:
        misses.append(f"{row['width_ratio']:.2f}x the spread > {WIDTH_GOAL:g}x")
    return "met" if not misses else "missed: " + ", ".join(misses)


def format_table(rows: list[dict]) -> str:
    """Plain text, every column as wide as its widest cell: nothing is cut, whatever the terminal."""
    head = ["pools", "interval", "protocol", "method", "shot", "episodes", "truth %", "nominal", "spread ±", "mean ±", "ratio", "coverage", "loo", "goal"]
    body = [[r["pools"], r["interval"], r["protocol"], r["method"], str(r["shot"]), str(r["episodes"]), f"{r['truth']:.2f}", f"{100 * r['nominal']:.0f}%",
             f"{r['observed_spread']:.2f}", f"{r['mean_half_width']:.2f}", f"{r['width_ratio']:.2f}" if r["width_ratio"] is not None else "n/a", f"{r['covered']}/{r['n_pools']}",
             f"{r['covered_leave_one_out']}/{r['n_pools']}", _goal_text(r)] for r in rows]
    widths = [max(len(x) for x in column) for column in zip(head, *body)]
    numeric = {4, 5, 6, 7, 8, 9, 10, 11, 12}
    lines = []
    for i, cells in enumerate([head, *body]):
        lines.append("  ".join(c.rjust(w) if j in numeric else c.ljust(w) for j, (c, w) in enumerate(zip(cells, widths))).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


LEGEND = (
    "pools: which new data the pools hold (videos: new videos of the test classes; classes: new classes and videos). "
    "interval: whose 95% interval is read, in each pool's own run. truth %: the mean accuracy over the pools. "
    "spread ±: 1.96 x the sample std of the pools' accuracies, the half-width an exact interval would have. "
    "mean ±: the interval's mean half-width; ratio: mean ± / spread ±. coverage: pools whose interval holds the truth; "
    "loo: the same against the mean of the other pools. goal (rows whose claim is the pools' kind): "
    "coverage 85-100% and ratio <= 2."
)


# --------------------------------------------------------------------------------------------------- run


def calibrate(protocols: list[Protocol], method_names: list[str], s, pools: int, n_episodes: int | None = None,
              videos_per_class: int | None = None, levels: tuple[str, ...] = POOL_LEVELS, overrides: list[str] | None = None) -> dict:
    """Generate (or find) the pools, score every method of every protocol on each, and return the report:
    {"rows": coverage_rows(...), "runs": one entry per protocol x method x pool, "pool_sets": the pools, ...}."""
    from harness.pipeline import backbone_for, run_method
    from harness.provenance import sources_sha256

    overrides = list(overrides or [])
    check_request(protocols, method_names, pools, videos_per_class, s.home)
    started = time.perf_counter()
    plans = []
    for p in protocols:
        meta, test_classes, split_videos = base_benchmark(p, s)
        _, weights_sha, weights = backbone_for(p, s)  # as `run`: pretrained weights are found, never trained here
        per_class = videos_per_class or split_videos
        if per_class < p.shot + p.query_per_class:
            raise HarnessError(f"the {p.dataset.part} split of protocol '{p.name}' has {per_class} videos in a class, fewer than shot + query_per_class", where=p.where("shot"), fix="use a larger benchmark")
        spec_fields = {f.name for f in dataclasses.fields(synthetic.SyntheticSpec)}
        base = synthetic.SyntheticSpec(**{k: v for k, v in meta["spec"].items() if k in spec_fields})
        plans.append({"protocol": p, "base": base, "weights": weights, "weights_sha256": weights_sha, "episodes": n_episodes or p.episodes,
                      "pools": {level: plan_pools(meta, test_classes, level, pools, per_class) for level in levels}})
    workers = max(1, min(2, os.cpu_count() or 1))
    runs, pool_sets = [], {level: {} for level in levels}
    counts = {"videos_generated": 0}
    # one step per pool of each protocol, all its methods scored on it: the rate and ETA of the whole job
    with progress_bar("calibrate", len(levels) * pools * len(plans), s.show_progress, unit="pools") as pool_done:
        for level in levels:
            level_started = time.perf_counter()
            for number in range(pools):
                for plan in plans:
                    p, pool = plan["protocol"], plan["pools"][level][number]
                    root, written = generate_pool(s.home, pool, plan["base"], s.show_progress, workers)
                    counts["videos_generated"] += written
                    what = f"{len(pool.classes)} classes x {pool.videos_per_class} new videos" + (" (generated now)" if written else "")
                    log(f"calibrate: {level} pool {number + 1}/{pools} for {p.name}: {what}")
                    pool_sets[level].setdefault(pool.key, {**pool.record(), "root": str(root), "n_videos": len(pool.classes) * pool.videos_per_class})
                    seed = episode_seed(p, level, number)
                    pp = pool_protocol(p, overrides, root, plan["weights"], seed)
                    pool_settings = dataclasses.replace(s, results=results_root(s.home) / pool.folder_name)
                    for name in method_names:
                        summary = run_method(pp, name, pool_settings, n_episodes=plan["episodes"])
                        if not summary:  # another rank of a torchrun job: rank 0 reports
                            continue
                        runs.append({
                            "pools": level, "pool": number, "pool_key": pool.key, "protocol": p.name, "method": name, "way": p.way, "shot": p.shot,
                            "episode_seed": seed, "n_episodes": summary["n_episodes"], "accuracy": summary["accuracy"],
                            "intervals": {k: {f: summary["intervals"][k][f] for f in ("estimate", "low", "high", "half_width")} for k in LEVELS},
                            "run_fingerprint": summary["run_fingerprint"],
                            "summary": str(pool_settings.results / pp.name / name / "runs" / summary["run_fingerprint"] / "summary.json"),
                        })
                    pool_done(1)
            log(f"calibrate: {level} pools done in {time.perf_counter() - level_started:.0f} s")
    rows = coverage_rows(runs)
    return {
        "schema_version": SCHEMA_VERSION,
        "command": list(sys.argv),
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "protocols": [{"name": plan["protocol"].name, "sha256": plan["protocol"].sha256, "episodes": plan["episodes"],
                       "backbone_weights_sha256": plan["weights_sha256"]} for plan in plans],
        "methods": list(method_names),
        "n_pools": pools,
        "levels": list(levels),
        "nominal": NOMINAL,
        "truth": "the mean accuracy over the pools of one level (per protocol and method)",
        "observed_spread": f"{Z} x the sample standard deviation (ddof 1) of the pools' accuracies",
        "goal": {"coverage": list(COVERAGE_GOAL), "max_width_ratio": WIDTH_GOAL, "rows": "the videos interval on videos pools, the classes interval on classes pools"},
        "estimator_code_sha256": sources_sha256(["harness.uncertainty", "harness.stats"]),
        "rows": rows,
        "runs": runs,
        "pool_sets": {level: list(found.values()) for level, found in pool_sets.items()},
        "videos_generated": counts["videos_generated"],
        "seconds": round(time.perf_counter() - started, 1),
    }


def cmd_calibrate(args) -> int:
    from harness.cli import _check_methods, _method_specs, _settings
    from harness.limits import check_protocol
    from harness.pipeline import pick_device

    _method_specs(args)  # --method package.module:Class registered, before the protocols' methods: sections are checked
    device = pick_device(args.device)
    protocols = []
    for name in args.protocol:
        p = load_protocol(find_protocol(name), args.set)
        args.loaded_protocol = p  # errors that name a field are told which file set it
        check_protocol(p, device, args.workers)  # backbone, imports, head settings, frames against the backbone, memory
        protocols.append(p)
    _check_methods(args.method)  # after the protocols' imports:, which may register them
    if len({p.name for p in protocols}) < len(protocols):
        raise HarnessError("the same protocol was given twice", where="--protocol", fix="give each protocol once")
    levels = tuple(level for level in POOL_LEVELS if level in (args.level or POOL_LEVELS))
    report = calibrate(protocols, list(dict.fromkeys(args.method)), _settings(args), args.pools, n_episodes=args.episodes,
                       videos_per_class=args.videos_per_class, levels=levels, overrides=args.set)
    if not report["runs"]:
        return 0  # not rank 0 of a torchrun job
    print(format_table(report["rows"]))
    print()
    print(LEGEND)
    print(f"{len(report['runs'])} pool runs, {report['videos_generated']} videos generated now, {report['seconds']:.0f} s")
    if args.out:
        atomic_write_json(Path(args.out), report)
        print(f"wrote {args.out}")
    return 0

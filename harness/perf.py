"""Performance benchmarks: `fsv-bench perf [--quick] [--out FILE.json] [--episodes N]`.

Each comparison runs two ways of doing the same work in the same process, on the same machine, and
checks that they give identical predictions before it reports a ratio:

1. end to end    the harness (decode and embed every video of the pool once, then score episodes in
                 batches) against a per-episode pipeline written like the reference code (for every
                 episode: decode its clips, run the backbone on them, run the head on that one episode);
2. heads         each head at the feature sizes of the real backbones (R3D-50 / ResNet-50: C = 2048),
                 scored batched over episodes (`harness.evaluate.evaluate`) against one episode at a time;
3. extraction    clips per second of the backbone against the number of DataLoader workers, and peak memory.

The per-episode pipeline and one-at-a-time scoring run on the first episodes only; their time for the
whole episode count is extrapolated from the time per episode (the output says so). Backbone and head
weights are random (seeded): speed does not depend on them, and the checks compare predictions, not accuracy.
The end-to-end comparison runs in rounds (each way once per round) and reports the median round and the range:
on a small machine a few seconds of other work move one round by a third. Each section records how busy the
machine was while it ran (`machine_during`: cores used by perf and by everything else, hypervisor steal).

For every ratio one plain line `<comparison>: <ratio>x` is printed on stdout, after a table.
"""
from __future__ import annotations

import json
import os
import platform
import sys
import resource
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from harness import threads

#: the test pool of HMDB51 under the ARN split: 1,292 videos of 10 classes
HMDB_TEST_VIDEOS = 1292
HMDB_TEST_CLASSES = 10
#: the head feature shapes (C, T, H, W) of the real backbones
REAL_SHAPES = {
    "protonet": (2048, 1, 1, 1),  # a [2048] vector per video
    "otam": (2048, 8, 1, 1),  # 8 frames x 2048
    "trx": (2048, 8, 1, 1),
    "staf": (2048, 1, 7, 7),  # 49 positions of 2048 channels
}
HEADS_TARGET_S = 60.0
#: under a competing load, batched scoring may be at most this many times slower than quiet
LOADED_MOST_SLOWDOWN = 2.5


@dataclass(frozen=True)
class PerfSize:
    """How much work each section does; `full` is the real size, the others keep runs short."""

    name: str
    videos_per_class: int  # synthetic videos generated per class (10 classes)
    pool: int  # videos of the end-to-end pool (the last videos of some classes are left out to reach it)
    e2e_episodes: int  # episodes the harness scores end to end
    e2e_reference: int  # episodes the per-episode pipeline runs (the first ones)
    e2e_head: str  # head of the end-to-end comparison
    head_pool: int  # videos of random features for the head comparison
    head_episodes: int  # episodes scored batched per head
    head_single: int  # episodes scored one at a time per head (the first ones)
    head_channels: int  # C of the head feature shapes (2048 in the real sizes)
    extract_clips: int  # clips embedded per worker count
    workers: tuple[int, ...]
    r3d50_clips: int  # 0: skip r3d50 on a CPU (8 x 112 x 112 clips)
    batch_episodes: int = 1000
    r3d50_clips_cuda: int = 0  # r3d50 clips at 16 x 224 x 224 on a GPU, fp32 and bf16
    e2e_rounds: int = 3  # rounds of the end-to-end comparison (the median round is reported)
    loaded_rounds: int = 3  # rounds of the heads' quiet and loaded rates (`--load`; medians reported)
    loaded_episodes: int = 3000  # episodes each of those rounds scores batched (the first ones)
    loader_clips: int = 96  # clips of the loader alone at the real size (16 JPEG frames of 320 x 240 -> 16 x 224 x 224)
    disk_wait_s: float = 120.0  # the longest the end to end waits for file creation to be quick (see wait_for_a_quiet_disk)


SIZES = {
    "full": PerfSize("full", 130, HMDB_TEST_VIDEOS, 10_000, 100, "otam", HMDB_TEST_VIDEOS, 10_000, 50, 2048, 256, (0, 1, 2), 4, r3d50_clips_cuda=256),
    "quick": PerfSize("quick", 30, 300, 1000, 20, "otam", 300, 1000, 10, 2048, 64, (0, 1, 2), 0, r3d50_clips_cuda=64, loaded_rounds=2, loaded_episodes=1000, loader_clips=16),
    # for the tests: a few seconds
    "tiny": PerfSize("tiny", 6, 58, 60, 3, "otam", 40, 30, 3, 64, 16, (0,), 0, batch_episodes=25, e2e_rounds=2, loaded_rounds=2, loader_clips=2, disk_wait_s=0.0),
}


@contextmanager
def _one_episode_per_call(head):
    """The reference's way of scoring: each episode in a call of its own, not padded to a block of episodes."""
    block = getattr(head, "episodes_per_block", None)
    if block is not None:
        head.episodes_per_block = 1
    try:
        yield head
    finally:
        if block is not None:
            head.episodes_per_block = block


#: the longest a competing load may live, whatever happens to perf (seconds)
LOAD_MOST_S = 3600
_SPIN = (
    "import os, sys, time\n"
    "end, parent = time.monotonic() + float(sys.argv[1]), os.getppid()\n"
    "while time.monotonic() < end and os.getppid() == parent:\n"
    "    for _ in range(200000): pass\n"
)


@contextmanager
def competing_load(n: int):
    """n busy processes, one core's worth each, as other jobs on a shared machine would be; they end with this
    block, when perf's process ends (they watch their parent), or after LOAD_MOST_S, whichever comes first."""
    import subprocess

    procs = [subprocess.Popen([sys.executable, "-c", _SPIN, str(LOAD_MOST_S)], stdin=subprocess.DEVNULL) for _ in range(n)]
    try:
        time.sleep(0.5)  # let them start
        yield procs
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()


class _Timed(torch.nn.Module):
    """Wraps a backbone and adds up the seconds its forward calls take."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner
        self.seconds = 0.0

    def forward(self, x):
        t = time.perf_counter()
        out = self.inner(x)
        self.seconds += time.perf_counter() - t
        return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_rss_mib() -> dict:
    """Peak resident memory (ru_maxrss is KiB on Linux, bytes on macOS) of this process and of its finished children."""
    unit = 1 if platform.system() == "Darwin" else 1024
    return {
        "self_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * unit / 2**20, 1),
        "children_mib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * unit / 2**20, 1),
    }


def _cuda_peak_mib(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if device.type == "cuda" else None


def _predictions(records: list[dict]) -> np.ndarray:
    return np.array([r["predictions"] for r in records])


def _disagreements(a: np.ndarray, b: np.ndarray) -> int:
    """Episodes whose predictions differ between two ways of computing them (all of them if the shapes differ)."""
    if a.shape != b.shape:
        return max(len(a), len(b))
    return int((a != b).reshape(len(a), -1).any(axis=-1).sum())


def _lower_median(items: list, key):
    """The item of `items` whose key is the median, the lower of the two middle ones for an even count."""
    return sorted(items, key=key)[(len(items) - 1) // 2]


def _adding_seconds(function, seconds: dict, part: str):
    """`function`, adding the seconds each call takes to seconds[part] (a part of a run timed apart)."""

    def timed(*args):
        t = time.perf_counter()
        try:
            return function(*args)
        finally:
            seconds[part] += time.perf_counter() - t

    return timed


def _cpu_ticks() -> tuple[int, int] | None:
    """(busy, stolen) clock ticks of all CPUs since boot, from /proc/stat; None where there is none."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return user + nice + system + irq + softirq, steal


def _own_cpu_s() -> float:
    """CPU seconds of this process and of its finished children (DataLoader workers, a --load, the quickstart)."""
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


@contextmanager
def machine_during(record: dict):
    """Fill `record` with how busy the machine was during the block, so that a reader can tell a quiet run from
    a busy one: the 1-minute load average before it, the cores this process and its children used on average,
    the cores everything else used, and the share of CPU time a hypervisor took (steal)."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    record["load_average_before"] = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    t, own, ticks = time.perf_counter(), _own_cpu_s(), _cpu_ticks()
    try:
        yield record
    finally:
        wall, own, after = max(time.perf_counter() - t, 1e-9), _own_cpu_s() - own, _cpu_ticks()
        record["cores_own"] = round(own / wall, 2)
        if ticks is not None and after is not None:
            busy = (after[0] - ticks[0]) / tick / wall
            record["cores_other"] = round(max(0.0, busy - own / wall), 2)
            record["steal_pct"] = round(100 * (after[1] - ticks[1]) / tick / wall / (os.cpu_count() or 1), 1)


#: file creation this slow (ms a file) means the disk is still busy with earlier work (quiet: 0.05-0.07 ms here, busy 0.2-2)
DISK_BUSY_MS = 0.15


#: quick probes in a row, DISK_SETTLE_S apart, that make the disk quiet
DISK_QUIET_PROBES, DISK_SETTLE_S = 3, 2.0


def file_creation_ms(folder: Path, n: int) -> float:
    """Milliseconds to create, write (16 KB) and rename one file, laid out as the feature store lays out its entries
    (videos/<2 hex digits>/), averaged over `n` files. They are left in a new folder under `folder` (the caller's
    temporary one): deleting them would make the next files slow to create (see wait_for_a_quiet_disk)."""
    probe = Path(tempfile.mkdtemp(prefix=".fsv-disk-probe-", dir=folder))
    data = bytes(16 << 10)
    t = time.perf_counter()
    for i in range(n):
        where = probe / "videos" / f"{i % 256:02x}"
        where.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=where)
        os.write(fd, data)
        os.close(fd)
        os.replace(tmp, where / f"{i}.npy")
    return (time.perf_counter() - t) / n * 1000


def wait_for_a_quiet_disk(folder: Path, files: int, record: dict, log, most_s: float) -> None:
    """Wait (at most `most_s` seconds) until creating `files` files in `folder` (as many as the store will write) is
    quick, DISK_QUIET_PROBES times in a row, and record how long it took then and how long perf waited. This
    machine's disk is ext4 without a journal, where a new file skips the inodes freed in the last minute (the
    kernel's `recently_deleted` check, seen with `perf record`; all of it CPU time in the kernel, no disk read):
    after 5,000 files had been deleted, store-like writes took 0.2-1.2 ms a file for 45 s, coming and going. Small
    probes do not see it: in that minute a probe of 128 files read 0.12 ms while the store's 1,292 files that
    followed took 0.88 ms each; a probe of 1,292 files read 1.26 ms then, and followed the store within a factor of
    2 in 10 tries. A store written in such a moment times the disk's past, not the harness."""
    t = time.perf_counter()
    quick = slow = 0
    while True:
        ms = file_creation_ms(folder, files)
        quick, slow = (quick + 1, slow) if ms <= DISK_BUSY_MS else (0, slow + 1)
        if quick >= DISK_QUIET_PROBES or time.perf_counter() - t >= most_s:
            break
        time.sleep(DISK_SETTLE_S)
    record["file_creation_ms"], record["waited_for_the_disk_s"] = round(ms, 3), round(time.perf_counter() - t, 1)
    if slow:
        log(f"end to end: waited {record['waited_for_the_disk_s']:.0f} s for the disk to settle (creating a file: {ms:.2f} ms"
            f"{'' if ms <= DISK_BUSY_MS else f', still over {DISK_BUSY_MS} ms: the figures below time a busy disk'})")


# ------------------------------------------------------------------------------------------------- data


def _synthetic_pool(cache: Path, size: PerfSize, split_dir: Path):
    """A synthetic test pool of 10 classes with `size.pool` videos (16 frames of 64 x 64), as a VideoIndex."""
    from harness.data.index import build_index
    from harness.data.synthetic import SyntheticSpec, generate

    spec = SyntheticSpec(seed=0, videos_per_class=size.videos_per_class, frames=16, size=64, n_train=0, n_val=0, n_test=HMDB_TEST_CLASSES)
    root = generate(cache / f"synthetic-{size.videos_per_class}x{HMDB_TEST_CLASSES}", spec, workers=max(1, min(8, os.cpu_count() or 1)))
    by_class: dict[str, list[str]] = {}
    for line in (root / "testlist.txt").read_text().split():
        by_class.setdefault(line.split("/")[0], []).append(line)
    excess = sum(len(v) for v in by_class.values()) - size.pool
    if excess < 0 or excess > len(by_class):
        raise ValueError(f"cannot cut {sum(len(v) for v in by_class.values())} generated videos to a pool of {size.pool}")
    for name in sorted(by_class)[:excess]:  # leave the last video of the first `excess` classes out
        by_class[name].pop()
    split = split_dir / "perf-test.txt"
    split.write_text("".join(f"{e}\n" for name in sorted(by_class) for e in by_class[name]))
    return build_index(root, split, "test", 16), root


def _fake_index(n_videos: int, n_classes: int = HMDB_TEST_CLASSES):
    """A VideoIndex of names only (for random features): n_videos spread over n_classes as evenly as possible."""
    from harness.data.index import Video, VideoIndex

    classes = [f"class{c:02d}" for c in range(n_classes)]
    videos, by_class = [], []
    for c, name in enumerate(classes):
        count = n_videos // n_classes + (c < n_videos % n_classes)
        by_class.append(list(range(len(videos), len(videos) + count)))
        videos.extend(Video(name, f"v{i:04d}", Path("/nonexistent"), 16) for i in range(count))
    return VideoIndex(part="test", classes=classes, videos=videos, by_class=by_class)


# ------------------------------------------------------------------------------------------ 1. end to end


#: the end-to-end ratio the harness aims for on 2 quiet cores
E2E_TARGET = 50.0
#: the end to end's episodes (way, shot, query per class) and the harness's extraction batch
E2E_EPISODE, E2E_BATCH = (5, 1, 1), 16


def bench_end_to_end(size: PerfSize, device: torch.device, cache: Path, workers: int, log) -> dict:
    """`size.e2e_rounds` rounds, each the harness on a fresh feature store then the per-episode pipeline, so
    that a moment of other load on the machine moves one round, not the figure: the ratio is the median
    round's, the range is reported beside it."""
    from harness.backbones import create_backbone
    from harness.data.clips import load_decoders
    from harness.protocol import FramesSpec

    frames = FramesSpec(count=16, resize=64, crop=64)
    load_decoders()  # imported before either way is timed (3 s, once per process)
    disk: dict = {}
    with tempfile.TemporaryDirectory(prefix="fsv-perf-") as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        index, root = _synthetic_pool(cache, size, tmp)
        log(f"end to end: pool of {len(index)} synthetic videos in {len(index.classes)} classes ({root}; ready in {time.perf_counter() - t:.1f} s, not timed)")
        wait_for_a_quiet_disk(tmp, len(index), disk, log, size.disk_wait_s)
        torch.manual_seed(0)
        backbone = create_backbone("tiny3d").eval().to(device)
        _warm_up(backbone, index.videos, frames, device)
        rounds = []
        for r in range(size.e2e_rounds):
            harness, harness_pred, head = _harness_pass(index, frames, backbone, size, device, workers, tmp / f"home-{r}")
            reference, ref_pred = _per_episode_pass(index, frames, backbone, head, size, device)
            reference["extrapolated_s"] = round(reference["per_episode_s"] * size.e2e_episodes, 1)
            disagree = _disagreements(harness_pred[: len(ref_pred)], ref_pred)
            if rounds and not np.array_equal(harness_pred, rounds[0]["predictions"]):
                disagree = max(disagree, 1)  # a round's harness predictions differ from the first round's
            rounds.append({"harness": harness, "per_episode": reference, "ratio": reference["per_episode_s"] * size.e2e_episodes / harness["seconds"],
                           "disagreeing": disagree, "predictions": harness_pred})
            log(f"end to end, round {r + 1} of {size.e2e_rounds}: harness {harness['seconds']:.2f} s (store writes {harness['store_write_s']:.2f} s), "
                f"per episode {reference['per_episode_s'] * 1000:.1f} ms: {rounds[-1]['ratio']:.1f}x")
    median = _lower_median(rounds, key=lambda x: x["ratio"])
    ratios = [x["ratio"] for x in rounds]
    disagree = max(x["disagreeing"] for x in rounds)
    return {
        "backbone": "tiny3d",
        "clip": "16 x 64 x 64",
        "head": size.e2e_head,
        "pool_videos": len(index),
        "pool_classes": len(index.classes),
        "generated": f"{HMDB_TEST_CLASSES} classes x {size.videos_per_class} videos, cut to {len(index)}",
        "episodes": size.e2e_episodes,
        "note": "tiny3d at 16x64x64 stands in for r3d50 at 16x224x224, which a CPU cannot run on 1,292 clips in reasonable time",
        "harness": median["harness"],  # the median round's
        "per_episode": median["per_episode"],
        # a round's store writes show the disk's state (see wait_for_a_quiet_disk): 0.2 s quiet here, up to 1.4 s busy
        "rounds": [{"harness_s": x["harness"]["seconds"], "store_write_s": x["harness"]["store_write_s"], "per_episode_ms": round(x["per_episode"]["per_episode_s"] * 1000, 2),
                    "ratio": round(x["ratio"], 2)} for x in rounds],
        "ratio_range": [min(ratios), max(ratios)],
        "predictions_identical": disagree == 0,
        "episodes_disagreeing": disagree,
        "ratio": median["ratio"],
        "disk_before": disk,  # creating a file where the stores are written, after waiting for it to be quick
        "target": E2E_TARGET,
        "target_holds": median["ratio"] >= E2E_TARGET if (size.pool, size.e2e_episodes) == (HMDB_TEST_VIDEOS, 10_000) else None,  # for the real sizes
    }


@torch.inference_mode()
def _warm_up(backbone, videos, frames, device: torch.device) -> None:
    """The first steps of both ways, once, not timed: a batch of clips through the loader and the backbone (the
    harness's), one episode's clips one by one and the backbone on them (the per-episode pipeline's). The first round's
    harness would otherwise pay for the process's first batches (kernels, memory the allocator has not got yet),
    which no per-episode pass after it pays: on 2 cores the first round's backbone took 0.9-2.1 s in 5 of 6 runs
    with no warm-up (0.3-0.5 s in later rounds)."""
    from harness.data.clips import load_clip
    from harness.features import prepare_backbone

    way, shot, query = E2E_EPISODE
    prepare_backbone(backbone, device)
    _extract_rate(backbone, videos[:E2E_BATCH], frames, 0, device)  # a batch of E2E_BATCH clips, as the store makes it
    backbone(torch.stack([load_clip(v, frames) for v in videos[: way * (shot + query)]]).to(device))
    _sync(device)


def _harness_pass(index, frames, backbone, size: PerfSize, device: torch.device, workers: int, home: Path) -> tuple[dict, np.ndarray, object]:
    """The harness: every video once through a new feature store in `home`, then the episodes scored batched.
    Returns (seconds by part, predictions [E, Q], the head)."""
    import harness.data.loader as loader_module
    import harness.features as features_module
    import methods
    from harness.data.fingerprint import forget_remembered
    from harness.episodes import EpisodeSet
    from harness.evaluate import embed_pool, evaluate

    forget_remembered()  # every round fingerprints its videos as a first run does
    episodes = EpisodeSet(index, *E2E_EPISODE, size.e2e_episodes, 0)  # new: its episodes are sampled in the timed part
    timed = _Timed(backbone)
    store = features_module.FeatureStore(home, "tiny3d", "random-seed-0", frames)
    # the store's writes and the videos' content fingerprints (in a new store, made from the bytes the loader reads
    # for decoding: their files' stamps and hashing), timed apart from decoding
    parts = {"fingerprint": 0.0, "write": 0.0}
    timed_parts = [(features_module, "atomic_save_npy_checksummed", "write"),
                   (loader_module, "video_stamp", "fingerprint"), (loader_module, "fingerprint_of_read", "fingerprint")]
    real = [getattr(module, name) for module, name, _ in timed_parts]
    _sync(device)
    t0 = time.perf_counter()
    for (module, name, part), function in zip(timed_parts, real):
        setattr(module, name, _adding_seconds(function, parts, part))
    try:
        store.extract(index.videos, timed, device, E2E_BATCH, workers)
    finally:
        for (module, name, _), function in zip(timed_parts, real):
            setattr(module, name, function)
    _sync(device)
    extract_s = time.perf_counter() - t0
    maps = store.load(index.videos)
    load_s = time.perf_counter() - t0 - extract_s
    head = methods.create(size.e2e_head, context={"feature_shape": tuple(maps.shape[1:]), "num_train_classes": 64})
    t1 = time.perf_counter()
    reps = embed_pool(head, maps, device)
    records = evaluate(head, reps, episodes, size.batch_episodes)
    _sync(device)
    heads_s = time.perf_counter() - t1
    harness_s = time.perf_counter() - t0
    return {
        "seconds": round(harness_s, 3),
        "episodes": len(records),
        "videos_embedded": len(index),
        "fingerprint_s": round(parts["fingerprint"], 3),
        "decode_s": round(extract_s - timed.seconds - parts["write"] - parts["fingerprint"], 3),  # reading and decoding clips
        "backbone_s": round(timed.seconds, 3),
        "store_write_s": round(parts["write"], 3),
        "store_pack_s": round(load_s, 3),
        "heads_s": round(heads_s, 3),  # sampling the episodes and scoring them
    }, _predictions(records), head


def _per_episode_pass(index, frames, backbone, head, size: PerfSize, device: torch.device) -> tuple[dict, np.ndarray]:
    """Like the reference code: every episode samples its videos, decodes their clips and runs the backbone and
    the head anew. The first `size.e2e_reference` episodes; returns (seconds by part, predictions [n, Q])."""
    from harness.data.clips import load_clip
    from harness.episodes import EpisodeSet
    from methods import feature_view

    episodes = EpisodeSet(index, *E2E_EPISODE, size.e2e_episodes, 0)
    n_ref = min(size.e2e_reference, len(episodes))
    decode_s = backbone_s = head_s = 0.0
    predictions = []
    with torch.inference_mode(), _one_episode_per_call(head):
        head.eval().to(device)
        t0 = time.perf_counter()
        for i in range(n_ref):
            b = episodes.batch([i])
            positions = np.concatenate([b.support[0], b.query[0]])
            t = time.perf_counter()
            clips = torch.stack([load_clip(index.videos[p], frames) for p in positions]).to(device)
            _sync(device)
            t2 = time.perf_counter()
            feats = backbone(clips).float()
            _sync(device)
            t3 = time.perf_counter()
            r = head.embed(feature_view(feats, head.view))
            n_s = b.support.shape[1]
            logits = head(r[None, :n_s], torch.from_numpy(b.support_labels).to(device), r[None, n_s:], episodes.way)
            predictions.append(logits.argmax(dim=-1).cpu().numpy()[0])
            _sync(device)
            t4 = time.perf_counter()
            decode_s, backbone_s, head_s = decode_s + t2 - t, backbone_s + t3 - t2, head_s + t4 - t3
        ref_s = time.perf_counter() - t0
    return {
        "episodes_run": n_ref,
        "seconds": round(ref_s, 3),
        "per_episode_s": round(ref_s / n_ref, 5),
        "extrapolated": True,
        "decode_s": round(decode_s, 3),
        "backbone_s": round(backbone_s, 3),
        "heads_s": round(head_s, 3),
    }, np.array(predictions)


# ---------------------------------------------------------------------------------------------- 2. heads


def bench_heads(size: PerfSize, device: torch.device, log, load: int = 0) -> dict:
    import methods
    from harness.episodes import EpisodeSet
    from harness.evaluate import embed_pool, evaluate

    index = _fake_index(size.head_pool)
    episodes = EpisodeSet(index, 5, 1, 1, size.head_episodes, 0)
    episodes.sha256  # samples every episode once, as a run does before it scores any
    single_set = EpisodeSet(index, 5, 1, 1, min(size.head_single, size.head_episodes), 0)  # the same first episodes
    out = {}
    for name, shape in REAL_SHAPES.items():
        shape = (size.head_channels, *shape[1:])
        torch.manual_seed(0)
        head = methods.create(name, context={"feature_shape": shape, "num_train_classes": 64})
        maps = torch.randn(len(index), *shape)
        _sync(device)
        t = time.perf_counter()
        reps = embed_pool(head, maps, device)
        _sync(device)
        embed_s = time.perf_counter() - t
        del maps
        evaluate(head, reps, episodes, size.batch_episodes, only={0})  # untimed warm-up: allocator and kernel set-up
        batched, batched_s = _timed_batched(head, reps, episodes, size, device)
        with _one_episode_per_call(head):
            evaluate(head, reps, single_set, 1, only={0})  # untimed warm-up
            single, single_s, single_n = _timed_single(head, reps, single_set, device)
        disagree = _disagreements(_predictions(batched)[: len(single)], _predictions(single))
        loaded = _loaded_rates(head, reps, episodes, single_set, size, device, load, _predictions(batched)) if load else None
        del reps
        b_rate, s_rate = len(batched) / batched_s, single_n / single_s
        out[name] = {
            "feature_shape": list(shape),
            "embed_pool_s": round(embed_s, 3),
            "batched_s": round(batched_s, 3),
            "batched_episodes": len(batched),
            "batched_eps": round(b_rate, 1),
            "single_s": round(single_s, 3),
            "single_episodes": len(single),
            "single_eps": round(s_rate, 1),
            "single_extrapolated_s": round(len(batched) / s_rate, 1),
            "predictions_identical": disagree == 0,
            "episodes_disagreeing": disagree,
            "ratio": b_rate / s_rate,
        }
        log(f"heads {name}: batched {b_rate:.1f} episodes/s, one at a time {s_rate:.1f} episodes/s")
        if loaded:
            loaded["holds"] = loaded["batched_vs_single"] >= 1.0 and loaded["slowdown"] <= LOADED_MOST_SLOWDOWN
            out[name]["loaded"] = loaded
            log(f"heads {name} under a load of {load}: batched {loaded['batched_eps']:.1f} episodes/s, one at a time {loaded['single_eps']:.1f}")
    total = sum(v["embed_pool_s"] + v["batched_s"] for v in out.values())
    # the target is stated for 10,000 episodes; a smaller run is scaled to it
    total_10k = sum(v["embed_pool_s"] + v["batched_s"] * 10_000 / v["batched_episodes"] for v in out.values())
    return {
        "pool_videos": len(index),
        "episodes": len(episodes),
        "way_shot_query": [5, 1, 1],
        "heads": out,
        "batched_total_s": round(total, 2),
        "batched_total_10000_s": round(total_10k, 1),
        "batched_total_10000_extrapolated": len(episodes) != 10_000,
        "target_s": HEADS_TARGET_S,
        # only meaningful at the real sizes (C = 2048)
        "target_holds": (total_10k < HEADS_TARGET_S) if size.head_channels == 2048 else None,
        "threads": threads.policy(),
        "load": load,
    }


#: one-at-a-time scoring is timed over at least this long (its episodes again if need be): a few ms say nothing
SINGLE_MIN_S = 1.0


def _timed_batched(head, reps, episodes, size: PerfSize, device, only: set[int] | None = None) -> tuple[list[dict], float]:
    """The records of scoring `episodes` batched, as `run` does (`only`: the chunks starting there), and the
    seconds taken."""
    from harness.evaluate import evaluate

    t = time.perf_counter()
    batched = evaluate(head, reps, episodes, size.batch_episodes, only=only)
    _sync(device)
    return batched, time.perf_counter() - t


def _timed_single(head, reps, single_set, device) -> tuple[list[dict], float, int]:
    """The records of scoring `single_set` one episode per call, the seconds taken and the episodes scored:
    the set is scored again until SINGLE_MIN_S have passed (at most 100 times)."""
    from harness.evaluate import evaluate

    t, n = time.perf_counter(), 0
    for _ in range(100):
        single = evaluate(head, reps, single_set, 1)
        _sync(device)
        n += len(single)
        if time.perf_counter() - t >= SINGLE_MIN_S:
            break
    return single, time.perf_counter() - t, n


def _loaded_rates(head, reps, episodes, single_set, size: PerfSize, device, load: int, quiet_predictions) -> dict:
    """The batched and one-at-a-time rates while `load` busy processes compete for the cores, in
    `size.loaded_rounds` rounds: each scores the first `size.loaded_episodes` episodes batched on the quiet
    machine, then batched and one at a time under the load, so that each ratio compares moments close in time.
    The medians of the rounds' rates and ratios are reported (one round can meet a moment of other work)."""
    starts = set(range(0, min(size.loaded_episodes, len(episodes)), size.batch_episodes))  # whole chunks
    rounds, identical = [], True
    for _ in range(size.loaded_rounds):
        quiet, quiet_s = _timed_batched(head, reps, episodes, size, device, only=starts)
        quiet_eps = len(quiet) / quiet_s
        with competing_load(load):
            batched, batched_s = _timed_batched(head, reps, episodes, size, device, only=starts)
            batched_eps = len(batched) / batched_s
            with _one_episode_per_call(head):
                _, single_s, single_n = _timed_single(head, reps, single_set, device)
        identical &= _disagreements(_predictions(batched), quiet_predictions[: len(batched)]) == 0
        rounds.append({"quiet_batched_eps": round(quiet_eps, 1), "batched_eps": round(batched_eps, 1), "single_eps": round(single_n / single_s, 1),
                       "slowdown": quiet_eps / batched_eps, "batched_vs_single": batched_eps / (single_n / single_s)})
    median = lambda key: _lower_median(rounds, key=lambda r: r[key])[key]  # noqa: E731
    return {
        "episodes_per_round": len(batched),
        "rounds": rounds,
        "batched_eps": median("batched_eps"),
        "single_eps": median("single_eps"),
        "slowdown": median("slowdown"),  # quiet batched / loaded batched
        "batched_vs_single": median("batched_vs_single"),  # loaded batched / loaded one at a time
        "predictions_identical": identical,
    }


# ----------------------------------------------------------------------------------------- 3. extraction


@torch.inference_mode()
def _extract_rate(backbone, videos, frames, workers: int, device: torch.device, precision: str = "fp32", on_device: bool = False) -> tuple[float, torch.Tensor]:
    """Clips per second through the loader (`on_device`: the workers only read the files, JPEG frames are
    decoded and clips resized on `device`, as the feature store does on a GPU), and the maps."""
    from harness.data.loader import clip_batches
    from harness.features import embed_clips

    outs = []
    _sync(device)
    t = time.perf_counter()
    for _, clips in clip_batches(videos, frames, 16 if len(videos) >= 16 else len(videos), workers, device, on_device):
        outs.append(embed_clips(backbone, clips, device, precision).cpu())
    _sync(device)
    return len(videos) / (time.perf_counter() - t), torch.cat(outs)


@torch.inference_mode()
def _resident_rates(name, backbone, videos, frames, device: torch.device, precisions, log, batch: int = 32, repeats: int = 8) -> list[dict]:
    """The backbone alone: clips already on the GPU, `repeats` batches of `batch` (no decoding, no copies)."""
    from harness.data.clips import load_clip
    from harness.features import embed_clips

    clips = torch.stack([load_clip(videos[i % len(videos)], frames) for i in range(batch)]).to(device)
    rows = []
    for precision in precisions:
        embed_clips(backbone, clips, device, precision)  # warm-up
        torch.cuda.reset_peak_memory_stats(device)
        _sync(device)
        t = time.perf_counter()
        for _ in range(repeats):
            embed_clips(backbone, clips, device, precision)
        _sync(device)
        rate = batch * repeats / (time.perf_counter() - t)
        rows.append({"backbone": name, "clip": f"{frames.count} x {frames.crop} x {frames.crop}", "precision": precision, "workers": "resident",
                     "clips": batch * repeats, "clips_per_s": round(rate, 2), "peak_rss": _peak_rss_mib(), "cuda_peak_mib": _cuda_peak_mib(device)})
        log(f"extraction {name} {frames.count}x{frames.crop}x{frames.crop} {precision}, clips resident on the GPU, batch {batch}: {rate:.1f} clips/s")
    return rows


#: the loader's rate with frames decoded on the GPU, as a share of the rate with clips resident there
ON_DEVICE_TARGET = 0.6


def _on_device_rates(name, backbone, videos, frames, workers: int, device: torch.device, precisions, cpu_maps, rows, log) -> list[dict]:
    """The loader with JPEG frames decoded and clips resized on the GPU: its rate against the resident rate of
    the same precision, and its fp32 maps against those of the CPU's decoding (max |difference| / max |map|)."""
    out = []
    for precision in precisions:
        _extract_rate(backbone, videos[:16], frames, 0, device, precision, on_device=True)  # warm-up: nvJPEG, kernels
        torch.cuda.reset_peak_memory_stats(device)
        rate, maps = _extract_rate(backbone, videos, frames, workers, device, precision, on_device=True)
        resident = next(r["clips_per_s"] for r in rows if r["backbone"] == name and r["precision"] == precision and r["workers"] == "resident")
        row = {"backbone": name, "clip": f"{frames.count} x {frames.crop} x {frames.crop}", "precision": precision, "workers": f"{workers}, decoding on the GPU",
               "clips": len(videos), "clips_per_s": round(rate, 2), "of_resident": round(rate / resident, 3), "target_of_resident": ON_DEVICE_TARGET,
               "target_holds": rate / resident >= ON_DEVICE_TARGET, "peak_rss": _peak_rss_mib(), "cuda_peak_mib": _cuda_peak_mib(device)}
        if precision == "fp32" and cpu_maps is not None:
            row["max_difference_to_cpu_decoding"] = float((maps - cpu_maps).abs().max() / cpu_maps.abs().max())
        out.append(row)
        log(f"extraction {name} {frames.count}x{frames.crop}x{frames.crop} {precision}, {workers} workers, decoding on the GPU: {rate:.1f} clips/s, "
            f"{rate / resident:.0%} of resident (target {ON_DEVICE_TARGET:.0%})")
    return out


#: the loader alone: frames as HMDB51's and UCF101's frame dumps hold them (JPEG, 320 x 240), clips as r3d50 takes them
LOADER_FRAMES = {"frame": (240, 320), "count": 16, "resize": 256, "crop": 224}
LOADER_ALONE = "none (the loader alone)"


def _real_size_videos(cache: Path, n: int) -> list:
    """`n` videos of 16 JPEG frames of 320 x 240 (smooth random content drifting frame to frame, about 22 KB a frame),
    written once into the perf cache."""
    from torchvision.io import encode_jpeg

    from harness.data.index import Video

    height, width = LOADER_FRAMES["frame"]
    videos, g = [], torch.Generator().manual_seed(0)
    for v in range(n):
        folder = cache / f"jpeg-{width}x{height}" / "c" / f"v{v:03d}"
        base = torch.randint(0, 256, (1, 3, height // 8, width // 8), generator=g, dtype=torch.uint8).float()  # drawn for every video: none depends on what is on disk
        if not (folder / f"{LOADER_FRAMES['count'] - 1:05d}.jpg").is_file():
            folder.mkdir(parents=True, exist_ok=True)
            image = torch.nn.functional.interpolate(base, size=(height, width), mode="bilinear")[0].to(torch.uint8)
            for f in range(LOADER_FRAMES["count"]):
                (folder / f"{f:05d}.jpg").write_bytes(encode_jpeg(image.roll(2 * f, -1), quality=90).numpy().tobytes())
        videos.append(Video("c", f"v{v:03d}", folder, LOADER_FRAMES["count"]))
    return videos


def _loader_rates(size: PerfSize, device: torch.device, cache: Path, log) -> list[dict]:
    """The loader alone, no backbone: clips/s it makes at the real size per worker count (on a GPU also with the
    frames decoded there), the most it can feed a network."""
    from harness.data.loader import clip_batches
    from harness.protocol import FramesSpec

    videos = _real_size_videos(cache, size.loader_clips)
    os.sync()  # frames just written are on disk, not being written back while they are read
    frames = FramesSpec(count=LOADER_FRAMES["count"], resize=LOADER_FRAMES["resize"], crop=LOADER_FRAMES["crop"])
    ways = [(w, False) for w in size.workers]
    if device.type == "cuda":
        ways += [(max(size.workers[-1], min(8, os.cpu_count() or 1)), True)]
    rows = []
    for workers, on_device in ways:
        _sync(device)
        t = time.perf_counter()
        for _ in clip_batches(videos, frames, 8, workers, device, on_device):
            pass
        _sync(device)
        rate = len(videos) / (time.perf_counter() - t)
        how = f"{workers}, decoding on the GPU" if on_device else workers
        rows.append({"backbone": LOADER_ALONE, "clip": f"{frames.count} x {frames.crop} x {frames.crop} from JPEG {LOADER_FRAMES['frame'][1]} x {LOADER_FRAMES['frame'][0]}",
                     "precision": "fp32", "workers": how, "clips": len(videos), "clips_per_s": round(rate, 2), "peak_rss": _peak_rss_mib(), "cuda_peak_mib": _cuda_peak_mib(device)})
        log(f"extraction, the loader alone, {frames.count}x{frames.crop}x{frames.crop} from 320x240 JPEG, {how} workers: {rate:.1f} clips/s")
    return rows


def bench_extraction(size: PerfSize, device: torch.device, cache: Path, log) -> dict:
    from harness.backbones import create_backbone
    from harness.features import prepare_backbone
    from harness.protocol import FramesSpec

    with tempfile.TemporaryDirectory(prefix="fsv-perf-") as tmp:
        index, _ = _synthetic_pool(cache, size, Path(tmp))
    videos = index.videos[: size.extract_clips]
    rows = _loader_rates(size, device, cache, log) if size.loader_clips else []  # first: before the backbones' memory
    # (backbone, clip, videos, worker counts, precisions); the synthetic videos have 16 frames of 64 x 64,
    # resized to the clip size; on a GPU r3d50 runs at the real clip size, 16 x 224 x 224, fp32 and bf16
    runs = [("tiny3d", FramesSpec(count=16, resize=64, crop=64), videos, size.workers, ("fp32",))]
    if device.type == "cuda":
        loader_workers = max(size.workers[-1], min(8, os.cpu_count() or 1))
        runs.append(("r3d50", FramesSpec(count=16, resize=224, crop=224), index.videos[: size.r3d50_clips_cuda], (loader_workers,), ("fp32", "bf16")))
    elif size.r3d50_clips:
        runs.append(("r3d50", FramesSpec(count=8, resize=112, crop=112), index.videos[: size.r3d50_clips], (0,), ("fp32",)))
    for name, frames, vids, worker_counts, precisions in runs:
        torch.manual_seed(0)
        backbone = prepare_backbone(create_backbone(name), device)
        first = None
        for precision in precisions:
            if device.type == "cuda":  # an untimed batch: cuDNN picks its kernels on the first call
                _extract_rate(backbone, vids[:16], frames, 0, device, precision)
            for w in worker_counts:
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                rate, maps = _extract_rate(backbone, vids, frames, w, device, precision)
                if precision == "fp32" and first is None:
                    first = maps
                elif precision == "fp32" and not torch.equal(first, maps):
                    raise AssertionError(f"extraction {name}: {w} workers gave other features than {worker_counts[0]} workers")
                rows.append({"backbone": name, "clip": f"{frames.count} x {frames.crop} x {frames.crop}", "precision": precision, "workers": w,
                             "clips": len(vids), "clips_per_s": round(rate, 2), "peak_rss": _peak_rss_mib(), "cuda_peak_mib": _cuda_peak_mib(device)})
                log(f"extraction {name} {frames.count}x{frames.crop}x{frames.crop} {precision}, {w} workers: {rate:.1f} clips/s")
        if device.type == "cuda":
            rows.extend(_resident_rates(name, backbone, vids, frames, device, precisions, log))
            rows.extend(_on_device_rates(name, backbone, vids, frames, worker_counts[-1], device, precisions, first, rows, log))
        del backbone
    tiny = [r for r in rows if r["backbone"] == "tiny3d" and isinstance(r["workers"], int)]  # the CPU-decoding loader runs
    base = tiny[0]["clips_per_s"]
    most = tiny[-1]  # the most workers against none (below 1: the workers cost more than they bring)
    best = max(tiny, key=lambda r: r["clips_per_s"])
    return {"runs": rows, "best_workers": best["workers"], "ratio_workers": most["workers"], "ratio": most["clips_per_s"] / base, "features_identical": True}


# ------------------------------------------------------------------------------------------- 4. quickstart

#: the quickstart's targets on 2 quiet cores (seconds)
QUICKSTART_COLD_TARGET_S = 240.0
QUICKSTART_WARM_TARGET_S = 10.0


def bench_quickstart(cache: Path, log) -> dict:
    """The quickstart as a user runs it, in a fresh data home: cold (generate, pretrain, embed, train, score),
    then warm (the same command again: everything is found), each in its own process, with its phases."""
    import subprocess

    from harness.quickstart import PHASES_FILE

    home = cache / "quickstart"
    shutil.rmtree(home, ignore_errors=True)
    out = {}
    for run in ("cold", "warm"):
        log(f"quickstart {run}: fsv-bench --home {home} --results {home / 'results'} --quiet")
        t = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "harness", "--home", str(home), "--results", str(home / "results"), "--quiet"],
                              capture_output=True, text=True)
        seconds = time.perf_counter() - t
        if done.returncode != 0:
            raise RuntimeError(f"the quickstart ({run}) failed with status {done.returncode}:\n{done.stderr[-2000:]}")
        phases = json.loads((home / "results" / PHASES_FILE).read_text())
        out[run] = {"seconds": round(seconds, 1), "phases_s": phases["phases_s"], "inside_s": phases["total_s"]}
        log(f"quickstart {run}: {seconds:.1f} s")
    out["cold"]["target_s"], out["warm"]["target_s"] = QUICKSTART_COLD_TARGET_S, QUICKSTART_WARM_TARGET_S
    for run in ("cold", "warm"):
        out[run]["target_holds"] = out[run]["seconds"] < out[run]["target_s"]
    shutil.rmtree(home, ignore_errors=True)
    return out


# --------------------------------------------------------------------------------------------- command


def ratio_lines(result: dict) -> list[str]:
    lines = []
    if "end_to_end" in result:
        lines.append(f"end-to-end: {result['end_to_end']['ratio']:.1f}x")
    for name, h in result.get("heads", {}).get("heads", {}).items():
        lines.append(f"heads {name}: {h['ratio']:.1f}x")
    for name, h in result.get("heads", {}).get("heads", {}).items():
        if "loaded" in h:
            x = h["loaded"]
            lines.append(f"heads {name} under load {result['heads']['load']}: batched vs one at a time {x['batched_vs_single']:.2f}x, "
                         f"quiet vs loaded {x['slowdown']:.2f}x, medians of {len(x['rounds'])} rounds "
                         f"({'holds' if x['holds'] else 'missed'}: at least 1x and at most {LOADED_MOST_SLOWDOWN}x)")
    if "extraction" in result:
        lines.append(f"extraction with workers: {result['extraction']['ratio']:.2f}x")
        for r in result["extraction"]["runs"]:
            if "of_resident" in r:
                lines.append(f"extraction {r['backbone']} {r['precision']} decoding on the GPU: {r['of_resident']:.2f}x of resident "
                             f"({'holds' if r['target_holds'] else 'missed'}: at least {r['target_of_resident']}x)"
                             + (f"; maps within {r['max_difference_to_cpu_decoding']:.1e} of the CPU's decoding" if "max_difference_to_cpu_decoding" in r else ""))
    for run, q in result.get("quickstart", {}).items():
        lines.append(f"quickstart {run}: {q['seconds']:.1f} s (target under {q['target_s']:.0f} s: {'holds' if q['target_holds'] else 'missed'})")
    return lines


def _verdict(holds: bool | None) -> str:
    return "n/a (not the real sizes)" if holds is None else ("holds" if holds else "missed")


def _identical(comparison: dict) -> str:
    n = comparison["episodes_disagreeing"]
    return "yes" if n == 0 else f"NO: {n} episodes differ"


def _table(result: dict):
    from rich.table import Table

    t = result["threads"]
    table = Table(title=f"perf ({result['size']}, {result['device']}, {t['lanes']} lanes of one thread)")
    for col in ("comparison", "harness / batched", "per episode / one at a time", "ratio", "identical"):
        table.add_column(col)
    e = result.get("end_to_end")
    if e:
        h, r = e["harness"], e["per_episode"]
        table.add_row(
            f"end to end ({e['head']}, tiny3d {e['clip']}, {e['pool_videos']} videos)",
            f"{h['seconds']:.1f} s for {h['episodes']} episodes\nfingerprint {h['fingerprint_s']:.1f} s, decode {h['decode_s']:.1f} s, backbone {h['backbone_s']:.1f} s, "
            f"store writes {h['store_write_s'] + h['store_pack_s']:.1f} s, heads {h['heads_s']:.1f} s",
            f"{r['per_episode_s'] * 1000:.1f} ms/episode ({r['episodes_run']} run): {r['extrapolated_s']:.0f} s extrapolated to {e['episodes']}\n"
            f"decode {r['decode_s']:.1f} s, backbone {r['backbone_s']:.1f} s, heads {r['heads_s']:.2f} s",
            f"{e['ratio']:.1f}x (median)\n{e['ratio_range'][0]:.1f}-{e['ratio_range'][1]:.1f}x in {len(e['rounds'])} rounds",
            _identical(e),
        )
    hs = result.get("heads")
    if hs:
        for name, h in hs["heads"].items():
            table.add_row(
                f"heads {name} {tuple(h['feature_shape'])}",
                f"{h['batched_eps']:.1f} ep/s ({h['batched_episodes']} in {h['batched_s']:.1f} s; embed {h['embed_pool_s']:.1f} s)",
                f"{h['single_eps']:.1f} ep/s ({h['single_episodes']} run)",
                f"{h['ratio']:.1f}x",
                _identical(h),
            )
            if "loaded" in h:
                x = h["loaded"]
                table.add_row(f"  under a load of {hs['load']} busy processes", f"{x['batched_eps']:.1f} ep/s ({x['slowdown']:.2f}x slower than quiet; medians of {len(x['rounds'])} rounds)",
                              f"{x['single_eps']:.1f} ep/s", f"{x['batched_vs_single']:.2f}x", "yes" if x["predictions_identical"] else "NO")
        table.add_row(
            "heads, all four batched",
            f"{hs['batched_total_s']:.1f} s; for 10,000 episodes {hs['batched_total_10000_s']:.1f} s" + (" (extrapolated)" if hs["batched_total_10000_extrapolated"] else ""),
            f"target < {hs['target_s']:.0f} s: {_verdict(hs['target_holds'])}",
            "",
            "",
        )
    x = result.get("extraction")
    if x:
        for r in x["runs"]:
            mem = f"peak RSS {r['peak_rss']['self_mib']:.0f} MiB (workers {r['peak_rss']['children_mib']:.0f} MiB)"
            if r["cuda_peak_mib"] is not None:
                mem += f", CUDA {r['cuda_peak_mib']:.0f} MiB"
            if "of_resident" in r:  # frames decoded on the GPU: its share of the resident rate, its maps against the CPU's decoding
                close = f"within {r['max_difference_to_cpu_decoding']:.1e}" if "max_difference_to_cpu_decoding" in r else ""
                table.add_row(f"extraction {r['backbone']} {r['clip']} {r['precision']}, {r['workers']}", f"{r['clips_per_s']:.1f} clips/s ({r['clips']} clips)", mem,
                              f"{r['of_resident']:.2f}x of resident ({'holds' if r['target_holds'] else 'missed'})", close)
                continue
            table.add_row(f"extraction {r['backbone']} {r['clip']} {r['precision']}, {r['workers']} workers", f"{r['clips_per_s']:.1f} clips/s ({r['clips']} clips)", mem, "", "yes" if r["workers"] not in (0, "resident") and r["backbone"] != LOADER_ALONE else "")
    for run, q in result.get("quickstart", {}).items():
        where = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in q["phases_s"].items() if seconds >= 0.05)
        table.add_row(f"quickstart, {run}", f"{q['seconds']:.1f} s (target under {q['target_s']:.0f} s: {'holds' if q['target_holds'] else 'missed'})", where, "", "")
    return table


def run_perf(size: PerfSize, device: torch.device, cache: Path, workers: int = 0, log=None, sections=("end_to_end", "heads", "extraction"), load: int = 0) -> dict:
    from harness.pipeline import versions

    log = log or (lambda m: None)
    started = time.perf_counter()
    result = {"size": size.name, "sizes": asdict(size), "device": str(device), "threads": threads.policy(),
              "cpus": os.cpu_count(), "versions": versions(), "weights": "random (seeded); speed does not depend on them"}
    timings, machine = {}, {}
    benches = {"end_to_end": lambda: bench_end_to_end(size, device, cache, workers, log), "heads": lambda: bench_heads(size, device, log, load),
               "extraction": lambda: bench_extraction(size, device, cache, log), "quickstart": lambda: bench_quickstart(cache, log)}
    for name, bench in benches.items():
        if name in sections:
            t = time.perf_counter()
            with machine_during(machine.setdefault(name, {})):
                result[name] = bench()
            timings[f"{name}_s"] = round(time.perf_counter() - t, 1)
    timings["total_s"] = round(time.perf_counter() - started, 1)
    result["timings"] = timings
    result["machine"] = machine  # how busy the machine was during each section (see machine_during)
    result["peak_rss"] = _peak_rss_mib()
    result["ratios"] = ratio_lines(result)
    return result


def cmd_perf(args, size: str | None = None) -> int:
    """`bench.py perf`. `size` overrides --quick (the tests pass "tiny")."""
    from harness.console import log
    from harness.files import atomic_write_json
    from harness.pipeline import pick_device
    from harness.protocol import data_home
    from harness.report import wide_console

    chosen = SIZES[size or ("quick" if getattr(args, "quick", False) else "full")]
    if getattr(args, "episodes", None):
        n = int(args.episodes)
        chosen = replace(chosen, e2e_episodes=n, head_episodes=n, e2e_reference=min(chosen.e2e_reference, n), head_single=min(chosen.head_single, n))
    device = pick_device(getattr(args, "device", None) or "auto")
    cache = data_home(getattr(args, "home", None)) / "perf"
    log(f"perf ({chosen.name}): tiny3d at 16x64x64 stands in for r3d50 at 16x224x224, which a CPU cannot run on 1,292 clips in reasonable time")
    load = getattr(args, "load", 0) or 0
    sections = ("end_to_end", "heads", "extraction", *(("quickstart",) if getattr(args, "quickstart", False) else ()))
    result = run_perf(chosen, device, cache, workers=getattr(args, "workers", 0) or 0, log=log, load=load, sections=sections)
    out = Path(getattr(args, "out", None) or f"perf-{chosen.name}.json")
    atomic_write_json(out, result)
    table = _table(result)
    wide_console(table).print(table)  # off a terminal, as wide as the table: no cell cut at 80 columns
    e = result["end_to_end"]
    print(f"per-episode pipeline: {e['per_episode']['episodes_run']} episodes run, {e['per_episode']['per_episode_s'] * 1000:.1f} ms each; "
          f"{e['per_episode']['extrapolated_s']:.0f} s for {e['episodes']} episodes is extrapolated")
    print(f"end to end: median of {len(e['rounds'])} rounds, {e['ratio_range'][0]:.1f}x to {e['ratio_range'][1]:.1f}x; "
          f"target at least {E2E_TARGET:.0f}x: {_verdict(e['target_holds'])} (creating a file took {e['disk_before']['file_creation_ms']:.2f} ms before)")
    hs = result["heads"]
    print(f"heads batched, all four: {hs['batched_total_10000_s']:.1f} s for 10,000 episodes"
          f"{' (extrapolated)' if hs['batched_total_10000_extrapolated'] else ''}; target under {HEADS_TARGET_S:.0f} s: {_verdict(hs['target_holds'])}")
    for line in result["ratios"]:
        print(line)
    for name, m in result["machine"].items():
        if "cores_other" in m:
            print(f"machine during {name.replace('_', ' ')}: other processes used {m['cores_other']:.2f} of {result['cpus']} cores, this one {m['cores_own']:.2f}, "
                  f"steal {m['steal_pct']:.1f}% (load average {m['load_average_before']} before)")
    print(f"wrote {out} ({result['timings']['total_s']:.0f} s)")
    differ = [name for name, c in [("end to end", e), *(("heads " + n, h) for n, h in hs["heads"].items())] if c["episodes_disagreeing"]]
    differ += [f"heads {n} under load" for n, h in hs["heads"].items() if "loaded" in h and not h["loaded"]["predictions_identical"]]
    if differ:
        print(f"error: the two ways gave different predictions in: {', '.join(differ)} (see {out})", file=sys.stderr)
        return 1
    return 0

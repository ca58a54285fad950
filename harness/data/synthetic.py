"""A procedural few-shot video benchmark in which the ORDER of motions decides the class.

Each video shows one object that performs three motion primitives one after the other, e.g.
`left-grow-spin_cw`: it moves left, then grows, then spins clockwise. There are 8 primitives and a
class is an ordered sequence of 3 distinct ones, so 8*7*6 = 336 classes exist. Like Something-Something,
a class and its reverse (`spin_cw-grow-left`) contain the same motions and differ only in their order.

The split (100 classes by default) is built from reversed pairs:
    val   12 classes =  6 pairs (A-B-C and C-B-A),
    test  24 classes = 12 pairs,
    train 64 classes = 32 pairs, never a val/test sequence nor its reverse.
A method that ignores temporal order cannot do better than chance between the two classes of a pair.

What varies from video to video and must be seen through: the object's shape (none of them looks the
same after a partial turn, so spinning is visible), colour, size, start position and angle, the speed
of each motion, the share of frames each motion gets (each at least 20%), a small distractor disk on a
random walk, a background tint with a brightness gradient, and per-pixel Gaussian noise.

On disk it looks like any real dataset, so the same loaders read it:
    <root>/<class>/<class>_<NNN>/00000001.jpg ...   one JPEG per frame
    <root>/trainlist.txt, vallist.txt, testlist.txt one `class/video` per line, sorted
    <root>/synthetic.json                           written last: its presence means "complete"
Every video is drawn from its own generator keyed by (seed, class, video), so the files do not depend
on the order of generation nor on the number of worker processes.
"""
from __future__ import annotations

import concurrent.futures
import itertools
import json
import math
import multiprocessing
import os
import shutil
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable

import numpy as np
import torch

PRIMITIVES: tuple[str, ...] = ("left", "right", "up", "down", "grow", "shrink", "spin_cw", "spin_ccw")
GENERATOR_VERSION: int = 1

SEQUENCE_LENGTH = 3
JPEG_QUALITY = 90
METADATA_NAME = "synthetic.json"
# Written first and removed last: it marks a folder as ours, so an unfinished run may be resumed.
PARTIAL_MARKER = ".synthetic-partial.json"
SPLIT_FILES = {"train": "trainlist.txt", "val": "vallist.txt", "test": "testlist.txt"}

# Every ordered triple of distinct primitives, in a fixed order: the position is the class index that
# keys each video's random generator, so it must not depend on the split.
SEQUENCES: tuple[tuple[str, ...], ...] = tuple(itertools.permutations(PRIMITIVES, SEQUENCE_LENGTH))
ALL_CLASSES: tuple[str, ...] = tuple("-".join(seq) for seq in SEQUENCES)
CLASS_INDEX: dict[str, int] = {name: i for i, name in enumerate(ALL_CLASSES)}

_SPLIT_STREAM = 0x5B117  # keeps the split's random stream apart from the videos' streams
_MIN_SEGMENT = 0.2  # smallest share of the video one primitive gets
_MARGIN = 1.0  # pixels kept free between the object and the frame border


@dataclass(frozen=True)
class SyntheticSpec:
    """Everything that determines the generated files, byte for byte."""

    seed: int = 0
    videos_per_class: int = 30
    frames: int = 16
    size: int = 64
    n_train: int = 64
    n_val: int = 12
    n_test: int = 24


# --------------------------------------------------------------------------------------------- classes


def reverse_class(class_name: str) -> str:
    """`left-grow-spin_cw` -> `spin_cw-grow-left`."""
    return "-".join(reversed(class_name.split("-")))


def _reversed_pairs() -> list[tuple[str, str]]:
    """The 168 unordered {A-B-C, C-B-A} pairs, each listed once, in class-index order."""
    return [(name, reverse_class(name)) for name in ALL_CLASSES if CLASS_INDEX[name] < CLASS_INDEX[reverse_class(name)]]


def _check_counts(n_train: int, n_val: int, n_test: int) -> None:
    for part, n in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"{part} must be a whole number of classes, 0 or more; got {n!r}")
    for part, n in (("n_val", n_val), ("n_test", n_test)):
        if n % 2:
            raise ValueError(f"{part} must be even because val and test hold reversed pairs of classes; got {n}")
    pairs_needed = n_val // 2 + n_test // 2 + (n_train + 1) // 2
    if pairs_needed > len(_reversed_pairs()):
        raise ValueError(
            f"n_train + n_val + n_test = {n_train + n_val + n_test} asks for more classes than the "
            f"{len(ALL_CLASSES)} ordered triples of distinct primitives; ask for fewer classes"
        )


def class_split(seed: int, n_train: int = 64, n_val: int = 12, n_test: int = 24) -> dict[str, list[str]]:
    """Draw disjoint class lists {"train", "val", "test"}, each sorted; a deterministic function of `seed`.

    Val and test consist of whole reversed pairs. Train takes whole pairs too, from the pairs left over,
    so no train class is a val/test sequence or its reverse and train teaches that order matters.
    """
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a whole number, 0 or more; got {seed!r}")
    _check_counts(n_train, n_val, n_test)
    rng = np.random.default_rng([seed, _SPLIT_STREAM])
    pairs = _reversed_pairs()
    shuffled = [pairs[i] for i in rng.permutation(len(pairs))]

    n_val_pairs, n_test_pairs = n_val // 2, n_test // 2
    val = shuffled[:n_val_pairs]
    test = shuffled[n_val_pairs : n_val_pairs + n_test_pairs]
    rest = shuffled[n_val_pairs + n_test_pairs :]
    train = [name for pair in rest[: n_train // 2] for name in pair]
    if n_train % 2:  # an odd count leaves one class without its reverse
        train.append(rest[n_train // 2][int(rng.integers(2))])
    return {
        "train": sorted(train),
        "val": sorted(name for pair in val for name in pair),
        "test": sorted(name for pair in test for name in pair),
    }


def _parse_class(class_name: str) -> tuple[str, ...]:
    if class_name not in CLASS_INDEX:
        raise ValueError(
            f"'{class_name}' is not a synthetic class; a class is {SEQUENCE_LENGTH} distinct primitives "
            f"joined by '-', chosen from {', '.join(PRIMITIVES)}"
        )
    return SEQUENCES[CLASS_INDEX[class_name]]


# ---------------------------------------------------------------------------------------------- shapes


def _rect(x0: float, y0: float, x1: float, y1: float) -> list[tuple[float, float]]:
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


# Each shape is a union of non-overlapping convex parts, so "inside" is a max over parts of a min over
# half-planes. None of them maps onto itself under a partial turn, so the angle is always visible.
_SHAPE_PARTS: dict[str, list[list[tuple[float, float]]]] = {
    "triangle": [[(0.0, -1.0), (0.65, 0.8), (-0.65, 0.8)]],
    "arrow": [_rect(-1.0, -0.3, 0.05, 0.3), [(0.05, -0.75), (1.0, 0.0), (0.05, 0.75)]],
    "l_shape": [_rect(-0.65, -1.0, -0.05, 1.0), _rect(-0.05, 0.4, 0.75, 1.0)],
    "notched_bar": [_rect(-1.0, -0.35, 1.0, 0.35), _rect(0.35, 0.35, 0.95, 0.9)],
    "t_shape": [_rect(-0.85, -1.0, 0.85, -0.4), _rect(-0.3, -0.4, 0.3, 1.0)],
    "wedge": [[(-1.0, -0.55), (1.0, -0.55), (0.2, 0.65), (-1.0, 0.65)]],
}


def _normalised_shapes() -> dict[str, list[np.ndarray]]:
    """Centre each shape on its area centroid (so it spins in place) and fit it in the unit circle.

    Vertices are reordered to a positive signed area so that (-ey, ex) is the inward edge normal.
    """
    shapes = {}
    for name, parts in _SHAPE_PARTS.items():
        polys = [np.asarray(p, dtype=np.float64) for p in parts]
        areas, centroids = [], []
        for p in polys:
            q = np.roll(p, -1, axis=0)
            cross = p[:, 0] * q[:, 1] - q[:, 0] * p[:, 1]  # [m]
            area = cross.sum() / 2
            areas.append(abs(area))
            centroids.append(((p + q) * cross[:, None]).sum(0) / (6 * area))
        centre = (np.asarray(centroids) * np.asarray(areas)[:, None]).sum(0) / sum(areas)
        polys = [p - centre for p in polys]
        reach = max(np.linalg.norm(p, axis=1).max() for p in polys)
        out = []
        for p in polys:
            p = p / reach
            q = np.roll(p, -1, axis=0)
            if (p[:, 0] * q[:, 1] - q[:, 0] * p[:, 1]).sum() < 0:
                p = p[::-1]
            out.append(np.ascontiguousarray(p))
        shapes[name] = out
    return shapes


SHAPES: dict[str, list[np.ndarray]] = _normalised_shapes()
SHAPE_NAMES: tuple[str, ...] = tuple(SHAPES)


# ------------------------------------------------------------------------------------------------ plan


@dataclass(frozen=True, eq=False)
class VideoPlan:
    """Everything drawn for one video before pixels exist; the object's trajectory is exact here.

    Coordinates are pixels with x to the right and y DOWN; (0, 0) is the top-left corner of the frame.
    """

    primitives: tuple[str, ...]
    bounds: np.ndarray  # [4] segment boundaries in normalised time: 0 < b1 < b2 < 1
    center: np.ndarray  # [T, 2] object centre (x, y)
    radius: np.ndarray  # [T] radius of the circle that holds the object
    angle: np.ndarray  # [T] radians; growing angle turns the object clockwise on screen
    shape: str
    color: np.ndarray  # [3] RGB in [0, 1]
    background: np.ndarray  # [3] RGB tint in [0, 1]
    gradient: np.ndarray  # [2] brightness change per pixel along x and y
    distractor_center: np.ndarray  # [T, 2]
    distractor_radius: float
    distractor_color: np.ndarray  # [3]
    noise_std: float


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    k = (np.array([5.0, 3.0, 1.0]) + h * 6) % 6
    return v - v * s * np.clip(np.minimum(k, 4 - k), 0, 1)  # [3]


def _segment_progress(rng: np.random.Generator, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Jittered segment boundaries [4] and each segment's progress per frame [T, 3], 0 -> 1."""
    shares = _MIN_SEGMENT + (1 - SEQUENCE_LENGTH * _MIN_SEGMENT) * rng.dirichlet(np.ones(SEQUENCE_LENGTH))
    bounds = np.concatenate([[0.0], np.cumsum(shares)])
    bounds[-1] = 1.0  # no rounding drift: the last frame ends the last segment
    time = np.linspace(0.0, 1.0, frames)  # first frame shows the start state, last frame the end state
    progress = np.clip((time[:, None] - bounds[None, :-1]) / shares[None, :], 0.0, 1.0)
    return bounds, progress


def _motion_deltas(primitives: tuple[str, ...], rng: np.random.Generator, size: int) -> np.ndarray:
    """Change of (x, y, log radius, angle) that each primitive brings about: [3, 4].

    A single speed factor per video scales all three, and each also gets its own amount. One uniform
    number is drawn per segment whatever the primitive, so the random stream does not depend on it.
    """
    speed = rng.uniform(0.75, 1.25)
    amounts = rng.uniform(0.0, 1.0, size=len(primitives))
    deltas = np.zeros((len(primitives), 4))
    for k, (name, u) in enumerate(zip(primitives, amounts)):
        shift = speed * (0.22 + 0.10 * u) * size  # 10-25 px at 64: plainly visible
        zoom = speed * (math.log(1.5) + (math.log(1.9) - math.log(1.5)) * u)
        turn = speed * math.radians(100 + 60 * u)  # < 70 deg per frame at 16 frames: direction is unambiguous
        deltas[k] = {
            "left": (-shift, 0, 0, 0),
            "right": (shift, 0, 0, 0),
            "up": (0, -shift, 0, 0),
            "down": (0, shift, 0, 0),
            "grow": (0, 0, zoom, 0),
            "shrink": (0, 0, -zoom, 0),
            "spin_cw": (0, 0, 0, turn),
            "spin_ccw": (0, 0, 0, -turn),
        }[name]
    return deltas


def _fit_in_frame(offset: np.ndarray, rel_radius: np.ndarray, max_radius: float, size: int):
    """Shrink the object until its whole path fits; return (radius [T], lowest and highest start [2], [2]).

    offset [T, 2] is the path relative to the start; the object must stay within _MARGIN of the border.
    """
    while True:
        radius = max_radius * rel_radius  # [T]
        low = (radius[:, None] + _MARGIN - offset).max(0)  # [2]
        high = (size - _MARGIN - radius[:, None] - offset).min(0)  # [2]
        if np.all(low <= high) or max_radius < 0.5:
            return radius, low, np.maximum(low, high)
        max_radius *= 0.9


def _random_walk(rng: np.random.Generator, frames: int, size: int, radius: float) -> np.ndarray:
    """Distractor centres [T, 2]: a velocity random walk that bounces off the frame border."""
    low, high = radius + _MARGIN, size - radius - _MARGIN
    start = rng.uniform(low, high, size=2)
    heading = rng.uniform(0, 2 * math.pi)
    velocity = rng.uniform(0.01, 0.04) * size * np.array([math.cos(heading), math.sin(heading)])
    kicks = rng.normal(0.0, 0.015 * size, size=(frames, 2))
    kicks[0] = 0.0
    steps = velocity + np.cumsum(kicks, axis=0)  # [T, 2]
    path = start + np.cumsum(steps, axis=0) - steps[0]  # first frame sits at `start`
    # Fold the free path back into [low, high] as if it bounced off the border.
    span = max(high - low, 1e-6)
    folded = np.mod(path - low, 2 * span)
    return low + span - np.abs(folded - span)


def plan_video(class_name: str, rng: np.random.Generator, frames: int, size: int) -> VideoPlan:
    """Draw one video's object, trajectory and nuisances (everything but the pixel noise)."""
    primitives = _parse_class(class_name)
    bounds, progress = _segment_progress(rng, frames)  # [4], [T, 3]
    state = progress @ _motion_deltas(primitives, rng, size)  # [T, 4]: dx, dy, log radius, angle

    # The largest size over the video is what must fit, so draw that and derive the rest from it.
    rel_radius = np.exp(state[:, 2] - state[:, 2].max())  # [T], 1 at the largest
    radius, low, high = _fit_in_frame(state[:, :2], rel_radius, rng.uniform(0.17, 0.25) * size, size)
    start = rng.uniform(low, high)  # [2]
    angle = rng.uniform(0, 2 * math.pi) + state[:, 3]

    shape = SHAPE_NAMES[int(rng.integers(len(SHAPE_NAMES)))]
    color = _hsv_to_rgb(rng.uniform(), rng.uniform(0.5, 1.0), rng.uniform(0.75, 1.0))
    background = rng.uniform(0.0, 0.35, size=3)
    tilt = rng.uniform(0, 2 * math.pi)
    gradient = rng.uniform(0.0, 0.15) / size * np.array([math.cos(tilt), math.sin(tilt)])

    distractor_radius = rng.uniform(0.04, 0.07) * size
    distractor_center = _random_walk(rng, frames, size, distractor_radius)
    distractor_color = _hsv_to_rgb(rng.uniform(), rng.uniform(0.3, 1.0), rng.uniform(0.5, 0.9))
    noise_std = rng.uniform(0.015, 0.05)

    return VideoPlan(
        primitives=primitives, bounds=bounds, center=start + state[:, :2], radius=radius, angle=angle,
        shape=shape, color=color, background=background, gradient=gradient,
        distractor_center=distractor_center, distractor_radius=float(distractor_radius),
        distractor_color=distractor_color, noise_std=float(noise_std),
    )


# ---------------------------------------------------------------------------------------------- render


def _pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """x and y of every pixel centre, flattened: [P] each, P = size*size."""
    c = np.arange(size, dtype=np.float32) + 0.5
    ys, xs = np.meshgrid(c, c, indexing="ij")
    return xs.ravel(), ys.ravel()


def _shape_coverage(plan: VideoPlan, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Fraction of each pixel the object covers, anti-aliased by the signed distance to its edges: [T, P]."""
    cos, sin = np.cos(plan.angle)[:, None], np.sin(plan.angle)[:, None]  # [T, 1]
    cx, cy, r = plan.center[:, 0:1], plan.center[:, 1:2], plan.radius[:, None]
    coverage = np.zeros((len(plan.angle), xs.size), dtype=np.float32)
    for unit in SHAPES[plan.shape]:  # unit [m, 2]
        vx = cx + r * (cos * unit[:, 0] - sin * unit[:, 1])  # [T, m]; positive angle turns clockwise (y down)
        vy = cy + r * (sin * unit[:, 0] + cos * unit[:, 1])
        ex, ey = np.roll(vx, -1, axis=1) - vx, np.roll(vy, -1, axis=1) - vy
        length = np.hypot(ex, ey)
        nx, ny = (-ey / length).astype(np.float32), (ex / length).astype(np.float32)  # inward normals [T, m]
        offset = (nx * vx + ny * vy).astype(np.float32)
        inside = nx[:, :, None] * xs + ny[:, :, None] * ys - offset[:, :, None]  # [T, m, P], > 0 inside
        coverage = np.maximum(coverage, np.clip(inside.min(axis=1) + 0.5, 0.0, 1.0))
    return coverage


def _disk_coverage(center: np.ndarray, radius: float, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """[T, 2] centres -> anti-aliased coverage [T, P]."""
    dx = xs - center[:, 0:1].astype(np.float32)
    dy = ys - center[:, 1:2].astype(np.float32)
    return np.clip(radius + 0.5 - np.sqrt(dx * dx + dy * dy), 0.0, 1.0)


def _noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian-ish noise (float32): a sum of 4 uniform bytes.

    Four times faster than rng.standard_normal; its tails stop at 3.5 sigma, which no 8-bit frame shows.
    """
    count = int(np.prod(shape))
    draws = np.frombuffer(rng.bytes(4 * count), dtype=np.uint8).reshape(4, count)
    total = draws.sum(axis=0, dtype=np.int16).astype(np.float32)
    return ((total - 510.0) / np.float32(math.sqrt(4 * (256**2 - 1) / 12))).reshape(shape)


def _paint(plan: VideoPlan, rng: np.random.Generator | None, size: int, clean: bool) -> np.ndarray:
    """Paint a plan channels-first, the layout JPEG encoding wants: uint8 [T, 3, H, W].

    The layers (background, distractor, object, back to front) are mixed by per-pixel weights computed
    once, then each channel is one pass over contiguous [T, P] arrays: numpy is slow on short inner axes.
    """
    frames = len(plan.angle)
    xs, ys = _pixel_grid(size)
    on_object = _shape_coverage(plan, xs, ys)  # [T, P]
    if clean:
        on_distractor = np.zeros_like(on_object)
        shade = np.zeros_like(xs)
    else:  # the distractor passes behind the object, so the object is never hidden
        on_distractor = _disk_coverage(plan.distractor_center, plan.distractor_radius, xs, ys)
        shade = (plan.gradient[0] * (xs - size / 2) + plan.gradient[1] * (ys - size / 2)).astype(np.float32)  # [P]
    w_distractor = on_distractor * (1 - on_object)  # [T, P]
    w_background = 1 - on_object - w_distractor
    # One value per pixel for all three channels: brightness noise, as from a sensor.
    noise = 0.0 if clean else np.float32(plan.noise_std) * _noise(rng, (frames, xs.size))  # [T, P]

    out = np.empty((frames, 3, xs.size), dtype=np.uint8)
    for ch in range(3):
        value = w_background * (np.float32(plan.background[ch]) + shade)  # [T, P]
        value += w_distractor * np.float32(plan.distractor_color[ch])
        value += on_object * np.float32(plan.color[ch])
        value += noise
        value *= 255
        value += 0.5  # round, since the cast below truncates
        out[:, ch] = np.clip(value, 0, 255, out=value)
    return out.reshape(frames, 3, size, size)


def render_plan(plan: VideoPlan, rng: np.random.Generator | None, size: int, clean: bool = False) -> np.ndarray:
    """Paint a plan: uint8 [T, H, W, 3]. `clean` leaves out distractor, gradient and noise (for tests)."""
    return np.ascontiguousarray(_paint(plan, rng, size, clean).transpose(0, 2, 3, 1))


def _check_video_shape(frames: int, size: int) -> None:
    if frames < SEQUENCE_LENGTH:
        raise ValueError(f"frames must be at least {SEQUENCE_LENGTH}, one per motion; got {frames}")
    if size < 16:
        raise ValueError(f"size must be at least 16 pixels for the motions to be visible; got {size}")


def render_video(
    class_name: str, rng: np.random.Generator, frames: int, size: int, *, clean: bool = False
) -> np.ndarray:
    """Render one video of `class_name`: uint8 [T, H, W, 3], T = frames, H = W = size.

    All randomness comes from `rng`; `clean=True` draws the same object and trajectory but paints
    it on a flat background without distractor or noise.
    """
    _check_video_shape(frames, size)
    return render_plan(plan_video(class_name, rng, frames, size), rng, size, clean=clean)


# ------------------------------------------------------------------------------------------------ disk


def video_name(class_name: str, video_index: int, videos_per_class: int) -> str:
    """`left-grow-spin_cw`, 7 -> `left-grow-spin_cw_007`; unique across the dataset because classes are."""
    width = max(3, len(str(videos_per_class - 1)))
    return f"{class_name}_{video_index:0{width}d}"


def frame_name(frame_index: int) -> str:
    """0 -> `00000001.jpg`: frame files count from 1."""
    return f"{frame_index + 1:08d}.jpg"


def _video_rng(spec: SyntheticSpec, class_name: str, video_index: int) -> np.random.Generator:
    return np.random.default_rng([spec.seed, CLASS_INDEX[class_name], video_index])


def _encode_video(spec: SyntheticSpec, class_name: str, video_index: int) -> list[bytes]:
    """Render one video of the dataset and encode it: one JPEG per frame, the same pixels as render_video."""
    from torchvision.io import encode_jpeg  # torchvision takes 3 s to import: not before it is needed

    rng = _video_rng(spec, class_name, video_index)
    plan = plan_video(class_name, rng, spec.frames, spec.size)
    frames = torch.from_numpy(_paint(plan, rng, spec.size, clean=False))  # [T, 3, H, W]
    return [data.numpy().tobytes() for data in encode_jpeg(list(frames), quality=JPEG_QUALITY)]


def _encode_videos(spec: SyntheticSpec, class_name: str, video_indices: list[int]) -> list[list[bytes]]:
    """The work one process does for one class: pixels and JPEG encoding, no files."""
    return [_encode_video(spec, class_name, i) for i in video_indices]


def _video_folder(root: Path, spec: SyntheticSpec, class_name: str, video_index: int) -> Path:
    return root / class_name / video_name(class_name, video_index, spec.videos_per_class)


def _missing_videos(root: Path, spec: SyntheticSpec, class_name: str) -> list[int]:
    """Indices of the videos of a class not on disk yet (a video appears only when it is complete)."""
    return [i for i in range(spec.videos_per_class) if not _video_folder(root, spec, class_name, i).is_dir()]


def _write_video(folder: Path, jpegs: list[bytes]) -> None:
    """Write one file per frame in `folder`, made visible all at once by renaming a staging folder."""
    staging = folder.with_name("." + folder.name + ".partial")
    if staging.exists():  # left by an interrupted run inside our own marked folder
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    for index, data in enumerate(jpegs):
        _write_bytes(staging / frame_name(index), data)
    os.replace(staging, folder)


def _write_bytes(path: Path, data: bytes) -> None:
    """Path.write_bytes without the buffered-IO layer: creating tens of thousands of small files is the
    slowest part of generation, and each avoided system call counts."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0), 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def _init_worker() -> None:
    torch.set_num_threads(1)  # workers already split the cores; more threads would only contend


def _generate_in_parallel(
    root: Path,
    spec: SyntheticSpec,
    todo: list[tuple[str, list[int]]],
    workers: int,
    finished: Callable[[int], None],
) -> None:
    """Render and encode in worker processes, one class per task; write every file from this process.

    Creating files is mostly kernel time that serialises on the file system, and several processes
    creating files at once spend more system time than one doing it alone; so only one writes.
    """
    # Forked workers inherit the imported modules; a spawned one spends seconds importing torchvision
    # again. The workers touch neither CUDA nor torch's thread pools, so forking is safe here.
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker) as pool:
        jobs = {}
        for name, missing in todo:
            finished(spec.videos_per_class - len(missing))
            if missing:
                jobs[pool.submit(_encode_videos, spec, name, missing)] = (name, missing)
        try:
            for job in concurrent.futures.as_completed(jobs):
                name, missing = jobs[job]
                for i, jpegs in zip(missing, job.result()):
                    _write_video(_video_folder(root, spec, name, i), jpegs)
                finished(len(missing))
        except BaseException:  # a failure or Ctrl-C: stop now rather than finish the queued classes
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def _check_spec(spec: SyntheticSpec) -> None:
    if not isinstance(spec.seed, int) or spec.seed < 0:
        raise ValueError(f"seed must be a whole number, 0 or more; got {spec.seed!r}")
    if spec.videos_per_class < 1:
        raise ValueError(f"videos_per_class must be at least 1; got {spec.videos_per_class}")
    _check_video_shape(spec.frames, spec.size)
    _check_counts(spec.n_train, spec.n_val, spec.n_test)


def _spec_record(spec: SyntheticSpec) -> dict:
    return {"version": GENERATOR_VERSION, "spec": asdict(spec)}


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _same_spec(record: dict | None, spec: SyntheticSpec) -> bool:
    if not isinstance(record, dict):
        return False
    return record.get("version") == GENERATOR_VERSION and record.get("spec") == asdict(spec)


def _describe(record: dict | None) -> str:
    if not isinstance(record, dict) or not isinstance(record.get("spec"), dict):
        return "an unreadable description"
    known = {f.name for f in fields(SyntheticSpec)}
    text = ", ".join(f"{k}={v}" for k, v in record["spec"].items() if k in known)
    return f"generator version {record.get('version')}, {text}"


def is_complete(root: str | os.PathLike, spec: SyntheticSpec) -> bool:
    """True when `root` holds a finished dataset generated with exactly `spec` by this generator version."""
    return _same_spec(_read_json(Path(root) / METADATA_NAME), spec)


def _claim_folder(root: Path, spec: SyntheticSpec) -> None:
    """Make sure `root` is ours to write into, or raise; mark it as ours if it is new or empty."""
    if root.exists() and not root.is_dir():
        raise ValueError(f"{root} is a file, not a folder; choose another --out for the synthetic dataset")
    marker = root / PARTIAL_MARKER
    # the marker's staging file alone is what a run killed while marking a new folder leaves: the folder is ours
    if root.is_dir() and any(e.name != marker.name + ".tmp" for e in root.iterdir()):
        if (root / METADATA_NAME).exists():
            found = _describe(_read_json(root / METADATA_NAME))
            raise ValueError(
                f"{root} already holds a synthetic dataset made with different settings ({found}); "
                f"delete that folder or choose another --out"
            )
        if not marker.exists():
            raise ValueError(
                f"{root} is not empty and was not created by the synthetic generator; "
                f"delete that folder or choose another --out"
            )
        if not _same_spec(_read_json(marker), spec):
            found = _describe(_read_json(marker))
            raise ValueError(
                f"{root} holds an unfinished synthetic dataset started with different settings ({found}); "
                f"delete that folder or choose another --out"
            )
        return  # our own unfinished run with the same settings: resume it
    root.mkdir(parents=True, exist_ok=True)
    _write_text_atomic(marker, json.dumps(_spec_record(spec), indent=2) + "\n")  # never half a marker


def _write_text_atomic(path: Path, text: str) -> None:
    staging = path.with_name(path.name + ".tmp")
    with open(staging, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
    os.replace(staging, path)


def _write_split_files(root: Path, spec: SyntheticSpec, split: dict[str, list[str]]) -> None:
    for part, filename in SPLIT_FILES.items():
        lines = sorted(
            f"{name}/{video_name(name, i, spec.videos_per_class)}"
            for name in split[part]
            for i in range(spec.videos_per_class)
        )
        _write_text_atomic(root / filename, "".join(line + "\n" for line in lines))


def generate(
    root: str | os.PathLike,
    spec: SyntheticSpec = SyntheticSpec(),
    progress: Callable[[int, int], None] | None = None,
    workers: int = 1,
) -> Path:
    """Write the dataset described by `spec` under `root` and return `root` as a Path.

    Returns at once if `root` already holds it. Raises ValueError if `root` holds anything else; an
    unfinished run of this generator with the same spec is resumed. `progress(done, total)` counts
    videos (after every video with one worker, after every class with several).
    """
    _check_spec(spec)
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a whole number, 1 or more; got {workers!r}")
    root = Path(root)
    if is_complete(root, spec):
        return root
    _claim_folder(root, spec)

    split = class_split(spec.seed, spec.n_train, spec.n_val, spec.n_test)
    classes = [name for part in ("train", "val", "test") for name in split[part]]
    total = len(classes) * spec.videos_per_class
    done = 0

    def finished(count: int) -> None:
        nonlocal done
        done += count
        if progress is not None and count:
            progress(done, total)

    todo = [(name, _missing_videos(root, spec, name)) for name in classes]
    if workers == 1:
        for name, missing in todo:
            finished(spec.videos_per_class - len(missing))
            for i in missing:
                _write_video(_video_folder(root, spec, name, i), _encode_video(spec, name, i))
                finished(1)
    else:
        _generate_in_parallel(root, spec, todo, workers, finished)

    _write_split_files(root, spec, split)
    metadata = {
        "generator": "harness.data.synthetic",
        **_spec_record(spec),
        "primitives": list(PRIMITIVES),
        "classes": split,
        "videos": {part: len(split[part]) * spec.videos_per_class for part in ("train", "val", "test")},
    }
    _write_text_atomic(root / METADATA_NAME, json.dumps(metadata, indent=2) + "\n")  # last: means complete
    (root / PARTIAL_MARKER).unlink(missing_ok=True)
    return root

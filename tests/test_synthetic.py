"""The synthetic order-defined benchmark: split, determinism, on-disk layout, and that order shows."""
from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.io import decode_jpeg

from harness.data import synthetic as syn
from harness.data.synthetic import PRIMITIVES, SyntheticSpec, class_split, generate, is_complete, render_video

TINY = SyntheticSpec(seed=3, videos_per_class=2, frames=8, size=32, n_train=2, n_val=2, n_test=2)


def reverse(name: str) -> str:
    return "-".join(reversed(name.split("-")))


def digest(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under root."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("tiny") / "data", TINY)


# ------------------------------------------------------------------------------------------- split


def test_split_sizes_disjoint_and_made_of_reversed_pairs():
    split = class_split(0)
    assert {k: len(v) for k, v in split.items()} == {"train": 64, "val": 12, "test": 24}
    parts = [set(v) for v in split.values()]
    assert sum(map(len, parts)) == len(set().union(*parts)) == 100
    for part in ("val", "test"):
        for name in split[part]:
            assert reverse(name) in split[part]
    held_out = set(split["val"]) | set(split["test"])
    assert not {reverse(name) for name in split["train"]} & held_out
    for name in itertools.chain(*split.values()):
        steps = name.split("-")
        assert len(steps) == 3 and len(set(steps)) == 3 and set(steps) <= set(PRIMITIVES)
    assert all(v == sorted(v) for v in split.values())


def test_split_is_deterministic_and_depends_on_seed():
    assert class_split(7) == class_split(7)
    assert class_split(7) != class_split(8)


def test_split_rejects_odd_or_impossible_counts():
    with pytest.raises(ValueError, match="even"):
        class_split(0, n_val=3)
    with pytest.raises(ValueError, match="fewer classes"):
        class_split(0, n_train=302, n_val=12, n_test=24)


# -------------------------------------------------------------------------------------- rendering


def test_render_shape_and_type():
    video = render_video("left-grow-spin_cw", np.random.default_rng(0), 16, 64)
    assert video.shape == (16, 64, 64, 3) and video.dtype == np.uint8
    assert video.std() > 5  # not a blank frame


def test_reversed_class_renders_differently():
    forward = render_video("left-grow-spin_cw", np.random.default_rng(1), 8, 32)
    backward = render_video("spin_cw-grow-left", np.random.default_rng(1), 8, 32)
    assert not np.array_equal(forward, backward)


def centroids(video: np.ndarray) -> np.ndarray:
    """Object centre (x, y) per frame of a clean render: [T, 2]."""
    distance = np.abs(video.astype(np.int32) - video[:, :1, :1].astype(np.int32)).sum(-1)  # [T, H, W]
    mask = distance > 40
    ys, xs = np.mgrid[: video.shape[1], : video.shape[2]] + 0.5
    return np.stack([(xs * mask).sum((1, 2)) / mask.sum((1, 2)), (ys * mask).sum((1, 2)) / mask.sum((1, 2))], 1)


def segment_frames(bounds: np.ndarray, frames: int, k: int) -> tuple[int, int]:
    """First and last frame index that lie within segment k."""
    time = np.linspace(0, 1, frames)
    inside = np.flatnonzero((time >= bounds[k]) & (time <= bounds[k + 1]))
    return int(inside[0]), int(inside[-1])


@pytest.mark.parametrize("seed", range(5))
def test_first_segment_left_moves_the_rendered_object_left(seed):
    name, frames, size = "left-grow-spin_cw", 16, 64
    plan = syn.plan_video(name, np.random.default_rng(seed), frames, size)
    video = render_video(name, np.random.default_rng(seed), frames, size, clean=True)
    first, last = segment_frames(plan.bounds, frames, 0)
    xy = centroids(video)
    assert xy[last, 0] < xy[first, 0] - 0.15 * size  # clearly visible: well over 5 px at 64
    assert abs(xy[last, 1] - xy[first, 1]) < 1.0  # and only sideways
    assert np.allclose(xy[:, 0], plan.center[:, 0], atol=1.0)  # the painted object follows the plan


@pytest.mark.parametrize("primitive", PRIMITIVES)
def test_every_primitive_changes_the_right_quantity_in_its_segment(primitive):
    others = [p for p in PRIMITIVES if p != primitive][:2]
    for position in range(3):
        steps = others[:position] + [primitive] + others[position:]
        plan = syn.plan_video("-".join(steps), np.random.default_rng(position), 16, 64)
        first, last = segment_frames(plan.bounds, 16, position)
        change = {
            "x": plan.center[last, 0] - plan.center[first, 0],
            "y": plan.center[last, 1] - plan.center[first, 1],
            "scale": np.log(plan.radius[last] / plan.radius[first]),
            "angle": plan.angle[last] - plan.angle[first],
        }
        expected = {
            "left": ("x", -1), "right": ("x", 1), "up": ("y", -1), "down": ("y", 1),
            "grow": ("scale", 1), "shrink": ("scale", -1), "spin_cw": ("angle", 1), "spin_ccw": ("angle", -1),
        }[primitive]
        for quantity, value in change.items():
            if quantity == expected[0]:
                assert value * expected[1] > 0, (steps, quantity, value)
            else:
                assert abs(value) < 1e-6, (steps, quantity, value)


def test_object_stays_inside_the_frame():
    for i, name in enumerate(syn.ALL_CLASSES[::7]):
        for size in (32, 64):
            plan = syn.plan_video(name, np.random.default_rng(i), 16, size)
            assert (plan.center - plan.radius[:, None]).min() >= 0
            assert (plan.center + plan.radius[:, None]).max() <= size


def test_segments_each_get_a_fair_share():
    for i in range(50):
        plan = syn.plan_video("up-down-grow", np.random.default_rng(i), 16, 64)
        assert np.all(np.diff(plan.bounds) >= 0.2 - 1e-9)


# ------------------------------------------------------------------------------------------- files


def test_layout_matches_split_files(tiny_dataset):
    root = tiny_dataset
    meta = json.loads((root / "synthetic.json").read_text())
    assert meta["spec"] == {
        "seed": 3, "videos_per_class": 2, "frames": 8, "size": 32, "n_train": 2, "n_val": 2, "n_test": 2,
    }
    assert meta["version"] == syn.GENERATOR_VERSION
    assert meta["classes"] == class_split(3, 2, 2, 2)
    names = [f"{i:08d}.jpg" for i in range(1, TINY.frames + 1)]
    listed = []
    for part in ("train", "val", "test"):
        raw = (root / f"{part}list.txt").read_bytes()
        assert raw.endswith(b"\n") and b"\r" not in raw
        lines = raw.decode().splitlines()
        assert lines == sorted(lines) and len(lines) == len(meta["classes"][part]) * TINY.videos_per_class
        for line in lines:
            cls, video = line.split("/")
            assert cls in meta["classes"][part] and video.startswith(cls + "_")
            assert sorted(p.name for p in (root / line).iterdir()) == names
        listed += lines
    assert len(set(line.split("/")[1] for line in listed)) == len(listed)  # video names unique
    on_disk = sorted(f"{c.name}/{v.name}" for c in root.iterdir() if c.is_dir() for v in c.iterdir())
    assert on_disk == sorted(listed)
    assert not (root / syn.PARTIAL_MARKER).exists()


def test_frames_decode_to_the_spec_size(tiny_dataset):
    line = (tiny_dataset / "testlist.txt").read_text().splitlines()[0]
    for frame in sorted((tiny_dataset / line).iterdir()):
        image = decode_jpeg(torch.frombuffer(bytearray(frame.read_bytes()), dtype=torch.uint8))
        assert image.shape == (3, TINY.size, TINY.size) and image.dtype == torch.uint8


def test_same_seed_gives_byte_identical_files_whatever_the_workers(tiny_dataset, tmp_path):
    again = generate(tmp_path / "again", TINY, workers=1)
    parallel = generate(tmp_path / "parallel", TINY, workers=2)
    reference = digest(tiny_dataset)
    assert len(reference) > 3 * 2 * TINY.frames
    assert digest(again) == reference
    assert digest(parallel) == reference


def test_other_seed_gives_other_files(tiny_dataset, tmp_path):
    other = generate(tmp_path / "other", SyntheticSpec(**{**TINY.__dict__, "seed": 4}))
    assert digest(other) != digest(tiny_dataset)


def test_progress_counts_every_video(tmp_path):
    calls = []
    generate(tmp_path / "d", TINY, progress=lambda done, total: calls.append((done, total)))
    total = 6 * TINY.videos_per_class
    assert calls[-1] == (total, total) and len(calls) == total


def test_existing_dataset_same_spec_returns_at_once(tiny_dataset):
    before = digest(tiny_dataset)
    calls = []
    assert generate(tiny_dataset, TINY, progress=lambda *a: calls.append(a)) == tiny_dataset
    assert is_complete(tiny_dataset, TINY) and calls == [] and digest(tiny_dataset) == before


def test_existing_dataset_other_spec_raises_naming_the_folder(tiny_dataset):
    other = SyntheticSpec(**{**TINY.__dict__, "frames": 9})
    assert not is_complete(tiny_dataset, other)
    with pytest.raises(ValueError, match="different settings") as err:
        generate(tiny_dataset, other)
    assert str(tiny_dataset) in str(err.value) and "--out" in str(err.value)


def test_foreign_folder_is_never_written(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not created by the synthetic generator") as err:
        generate(tmp_path, TINY)
    assert str(tmp_path) in str(err.value)
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]


def test_interrupted_run_is_resumed_to_identical_files(tiny_dataset, tmp_path):
    root = tmp_path / "resumed"
    generate(root, TINY)
    # Undo the finish and one video, and leave a half-written video behind, as a crash would.
    (root / "synthetic.json").unlink()
    (root / syn.PARTIAL_MARKER).write_text(json.dumps({"version": syn.GENERATOR_VERSION, "spec": TINY.__dict__}))
    video = root / (root / "trainlist.txt").read_text().splitlines()[0]
    for frame in video.iterdir():
        frame.unlink()
    video.rmdir()
    (video.parent / f".{video.name}.partial").mkdir()
    assert not is_complete(root, TINY)
    generate(root, TINY)
    assert digest(root) == digest(tiny_dataset)


def test_unfinished_run_with_other_spec_raises(tmp_path):
    root = tmp_path / "d"
    root.mkdir()
    (root / syn.PARTIAL_MARKER).write_text(json.dumps({"version": syn.GENERATOR_VERSION, "spec": TINY.__dict__}))
    with pytest.raises(ValueError, match="unfinished"):
        generate(root, SyntheticSpec(**{**TINY.__dict__, "seed": 9}))


def test_bad_spec_is_explained():
    with pytest.raises(ValueError, match="frames"):
        generate("/nonexistent/never-created", SyntheticSpec(frames=2))
    with pytest.raises(ValueError, match="not a synthetic class"):
        render_video("left-left-up", np.random.default_rng(0), 8, 32)

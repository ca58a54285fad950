"""A clip's pixels are one formula, whatever path made them: (x / 255 - mean) / std of the resized, centre-cropped
frames, in float32, laid out [3, T, crop, crop]; and the loader's batches are those clips, bit for bit."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF

from harness.data.clips import augment, load_clip, preprocess
from harness.data.index import build_index
from harness.data.loader import PREFETCH, clip_batches
from harness.protocol import FramesSpec

SPECS = [FramesSpec(count=8, resize=40, crop=32), FramesSpec(count=5, resize=24, crop=24, mean=(0.5, 0.25, 0.125), std=(0.2, 0.3, 0.7))]


def formula(frames: torch.Tensor, spec: FramesSpec) -> torch.Tensor:
    """The clip as the module docstring of harness.data.clips states it, one plain operation at a time."""
    x = TF.center_crop(TF.resize(frames, [spec.resize], antialias=True), [spec.crop, spec.crop])  # [T, 3, c, c] uint8
    x = x.to(torch.float32) / 255.0
    x = (x - torch.tensor(spec.mean, dtype=torch.float32).view(3, 1, 1)) / torch.tensor(spec.std, dtype=torch.float32).view(3, 1, 1)
    return x.permute(1, 0, 2, 3).contiguous()  # [3, T, c, c]


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("size", [(48, 64), (37, 29), (32, 32)])
def test_a_clips_pixels_are_the_formula_bit_for_bit(spec, size):
    frames = torch.randint(0, 256, (spec.count, 3, *size), dtype=torch.uint8, generator=torch.Generator().manual_seed(sum(size)))
    expected = formula(frames, spec)
    made = preprocess(frames, spec)
    assert made.dtype == torch.float32 and made.is_contiguous()
    assert torch.equal(made, expected)
    batch = torch.full((3, *expected.shape), float("nan"))
    placed = preprocess(frames, spec, out=batch[1])  # written into its place in a batch, nothing else touched
    assert placed.data_ptr() == batch[1].data_ptr()
    assert torch.equal(batch[1], expected) and batch[0].isnan().all() and batch[2].isnan().all()


def test_an_augmented_clip_without_crop_or_flip_is_the_same_formula():
    spec = SPECS[0]
    frames = torch.randint(0, 256, (spec.count, 3, 50, 70), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    assert torch.equal(augment(frames, spec, "center", False, np.random.default_rng(0)), formula(frames, spec))


@pytest.mark.parametrize("workers", [0, 2])
def test_the_loaders_batches_are_the_clips_in_order_bit_for_bit(tiny_root, workers):
    videos = build_index(tiny_root, tiny_root / "testlist.txt", "test", 8).videos[:7]
    spec = SPECS[0]
    batches, places = [], set()
    for positions, clips in clip_batches(videos, spec, 3, workers, torch.device("cpu")):
        places.add(clips.data_ptr())
        batches.append((positions, clips.clone()))  # a batch is valid until the next is asked for
    assert [len(p) for p, _ in batches] == [3, 3, 1]  # the last one short
    if workers == 0:
        assert len(places) == 1  # each batch written where the one before was: no fresh memory to fault in per batch
    assert torch.cat([p for p, _ in batches]).tolist() == list(range(7))
    assert torch.equal(torch.cat([c for _, c in batches]), torch.stack([load_clip(v, spec) for v in videos]))


def test_workers_write_their_batches_into_a_ring_each_slot_again_only_once_asked_past(tiny_root):
    """With workers, batches go through a few slots of shared memory: many batches, each the clips of `load_clip`
    when it is used (before the next is asked for), however far the workers run ahead."""
    videos = build_index(tiny_root, tiny_root / "testlist.txt", "test", 8).videos
    spec, workers = SPECS[0], 2
    n_batches = len(videos)  # batches of one clip: many more batches than slots
    places, seen = set(), []
    for positions, clips in clip_batches(videos, spec, 1, workers, torch.device("cpu")):
        time.sleep(0.01)  # the workers run ahead while a batch is in use
        places.add(clips.data_ptr())
        seen.append((positions.tolist(), clips.clone()))
    assert n_batches > PREFETCH * workers + 2 and len(places) == PREFETCH * workers + 2
    assert [p for p, _ in seen] == [[i] for i in range(len(videos))]
    assert torch.equal(torch.cat([c for _, c in seen]), torch.stack([load_clip(v, spec) for v in videos]))


def test_clips_of_one_size_made_together_are_each_the_clip_made_alone():
    spec = SPECS[1]
    clips = torch.randint(0, 256, (4, spec.count, 3, 30, 41), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    together = preprocess(clips, spec)  # [B, T, 3, H, W] -> [B, 3, T, crop, crop]
    assert together.shape == (4, 3, spec.count, spec.crop, spec.crop) and together.is_contiguous()
    assert torch.equal(together, torch.stack([formula(c, spec) for c in clips]))


@pytest.mark.parametrize("module, rekeys", [("harness.data.clips", True), ("harness.data.sources", True), ("harness.data.loader", False)])
def test_the_code_that_makes_pixels_keys_the_features_and_the_batching_does_not(monkeypatch, module, rekeys):
    import harness.provenance as provenance

    before = provenance.backbone_code_sha256.__wrapped__("tiny3d")
    real = provenance._module_source
    monkeypatch.setattr(provenance, "_module_source", lambda name: real(name) + b"\n# an edit\n" if name == module else real(name))
    assert (provenance.backbone_code_sha256.__wrapped__("tiny3d") != before) == rekeys

"""Where frames become pixels: in the loader (the CPU's way) or on the backbone's device (JPEG frames decoded
there in one call per batch, resized and normalised there). On the CPU both ways must give the very same
features; the device way has a feature-store key of its own, since on a GPU nvJPEG may round otherwise."""
from __future__ import annotations

import io
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from harness.backbones import create_backbone
from harness.data.clips import decode_clips, load_clip, read_encoded_clip
from harness.data.index import build_index
from harness.data.sources import decode_frame, decode_frames
from harness.errors import HarnessError
from harness.features import DEVICE_PIXELS, FeatureStore
from harness.pipeline import Settings, pixels_for
from harness.protocol import FramesSpec
from test_sources import clip, split_file, write_frames, write_mp4, write_zip

SPEC = FramesSpec(count=8, resize=40, crop=32)


def _jpeg(array: np.ndarray, mode: str) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).convert(mode).save(out, format="JPEG", quality=90)
    return out.getvalue()


@pytest.fixture(scope="module")
def mixed_root(tmp_path_factory):
    """Five videos of every kind the loader reads: JPEG folders (one of grey frames), a PNG folder, a zip
    member and an mp4, of two frame sizes."""
    base = tmp_path_factory.mktemp("pixels")
    root = base / "root"
    write_frames(root / "cls" / "a", clip(seed=0))
    write_frames(root / "cls" / "b", clip(seed=1, size=48))
    grey = root / "cls" / "grey"
    grey.mkdir(parents=True)
    for i, frame in enumerate(clip(seed=2)):
        (grey / f"{i + 1:05d}.jpg").write_bytes(_jpeg(frame, "L"))
    png = root / "cls" / "png"
    png.mkdir(parents=True)
    for i, frame in enumerate(clip(seed=3)):
        Image.fromarray(frame).save(png / f"{i + 1:05d}.png")
    write_mp4(root / "cls" / "film.mp4", clip(seed=4))
    split = split_file(base / "list.txt", ["cls/a", "cls/b", "cls/grey", "cls/png", "cls/film"])
    zipped = base / "zipped"
    write_frames(zipped / "cls" / "a", clip(seed=0))
    write_zip(base / "frames.zip", zipped)
    return build_index(root, split, "test", min_frames=8), build_index(base / "frames.zip", split_file(base / "z.txt", ["cls/a"]), "test", min_frames=8)


def test_jpeg_frames_decoded_in_one_call_equal_those_decoded_one_by_one():
    frames = clip(seed=5)
    blobs = [(f"f{i}", _jpeg(f, mode)) for i, f in enumerate(frames) for mode in ("RGB", "L", "CMYK")]
    batch = decode_frames(blobs, video=None)
    assert len(batch) == len(blobs)
    for (_, data), image in zip(blobs, batch):
        assert torch.equal(image, decode_frame(data))


def test_a_damaged_frame_in_a_batch_is_named(mixed_root):
    index, _ = mixed_root
    video = index.videos[0]
    blobs = read_encoded_clip(video, SPEC).blobs
    assert blobs is not None and len(blobs) == SPEC.count
    name, data = blobs[3]
    blobs[3] = (name, data[:40])  # a JPEG cut inside its header
    with pytest.raises(HarnessError) as e:
        decode_frames(blobs, video)
    assert name in e.value.what and video.key in (e.value.where or "")
    # in a batch of clips decoded together, the error names the clip the frame belongs to, not the first one
    first, damaged = read_encoded_clip(index.videos[1], SPEC), read_encoded_clip(video, SPEC)
    damaged.blobs[3] = (name, data[:40])
    with pytest.raises(HarnessError) as e:
        decode_clips([first, damaged], SPEC, torch.device("cpu"))
    assert name in e.value.what and video.key in (e.value.where or "") and index.videos[1].key not in (e.value.where or "")


def test_clips_decoded_by_the_caller_are_the_loaders_bit_for_bit(mixed_root):
    index, zipped = mixed_root
    videos = index.videos + zipped.videos
    kinds = {v.kind for v in videos}
    assert kinds == {"frames", "zip", "file"}
    encoded = [read_encoded_clip(v, SPEC) for v in videos]
    assert [e.blobs is None for e in encoded] == [v.kind == "file" for v in videos]
    together = decode_clips(encoded, SPEC, torch.device("cpu"))  # two frame sizes: clip by clip
    same_size = [e for e, v in zip(encoded, videos) if v.video_id != "b"]
    at_once = decode_clips(same_size, SPEC, torch.device("cpu"))  # one size: all frames of the batch at once
    loaded = torch.stack([load_clip(v, SPEC) for v in videos])
    assert together.shape == (len(videos), 3, SPEC.count, SPEC.crop, SPEC.crop)
    assert torch.equal(together, loaded)
    assert torch.equal(at_once, torch.stack([load_clip(v, SPEC) for v in videos if v.video_id != "b"]))


@pytest.mark.parametrize("workers", [0, 2])
def test_a_store_decoding_on_the_device_has_its_own_key_and_on_a_cpu_the_same_features(tmp_path, mixed_root, workers):
    index, _ = mixed_root
    videos = [v for v in index.videos if v.video_id != "b"]  # one frame size (tiny3d takes any)
    torch.manual_seed(0)
    backbone = create_backbone("tiny3d").eval()
    loader_way = FeatureStore(tmp_path, "tiny3d", "w", SPEC, code_sha256="c")
    device_way = FeatureStore(tmp_path, "tiny3d", "w", SPEC, code_sha256="c", pixels=DEVICE_PIXELS)
    assert loader_way.key != device_way.key and device_way.meta["pixels"] == DEVICE_PIXELS and "pixels" not in loader_way.meta
    for store in (loader_way, device_way):  # batches of 3: a full one and a padded one
        assert store.extract(videos, backbone, torch.device("cpu"), batch_size=3, workers=workers) == len(videos)
    assert torch.equal(loader_way.load(videos), device_way.load(videos))
    with pytest.raises(HarnessError, match="unknown way of decoding"):
        FeatureStore(tmp_path, "tiny3d", "w", SPEC, code_sha256="c", pixels="gpu")


def test_frames_are_decoded_on_the_gpu_unless_asked_otherwise(tmp_path):
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert pixels_for(Settings(tmp_path, tmp_path, device=cpu)) == "cpu"
    assert pixels_for(Settings(tmp_path, tmp_path, device=gpu)) == DEVICE_PIXELS
    assert pixels_for(Settings(tmp_path, tmp_path, device=gpu, decode="cpu")) == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (nvJPEG)")
def test_on_a_gpu_device_decoded_features_are_close_to_the_cpus(tmp_path, mixed_root):
    """nvJPEG and the GPU's resampling may move a pixel by a level of 255; the features move by as little."""
    index, _ = mixed_root
    videos = [v for v in index.videos if v.video_id != "b"]
    torch.manual_seed(0)
    backbone = create_backbone("tiny3d").eval()
    gpu = torch.device("cuda")
    loader_way = FeatureStore(tmp_path, "tiny3d", "w", SPEC, code_sha256="c")
    device_way = FeatureStore(tmp_path, "tiny3d", "w", SPEC, code_sha256="c", pixels=DEVICE_PIXELS)
    for store in (loader_way, device_way):
        store.extract(videos, backbone, gpu, batch_size=4)
    a, b = loader_way.load(videos), device_way.load(videos)
    assert ((a - b).abs().max() / a.abs().max()).item() < 1e-2
    encoded = [read_encoded_clip(v, SPEC) for v in videos]
    pixels = decode_clips(encoded, SPEC, gpu).cpu()
    assert (pixels - torch.stack([load_clip(v, SPEC) for v in videos])).abs().max().item() <= 3 / 255 + 1e-6


@pytest.mark.parametrize("workers", [0, 2])
def test_a_new_store_keys_each_video_by_the_bytes_it_embeds_as_a_lookup_would(tmp_path, mixed_root, workers, monkeypatch):
    """In a store with no entry the videos are not fingerprinted first: each is keyed from the bytes its clip was
    decoded from. Those keys, and the features, are the ones a store that looks its videos up first finds, for
    every kind of video; and the fingerprints are remembered, so the run's data fingerprint reads nothing again."""
    import harness.data.fingerprint as fingerprint
    import harness.features as features

    index, zipped = mixed_root
    videos = [v for v in index.videos + zipped.videos if v.video_id != "b"]  # one frame size: one batch
    torch.manual_seed(0)
    backbone = create_backbone("tiny3d")
    fingerprint.forget_remembered()
    looked_up = []
    real = features.video_fingerprint
    monkeypatch.setattr(features, "video_fingerprint", lambda video, frames: looked_up.append(video.key) or real(video, frames))
    new = FeatureStore(tmp_path / "new", "tiny3d", "w", SPEC)
    assert new.extract(videos, backbone, torch.device("cpu"), 4, workers) == len(videos)
    assert looked_up == []
    hashed = []
    real_hash = fingerprint._frames_fingerprint
    monkeypatch.setattr(fingerprint, "_frames_fingerprint", lambda *a: hashed.append(a[0].key) or real_hash(*a))
    from harness.data.fingerprint import index_fingerprint

    index_fingerprint(index, SPEC)  # remembered from the extraction: checked by their stamps, not read again
    assert hashed == [index.videos[1].key]  # the one video not embedded
    fingerprint.forget_remembered()
    looked = FeatureStore(tmp_path / "looked", "tiny3d", "w", SPEC)
    (looked.dir / "videos").mkdir(parents=True)  # not new: every video is looked up (fingerprinted) first
    assert looked.extract(videos, backbone, torch.device("cpu"), 4, workers) == len(videos)
    assert [looked._entry_keys([v])[0] for v in videos] == [new._entry_keys([v])[0] for v in videos]
    assert sorted(p.name for p in (new.dir / "videos").rglob("*.npy")) == sorted(p.name for p in (looked.dir / "videos").rglob("*.npy"))
    assert torch.equal(new.load(videos), looked.load(videos))


def test_a_video_changed_between_its_lookup_and_its_embedding_is_keyed_by_what_was_embedded(tmp_path, mixed_root, monkeypatch, capsys):
    import harness.features as features
    from harness.data.fingerprint import forget_remembered
    from harness.features import video_entry_key

    index, _ = mixed_root
    root = tmp_path / "root"
    shutil.copytree(index.videos[0].path.parent, root / "cls")
    videos = build_index(root, split_file(tmp_path / "list.txt", ["cls/a", "cls/png"]), "test", min_frames=8).videos
    store = FeatureStore(tmp_path / "home", "tiny3d", "w", SPEC)
    (store.dir / "videos").mkdir(parents=True)
    torch.manual_seed(0)
    backbone = create_backbone("tiny3d")
    looked_up = store._entry_keys(videos)  # the keys `missing` finds; then a frame of video a is replaced
    frame = sorted(videos[0].path.iterdir())[0]
    frame.write_bytes(sorted(videos[0].path.iterdir())[-1].read_bytes())
    store.extract(videos, backbone, torch.device("cpu"), 4, 0)
    assert f"the frames of video {videos[0].key} changed while it was being embedded" in capsys.readouterr().err
    forget_remembered()
    now = [video_entry_key(v, SPEC) for v in videos]
    assert now[0] != looked_up[0] and now[1] == looked_up[1]
    assert store._entry_keys(videos) == now and store._entry_path(now[0]).is_file() and not store._entry_path(looked_up[0]).is_file()
    assert torch.equal(store.load(videos)[0], embed_alone(backbone, videos[0]))


def embed_alone(backbone, video):
    from harness.features import embed_clips

    clips = torch.stack([load_clip(video, SPEC)] * 4)  # the store's batch of 4, padded with copies
    return embed_clips(backbone.eval(), clips, torch.device("cpu"))[0]

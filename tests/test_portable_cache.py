"""The feature store is keyed by what a video shows, not where it lies: a moved data home or a copied data root
reuses every entry; a frame overwritten in place embeds that video anew, and only it; --recompute embeds
every video of the index anew, once per process."""
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.io import decode_jpeg, encode_jpeg

from harness.data.fingerprint import index_fingerprint, read_positions, video_fingerprint
from harness.data.index import Video, build_index, list_frames
from harness.errors import HarnessError
from harness.features import FeatureStore
from harness.files import atomic_save_npy_checksummed
from harness.pipeline import run_method
from harness.protocol import FramesSpec, load_protocol
from conftest import TINY_PROTOCOL, settings


def protocol_at(root: Path, folder: Path):
    """The tiny protocol with its data root at `root` (what --set dataset.root=ROOT gives)."""
    path = folder / "tiny-5w1s.yaml"
    path.write_text(TINY_PROTOCOL.format(name="tiny-5w1s", root=root, shot=1, episodes=200))
    return load_protocol(path)


def index_of(root: Path, count: int = 8):
    return build_index(root, root / "testlist.txt", "test", count)


def records(summary) -> bytes:
    return Path(summary["records_path"]).read_bytes()


def store_of(p, home: Path, summary) -> FeatureStore:
    """A new store object (it fingerprints the videos afresh) for the run's backbone weights."""
    return FeatureStore(home, p.backbone.name, summary["backbone"]["weights_sha256"], p.frames)


def overwrite_frame(folder: Path, position: int) -> None:
    """Write other pixels (the negative) into the frame file at `position`, in place as `ffmpeg -y` does, and
    give the folder back its modification time."""
    stat = folder.stat()
    frame = folder / list_frames(folder)[position]
    pixels = decode_jpeg(torch.frombuffer(bytearray(frame.read_bytes()), dtype=torch.uint8))
    with open(frame, "r+b") as f:  # the same file (inode), truncated and rewritten
        f.truncate(0)
        f.write(encode_jpeg(255 - pixels, quality=95).numpy().tobytes())
    os.utime(folder, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert folder.stat().st_mtime_ns == stat.st_mtime_ns


def test_a_moved_home_and_a_copied_data_root_reuse_every_entry(protocol, home, tmp_path, tiny_root):
    first = run_method(protocol, "protonet", settings(home, tmp_path / "first"))
    old_home, new_home = tmp_path / "old-home", tmp_path / "new-home"
    shutil.copytree(home, old_home)
    shutil.copytree(old_home, new_home)
    shutil.rmtree(old_home)  # the home moved: only the copy is left
    root = shutil.copytree(tiny_root, tmp_path / "scratch" / "tiny-synthetic")
    p = protocol_at(root, tmp_path)

    moved = run_method(p, "protonet", settings(new_home, tmp_path / "moved"))
    assert moved["videos_embedded_this_run"] == 0, "the same videos must find their entries wherever they lie"
    assert records(moved) == records(first)
    assert moved["backbone"]["weights_sha256"] == first["backbone"]["weights_sha256"]  # the moved home's pretrained weights
    assert moved["backbone"]["feature_store"] == first["backbone"]["feature_store"]
    assert moved["data_sha256"] == first["data_sha256"] == index_fingerprint(index_of(root), p.frames)


def test_a_frame_overwritten_in_place_embeds_that_video_anew_and_only_it(protocol, home, tmp_path, tiny_root):
    run_method(protocol, "protonet", settings(home, tmp_path / "original"))
    root = shutil.copytree(tiny_root, tmp_path / "data")
    p = protocol_at(root, tmp_path)
    before = run_method(p, "protonet", settings(home, tmp_path / "before"))
    assert before["videos_embedded_this_run"] == 0  # same videos under another root: the same entries
    videos = index_of(root).videos
    old_maps = store_of(p, home, before).load(videos).clone()

    changed = videos[3]
    overwrite_frame(changed.path, read_positions(changed, p.frames)[2])
    after = run_method(p, "protonet", settings(home, tmp_path / "after"))
    assert after["videos_embedded_this_run"] == 1
    assert after["data_sha256"] != before["data_sha256"]
    new_maps = store_of(p, home, after).load(index_of(root).videos)
    differs = [i for i in range(len(videos)) if not torch.equal(old_maps[i], new_maps[i])]
    assert differs == [3], "only the changed video may get other features, and it must"

    again = run_method(p, "protonet", settings(home, tmp_path / "again"))
    assert again["videos_embedded_this_run"] == 0 and records(again) == records(after)


class PooledPixels(torch.nn.Module):
    """A stand-in backbone: clips [B, 3, T, H, W] -> their mean colour per frame [B, 3, T, 1, 1]."""

    def forward(self, clips):
        return clips.mean(dim=(3, 4), keepdim=True)


def test_a_frame_the_loader_never_reads_changes_nothing(tmp_path, tiny_root):
    root = shutil.copytree(tiny_root, tmp_path / "data")
    frames = FramesSpec(count=4, resize=32, crop=32)  # 4 of the 8 frames: positions 0, 2, 5, 7
    videos = index_of(root, count=4).videos[:4]
    store = FeatureStore(tmp_path / "home", "pooled", "0" * 64, frames, code_sha256="a backbone defined in this test")
    assert store.extract(videos, PooledPixels(), torch.device("cpu"), batch_size=4) == 4
    fingerprint = video_fingerprint(videos[0], frames)
    read = read_positions(videos[0], frames)
    unread = next(i for i in range(videos[0].n_frames) if i not in read)

    overwrite_frame(videos[0].path, unread)
    assert video_fingerprint(videos[0], frames) == fingerprint
    assert FeatureStore(tmp_path / "home", "pooled", "0" * 64, frames, code_sha256="a backbone defined in this test").missing(videos) == []

    overwrite_frame(videos[0].path, read[1])
    assert video_fingerprint(videos[0], frames) != fingerprint
    assert FeatureStore(tmp_path / "home", "pooled", "0" * 64, frames, code_sha256="a backbone defined in this test").missing(videos) == [videos[0]]


def test_the_same_frames_in_a_zip_have_the_folders_fingerprint(tmp_path, tiny_root):
    frames = FramesSpec(count=8, resize=32, crop=32)
    folders = index_of(tiny_root).videos[:3]
    with zipfile.ZipFile(tmp_path / "data.zip", "w", zipfile.ZIP_DEFLATED) as z:
        for v in folders:
            for name in list_frames(v.path):
                z.write(v.path / name, f"frames/{v.class_name}/{v.video_id}/{name}")
    (tmp_path / "testlist.txt").write_text("".join(f"{v.key}\n" for v in folders))
    zipped = build_index(tmp_path / "data.zip", tmp_path / "testlist.txt", "test", 8).videos
    assert [v.kind for v in zipped] == ["zip"] * 3
    assert [video_fingerprint(v, frames) for v in zipped] == [video_fingerprint(v, frames) for v in folders]
    assert not any(str(tmp_path) in video_fingerprint(v, frames) or str(tiny_root) in video_fingerprint(v, frames) for v in folders + zipped)


def test_a_video_file_is_known_by_its_bytes_wherever_it_lies(tmp_path):
    data = np.random.default_rng(0).bytes(300_000)  # the fingerprint reads bytes; nothing is decoded
    paths = {name: tmp_path / name / "cls" / "clip.mp4" for name in ("here", "there", "edited")}
    for path in paths.values():
        path.parent.mkdir(parents=True)
        path.write_bytes(data)
    edited = bytearray(data)
    edited[150_000] ^= 1
    paths["edited"].write_bytes(bytes(edited))
    stat = paths["here"].stat()
    os.utime(paths["edited"], ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size, same modification time
    frames = FramesSpec(count=8, resize=32, crop=32)
    here, there, other = (video_fingerprint(Video("cls", "clip", path, 20, "file"), frames) for path in paths.values())
    assert here == there and here.startswith("file:20:300000:") and str(tmp_path) not in here
    assert other != here


def test_a_video_whose_frame_count_changed_is_named(tmp_path, tiny_root):
    root = shutil.copytree(tiny_root, tmp_path / "data")
    video = index_of(root).videos[0]
    (video.path / list_frames(video.path)[-1]).unlink()
    with pytest.raises(HarnessError, match=f"video {video.key} has 7 frames now, 8 when it was indexed"):
        video_fingerprint(video, FramesSpec(count=8, resize=32, crop=32))


def test_recompute_embeds_every_video_anew_once_per_process(protocol, home, tmp_path):
    first = run_method(protocol, "protonet", settings(home, tmp_path / "first"))
    videos = index_of(Path(protocol.dataset.root)).videos
    entry = store_of(protocol, home, first)._video_path(videos[0])
    good = np.load(entry, allow_pickle=False)
    atomic_save_npy_checksummed(entry, np.zeros_like(good))  # a wrong entry whose checksum holds

    recomputed = run_method(protocol, "protonet", settings(home, tmp_path / "recomputed", recompute=True))
    assert recomputed["videos_embedded_this_run"] == first["n_videos"] == len(videos)
    assert np.array_equal(np.load(entry, allow_pickle=False), good), "the entry must be written anew"
    assert records(recomputed) == records(first)
    # the next method of the same process (as in the quickstart) uses the features just computed
    other = run_method(protocol, "otam", settings(home, tmp_path / "recomputed", recompute=True))
    assert other["videos_embedded_this_run"] == 0

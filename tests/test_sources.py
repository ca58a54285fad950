"""Data roots of three kinds (frame folders, a stored zip, video files), name matching and bad-video reports."""
from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.io import encode_jpeg

from harness.data.clips import load_clip, read_frames, uniform_indices
from harness.data.index import Video, build_index
from harness.data.sources import zip_tree
from harness.data.synthetic import frame_name, render_video
from harness.errors import HarnessError
from harness.protocol import FramesSpec

av = pytest.importorskip("av")

SPLITS = Path(__file__).resolve().parents[2] / "shared" / "splits"
CLASS = "left-grow-spin_cw"


# --------------------------------------------------------------------------------------------- helpers


def clip(frames: int = 16, size: int = 64, seed: int = 0) -> np.ndarray:
    """uint8 [T, H, W, 3] of a synthetic video (clean, so the codec comparison is about the codec)."""
    return render_video(CLASS, np.random.default_rng(seed), frames, size, clean=True)


def write_frames(folder: Path, video: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tensors = list(torch.from_numpy(video).permute(0, 3, 1, 2).contiguous())
    for i, data in enumerate(encode_jpeg(tensors, quality=95)):
        (folder / frame_name(i)).write_bytes(data.numpy().tobytes())


def write_mp4(path: Path, video: np.ndarray, codec: str = "mpeg4", options: dict | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=25)
        stream.width, stream.height = video.shape[2], video.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.options = options if options is not None else {"qscale": "2"}  # mpeg4's best
        for image in video:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def write_zip(path: Path, tree: Path, prefix: str = "frames/") -> Path:
    """A stored zip of `tree` with directory entries, every entry under `prefix`, as TRX's zips are."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        for item in sorted(tree.rglob("*")):
            name = prefix + item.relative_to(tree).as_posix()
            if item.is_dir():
                z.writestr(name + "/", b"")
            elif item.suffix == ".jpg":
                z.write(item, name)
    return path


def split_file(path: Path, entries: list[str]) -> Path:
    path.write_text("".join(e + "\n" for e in entries))
    return path


# ------------------------------------------------------------------------------------ three kinds agree


@pytest.fixture(scope="module")
def three_roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("kinds")
    video = clip()
    write_frames(base / "folders" / "cls" / "vid", video)
    write_frames(base / "folders" / "cls" / "other", clip(seed=1))
    write_zip(base / "frames.zip", base / "folders")
    write_mp4(base / "files" / "cls" / "vid.mp4", video)
    write_mp4(base / "files" / "cls" / "other.mp4", clip(seed=1))
    split = split_file(base / "list.txt", ["cls/vid", "cls/other"])
    return video, {"frames": base / "folders", "zip": base / "frames.zip", "file": base / "files"}, split


def test_folder_zip_and_mp4_give_the_same_frames(three_roots):
    video, roots, split = three_roots
    indexes = {kind: build_index(root, split, "test", min_frames=8) for kind, root in roots.items()}
    for kind, index in indexes.items():
        assert [v.key for v in index.videos] == ["cls/other", "cls/vid"]
        assert [v.kind for v in index.videos] == [kind, kind]
        assert [v.n_frames for v in index.videos] == [16, 16], kind
        assert index.excluded == [] and index.renamed == []
    vids = {kind: index.videos[1] for kind, index in indexes.items()}
    assert vids["zip"].path == roots["zip"] and vids["zip"].member == "frames/cls/vid/"
    assert vids["file"].path == roots["file"] / "cls" / "vid.mp4"

    for indices in (uniform_indices(16, 8), np.array([0, 3, 3, 15, 7])):
        folder = read_frames(vids["frames"], indices)
        assert folder.dtype == torch.uint8 and folder.shape == (len(indices), 3, 64, 64)
        assert torch.equal(read_frames(vids["zip"], indices), folder)
        mp4 = read_frames(vids["file"], indices)
        assert mp4.shape == folder.shape
        assert (mp4.float() - folder.float()).abs().mean() < 8
        original = torch.from_numpy(video[indices]).permute(0, 3, 1, 2).float()
        assert (mp4.float() - original).abs().mean() < 8
        # the wrong frame is much further away than the codec error: the positions are exact
        assert (mp4[1:].float() - folder[:-1].float()).abs().mean() > (mp4.float() - folder.float()).abs().mean()

    spec = FramesSpec(count=8, resize=32, crop=32)
    a, b = load_clip(vids["frames"], spec), load_clip(vids["zip"], spec)
    assert a.shape == (3, 8, 32, 32) and torch.equal(a, b)
    assert load_clip(vids["file"], spec).shape == a.shape


def test_video_file_counts_agree_and_are_checked(three_roots):
    _, roots, split = three_roots
    by_packets = build_index(roots["file"], split, "test", min_frames=8)
    by_decoding = build_index(roots["file"], split, "test", min_frames=8, decode_video_files=True)
    assert [v.n_frames for v in by_packets.videos] == [v.n_frames for v in by_decoding.videos] == [16, 16]
    v = by_packets.videos[0]
    wrong = Video(v.class_name, v.video_id, v.path, 17, v.kind)
    with pytest.raises(HarnessError, match="decodes to 16 frames"):
        read_frames(wrong, uniform_indices(17, 8))


@pytest.mark.parametrize(
    ("codec", "suffix", "options"),
    [("libx264", ".mkv", {"crf": "12"}), ("libx264", ".mp4", {"crf": "12"}), ("mpeg4", ".avi", {"qscale": "2"}), ("libvpx", ".webm", {"crf": "4", "b": "2M"})],
)
def test_other_containers_count_and_place_frames_exactly(tmp_path, codec, suffix, options):
    """Matroska and WebM headers carry no frame count and x264 reorders frames (B-frames): the packet
    count must still equal the decoded frames, and a position must still be the same frame."""
    if codec not in av.codecs_available:
        pytest.skip(f"this PyAV build has no {codec} encoder")
    video = clip(frames=20, size=64, seed=2)
    write_frames(tmp_path / "f" / "cls" / "vid", video)
    write_mp4(tmp_path / "v" / "cls" / f"vid{suffix}", video, codec, options)
    split = split_file(tmp_path / "list.txt", ["cls/vid"])
    folder = build_index(tmp_path / "f", split, "test", min_frames=8).videos[0]
    file = build_index(tmp_path / "v", split, "test", min_frames=8).videos[0]
    assert file.kind == "file" and file.n_frames == 20
    assert build_index(tmp_path / "v", split, "test", min_frames=8, decode_video_files=True).videos[0].n_frames == 20
    indices = uniform_indices(20, 8)
    a, b = read_frames(folder, indices).float(), read_frames(file, indices).float()
    assert (a - b).abs().mean() < 8
    assert (a[1:] - b[:-1]).abs().mean() > (a - b).abs().mean()


def test_zip_members_have_their_own_identity_and_each_worker_its_own_handle(three_roots):
    _, roots, split = three_roots
    index = build_index(roots["zip"], split, "test", min_frames=8)
    assert len({v.identity for v in index.videos}) == 2
    assert all(str(roots["zip"].resolve()) in v.identity for v in index.videos)
    from harness.data.loader import clip_loader

    spec = FramesSpec(count=8, resize=32, crop=32)
    direct = torch.stack([load_clip(v, spec) for v in index.videos])
    zip_tree(roots["zip"])  # the parent holds a handle before the workers fork
    batches = list(clip_loader(index.videos, spec, batch_size=1, workers=2))
    assert torch.equal(torch.cat([c for _, c in batches]), direct)


# ------------------------------------------------------------------------------------------ names


def _lines(folder: Path, *marks: str) -> list[str]:
    """The first line of the split folder's files that holds each mark."""
    lines = [line for f in sorted(folder.glob("*list*.txt")) for line in f.read_text().splitlines()]
    return [next(line for line in lines if m in line) for m in marks]


@pytest.mark.skipif(not SPLITS.is_dir(), reason="the published split files are not next to the checkout")
@pytest.mark.parametrize("container", ["folders", "zip"])
def test_awkward_published_names_are_found(tmp_path, container):
    hmdb = _lines(SPLITS / "hmdb_arn", "[", "(", ";", "&", "!", "#", "@", "~", "+")
    ucf = [next(line for line in (SPLITS / "ucf_arn" / "vallist03.txt").read_text().splitlines() if line.startswith("HandstandPushups/"))]
    kin = (SPLITS / "kinetics_cmn" / "testlist03.txt").read_text().splitlines()
    kinetics = [next(x for x in kin if x.startswith("hurling (sport)/")), next(x for x in kin if " " in x.split("/")[0] and x.split("/")[1].startswith("-"))]
    ssv2 = _lines(SPLITS / "ssv2_cmn", "'", ",", "(")
    assert len(set(hmdb)) >= 6 and len(set(ssv2)) == 3

    tiny = clip(frames=3, size=16)
    tree = tmp_path / "tree"
    renamed = {}
    for entry in sorted(set(hmdb + ssv2)):
        write_frames(tree / entry, tiny)  # exactly as listed
    (ucf_class, ucf_video) = ucf[0].split("/")
    write_frames(tree / ucf_class / ucf_video.lower(), tiny)  # TRX lower-cases video folders
    renamed[ucf[0]] = (f"{ucf_class}/{ucf_video.lower()}", "video case-insensitive")
    for entry in kinetics:
        cls, vid = entry.split("/")
        write_frames(tree / cls.replace(" ", "_") / vid[:11], tiny)  # underscores, bare YouTube id
        rule = "class folder spaces as _, video Kinetics YouTube id"
        renamed[entry] = (f"{cls.replace(' ', '_')}/{vid[:11]}", rule)
    entries = hmdb + ucf + kinetics + ssv2
    split = split_file(tmp_path / "list.txt", entries)

    if container == "folders":  # one Kinetics-style video as a file, upper-cased: both fallbacks again
        write_mp4(tree / "air_drumming" / "-VTLX-MCPDS.mp4", clip(frames=4, size=16))
        split = split_file(tmp_path / "list.txt", entries + ["air drumming/-VtLx-mcPds_000012_000022"])
        renamed["air drumming/-VtLx-mcPds_000012_000022"] = ("air_drumming/-VTLX-MCPDS.mp4", "class folder spaces as _, video Kinetics YouTube id")
        root = tree
    else:
        root = write_zip(tmp_path / "data.zip", tree, prefix="some/where/")

    index = build_index(root, split, "test", min_frames=3)
    assert index.excluded == []
    assert sorted(v.key for v in index.videos) == sorted(set(split.read_text().splitlines()))
    assert {r["video"]: (r["found_as"], r["rule"]) for r in index.renamed} == renamed
    for v in index.videos:
        assert read_frames(v, uniform_indices(v.n_frames, 3)).shape[0] == 3


def test_ambiguous_names_are_an_error_naming_both(tmp_path):
    tiny = clip(frames=3, size=16)
    write_frames(tmp_path / "d" / "HandstandPushups" / "v_HandStandPushups_g01_c01", tiny)
    write_frames(tmp_path / "d" / "HandstandPushups" / "V_HANDSTANDPUSHUPS_G01_C01", tiny)
    split = split_file(tmp_path / "list.txt", ["HandstandPushups/v_handstandpushups_g01_c01"])
    with pytest.raises(HarnessError, match="'V_HANDSTANDPUSHUPS_G01_C01' and 'v_HandStandPushups_g01_c01'"):
        build_index(tmp_path / "d", split, "test", min_frames=3)
    # two files of one name
    write_mp4(tmp_path / "e" / "a b" / "clip.mp4", clip(frames=4, size=16))
    shutil.copy(tmp_path / "e" / "a b" / "clip.mp4", tmp_path / "e" / "a b" / "clip.mkv")
    with pytest.raises(HarnessError, match="clip.mkv.*clip.mp4"):
        build_index(tmp_path / "e", split_file(tmp_path / "l2.txt", ["a b/clip"]), "test", min_frames=3)
    # two class folders that both fit once spaces are underscores and case is ignored
    write_frames(tmp_path / "f" / "a_b" / "x", tiny)
    write_frames(tmp_path / "f" / "A_B" / "x", tiny)
    with pytest.raises(HarnessError, match="'A_B' and 'a_b'"):
        build_index(tmp_path / "f", split_file(tmp_path / "l3.txt", ["a b/x"]), "test", min_frames=3)


# ------------------------------------------------------------------------------------------ bad videos


def test_missing_videos_are_listed_exactly(tiny_root, tmp_path):
    root = shutil.copytree(tiny_root, tmp_path / "copy")
    split = root / "testlist.txt"
    entries = split.read_text().splitlines()
    removed = sorted([entries[0], entries[8], entries[-1]])
    for e in removed:
        shutil.rmtree(root / e)
    with pytest.raises(HarnessError) as err:
        build_index(root, split, "test", min_frames=8)
    assert "3 of" in str(err.value) and all(e in str(err.value) for e in removed)
    index = build_index(root, split, "test", min_frames=8, bad_videos="exclude")
    assert index.excluded == [{"video": e, "reason": "missing"} for e in removed]
    assert len(index) == len(entries) - 3 and not set(removed) & {v.key for v in index.videos}


def test_corrupt_videos_are_reported_as_unreadable(tmp_path):
    good = clip(frames=8, size=16)
    write_mp4(tmp_path / "d" / "c" / "good.mp4", good)
    data = (tmp_path / "d" / "c" / "good.mp4").read_bytes()
    (tmp_path / "d" / "c" / "cut.mp4").write_bytes(data[: len(data) // 2])
    (tmp_path / "d" / "c" / "noise.avi").write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    split = split_file(tmp_path / "list.txt", ["c/good", "c/cut", "c/noise"])
    index = build_index(tmp_path / "d", split, "test", min_frames=8, bad_videos="exclude")
    assert [v.key for v in index.videos] == ["c/good"]
    reasons = {p["video"]: p["reason"] for p in index.excluded}
    assert set(reasons) == {"c/cut", "c/noise"} and all(r.startswith("unreadable") for r in reasons.values())
    with pytest.raises(HarnessError, match="unreadable"):
        build_index(tmp_path / "d", split, "test", min_frames=8)


def test_corrupt_zip_members(tmp_path):
    for name in ("a", "b"):
        write_frames(tmp_path / "tree" / "c" / name, clip(frames=4, size=16))
    path = write_zip(tmp_path / "d.zip", tmp_path / "tree")
    with zipfile.ZipFile(path) as z:
        header = z.getinfo("frames/c/a/00000001.jpg").header_offset
        payload = z.getinfo("frames/c/b/00000003.jpg")
        data_at = payload.header_offset + 30 + len(payload.filename.encode())
    raw = bytearray(path.read_bytes())
    raw[header : header + 4] = b"\0\0\0\0"  # a broken local header: found when indexing
    raw[data_at + 100 : data_at + 110] = b"\xff" * 10  # broken frame bytes: found when the frame is read
    path.write_bytes(bytes(raw))
    split = split_file(tmp_path / "list.txt", ["c/a", "c/b"])
    index = build_index(path, split, "test", min_frames=4, bad_videos="exclude")
    assert [p["video"] for p in index.excluded] == ["c/a"] and index.excluded[0]["reason"].startswith("unreadable")
    with pytest.raises(HarnessError, match=r"c/b") as err:
        read_frames(index.videos[0], np.arange(4))
    assert "00000003.jpg" in str(err.value) and "fix" in str(err.value)

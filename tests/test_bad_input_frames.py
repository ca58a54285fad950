"""Frames and video files that are not what they seem.

* Every kind of frame image becomes 8-bit RGB by the one rule of `harness.data.sources` (`DECODING`): each kind is
  checked against pixels computed here, without the harness: Pillow's own `convert("RGB")` for 8-bit kinds, and
  numpy arithmetic on the stored samples where Pillow has no 8-bit rule (it clips 16-bit grey to 255) or where the
  image is lossless (then both). Images that are not JPEG or PNG (32-bit 'I' and float 'F' come as TIFF) are refused,
  naming the frame.
* Frame files that are empty or not regular files (FIFO, folder, device, broken or looping link) are reported per
  video at indexing, from `os.stat` alone: a watcher thread fails the test if anything opens a FIFO.
* Video files cut at a packet boundary or inside a packet, or damaged, are reported at indexing, so that
  `dataset.bad_videos: exclude` leaves them out; healthy files of every container (audio longer than the video
  included) are not. The outcome is kept by content in the data home.
* The decoding rule is part of every video's content fingerprint.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import struct
import threading
import time
import zipfile
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.io import decode_jpeg

import harness.data.fingerprint as fingerprint
import harness.data.index as index_module
from harness.cli import main
from harness.data.clips import read_frames
from harness.data.index import Video, build_index
from harness.data.sources import DECODING, decode_frame, probe_video_file
from harness.errors import HarnessError
from harness.features import video_entry_key
from harness.protocol import FramesSpec
from test_bad_input import copy_test_split, fails, run_args, weights, write_protocol  # noqa: F401  (weights: a fixture)

av = pytest.importorskip("av")
FRAMES = FramesSpec(count=8, resize=32, crop=32)


# ------------------------------------------------------------------------------------------------- images


def png(samples: np.ndarray, color_type: int, depth: int, palette: np.ndarray | None = None) -> bytes:
    """A PNG written here, from the specification (no library): samples [H, W, channels] at `depth` bits."""
    h, w = samples.shape[:2]
    flat = samples.reshape(h, -1)
    rows = []
    for y in range(h):
        if depth == 16:
            row = flat[y].astype(">u2").tobytes()
        elif depth == 8:
            row = flat[y].astype(np.uint8).tobytes()
        else:  # 1, 2 or 4 bits a sample, packed from the most significant bit
            row = np.packbits(np.unpackbits(flat[y].astype(np.uint8)[:, None], axis=1)[:, 8 - depth :].ravel()).tobytes()
        rows.append(b"\0" + row)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    body = chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, 0))
    if palette is not None:
        body += chunk(b"PLTE", palette.astype(np.uint8).tobytes())
    return b"\x89PNG\r\n\x1a\n" + body + chunk(b"IDAT", zlib.compress(b"".join(rows))) + chunk(b"IEND", b"")


def saved(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def pillow_rgb(data: bytes) -> np.ndarray:
    """Pillow's own 8-bit RGB of an image file: [H, W, 3] uint8."""
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def to8(samples16: np.ndarray) -> np.ndarray:
    """The documented 16 -> 8-bit rule, in floating point: the nearest 8-bit value of v * 255 / 65535."""
    return np.floor(samples16.astype(np.float64) * 255 / 65535 + 0.5).astype(np.uint8)


def grey3(a: np.ndarray) -> np.ndarray:
    return np.repeat(a[..., None], 3, axis=-1)


def pixels(seed: int, shape: tuple, top: int) -> np.ndarray:
    """'noise' (seed 0): random samples; 'ramp' (seed 1): 0, the top value and every 16-bit rounding boundary."""
    rng = np.random.default_rng(seed)
    if seed == 0:
        return rng.integers(0, top + 1, shape)
    edges = np.array([0, top, 1, top - 1, 128, 129, 257 * 100 + 128, 257 * 100 + 129, 257 * 254 + 128, 257 * 254 + 129])
    values = edges[edges <= top] if top > 255 else np.arange(top + 1)
    return np.resize(values, int(np.prod(shape))).reshape(shape)


def kind_case(kind: str, seed: int) -> tuple[bytes, np.ndarray, np.ndarray | None]:
    """(file bytes, Pillow's 8-bit RGB or None, the RGB computed from the stored samples or None) of one image kind."""
    h, w = 6, 10
    rgb8 = pixels(seed, (h, w, 3), 255).astype(np.uint8)
    base = Image.fromarray(rgb8)
    if kind == "1":
        data = saved(base.convert("1"), "PNG")
        return data, pillow_rgb(data), grey3(np.asarray(Image.open(io.BytesIO(data))).astype(np.uint8) * 255)
    if kind == "L":
        data = saved(base.convert("L"), "PNG")
        return data, pillow_rgb(data), grey3(np.asarray(Image.open(io.BytesIO(data))))
    if kind == "LA":
        data = saved(Image.merge("LA", [Image.fromarray(rgb8[..., 0]), Image.fromarray(rgb8[..., 1])]), "PNG")
        return data, pillow_rgb(data), grey3(rgb8[..., 0])  # alpha dropped: the grey as stored
    if kind == "RGB":
        data = saved(base, "PNG")
        return data, pillow_rgb(data), rgb8
    if kind == "RGBA":
        data = saved(Image.fromarray(np.dstack([rgb8, rgb8[..., :1] // 2])), "PNG")  # alpha 0 where red is 0 or 1
        return data, pillow_rgb(data), rgb8  # alpha dropped, never composited
    if kind in ("P", "P+transparency"):
        palette = np.random.default_rng(seed + 10).integers(0, 256, (16, 3))
        index = pixels(seed, (h, w), 15).astype(np.uint8)
        image = Image.fromarray(index, "P")
        image.putpalette(palette.astype(np.uint8).ravel().tolist())
        data = saved(image, "PNG", **({"transparency": 3} if kind == "P+transparency" else {}))
        return data, pillow_rgb(data), palette[index].astype(np.uint8)
    if kind == "P 4-bit":
        palette = np.random.default_rng(seed + 20).integers(0, 256, (16, 3))
        index = pixels(seed, (h, w, 1), 15)
        data = png(index, 3, 4, palette)
        return data, pillow_rgb(data), palette[index[..., 0]].astype(np.uint8)
    if kind in ("L 2-bit", "L 4-bit"):
        depth = int(kind[2])
        grey = pixels(seed, (h, w, 1), 2**depth - 1)
        data = png(grey, 0, depth)
        return data, pillow_rgb(data), grey3((grey[..., 0] * 255 // (2**depth - 1)).astype(np.uint8))
    if kind == "I;16":  # Pillow's 16-bit grey; its own convert("RGB") clips at 255, so only the samples say
        grey = pixels(seed, (h, w), 65535).astype(np.uint16)
        image = Image.fromarray(grey)
        assert image.mode == "I;16"
        return saved(image, "PNG"), None, grey3(to8(grey))
    if kind in ("LA 16-bit", "RGB 16-bit", "RGBA 16-bit"):
        channels, color_type = {"LA 16-bit": (2, 4), "RGB 16-bit": (3, 2), "RGBA 16-bit": (4, 6)}[kind]
        samples = pixels(seed, (h, w, channels), 65535).astype(np.uint16)
        expected = grey3(to8(samples[..., 0])) if channels == 2 else to8(samples[..., :3])
        return png(samples, color_type, 16), None, expected
    if kind == "JPEG EXIF rotated":  # orientation 6 (rotate 90): not applied, the pixels as stored
        exif = Image.Exif()
        exif[0x0112] = 6
        data = saved(base, "JPEG", quality=95, exif=exif)
        return data, pillow_rgb(data), pillow_rgb(saved(base, "JPEG", quality=95))
    if kind.startswith("JPEG "):  # lossy: Pillow's decoding is the reference
        mode = kind.split()[1]
        data = saved(base.convert(mode), "JPEG", quality=95)
        return data, pillow_rgb(data), None
    raise ValueError(kind)


KINDS = ["1", "L", "LA", "RGB", "RGBA", "P", "P+transparency", "P 4-bit", "L 2-bit", "L 4-bit", "I;16", "LA 16-bit",
         "RGB 16-bit", "RGBA 16-bit", "JPEG L", "JPEG RGB", "JPEG CMYK", "JPEG YCbCr", "JPEG EXIF rotated"]


def frame_video(folder: Path, frames: list[bytes], suffix: str = ".png") -> Video:
    folder.mkdir(parents=True, exist_ok=True)
    for i, data in enumerate(frames):
        (folder / f"{i + 1:08d}{suffix}").write_bytes(data)
    return Video(folder.parent.name, folder.name, folder, len(frames), "frames")


@pytest.mark.parametrize("seed", [0, 1], ids=["noise", "ramp"])
@pytest.mark.parametrize("kind", KINDS)
def test_every_image_kind_decodes_to_the_documented_8_bit_rgb(tmp_path, kind, seed):
    data, by_pillow, by_samples = kind_case(kind, seed)
    assert by_pillow is not None or by_samples is not None
    suffix = ".jpg" if kind.startswith("JPEG") else ".png"
    video = frame_video(tmp_path / "cls" / "vid", [data], suffix)
    got = read_frames(video, np.array([0]))[0]  # the loader's path: folder, file, decode
    assert got.dtype == torch.uint8 and got.shape == (3, 6, 10)
    got = got.permute(1, 2, 0).numpy()
    if by_pillow is not None:
        np.testing.assert_array_equal(got, by_pillow, err_msg=f"{kind}: not Pillow's own 8-bit RGB")
    if by_samples is not None:
        np.testing.assert_array_equal(got, by_samples, err_msg=f"{kind}: not the stored samples by the documented rule")
    assert torch.equal(decode_frame(data), torch.from_numpy(got).permute(2, 0, 1))


def test_the_same_pixels_at_8_and_16_bits_give_the_same_frames_and_the_same_numbers(tmp_path, capsys, tiny_root, weights):
    """The finding: 16-bit PNG frames were read 257x too bright, and ProtoNet and OTAM scored other numbers than on
    the same pixels at 8 bits. Now the records of the two runs are the same bytes."""
    lines = (tiny_root / "testlist.txt").read_text().splitlines()
    roots = {depth: tmp_path / f"png{depth}" for depth in (8, 16)}
    for entry in lines:
        for frame in sorted((tiny_root / entry).iterdir()):
            rgb = decode_jpeg(torch.frombuffer(bytearray(frame.read_bytes()), dtype=torch.uint8)).permute(1, 2, 0).numpy()
            for depth, root in roots.items():
                (root / entry).mkdir(parents=True, exist_ok=True)
                samples = rgb.astype(np.uint16) * 257 if depth == 16 else rgb
                (root / entry / f"{frame.stem}.png").write_bytes(png(samples, 2, depth))
    for root in roots.values():
        shutil.copyfile(tiny_root / "testlist.txt", root / "testlist.txt")
    videos = {d: build_index(r, r / "testlist.txt", "test", 8).videos for d, r in roots.items()}
    for a, b in zip(videos[8], videos[16]):
        assert torch.equal(read_frames(a, np.arange(8)), read_frames(b, np.arange(8)))
    records = {}
    for depth, root in roots.items():
        path = write_protocol(tmp_path / f"png{depth}.yaml", root, weights)
        for method in ("protonet", "otam"):
            assert main(run_args(path, tmp_path / f"out{depth}", method=method)) == 0, capsys.readouterr().err
            records[depth, method] = (tmp_path / f"out{depth}" / "results" / f"png{depth}" / method / "episodes.jsonl").read_bytes()
    capsys.readouterr()
    assert records[8, "protonet"] == records[16, "protonet"] and records[8, "otam"] == records[16, "otam"]


@pytest.mark.parametrize("kind", ["I", "F", "WebP", "GIF", "BMP"])
def test_images_that_are_not_jpeg_or_png_are_refused_naming_the_frame(tmp_path, kind):
    """Neither JPEG nor PNG can hold 32-bit integer ('I') or float ('F') samples (Pillow writes neither as PNG):
    they come as TIFF, which has no 8-bit rule here. Other formats in a frame's name are refused too."""
    rgb = pixels(0, (6, 10, 3), 255).astype(np.uint8)
    if kind == "I":
        data = saved(Image.fromarray(rgb[..., 0].astype(np.int32) * 70000), "TIFF")
        with pytest.raises(OSError):
            saved(Image.open(io.BytesIO(data)), "PNG")
        fmt = "TIFF"
    elif kind == "F":
        data = saved(Image.fromarray(rgb[..., 0].astype(np.float32) / 255), "TIFF")
        fmt = "TIFF"
    else:
        data, fmt = saved(Image.fromarray(rgb), kind), kind
    if kind in ("I", "F"):
        assert Image.open(io.BytesIO(data)).mode == kind
    video = frame_video(tmp_path / "cls" / "vid", [data, data])
    with pytest.raises(HarnessError) as e:
        read_frames(video, np.array([0, 1]))
    frame = tmp_path / "cls" / "vid" / "00000001.png"
    assert f"frame {frame} cannot be decoded: Unsupported image file: it holds {fmt} data, not JPEG or PNG" in e.value.message
    assert "video cls/vid" in e.value.message and "convert the frames of this video to JPEG or PNG" in e.value.fix


# --------------------------------------------------------------------------------- frame files at indexing


@contextmanager
def never_opened(*fifos: Path):
    """Fails the test if anything opens one of `fifos` for reading while the block runs (and frees the reader)."""
    opened, stop = [], threading.Event()

    def watch():
        while not stop.is_set():
            for fifo in fifos:
                try:  # succeeds only while a reader holds the FIFO open
                    fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
                except OSError:
                    continue
                opened.append(fifo)
                os.close(fd)  # the reader sees the end of the file and goes on
            time.sleep(0.005)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
    assert not opened, f"opened for reading: {opened}"


BAD_FRAMES = {
    "empty": (lambda f: f.write_bytes(b""), "empty (0 bytes)"),
    "fifo": (lambda f: os.mkfifo(f), "a FIFO, not a regular file"),
    "folder": (lambda f: f.mkdir(), "a folder, not a regular file"),
    "broken-link": (lambda f: f.symlink_to(f.parent / "gone.jpg"), "a broken symbolic link"),
    "device": (lambda f: f.symlink_to("/dev/null"), "a character device, not a regular file"),
    "link-loop": (lambda f: f.symlink_to(f.name), "cannot be examined: Too many levels of symbolic links"),
}


def damage_frame(video_folder: Path, position: int, how: str) -> Path:
    frame = sorted(video_folder.iterdir())[position]
    frame.unlink()
    BAD_FRAMES[how][0](frame)
    return frame


@pytest.mark.parametrize("how", list(BAD_FRAMES))
def test_a_frame_file_that_is_empty_or_not_a_regular_file_is_reported_at_indexing(tmp_path, tiny_root, how):
    root = copy_test_split(tiny_root, tmp_path / "data")
    entries = (root / "testlist.txt").read_text().splitlines()
    frame = damage_frame(root / entries[4], 3, how)
    with never_opened(*([frame] if how == "fifo" else [])):
        with pytest.raises(HarnessError) as e:
            build_index(root, root / "testlist.txt", "test", 8)
        index = build_index(root, root / "testlist.txt", "test", 8, bad_videos="exclude")
    reason = f"unreadable: frame {frame.name} is {BAD_FRAMES[how][1]}"
    assert f"1 of {len(entries)} videos" in e.value.message and f"{entries[4]}: {reason}" in e.value.message
    assert "dataset.bad_videos: exclude" in e.value.fix
    assert index.excluded == [{"video": entries[4], "reason": reason}]
    assert len(index) == len(entries) - 1


def test_bad_frames_in_a_zip_are_reported_at_indexing(tmp_path, tiny_root):
    lines = (tiny_root / "testlist.txt").read_text().splitlines()[:3]
    path = tmp_path / "data.zip"
    with zipfile.ZipFile(path, "w") as z:
        for entry in lines:
            for frame in sorted((tiny_root / entry).iterdir()):
                name = f"frames/{entry}/{frame.name}"
                if entry == lines[0] and frame.name.startswith("00000002"):
                    z.writestr(name, b"")  # zero bytes
                elif entry == lines[1] and frame.name.startswith("00000005"):
                    link = zipfile.ZipInfo(name)
                    link.external_attr = (0o120777 << 16)  # a symbolic link, as `zip --symlinks` stores it
                    z.writestr(link, "../../elsewhere.jpg")
                else:
                    z.write(frame, name)
    (tmp_path / "list.txt").write_text("".join(f"{e}\n" for e in lines))
    index = build_index(path, tmp_path / "list.txt", "test", 8, bad_videos="exclude")
    assert [v.key for v in index.videos] == [lines[2]]
    first = sorted((tiny_root / lines[0]).iterdir())[1].name
    fifth = sorted((tiny_root / lines[1]).iterdir())[4].name
    assert index.excluded == [{"video": lines[0], "reason": f"unreadable: frame {first} is empty (0 bytes)"},
                              {"video": lines[1], "reason": f"unreadable: frame {fifth} is a symbolic link, not a regular file"}]


def test_bad_frame_files_end_to_end_exit_2_or_are_excluded_and_stored_results_stay(tmp_path, capsys, tiny_root, weights):
    root = copy_test_split(tiny_root, tmp_path / "data")
    entries = (root / "testlist.txt").read_text().splitlines()
    path = write_protocol(tmp_path / "p.yaml", root, weights)
    assert main(run_args(path, tmp_path)) == 0
    capsys.readouterr()
    stored = {p: p.read_bytes() for p in (tmp_path / "results").rglob("*") if p.is_file() and p.name != ".lock"}

    damaged = {entries[i]: damage_frame(root / entries[i], 2, how) for i, how in zip((1, 8, 15, 22, 29, 36), BAD_FRAMES)}
    fifo = next(f for f in damaged.values() if f.is_fifo())
    with never_opened(fifo):
        err = fails(capsys, run_args(path, tmp_path), f"6 of {len(entries)} videos listed in {root / 'testlist.txt'} cannot be used",
                    *(f"{entry}: unreadable: frame {frame.name} is " for entry, frame in damaged.items()),
                    "dataset.bad_videos: exclude")
        assert {p: p.read_bytes() for p in stored} == stored, "a stored result changed"
        assert main(run_args(path, tmp_path, "--set", "dataset.bad_videos=exclude")) == 0
    out, errors = capsys.readouterr()
    assert "Traceback" not in out + errors and "6 videos of the test split are excluded" in out + errors
    summary = json.loads((tmp_path / "results/p/protonet/summary.json").read_text())
    assert [x["video"] for x in summary["excluded_videos"]] == sorted(damaged)
    assert summary["n_videos"] == len(entries) - 6
    assert {p: p.read_bytes() for p in stored if "/runs/" in str(p)} == {p: b for p, b in stored.items() if "/runs/" in str(p)}
    assert err.count("\n    ") == 6


def test_a_frame_that_became_a_fifo_after_indexing_is_refused_not_read(tmp_path, tiny_root):
    root = copy_test_split(tiny_root, tmp_path / "data")
    video = build_index(root, root / "testlist.txt", "test", 8).videos[0]
    frame = damage_frame(video.path, 0, "fifo")
    with never_opened(frame):
        with pytest.raises(HarnessError, match="is a FIFO, not a regular file") as e:
            read_frames(video, np.arange(8))
        assert f"video {video.key}" in e.value.message and "run again" in e.value.fix
        with pytest.raises(HarnessError, match="is a FIFO, not a regular file"):
            fingerprint.video_fingerprint(video, FRAMES)


def test_a_frame_that_becomes_a_fifo_between_its_check_and_its_read_does_not_hang_the_fingerprint(tmp_path, tiny_root, monkeypatch):
    """The fingerprint stats a video's frames, then reads them: a frame replaced in between is refused on the
    open file, which is opened without blocking."""
    root = copy_test_split(tiny_root, tmp_path / "data")
    video = build_index(root, root / "testlist.txt", "test", 8).videos[0]
    real_stamp = fingerprint._stamp

    def stamp_then_replace(*args):
        stamp = real_stamp(*args)
        damage_frame(video.path, 0, "fifo")
        return stamp

    monkeypatch.setattr(fingerprint, "_stamp", stamp_then_replace)
    monkeypatch.setattr(fingerprint, "_VIDEOS", {})
    with pytest.raises(HarnessError, match="is a FIFO, not a regular file") as e:
        fingerprint.video_fingerprint(video, FRAMES)
    assert f"video {video.key}" in e.value.message and "run again" in e.value.fix


# ---------------------------------------------------------------------------------------------- video files


def write_video(path: Path, codec: str = "mpeg4", frames: int = 40, size: int = 32, audio: str | None = None,
                audio_seconds: float = 0.0, options: dict | None = None) -> Path:
    """A video file (mp4s with their index first, as `-movflags +faststart` writes it, so a cut one still opens),
    optionally with an audio track that lasts `audio_seconds` longer than the video."""
    path.parent.mkdir(parents=True, exist_ok=True)
    container_options = {"movflags": "+faststart"} if path.suffix == ".mp4" else {}
    rng = np.random.default_rng(len(path.name))
    with av.open(str(path), "w", options=container_options) as out:
        video = out.add_stream(codec, rate=25)
        video.width = video.height = size
        video.pix_fmt = "yuv420p"
        video.codec_context.options = options or ({"qscale": "3"} if codec == "mpeg4" else {})
        sound = out.add_stream(audio, rate=48000) if audio else None
        samples, total = 0, int((frames / 25 + audio_seconds) * 48000)

        def add_audio(until: int) -> None:
            nonlocal samples
            while sound is not None and samples < min(total, until):
                chunk = av.AudioFrame.from_ndarray(np.zeros((1, 960), np.float32), format="fltp", layout="mono")
                chunk.sample_rate, chunk.pts = 48000, samples
                samples += 960
                out.mux(sound.encode(chunk))

        for i in range(frames):
            image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            out.mux(video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
            add_audio((i + 1) * 48000 // 25)
        add_audio(total)
        if sound is not None:
            out.mux(sound.encode())
        out.mux(video.encode())
    return path


def packets(path: Path) -> list[tuple[int, int]]:
    """(byte offset, size) of each video packet of a file."""
    with av.open(str(path)) as c:
        return [(p.pos, p.size) for p in c.demux(c.streams.video[0]) if p.size]


HEALTHY = {  # name: (file, codec, audio, audio seconds beyond the video)
    "mp4-mpeg4": ("v.mp4", "mpeg4", None, 0.0),
    "mp4-x264-aac-longer": ("v.mp4", "libx264", "aac", 0.5),
    "avi-mpeg4-mp3": ("v.avi", "mpeg4", "libmp3lame", 0.0),  # its header lists 41 frames for 40: not a cut
    "mkv-x264-opus-longer": ("v.mkv", "libx264", "libopus", 0.5),
    "webm-vp8": ("v.webm", "libvpx", None, 0.0),
}


@pytest.mark.parametrize("name", list(HEALTHY))
def test_healthy_video_files_of_every_container_are_indexed_with_their_decoded_count(tmp_path, name):
    file, codec, audio, longer = HEALTHY[name]
    for needed in (codec, audio):
        if needed and needed not in av.codecs_available:
            pytest.skip(f"this PyAV build has no {needed} encoder")
    write_video(tmp_path / "d" / "c" / file, codec, audio=audio, audio_seconds=longer)
    (tmp_path / "list.txt").write_text("c/v\n")
    for decode in (True, False):
        index = build_index(tmp_path / "d", tmp_path / "list.txt", "test", 8, decode_video_files=decode)
        assert index.excluded == [] and [v.n_frames for v in index.videos] == [40]
    assert read_frames(index.videos[0], np.arange(0, 40, 13)).shape == (4, 3, 32, 32)


def cut(path: Path, at: int, to: Path) -> Path:
    to.parent.mkdir(parents=True, exist_ok=True)
    to.write_bytes(path.read_bytes()[:at])
    return to


def damaged_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """name: (a damaged video file under tmp_path/d/c/, the reason the index must give)."""
    made = {}
    src = tmp_path / "src"
    for codec in ("mpeg4", "libx264"):
        mp4 = write_video(src / f"{codec}.mp4", codec)
        at = packets(mp4)
        made[f"mp4-{codec}-boundary"] = (cut(mp4, at[19][0] + at[19][1], tmp_path / "d/c" / f"{codec}-boundary.mp4"),
                                         "truncated: its header lists 40 frames, the file holds 20")
        made[f"mp4-{codec}-mid-packet"] = (cut(mp4, at[20][0] + at[20][1] // 2, tmp_path / "d/c" / f"{codec}-mid.mp4"),
                                           "truncated: the data of its packet 21 is cut short (the file ends inside it, or it is damaged), after 20 whole ones")
        data = bytearray(mp4.read_bytes())
        data[at[20][0] : at[20][0] + at[20][1]] = bytes(at[20][1])  # a packet of zeros: the sizes still add up
        (tmp_path / "d/c" / f"{codec}-zeros.mp4").write_bytes(bytes(data))
        made[f"mp4-{codec}-zeroed-packet"] = (tmp_path / "d/c" / f"{codec}-zeros.mp4", "damaged: its packet 21 does not decode (Invalid data found when processing input)")
    avi = write_video(src / "v.avi")
    at = packets(avi)
    made["avi-boundary"] = (cut(avi, at[19][0] + at[19][1], tmp_path / "d/c/avi-boundary.avi"), "truncated: its header lists 40 frames, the file holds 20")
    for file, codec in (("v.mkv", "libx264"), ("v.webm", "libvpx")):
        whole = write_video(src / file, codec)
        at = packets(whole)
        made[f"{file[2:]}-cut"] = (cut(whole, at[25][0], tmp_path / "d/c" / f"{file[2:]}-cut{file[1:]}"),
                                   "truncated: its header gives a duration of 1.60 s, its data ends at ")
    return made


def test_truncated_and_damaged_video_files_are_reported_at_indexing_and_can_be_excluded(tmp_path):
    made = damaged_files(tmp_path)
    write_video(tmp_path / "d/c/good.mp4")
    names = sorted(p.stem for p, _ in made.values())
    (tmp_path / "list.txt").write_text("".join(f"c/{n}\n" for n in names + ["good"]))
    with pytest.raises(HarnessError) as e:
        build_index(tmp_path / "d", tmp_path / "list.txt", "test", 8)
    assert f"{len(made)} of {len(made) + 1} videos" in e.value.message and "download again (or re-encode) the video files listed" in e.value.fix
    index = build_index(tmp_path / "d", tmp_path / "list.txt", "test", 8, bad_videos="exclude")
    assert [v.key for v in index.videos] == ["c/good"] and index.videos[0].n_frames == 40
    reasons = {x["video"]: x["reason"] for x in index.excluded}
    for name, (path, reason) in made.items():
        assert reasons[f"c/{path.stem}"].startswith(reason), (name, reasons[f"c/{path.stem}"])
    # the demuxer alone (no decoding) already sees every cut; a zeroed packet only shows when decoded
    quick = build_index(tmp_path / "d", tmp_path / "list.txt", "test", 8, bad_videos="exclude", decode_video_files=False)
    assert {x["video"] for x in quick.excluded} == {f"c/{p.stem}" for n, (p, _) in made.items() if "zeroed" not in n}


BAD_FILES = {
    "empty": (lambda f: f.write_bytes(b""), "empty: the file is empty (0 bytes)"),
    "fifo": (lambda f: os.mkfifo(f), "unreadable: the file is a FIFO, not a regular file"),
    "broken-link": (lambda f: f.symlink_to(f.parent / "gone.mp4"), "unreadable: the file is a broken symbolic link"),
    "device": (lambda f: f.symlink_to("/dev/zero"), "unreadable: the file is a character device, not a regular file"),
}


@pytest.mark.parametrize("how", list(BAD_FILES))
def test_a_video_file_that_is_empty_or_not_a_regular_file_is_reported_never_opened(tmp_path, how):
    write_video(tmp_path / "d/c/good.mp4", frames=10)
    BAD_FILES[how][0](tmp_path / "d/c/bad.mp4")
    (tmp_path / "list.txt").write_text("c/bad\nc/good\n")
    with never_opened(*([tmp_path / "d/c/bad.mp4"] if how == "fifo" else [])):
        index = build_index(tmp_path / "d", tmp_path / "list.txt", "test", 8, bad_videos="exclude", video_checks=tmp_path / "checks")
    assert index.excluded == [{"video": "c/bad", "reason": BAD_FILES[how][1]}]
    assert [v.key for v in index.videos] == ["c/good"]


def test_a_truncated_mp4_end_to_end_stops_at_indexing_or_is_excluded(tmp_path, capsys, tiny_root, weights):
    """The finding: an mp4 cut at a packet boundary was used as a video of the frames it kept, and one cut inside a
    packet passed indexing and failed while embedding, where bad_videos: exclude could not leave it out."""
    root = copy_test_split(tiny_root, tmp_path / "data")
    entries = (root / "testlist.txt").read_text().splitlines()
    bad = {}
    for entry, where in ((entries[3], "boundary"), (entries[17], "mid")):
        frames = [decode_jpeg(torch.frombuffer(bytearray(f.read_bytes()), dtype=torch.uint8)).permute(1, 2, 0).numpy()
                  for f in sorted((root / entry).iterdir())] * 2  # 16 frames
        shutil.rmtree(root / entry)
        whole = tmp_path / "whole.mp4"
        with av.open(str(whole), "w", options={"movflags": "+faststart"}) as out:
            stream = out.add_stream("mpeg4", rate=25)
            stream.width = stream.height = 32
            stream.pix_fmt = "yuv420p"
            for image in frames:
                out.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")))
            out.mux(stream.encode())
        at = packets(whole)
        end = at[11][0] + at[11][1] if where == "boundary" else at[12][0] + at[12][1] // 2
        bad[entry] = cut(whole, end, root / f"{entry}.mp4")
    path = write_protocol(tmp_path / "p.yaml", root, weights)
    fails(capsys, run_args(path, tmp_path), f"2 of {len(entries)} videos",
          f"{entries[3]}: truncated: its header lists 16 frames, the file holds 12",
          f"{entries[17]}: truncated: the data of its packet 13 is cut short", "dataset.bad_videos: exclude")
    assert not list((tmp_path / "home").rglob("*.npy")), "nothing is embedded before the report"
    assert main(run_args(path, tmp_path, "--set", "dataset.bad_videos=exclude")) == 0
    capsys.readouterr()
    summary = json.loads((tmp_path / "results/p/protonet/summary.json").read_text())
    assert sorted(x["video"] for x in summary["excluded_videos"]) == sorted(bad)
    assert all(x["reason"].startswith("truncated: ") for x in summary["excluded_videos"])
    assert list((tmp_path / "home" / "video-checks").rglob("*.json")), "the checks are kept in the data home"


def test_a_video_file_is_decoded_at_indexing_once_per_content(tmp_path, monkeypatch):
    write_video(tmp_path / "d/c/a.mp4", frames=12)
    write_video(tmp_path / "d/c/b.webm", "libvpx", frames=12)
    (tmp_path / "list.txt").write_text("c/a\nc/b\n")
    calls = []

    def counting(path, decode=True):
        calls.append(Path(path).name)
        return probe_video_file(path, decode)

    monkeypatch.setattr(index_module, "probe_video_file", counting)
    checks = tmp_path / "home" / "video-checks"

    def index():
        return build_index(tmp_path / "d", tmp_path / "list.txt", "test", 8, video_checks=checks)

    assert [v.n_frames for v in index().videos] == [12, 12] and calls == ["a.mp4", "b.webm"]
    monkeypatch.setattr(index_module, "_CHECKED", {})  # a new process: only the data home remembers
    assert [v.n_frames for v in index().videos] == [12, 12] and calls == ["a.mp4", "b.webm"]
    stored = sorted(checks.rglob("*.json"))
    assert len(stored) == 2
    stored[0].write_bytes(b"{}")  # damaged: checked again, and written again
    monkeypatch.setattr(index_module, "_CHECKED", {})
    assert [v.n_frames for v in index().videos] == [12, 12] and len(calls) == 3
    write_video(tmp_path / "d/c/a.mp4", frames=10)  # other bytes under the same name: checked again
    assert [v.n_frames for v in index().videos] == [10, 12] and calls[3:] == ["a.mp4"]
    cut(tmp_path / "d/c/a.mp4", (tmp_path / "d/c/a.mp4").stat().st_size * 2 // 3, tmp_path / "d/c/a.mp4")
    with pytest.raises(HarnessError, match="c/a: truncated"):
        index()


# -------------------------------------------------------------------------------------------- fingerprints


def test_the_decoding_rule_is_part_of_every_content_fingerprint(tmp_path, tiny_root, monkeypatch):
    write_video(tmp_path / "d/c/v.mp4", frames=10)
    (tmp_path / "list.txt").write_text("c/v\n")
    videos = [build_index(tiny_root, tiny_root / "testlist.txt", "test", 8).videos[0],
              build_index(tmp_path / "d", tmp_path / "list.txt", "test", 8).videos[0]]
    prints = [fingerprint.video_fingerprint(v, FRAMES) for v in videos]
    keys = [video_entry_key(v, FRAMES) for v in videos]
    assert all(p.endswith(f":{DECODING}") for p in prints)
    monkeypatch.setattr(fingerprint, "DECODING", "another-rule")
    monkeypatch.setattr(fingerprint, "_VIDEOS", {})
    assert all(fingerprint.video_fingerprint(v, FRAMES).endswith(":another-rule") for v in videos)
    assert [video_entry_key(v, FRAMES) for v in videos] != keys and not set(keys) & {video_entry_key(v, FRAMES) for v in videos}

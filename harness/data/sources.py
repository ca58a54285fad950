"""Where a video's frames come from: a folder of frame images, a zip of such folders, or a video file.

Three kinds of data root are read, told apart by the root itself (one rule, no configuration):

* **A `.zip` file** (the name ends in `.zip`): a zip of the frame-folder tree, the form TRX reads.
  Each entry path is split on `/` and its last three parts are taken as class folder, video folder
  and frame, so a leading folder inside the zip (`hmdb51_frames/brush_hair/...`) does not matter.
  Stored (uncompressed) zips are the intended form; deflated ones are read too, only slower. The zip
  is opened lazily, once per process, so each DataLoader worker reads through its own file handle
  (a handle inherited across fork shares its file offset and must never be used).
* **A folder**: `<root>/<class>/<video>/` holding frame images (`.jpg`, `.jpeg`, `.png`), or
  `<root>/<class>/<video>.<ext>` with `<ext>` one of mp4, avi, webm, mkv. Both may be mixed in one
  root; when a video exists both as a frame folder and as a file, the frame folder is used.

Frames of a folder or zip video are ordered by sorting their file names as strings (zero-padding
matters, as in TRX).

Video files are decoded with PyAV (`av`): it is maintained, installs as a pip wheel with FFmpeg
inside (nothing else to install), and decodes any container/codec FFmpeg knows. We never need exact
frame seeking: a clip is read by decoding the video once from the start and keeping the wanted frame
positions, so a frame position means the same frame whatever the container's timestamps say.
torchcodec is kept out because it needs a separately installed FFmpeg of a matching version.

A video file's frame count is taken at index time by counting the stream's packets (demuxing only,
no decoding: cheap), not from the header's frame count, which many containers leave empty or
approximate. Every read decodes the whole video and checks that it holds exactly that many frames;
if not, it stops with an error instead of sampling the wrong positions. `probe_video_file(...,
decode=True)` counts decoded frames instead, for a root where packet counts are known to differ.
Nothing is cached between runs.
"""
from __future__ import annotations

import os
import re
import zipfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torchvision.io import ImageReadMode, decode_image

from harness.errors import HarnessError

if TYPE_CHECKING:  # index.py imports this module; the Video type is only needed for annotations
    from harness.data.index import Video

FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")
VIDEO_SUFFIXES = (".mp4", ".avi", ".webm", ".mkv")

FRAMES, ZIP, FILE = "frames", "zip", "file"  # Video.kind

#: read-time damage: the index (and so dataset.bad_videos) never saw it
_AFTER_INDEXING = " (damage inside a file shows only when it is decoded, after indexing, so dataset.bad_videos: exclude cannot leave it out)"


class SourceError(Exception):
    """A video (or a zip) that cannot be read; the index reports it as unreadable."""


def is_frame_name(name: str) -> bool:
    return name.lower().endswith(FRAME_SUFFIXES)


def is_video_file_name(name: str) -> bool:
    return name.lower().endswith(VIDEO_SUFFIXES)


def is_zip_root(root: Path) -> bool:
    """The rule that picks the zip reader: the root is a file whose name ends in `.zip`."""
    return root.name.lower().endswith(".zip") and root.is_file()


def list_frames(folder: Path) -> list[str]:
    """Frame file names in a video folder, sorted as strings (so zero-padding matters, as in TRX)."""
    return sorted(n for n in os.listdir(folder) if is_frame_name(n))


# ------------------------------------------------------------------------------------------------- zip


class ZipTree:
    """The frame-folder tree inside a zip: {class folder: {video folder: member prefix}}, frames per prefix."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.zip = zipfile.ZipFile(path)
            infos = self.zip.infolist()
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise SourceError(f"{path} is not a readable zip file: {e}") from None
        self.frames: dict[str, list[str]] = {}  # "prefix/class/video/" -> sorted frame member names
        self.infos: dict[str, zipfile.ZipInfo] = {}
        self.tree: dict[str, dict[str, list[str]]] = {}  # class folder -> video folder -> [prefixes]
        for info in infos:
            name = info.filename
            parts = name.rstrip("/").split("/")
            if info.is_dir():
                if len(parts) >= 2 and "__MACOSX" not in parts:  # a video folder's own entry: an empty video is still seen
                    self._add(parts[-2], parts[-1], name)
                continue
            if len(parts) < 3 or not is_frame_name(parts[-1]) or parts[-1].startswith("._") or "__MACOSX" in parts:
                continue  # not a frame, or macOS resource-fork debris that would shadow the real folder
            prefix = name[: len(name) - len(parts[-1])]
            self._add(parts[-3], parts[-2], prefix)
            self.frames[prefix].append(name)
            self.infos[name] = info
        for names in self.frames.values():
            names.sort(key=lambda n: n.rsplit("/", 1)[-1])

    def _add(self, class_folder: str, video_folder: str, prefix: str) -> None:
        prefixes = self.tree.setdefault(class_folder, {}).setdefault(video_folder, [])
        if prefix not in prefixes:
            prefixes.append(prefix)
        self.frames.setdefault(prefix, [])

    def check_member(self, name: str) -> None:
        """Cheap integrity check of one member: its local header must match the central directory."""
        try:
            with self.zip.open(self.infos[name]) as f:
                f.read(16)
        except (zipfile.BadZipFile, OSError, EOFError, KeyError, ValueError) as e:
            raise SourceError(f"zip member {name} is corrupt: {e}") from None

    def close(self) -> None:
        self.zip.close()


_OPEN_ZIPS: dict[str, tuple[tuple, ZipTree]] = {}


def zip_tree(path: Path) -> ZipTree:
    """The zip at `path`, opened once per process (a forked DataLoader worker opens its own) and
    opened anew when the file changed (size or modification time)."""
    path = Path(path)
    try:
        stat = os.stat(path)
    except OSError as e:
        raise SourceError(f"{path} cannot be read: {e.strerror}") from None
    key = str(path.resolve())
    stamp = (os.getpid(), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    held = _OPEN_ZIPS.get(key)
    if held is None or held[0] != stamp:
        # a handle inherited across fork is left alone: reading through it would move the file
        # offset that the parent process uses; a changed zip's old handle is closed in this process
        if held is not None and held[0][0] == os.getpid():
            held[1].close()
        _OPEN_ZIPS[key] = held = (stamp, ZipTree(path))
    return held[1]


# ------------------------------------------------------------------------------------------ video files


def _av():
    try:
        import av
    except ImportError:
        raise HarnessError(
            "reading video files needs PyAV, which is not installed",
            fix="pip install av (a wheel with FFmpeg inside), or extract the videos to frame folders",
        ) from None
    return av


def probe_video_file(path: Path, decode: bool = False) -> int:
    """The number of frames of a video file: its video packets (cheap), or its decoded frames.

    Raises SourceError (its message names no path) if the file cannot be opened, has no video stream,
    fails while demuxing, or holds no frames.
    """
    av = _av()
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise SourceError("no video stream")
            stream = container.streams.video[0]
            if stream.codec_context is None:
                raise SourceError("no decoder for its video stream (damaged header or unknown codec)")
            stream.codec_context.thread_count = 1  # DataLoader workers are the parallelism
            if decode:
                count = sum(1 for _ in container.decode(stream))
            else:
                count = sum(1 for packet in container.demux(stream) if packet.size and not packet.is_discard)
    except av.FFmpegError as e:
        raise SourceError(f"{type(e).__name__}: {e.strerror or e}") from None
    except (OSError, EOFError, ValueError) as e:
        raise SourceError(f"{type(e).__name__}: {getattr(e, 'strerror', None) or e}") from None
    if count == 0:  # a file whose header opens but whose frames are gone (truncated, say)
        raise SourceError("no frames could be read")
    return count


# --------------------------------------------------------------------------------------------- sources


class VideoSource(ABC):
    """The frames of one video: `n_frames` and `read(indices) -> uint8 [T, 3, H, W]`."""

    def __init__(self, video: Video):
        self.video = video

    @property
    def n_frames(self) -> int:
        return self.video.n_frames

    @abstractmethod
    def read(self, indices: np.ndarray) -> torch.Tensor: ...

    def _check_indices(self, indices: np.ndarray, available: int) -> list[int]:
        positions = [int(i) for i in indices]
        if available != self.video.n_frames:
            raise HarnessError(
                f"video {self.video.key} has {available} frames now, {self.video.n_frames} when it was indexed",
                where=self.where,
                fix="the data changed during the run; run again so the index is rebuilt",
            )
        bad = [i for i in positions if not 0 <= i < available]
        if bad:
            raise HarnessError(f"frame position {bad[0]} is outside video {self.video.key} ({available} frames)", where=self.where)
        return positions

    @property
    def where(self) -> str:
        return str(self.video.path)

    def _decode_images(self, blobs: list[tuple[str, bytes]]) -> torch.Tensor:
        frames = []
        for name, data in blobs:
            try:
                frames.append(decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB))
            except (RuntimeError, OSError) as e:
                raise HarnessError(f"frame {name} cannot be decoded: {_decoder_reason(e)}", where=f"video {self.video.key}", fix="re-extract the frames of this video" + _AFTER_INDEXING) from None
        return _stack(frames, self.video, self.where)


def _decoder_reason(e: Exception) -> str:
    """torchvision's decoder errors start with 'function, /path/of/its/source.cpp:LINE, ': keep the reason."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return re.sub(r"^\w+, \S+:\d+, ", "", text) or text


def _stack(frames: list[torch.Tensor], video: Video, where: str) -> torch.Tensor:
    if len({f.shape for f in frames}) > 1:
        raise HarnessError(f"frames of video {video.key} differ in size", where=where, fix="re-extract the frames at one size")
    return torch.stack(frames)


class FrameFolderSource(VideoSource):
    """`<root>/<class>/<video>/<frames>`: one image file per frame."""

    def read(self, indices: np.ndarray) -> torch.Tensor:
        try:
            names = list_frames(self.video.path)
        except OSError as e:
            raise HarnessError(f"video folder cannot be listed: {e.strerror}", where=f"video {self.video.key}", fix="check the data root, or set dataset.bad_videos: exclude") from None
        positions = self._check_indices(indices, len(names))
        blobs = []
        for i in positions:
            path = self.video.path / names[i]
            try:
                blobs.append((str(path), path.read_bytes()))
            except OSError as e:
                raise HarnessError(f"frame {path} cannot be read: {e.strerror}", where=f"video {self.video.key}", fix="check the file's permissions and the disk, or re-extract the frames of this video") from None
        return self._decode_images(blobs)


class ZipFramesSource(VideoSource):
    """A video folder inside a zip: `Video.path` is the zip, `Video.member` the folder's prefix in it."""

    @property
    def where(self) -> str:
        return f"{self.video.path}:{self.video.member}"

    def read(self, indices: np.ndarray) -> torch.Tensor:
        try:
            tree = zip_tree(self.video.path)
        except SourceError as e:
            raise HarnessError(str(e), where=f"video {self.video.key}", fix="repack or re-download the zip") from None
        names = tree.frames.get(self.video.member, [])
        positions = self._check_indices(indices, len(names))
        blobs = []
        for i in positions:
            name = names[i]
            try:
                blobs.append((f"{self.video.path}:{name}", tree.zip.read(tree.infos[name])))
            except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:  # a CRC mismatch is BadZipFile
                raise HarnessError(f"zip member {name} is corrupt: {e}", where=f"video {self.video.key}", fix="repack the zip from intact frames" + _AFTER_INDEXING) from None
        return self._decode_images(blobs)


class VideoFileSource(VideoSource):
    """A video file decoded with PyAV from the start; only the wanted positions are converted to RGB."""

    def read(self, indices: np.ndarray) -> torch.Tensor:
        av = _av()
        positions = [int(i) for i in indices]
        wanted = set(positions)
        kept: dict[int, np.ndarray] = {}
        count = 0
        fix = "re-encode the video (e.g. ffmpeg -i IN -c:v libx264 -crf 18 OUT.mp4) or extract its frames" + _AFTER_INDEXING
        try:
            with av.open(str(self.video.path)) as container:
                stream = container.streams.video[0]
                if stream.codec_context is not None:
                    stream.codec_context.thread_count = 1  # DataLoader workers are the parallelism
                for frame in container.decode(stream):
                    if count in wanted:
                        kept[count] = frame.to_ndarray(format="rgb24")
                    count += 1
        except av.FFmpegError as e:
            raise HarnessError(f"video file cannot be decoded (after {count} frames): {e}", where=f"video {self.video.key} ({self.video.path})", fix=fix) from None
        except (OSError, EOFError, IndexError, ValueError, AttributeError) as e:
            raise HarnessError(f"video file cannot be decoded: {e}", where=f"video {self.video.key} ({self.video.path})", fix=fix) from None
        if count != self.video.n_frames:
            raise HarnessError(
                f"video {self.video.key} decodes to {count} frames, but it was indexed with {self.video.n_frames} (its packet count), the count the frame positions were drawn from",
                where=str(self.video.path),
                fix=fix,
            )
        self._check_indices(indices, count)
        frames = [torch.from_numpy(np.ascontiguousarray(kept[i])).permute(2, 0, 1) for i in positions]
        return _stack(frames, self.video, self.where)


def open_source(video: Video) -> VideoSource:
    kinds = {FRAMES: FrameFolderSource, ZIP: ZipFramesSource, FILE: VideoFileSource}
    try:
        return kinds[video.kind](video)
    except KeyError:
        raise HarnessError(f"video {video.key} has an unknown kind '{video.kind}'") from None

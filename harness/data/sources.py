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

Every frame becomes 8-bit RGB by one rule (`DECODING` names it; it is part of every video's content
fingerprint, so a change of rule embeds everything anew):

* **Frame files** must hold JPEG or PNG data (whatever their name says); anything else (TIFF, BMP, WebP,
  GIF...) is refused, naming the frame. They are decoded by torchvision's libjpeg-turbo and libpng
  decoders to RGB: grey is repeated in the three channels, a palette is looked up, 1-, 2- and 4-bit samples
  are stretched to 0-255 (0/255 for 1 bit), a CMYK JPEG is converted as Pillow converts it, and an alpha
  channel (and a palette's transparency) is dropped, never composited: the colour channels are taken as
  stored (video frames have no meaningful alpha, and compositing would need a background colour no dataset
  defines). 16-bit samples become 8-bit ones by rounding to the nearest, v8 = round(v16 * 255 / 65535): a
  16-bit frame holding v * 257 decodes exactly as the 8-bit frame holding v. Nothing else is applied: no
  EXIF orientation, ICC profile or PNG gamma. 32-bit integer and float images (Pillow's 'I' and 'F') cannot
  be stored as JPEG or PNG; they come as TIFF and are refused.
* **Video files** are decoded with PyAV (`av`): it is maintained, installs as a pip wheel with FFmpeg
  inside (nothing else to install), and decodes any container/codec FFmpeg knows. Each decoded frame is
  converted by FFmpeg's swscale to rgb24 (`VideoFrame.to_ndarray(format="rgb24")`), whatever its pixel
  format or bit depth. We never need exact frame seeking: a clip is read by decoding the video once from
  the start and keeping the wanted frame positions, so a frame position means the same frame whatever the
  container's timestamps say. torchcodec is kept out because it needs a separately installed FFmpeg of a
  matching version.

What the index checks before any episode, without decoding a frame image: every frame file is a regular,
non-empty file (`os.stat` only: a FIFO, a device, a folder named like a frame or a broken link is never
opened). A video file is a regular, non-empty file, and it is read through once (`probe_video_file`):
its packets are demuxed and decoded, and it is usable only when the index and the decoder agree: no
packet the demuxer marks incomplete, as many packets as the header lists frames (mp4, avi; one of slack), data
reaching the duration the header gives (Matroska and WebM, which list no frame count), and every packet
decoding to one frame. A file cut at a packet boundary, cut inside a packet, or damaged so that decoding
stops is reported then, so `dataset.bad_videos: exclude` can leave it out. Its frame count is the decoded
count; every read decodes the whole video again and checks that it still holds that many frames.
"""
from __future__ import annotations

import hashlib
import os
import re
import stat
import zipfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from harness.errors import HarnessError

if TYPE_CHECKING:  # index.py imports this module; the Video type is only needed for annotations
    from harness.data.index import Video

FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")
VIDEO_SUFFIXES = (".mp4", ".avi", ".webm", ".mkv")

FRAMES, ZIP, FILE = "frames", "zip", "file"  # Video.kind

#: read-time damage: the index (and so dataset.bad_videos) never saw it
_AFTER_INDEXING = " (damage inside a file shows only when it is decoded, after indexing, so dataset.bad_videos: exclude cannot leave it out)"


#: the name of the decoding rule (see the module docstring); change it whenever the rule changes: it is part of
#: every video's content fingerprint, so features made under another rule are never served
DECODING = "rgb8-1"
#: the checks of `probe_video_file`; part of the key under which the index stores their outcome
VIDEO_CHECK = "1"


class SourceError(Exception):
    """A video (or a zip) that cannot be used; the index reports it as `<kind>: <message>`."""

    def __init__(self, message: str, kind: str = "unreadable"):
        super().__init__(message)
        self.kind = kind


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


# --------------------------------------------------------------------------------- files, never opened


_TYPES = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def file_problem(path: str | Path, st: os.stat_result | None = None) -> str | None:
    """Why `path` cannot be read as a frame or video file, from `os.stat` alone (nothing is opened, so a FIFO
    cannot hang the caller): None for a regular file holding bytes."""
    if st is None:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return "a broken symbolic link" if os.path.islink(path) else "missing"
        except OSError as e:
            return f"cannot be examined: {e.strerror or e}"
    if not stat.S_ISREG(st.st_mode):
        kind = next((name for test, name in _TYPES if test(st.st_mode)), "not a file")
        return f"{kind}, not a regular file"
    if st.st_size == 0:
        return "empty (0 bytes)"
    return None


def check_frame_folder(folder: Path) -> tuple[int, list[str]]:
    """(frame count, problems) of a video folder: its frame names (as `list_frames` counts them) and, for each
    frame that is not a regular file holding bytes, 'NAME is ...'. Costs one `os.stat` per frame."""
    names = list_frames(folder)
    base = os.path.join(os.fspath(folder), "")
    problems = []
    for name in names:  # one os.stat a frame and little else: the stat calls are most of the cost
        try:
            st = os.stat(base + name)
        except OSError:
            st = None
        if st is None or not st.st_size or not stat.S_ISREG(st.st_mode):
            problems.append(f"{name} is {file_problem(base + name, st)}")
    return len(names), problems


def read_frame_file(path: str | Path) -> bytes:
    """The bytes of a frame file, after `file_problem` found nothing wrong (a FIFO is never opened); SourceError
    otherwise."""
    why = file_problem(path)
    if why is not None:
        raise SourceError(f"frame {path} is {why}")
    return read_checked_file(path)


def read_checked_file(path: str | Path) -> bytes:
    """The bytes of a file `file_problem` found regular a moment ago: opened without blocking (should a FIFO have
    taken its place since, it cannot hang the caller) and checked again on the open file (SourceError). One
    open, fstat, read and close, no Python file object: 8 instead of 17 us a small frame."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if (why := file_problem(path, st)) is not None:
            raise SourceError(f"frame {path} is {why}")
        parts = []
        while chunk := os.read(fd, max(st.st_size + 1, 1 << 16)):  # to its end, should it have grown
            parts.append(chunk)
    finally:
        os.close(fd)
    return parts[0] if len(parts) == 1 else b"".join(parts)


#: SHA-256 of files this process hashed: path -> (size, mtime, ctime, device, inode), (size, hex digest)
_HASHED: dict[str, tuple[tuple, tuple[int, str]]] = {}


def file_sha256(path: str | Path) -> tuple[int, str]:
    """(size, SHA-256 hex) of a file's bytes, remembered in this process while its size, modification and change
    times, device and inode stay the same (the index and the fingerprint both need it). Raises OSError."""
    path = os.fspath(path)
    st = os.stat(path)
    stamp = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_dev, st.st_ino)
    held = _HASHED.get(path)
    if held is not None and held[0] == stamp:
        return held[1]
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    _HASHED[path] = (stamp, (size, h.hexdigest()))
    return size, h.hexdigest()


# ----------------------------------------------------------------------------------------- frame images

_PNG, _JPEG = b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff"
_OTHER_FORMATS = ((b"II*\0", "TIFF"), (b"MM\0*", "TIFF"), (b"GIF8", "GIF"), (b"BM", "BMP"), (b"\0\0\0\x0cjP  ", "JPEG 2000"))


def _image_format(data: bytes) -> str:
    if data.startswith(_PNG):
        return "PNG"
    if data.startswith(_JPEG):
        return "JPEG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    return next((name for magic, name in _OTHER_FORMATS if data.startswith(magic)), "")


def decode_frame(data: bytes) -> torch.Tensor:
    """uint8 [3, H, W]: a JPEG or PNG frame decoded by the rule of the module docstring (`DECODING`). Raises
    SourceError (its message names no file) for anything else or for data that does not decode."""
    kind = _image_format(data)
    if kind not in ("PNG", "JPEG"):  # kind "format": an image of a format the harness does not read
        raise SourceError(f"Unsupported image file: it holds {kind} data, not JPEG or PNG" if kind else "Unsupported image file: it holds no JPEG or PNG data", kind="format" if kind else "unreadable")
    from torchvision.io import ImageReadMode, decode_image  # torchvision takes 3 s to import: not before a frame is read

    try:
        image = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
    except (RuntimeError, OSError) as e:
        raise SourceError(_decoder_reason(e)) from None
    if image.dtype == torch.uint16:  # a 16-bit PNG: to the nearest 8-bit value, round(v * 255 / 65535)
        image = ((image.to(torch.int32) + 128) // 257).to(torch.uint8)
    if image.dtype != torch.uint8 or image.dim() != 3 or image.shape[0] != 3:
        raise SourceError(f"it decodes to {image.dtype} {tuple(image.shape)}, not one RGB image")
    return image


def decode_jpegs(blobs: list[tuple[str, bytes]], device: torch.device | str = "cpu") -> list[torch.Tensor] | None:
    """uint8 [3, H, W] of each (name, bytes) frame, all decoded in one call on `device` when every one is a JPEG
    that decodes to RGB (`torchvision.io.decode_jpeg` of the list: on the CPU the very function `decode_frame`
    calls, one by one; on a GPU nvJPEG, whose pixels may differ from libjpeg-turbo's by a level or so, see
    harness.features); None otherwise: then `decode_frames`, frame by frame, names the frame at fault."""
    from torchvision.io import ImageReadMode, decode_jpeg

    if not blobs or not all(data.startswith(_JPEG) for _, data in blobs):
        return None
    try:
        images = decode_jpeg([torch.frombuffer(bytearray(data), dtype=torch.uint8) for _, data in blobs], mode=ImageReadMode.RGB, device=device)
    except (RuntimeError, OSError):
        return None
    return images if all(i.dtype == torch.uint8 and i.dim() == 3 and i.shape[0] == 3 for i in images) else None


def decode_frames(blobs: list[tuple[str, bytes]], video: "Video", device: torch.device | str = "cpu") -> list[torch.Tensor]:
    """uint8 [3, H, W] of each (name, bytes) frame of `video`, by the rule of `decode_frame`, on `device`: JPEG
    frames in one call (`decode_jpegs`); anything else, and a batch that fails, frame by frame on the CPU."""
    images = decode_jpegs(blobs, device)
    if images is not None:
        return images
    frames = []
    for name, data in blobs:
        try:
            frames.append(decode_frame(data).to(device))
        except SourceError as e:
            if e.kind == "format":
                raise HarnessError(f"frame {name} cannot be decoded: {e}", where=f"video {video.key}", fix="convert the frames of this video to JPEG or PNG (8 or 16 bits per channel), e.g. ffmpeg -i IN -q:v 2 OUT/%08d.jpg (a frame's format shows only when it is decoded, after indexing, so dataset.bad_videos: exclude cannot leave it out)") from None
            raise HarnessError(f"frame {name} cannot be decoded: {e}", where=f"video {video.key}", fix="re-extract the frames of this video" + _AFTER_INDEXING) from None
    return frames


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

    def member_problem(self, name: str) -> str | None:
        """Why frame member `name` cannot be a frame, from the central directory alone: None when it is a
        regular file holding bytes (a member without a Unix file type counts as a regular file)."""
        info = self.infos[name]
        mode = info.external_attr >> 16
        if stat.S_IFMT(mode) and not stat.S_ISREG(mode):
            kind = "a symbolic link" if stat.S_ISLNK(mode) else next((n for test, n in _TYPES if test(mode)), "not a file")
            return f"{kind}, not a regular file"
        if info.file_size == 0:
            return "empty (0 bytes)"
        return None

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


def probe_video_file(path: Path, decode: bool = True) -> int:
    """The number of frames of a video file, after checking that it holds what its header promises and that
    every frame decodes (the module docstring says what is checked); `decode=False` skips decoding and counts
    packets. Nothing but `os.stat` touches a file that is not a regular one.

    Raises SourceError, its message naming no path and its kind one of 'unreadable', 'empty', 'truncated' or
    'damaged'.
    """
    why = file_problem(path)
    if why is not None:
        raise SourceError(f"the file is {why}", kind="empty" if why.startswith("empty") else "unreadable")
    av = _av()
    listed = packets = decoded = 0  # video packets in the file, those that hold a frame, frames decoded
    incomplete = 0  # the first video packet the demuxer marks incomplete (1-based), 0 for none
    ends = None  # where the data of all streams ends, in seconds
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise SourceError("no video stream")
            stream = container.streams.video[0]
            if stream.codec_context is None:
                raise SourceError("no decoder for its video stream (damaged header or unknown codec)")
            stream.codec_context.thread_count = 1  # as VideoFileSource decodes: the same frames come out
            header = stream.frames or 0  # 0: the container lists no frame count (Matroska, WebM)
            rate = stream.average_rate or stream.guessed_rate
            duration = container.duration / 1e6 if container.duration else None
            start = container.start_time / 1e6 if container.start_time is not None else 0.0
            for packet in container.demux():
                video = packet.stream_index == stream.index
                if packet.dts is not None or packet.size:  # not the empty packet that ends each stream
                    if packet.pts is not None and packet.time_base is not None:
                        end = float((packet.pts + (packet.duration or 0)) * packet.time_base)
                        ends = end if ends is None else max(ends, end)
                    if video:
                        listed += 1
                        packets += bool(packet.size and not packet.is_discard)
                        if packet.is_corrupt:  # reported as cut short, whatever a decoder would make of it
                            incomplete = listed
                            break
                if video and decode:
                    try:
                        decoded += sum(1 for _ in packet.decode())
                    except av.FFmpegError as e:
                        raise SourceError(f"its packet {listed} does not decode ({e.strerror or e}); {_frames(decoded)} decoded before it", kind="damaged") from None
    except av.FFmpegError as e:
        raise SourceError(f"{type(e).__name__}: {e.strerror or e}") from None
    except (OSError, EOFError, ValueError) as e:
        raise SourceError(f"{type(e).__name__}: {getattr(e, 'strerror', None) or e}") from None
    if listed == 0:  # a file whose header opens but whose frames are gone (truncated, say)
        raise SourceError("no frames could be read")
    if incomplete:
        raise SourceError(f"the data of its packet {incomplete} is cut short (the file ends inside it, or it is damaged), after {incomplete - 1} whole ones", kind="truncated")
    if header and listed < header - 1:  # one frame of slack: a healthy avi may list one more than it holds
        raise SourceError(f"its header lists {_frames(header)}, the file holds {listed}", kind="truncated")
    slack = 1.5 / float(rate) if rate else 0.1  # a last packet without a duration ends a frame early
    if not header and duration is not None and ends is not None and ends - start < duration - slack:
        raise SourceError(f"its header gives a duration of {duration:.2f} s, its data ends at {ends - start:.2f} s", kind="truncated")
    if decode and decoded != packets:
        raise SourceError(f"its {_frames(packets)} decode to {decoded}", kind="damaged")
    return decoded if decode else packets


def _frames(n: int) -> str:
    return f"{n} frame" if n == 1 else f"{n} frames"


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

    def read_encoded(self, indices: np.ndarray) -> list[tuple[str, bytes]] | None:
        """(name, bytes) of the image files of the frames at `indices`, undecoded, for a decoder elsewhere (on a
        GPU: harness.data.clips.decode_clips); None for a source whose frames only `read` can give (a video file)."""
        return None

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
        return stack_frames(decode_frames(blobs, self.video), self.video, self.where)


def _decoder_reason(e: Exception) -> str:
    """torchvision's decoder errors start with 'function, /path/of/its/source.cpp:LINE, ': keep the reason."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return re.sub(r"^\w+, \S+:\d+, ", "", text) or text


def stack_frames(frames: list[torch.Tensor], video: Video, where: str) -> torch.Tensor:
    """uint8 [T, 3, H, W] of a video's decoded frames; an error naming `where` when their sizes differ."""
    if len({f.shape for f in frames}) > 1:
        raise HarnessError(f"frames of video {video.key} differ in size", where=where, fix="re-extract the frames at one size")
    return torch.stack(frames)


class FrameFolderSource(VideoSource):
    """`<root>/<class>/<video>/<frames>`: one image file per frame."""

    def read(self, indices: np.ndarray) -> torch.Tensor:
        return self._decode_images(self.read_encoded(indices))

    def read_encoded(self, indices: np.ndarray) -> list[tuple[str, bytes]]:
        try:
            names = list_frames(self.video.path)
        except OSError as e:
            raise HarnessError(f"video folder cannot be listed: {e.strerror}", where=f"video {self.video.key}", fix="check the data root, or set dataset.bad_videos: exclude") from None
        positions = self._check_indices(indices, len(names))
        blobs = []
        for i in positions:
            path = self.video.path / names[i]
            try:
                blobs.append((str(path), read_frame_file(path)))
            except SourceError as e:  # it changed since indexing, which found every frame a regular file with bytes
                raise HarnessError(str(e), where=f"video {self.video.key}", fix="re-extract the frames of this video; the data changed after it was indexed, so run again to have it checked") from None
            except OSError as e:
                raise HarnessError(f"frame {path} cannot be read: {e.strerror}", where=f"video {self.video.key}", fix="check the file's permissions and the disk, or re-extract the frames of this video") from None
        return blobs


class ZipFramesSource(VideoSource):
    """A video folder inside a zip: `Video.path` is the zip, `Video.member` the folder's prefix in it."""

    @property
    def where(self) -> str:
        return f"{self.video.path}:{self.video.member}"

    def read(self, indices: np.ndarray) -> torch.Tensor:
        return self._decode_images(self.read_encoded(indices))

    def read_encoded(self, indices: np.ndarray) -> list[tuple[str, bytes]]:
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
        return blobs


class VideoFileSource(VideoSource):
    """A video file decoded with PyAV from the start; only the wanted positions are converted to RGB."""

    def read(self, indices: np.ndarray) -> torch.Tensor:
        av = _av()
        positions = [int(i) for i in indices]
        wanted = set(positions)
        kept: dict[int, np.ndarray] = {}
        count = 0
        fix = "re-encode the video (e.g. ffmpeg -i IN -c:v libx264 -crf 18 OUT.mp4) or extract its frames" + _AFTER_INDEXING
        why = file_problem(self.video.path)
        if why is not None:  # it changed since indexing; a FIFO is never opened
            raise HarnessError(f"video file {self.video.path} is {why}", where=f"video {self.video.key}", fix="restore the file; the data changed after it was indexed, so run again to have it checked")
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
                f"video {self.video.key} decodes to {count} frames, but it was indexed with {self.video.n_frames}, the count the frame positions were drawn from",
                where=str(self.video.path),
                fix=fix,
            )
        self._check_indices(indices, count)
        frames = [torch.from_numpy(np.ascontiguousarray(kept[i])).permute(2, 0, 1) for i in positions]
        return stack_frames(frames, self.video, self.where)


def open_source(video: Video) -> VideoSource:
    kinds = {FRAMES: FrameFolderSource, ZIP: ZipFramesSource, FILE: VideoFileSource}
    try:
        return kinds[video.kind](video)
    except KeyError:
        raise HarnessError(f"video {video.key} has an unknown kind '{video.kind}'") from None

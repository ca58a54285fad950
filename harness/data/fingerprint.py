"""Content fingerprints: what a video's features depend on, with no path and no modification time in it.

A clip's features are a function of the pixels the clip loader decodes and of the preprocessing and backbone.
The feature store's key covers the preprocessing (`frames`), the backbone and its weights' SHA-256; a video's
fingerprint covers the rest, which is the bytes that are decoded:

* **frame folders and zip members** (kinds "frames" and "zip"): the frame count (it decides which positions
  `frames.count` picks) and the SHA-256 of the bytes of the frames at those positions, in clip order. Frames
  the loader never reads are left out: they cannot change a feature, so changing one embeds nothing anew
  (adding or removing a frame changes the count, and so the positions: that is covered). The same frame files give the
  same fingerprint in a folder or in a zip (a zip member's bytes are read, decompressed, and hashed as they
  would be from disk): the pixels are the same, so are the features.
* **video files** (mp4, avi, webm, mkv): the frame count the index found (the decoded frames) and the file's
  size and SHA-256. The loader decodes the whole file for every clip, so hashing it costs less than the
  decode it saves, and a frame position means nothing without the bytes before it.
* **both**: the name of the rule that turns the bytes into 8-bit RGB pixels (`harness.data.sources.DECODING`:
  how 16-bit, grey, palette, alpha and CMYK images become RGB, see that module). A change of rule changes every
  fingerprint, so features decoded under another rule are never served.

Neither absolute paths nor modification times enter a fingerprint: a moved or copied data root, or a data home
shared between machines, gives the same fingerprints, and frames overwritten in place (which keeps their
folder's modification time) give another one. A decoder that changed between library versions is not
covered (the same holds for the backbone's code): both are recorded in a run's summary.

Cost: the frames of one clip read once more (the loader reads the same files): one stat, open, read and close
a frame. On 16 JPEG frames of 64x64 in the page cache (the quickstart's and `bench.py perf`'s data) that is
about 0.2 ms a video: 0.26 s for perf's 1,292 videos. Within one process a fingerprint is remembered and served
after a check of the files it read (their size, modification and change times, device and inode: about 0.17 ms
a video); inside a `checked_once()` block (the quickstart's steps, which read the same splits many times and edit
nothing) that check is made once per video. Nothing is kept across processes.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import weakref
import zipfile
import zlib
from pathlib import Path

from harness.data.clips import uniform_indices
from harness.data.index import FILE, FRAMES, ZIP, Video, VideoIndex, list_frames
from harness.data.sources import DECODING, SourceError, file_problem, file_sha256, read_checked_file, zip_tree
from harness.errors import HarnessError
from harness.protocol import FramesSpec, canonical_json, frames_key

#: video fingerprints of this process: (path, zip member, kind, frame count, positions read) -> (stamp, fingerprint)
_VIDEOS: dict[tuple, tuple[tuple, str]] = {}
#: while `checked_once()` is active: the keys of _VIDEOS whose files were checked in the block
_CHECKED: set[tuple] | None = None
#: index fingerprints of this process: (id of the index, frames key) -> fingerprint; dropped with the index
_INDEXES: dict[tuple[int, str], str] = {}


@contextlib.contextmanager
def checked_once():
    """Within the block a video's files are checked (stat) once, its remembered fingerprint then served as it
    is: for a sequence of steps that read the same data and edit none of it. Outside, every call checks."""
    global _CHECKED
    outer, _CHECKED = _CHECKED, (set() if _CHECKED is None else _CHECKED)
    try:
        yield
    finally:
        _CHECKED = outer


def forget_remembered() -> None:
    """Drop the fingerprints this process remembers, so the next ones read and hash the frames again, as a new
    process would: for timing a first run in a process that has run one before (`bench.py perf`'s rounds)."""
    _VIDEOS.clear()
    _INDEXES.clear()


def read_positions(video: Video, frames: FramesSpec) -> tuple[int, ...]:
    """The frame positions `harness.data.clips.load_clip` decodes for this video (test-time sampling), ascending."""
    return _positions(video.n_frames, frames.count)


@functools.lru_cache(maxsize=256)
def _positions(n_frames: int, count: int) -> tuple[int, ...]:
    return tuple(sorted({int(i) for i in uniform_indices(n_frames, count)}))


def video_fingerprint(video: Video, frames: FramesSpec) -> str:
    """The content fingerprint of a video (see the module docstring): 'frames:<frame count>:<SHA-256 hex>:<rule>'
    for a frame folder or zip member, 'file:<frame count>:<bytes>:<SHA-256 hex>:<rule>' for a video file, where
    <rule> is the decoding rule's name (`harness.data.sources.DECODING`). Raises
    HarnessError when the video cannot be read or its frame count changed since it was indexed."""
    key = _memo_key(video, frames)
    if _CHECKED is not None and key in _CHECKED:
        return _VIDEOS[key][1]
    with _unreadable_as_error(video):
        stamp = _stamp(video, key[-1])
        held = _VIDEOS.get(key)
        if held is not None and held[0] == stamp:
            if _CHECKED is not None:
                _CHECKED.add(key)
            return held[1]
        value = _file_fingerprint(video) if video.kind == FILE else _frames_fingerprint(video, key[-1], stamp)
    _VIDEOS[key] = (stamp, value)
    if _CHECKED is not None:
        _CHECKED.add(key)
    return value


# ------------------------------------------------------------------- from the bytes a clip was decoded from


def video_stamp(video: Video, frames: FramesSpec) -> tuple:
    """The stamp of the files a clip of `video` reads (see `_stamp`), taken before they are read: a fingerprint
    made from what is read next and remembered under this stamp is checked against the files as they are then."""
    key = _memo_key(video, frames)
    with _unreadable_as_error(video):
        return _stamp(video, key[-1])


def fingerprint_of_read(video: Video, frames: FramesSpec, blobs: list[tuple[str, bytes]] | None) -> str:
    """The fingerprint `video_fingerprint` gives, made from the frames a clip read: `blobs`, the (name, bytes) of
    the frames at the clip's indices in clip order (`harness.data.clips.read_encoded_clip`); for a video file
    (no blobs) the file is hashed. So a feature is keyed by the very bytes it was computed from."""
    if video.kind == FILE:
        with _unreadable_as_error(video):
            return _file_fingerprint(video)
    by_position = dict(zip(uniform_indices(video.n_frames, frames.count).tolist(), (data for _, data in blobs)))
    return _hashed_frames(video, (by_position[i] for i in read_positions(video, frames)))


def remember(video: Video, frames: FramesSpec, stamp: tuple, value: str) -> None:
    """Serve `value` as the video's fingerprint in this process while its files keep `stamp` (`video_stamp`,
    taken before the bytes `value` was made from were read)."""
    _VIDEOS[_memo_key(video, frames)] = (stamp, value)


def _memo_key(video: Video, frames: FramesSpec) -> tuple:
    """(path, zip member, kind, frame count, positions read): a video's key in `_VIDEOS`; its last item the positions."""
    if video.kind not in (FRAMES, ZIP, FILE):
        raise HarnessError(f"video {video.key} has an unknown kind '{video.kind}'")
    positions = read_positions(video, frames) if video.kind != FILE else ()
    return (os.fspath(video.path), video.member, video.kind, video.n_frames, positions)


@contextlib.contextmanager
def _unreadable_as_error(video: Video):
    try:
        yield
    except OSError as e:
        raise HarnessError(
            f"video {video.key} cannot be read: {e.strerror or e}",
            where=str(video.path),
            fix="make its files readable again (check their permissions and the disk), or leave the video out of the split file",
        ) from None


def index_fingerprint(index: VideoIndex, frames: FramesSpec) -> str:
    """SHA-256 hex over the sorted lines 'class/video<TAB><video fingerprint>' of an index: the identity of the
    data a run scores. Computed once per process for an index object and preprocessing."""
    key = (id(index), canonical_json(frames_key(frames)))
    if key not in _INDEXES:
        lines = sorted(f"{v.key}\t{video_fingerprint(v, frames)}" for v in index.videos)
        _INDEXES[key] = hashlib.sha256("\n".join(lines).encode()).hexdigest()
        weakref.finalize(index, _INDEXES.pop, key, None)  # a later index may reuse the id
    return _INDEXES[key]


# ------------------------------------------------------------------------------------------------- stamps


def _stamp(video: Video, positions: tuple[int, ...]) -> tuple:
    """What a remembered fingerprint is checked against: the size, modification and change times, device and
    inode of the files read (the frames at `positions`, with their names; the zip; the video file). A file
    that is no longer a regular one holding bytes is an error here, before anything opens it."""
    if video.kind == FRAMES:
        names, folder = _frame_names(video), os.fspath(video.path)
        return tuple((names[i], _stat_stamp(os.path.join(folder, names[i]), video)) for i in positions)  # no pathlib: 3x faster
    return _stat_stamp(video.path, video)


def _stat_stamp(path: str | Path, video: Video) -> tuple[int, ...]:
    st = os.stat(path)
    if video.kind != ZIP and (why := file_problem(path, st)) is not None:
        raise HarnessError(
            f"{path} is {why}",
            where=f"video {video.key}",
            fix="restore the file; the data changed after it was indexed, so run again to have it checked",
        )
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_dev, st.st_ino)


# ------------------------------------------------------------------------------------------ fingerprints


def _frame_names(video: Video) -> list[str]:
    """The video's frame names now (folder listing or zip members); an error if their count changed."""
    if video.kind == ZIP:
        try:
            names = zip_tree(video.path).frames.get(video.member, [])
        except SourceError as e:
            raise HarnessError(str(e), where=f"video {video.key}", fix="repack or re-download the zip") from None
    else:
        names = list_frames(video.path)
    if len(names) != video.n_frames:
        raise HarnessError(
            f"video {video.key} has {len(names)} frames now, {video.n_frames} when it was indexed",
            where=str(video.path),
            fix="the data changed during the run; run again so the index is rebuilt",
        )
    return names


def _frames_fingerprint(video: Video, positions: tuple[int, ...], stamp: tuple) -> str:
    """Kinds "frames" and "zip": the frame count and the SHA-256 of the frames at `positions`, each length-prefixed.
    `stamp`: the one `_stamp` just took (for a folder: the frames' names, each checked a regular file with bytes)."""
    if video.kind == FRAMES:
        folder = os.fspath(video.path)
        frames = (_read_frame_file(os.path.join(folder, name), video) for name, _ in stamp)
    else:
        names = _frame_names(video)
        frames = (_read_member(video, names[i]) for i in positions)
    return _hashed_frames(video, frames)


def _hashed_frames(video: Video, frames) -> str:
    """'frames:<frame count>:<SHA-256 of the frames' bytes, each length-prefixed, in position order>:<rule>'."""
    h = hashlib.sha256()
    for data in frames:
        h.update(len(data).to_bytes(8, "little") + data)
    return f"frames:{video.n_frames}:{h.hexdigest()}:{DECODING}"


def _read_frame_file(path: str, video: Video) -> bytes:
    """The bytes of a frame file that `_stamp` found regular (`read_checked_file`: opened without blocking and
    checked again on the open file, not stat-ed a second time)."""
    try:
        return read_checked_file(path)
    except SourceError as e:
        raise HarnessError(str(e), where=f"video {video.key}", fix="restore the file; the data changed after it was indexed, so run again to have it checked") from None


def _read_member(video: Video, name: str) -> bytes:
    """The bytes of one zip member, decompressed (its CRC checked)."""
    try:
        tree = zip_tree(video.path)
        return tree.zip.read(tree.infos[name])
    except (SourceError, zipfile.BadZipFile, OSError, EOFError, ValueError, zlib.error) as e:  # a CRC mismatch is BadZipFile
        raise HarnessError(f"zip member {name} is corrupt: {e}", where=f"video {video.key}", fix="repack the zip from intact frames") from None


def _file_fingerprint(video: Video) -> str:
    """Kind "file": the frame count the index found, the file's size and the SHA-256 of all its bytes (hashed
    once in a process: the index hashed it already)."""
    size, sha256 = file_sha256(video.path)
    return f"file:{video.n_frames}:{size}:{sha256}:{DECODING}"

"""The feature store: every video is embedded once per (backbone, weights SHA-256, preprocessing).

Layout under <home>/features/<backbone>-<key>/:
    meta.json                    what the key stands for
    videos/<h[:2]>/<h>.npy       one backbone map [C, T', H', W'] per video (float32, written atomically)
    packs/<list hash>.npy        the maps of one video list stacked [N, C, T', H', W'], memory-mapped on read

Files are .npy loaded with allow_pickle=False: nothing in the store can execute code. A video's entry is
keyed by its name ('class/video', as the split file writes it) and its content fingerprint
(`harness.data.fingerprint`: the bytes of the frames the loader decodes, never a path or a modification
time). A moved or copied data root, a moved data home, or a store shared between machines finds every entry;
a frame overwritten in place embeds that video anew, and only it. An entry is written under the fingerprint of
the very bytes its clip was decoded from (the loader hashes what it reads): a video whose frames changed after it
was looked up is stored as what was embedded, with a warning, never under its old content's key. A store with no
entry yet looks nothing up, so a first run reads each frame once. A pack is keyed by the entry keys of its list.
`renew` (used by --recompute) embeds the videos of a list anew, once per process.

Every entry and pack ends with a SHA-256 trailer (harness.files, written in the same atomic rename as the
data). An entry is checked whenever it is read (by `missing` when no good pack covers the list, and again
when a pack is built from it); a pack is checked once when it is first used in a process (hashing it costs
about 0.4 s for 1,300 maps of 400 KB at 1.2 GB/s). A damaged entry is deleted and reported in one line
naming its video, and the video is embedded again; a damaged pack is deleted and rebuilt from the entries.
Damaged bytes are never served. The key covers the weights file's SHA-256 and the backbone's code (harness.provenance): other weights or an
edited backbone, other features.
"""
from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from harness.console import warn
from harness.data.loader import clip_batches
from harness.data.fingerprint import remember, video_fingerprint
from harness.data.index import Video
from harness.errors import HarnessError
from harness.files import DamagedFile, atomic_write_checksummed, atomic_write_json, read_checksummed, verify_checksummed
from harness.files import atomic_save_npy_checksummed
from harness.locks import file_lock
from harness.protocol import FramesSpec, canonical_json, frames_key

#: 3: entries keyed by video name and content (2: by path and modification time; 1: no SHA-256 trailers);
#: stores of other versions are left unused
STORE_VERSION = 3
PRECISIONS = ("fp32", "bf16")
#: how frames become a clip's pixels: "cpu" (decoded, resized and normalised where they are read: the DataLoader
#: workers) or DEVICE_PIXELS (the workers only read the files; JPEG frames are decoded on the backbone's device
#: in one call per batch, resized and normalised there). On a GPU nvJPEG and the GPU's resampling may round a
#: pixel otherwise than libjpeg-turbo and the CPU's, so those features have a store key of their own
DEVICE_PIXELS = "device-1"
PIXELS = ("cpu", DEVICE_PIXELS)
#: packs whose checksum held in this process: path -> (device, inode, size, mtime); a replaced file is checked again
_VERIFIED_PACKS: dict[Path, tuple] = {}
#: (store folder, pack name) of the video lists `FeatureStore.renew` embedded anew in this process
_RENEWED: set[tuple[Path, str]] = set()


def video_entry_key(video: Video, frames: FramesSpec) -> str:
    """40 hex digits naming a video's entry: its 'class/video' name and content fingerprint (no path, no time)."""
    return entry_key(video, video_fingerprint(video, frames))


def entry_key(video: Video, fingerprint: str) -> str:
    """The entry key of `video` with content `fingerprint`."""
    return hashlib.sha256(f"{video.key}\0{fingerprint}".encode()).hexdigest()[:40]


def prepare_backbone(backbone: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Evaluation mode on `device`; channels-last on CUDA, where cuDNN's fastest 3D kernels want it."""
    backbone.eval().to(device)
    if device.type == "cuda":
        backbone.to(memory_format=torch.channels_last_3d)
    return backbone


def embed_clips(backbone: torch.nn.Module, clips: torch.Tensor, device: torch.device, precision: str = "fp32") -> torch.Tensor:
    """clips [B, 3, T, H, W] -> float32 maps [B, C, T', H', W'] on `device` (backbone from `prepare_backbone`)."""
    clips = clips.to(device, non_blocking=True)
    if device.type == "cuda":
        clips = clips.contiguous(memory_format=torch.channels_last_3d)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        return backbone(clips).float()


def _to_host(maps: torch.Tensor) -> tuple[torch.Tensor, "torch.cuda.Event | None"]:
    """(the maps in host memory, the event of their copy): from a GPU the copy is queued into pinned memory and
    not waited for, so the GPU goes on with the next batch while the host stores this one."""
    if not maps.is_cuda:
        return maps, None
    host = torch.empty(maps.shape, dtype=maps.dtype, pin_memory=True)
    host.copy_(maps, non_blocking=True)
    copied = torch.cuda.Event()
    copied.record()
    return host, copied


class FeatureStore:
    def __init__(self, home: Path, backbone: str, weights_sha256: str, frames: FramesSpec, precision: str = "fp32", code_sha256: str | None = None, pixels: str = "cpu"):
        """`code_sha256`: the backbone's code (default: `harness.provenance.backbone_code_sha256` of the registered
        backbone `backbone`); an edit of that code gives another store, never stale features. `pixels`: where
        frames are decoded (PIXELS)."""
        if precision not in PRECISIONS:
            raise HarnessError(f"unknown precision '{precision}'", fix=f"use one of: {', '.join(PRECISIONS)}")
        if pixels not in PIXELS:
            raise HarnessError(f"unknown way of decoding '{pixels}'", fix=f"use one of: {', '.join(PIXELS)}")
        if code_sha256 is None:
            from harness.provenance import backbone_code_sha256  # it reads this module's source

            code_sha256 = backbone_code_sha256(backbone)
        # bf16 features differ from fp32 ones in their low bits: another key, never mixed
        self.meta = {"backbone": backbone, "weights_sha256": weights_sha256, "code_sha256": code_sha256, "frames": frames_key(frames), "precision": precision, "version": STORE_VERSION}
        if pixels != "cpu":  # (the CPU's stores keep the key they always had)
            self.meta["pixels"] = pixels
        self.precision, self.pixels = precision, pixels
        self.key = hashlib.sha256(canonical_json(self.meta).encode()).hexdigest()[:16]
        self.dir = home / "features" / f"{backbone}-{self.key}"
        self.frames = frames
        self._keys: dict[Video, str] = {}  # see _entry_keys

    def locked(self):
        """The store's lock (<store>/.lock): held for finding, embedding and packing, so that a second process
        on the same store waits, then finds the work done."""
        return file_lock(self.dir / ".lock", what=f"features in {self.dir}")

    def _entry_keys(self, videos: list[Video]) -> list[str]:
        """The videos' entry keys, each fingerprinted once in the life of this store object (one job)."""
        for v in videos:
            if v not in self._keys:
                self._keys[v] = video_entry_key(v, self.frames)
        return [self._keys[v] for v in videos]

    def _entry_path(self, key: str) -> Path:
        return self.dir / "videos" / key[:2] / f"{key}.npy"

    def _video_path(self, video: Video) -> Path:
        return self._entry_path(self._entry_keys([video])[0])

    def _pack_path(self, keys: list[str]) -> Path:
        """The pack of the videos with these entry keys, in this order."""
        return self.dir / "packs" / f"{hashlib.sha256(chr(10).join(keys).encode()).hexdigest()[:32]}.npy"

    def _read_entry(self, video: Video, key: str) -> tuple[tuple, np.dtype, memoryview] | None:
        """(shape, dtype, raw C-order data) of a video's checked entry; None when it has none. A damaged
        entry is reported, deleted and taken as missing."""
        path = self._entry_path(key)
        return _checked(path, lambda: _npy_parts(read_checksummed(path)), f"the entry of video {video.key}", "to be embedded again")

    def _pack_ok(self, pack: Path) -> bool:
        """Whether `pack` exists and its checksum holds (checked once per process and file version)."""
        try:
            st = pack.stat()
        except FileNotFoundError:
            return False
        signature = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        if _VERIFIED_PACKS.get(pack) == signature:
            return True
        if _checked(pack, lambda: verify_checksummed(pack), f"pack {pack.name}", "to be rebuilt from the per-video entries") is None:
            return False
        _VERIFIED_PACKS[pack] = signature
        return True

    def missing(self, videos: list[Video]) -> list[Video]:
        """The videos without a good entry (a damaged one is deleted and counted as missing). In a store with no
        entry at all every video is missing, and none is fingerprinted to find that out: `extract` keys each by
        the bytes it embeds."""
        if not (self.dir / "videos").is_dir():
            return list(videos)
        keys = self._entry_keys(videos)
        if videos and self._pack_ok(self._pack_path(keys)):
            return []  # a good pack holds them all
        return [v for v, k in zip(videos, keys) if self._read_entry(v, k) is None]

    def renew(self, videos: list[Video]) -> bool:
        """Make the next `missing` and `extract` take `videos` as never embedded (what --recompute asks): their
        entries are deleted, and so is every pack of the store (a pack holding one of them would serve its old
        maps; packs are rebuilt from the entries). Done once per process for a store and a video list, so the
        methods run one after another on one index share one embedding; returns whether it was done now.
        Call it holding `locked()`."""
        keys = self._entry_keys(videos)
        mark = (self.dir, self._pack_path(keys).name)
        if mark in _RENEWED:
            return False
        for key in keys:
            self._entry_path(key).unlink(missing_ok=True)
        for pack in (self.dir / "packs").glob("*.npy"):
            pack.unlink(missing_ok=True)
            _VERIFIED_PACKS.pop(pack, None)
        _RENEWED.add(mark)
        return True

    @torch.inference_mode()
    def extract(
        self,
        videos: list[Video],
        backbone: torch.nn.Module,
        device: torch.device,
        batch_size: int = 16,
        workers: int = 0,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Embed the videos that have no entry yet; return how many were embedded."""
        todo = self.missing(videos)
        if not todo:
            return 0
        if not (self.dir / "meta.json").is_file():
            atomic_write_json(self.dir / "meta.json", self.meta)
        prepare_backbone(backbone, device)
        pending = None  # the last batch: from a GPU its maps are on their way to the host while the next one is computed
        batches = clip_batches(todo, self.frames, batch_size, workers, device, on_device=self.pixels == DEVICE_PIXELS, fingerprints=True)
        for positions, clips, read in batches:
            keys = self._read_keys([todo[p] for p in positions.tolist()], read)
            # always a full batch (a short one padded with copies of its last clip): the low bits of a backbone's
            # output can depend on the batch size (on a CPU a single clip takes other kernels), and an entry must
            # not depend on which videos a stopped, resumed or sharded extraction embeds beside it
            padded = torch.cat([clips, clips[-1:].expand(batch_size - len(clips), *clips.shape[1:])]) if len(clips) < batch_size else clips
            maps, copied = _to_host(embed_clips(backbone, padded, device, self.precision)[: len(clips)])  # [B, C, T', H', W']
            if pending is not None:
                self._write_entries(todo, *pending, progress)
            pending = (positions, keys, maps, copied)
        if pending is not None:
            self._write_entries(todo, *pending, progress)
        return len(todo)

    def _read_keys(self, videos: list[Video], read: list[tuple[tuple, str]]) -> list[str]:
        """The entry keys of videos from the fingerprints of the bytes their clips were made from (`read`: the
        loader's (stamp, fingerprint) per clip), remembered for this store and process. A video whose frames
        changed since `missing` fingerprinted it is keyed by what was embedded, and said so."""
        keys = []
        for video, (stamp, fingerprint) in zip(videos, read):
            remember(video, self.frames, stamp, fingerprint)
            key = entry_key(video, fingerprint)
            if self._keys.get(video, key) != key:
                warn(f"feature cache: the frames of video {video.key} changed while it was being embedded; its features are those of the frames read then ({video.path})")
            self._keys[video] = key
            keys.append(key)
        return keys

    def _write_entries(self, todo: list[Video], positions: torch.Tensor, keys: list[str], maps: torch.Tensor, copied, progress) -> None:
        """Store the maps of one batch (positions into `todo`, their entry `keys`), each checked finite; `copied`:
        the event of their copy from the GPU (None on the CPU)."""
        if copied is not None:
            copied.synchronize()
        for p, key, m in zip(positions.tolist(), keys, maps.numpy()):
            if not np.isfinite(m).all():
                raise HarnessError(
                    f"the backbone gave NaN or Inf features for video {todo[p].key}",
                    where=str(todo[p].path),
                    fix="check the weights file (a diverged or damaged one gives NaN) and the video's frames; nothing was cached for it",
                )
            atomic_save_npy_checksummed(self._entry_path(key), m)
        if progress:
            progress(len(positions))

    def _build_pack(self, pack: Path, videos: list[Video], keys: list[str]) -> None:
        """Stack the checked entries of `videos` (entry `keys`) into one checksummed .npy, streamed (never all
        in memory)."""
        first = self._read_entry(videos[0], keys[0])
        if first is None:
            raise RuntimeError(f"video {videos[0].key} has no features yet; extract it first")
        shape, dtype, _ = first
        header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (len(videos), *shape)}

        def write(f) -> None:
            np.lib.format.write_array_header_1_0(f, header)  # what np.save writes for such a header
            for video, key in zip(videos, keys):
                entry = self._read_entry(video, key)
                if entry is None:
                    raise RuntimeError(f"video {video.key} has no features (missing or damaged); extract it again")
                if entry[0] != shape or entry[1] != dtype:
                    raise RuntimeError(f"video {video.key} has features of shape {entry[0]} {entry[1]}, the others {shape} {dtype}")
                f.write(entry[2])

        atomic_write_checksummed(pack, write)
        st = pack.stat()
        _VERIFIED_PACKS[pack] = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)  # written from checked entries

    def load(self, videos: list[Video]) -> torch.Tensor:
        """The maps of `videos` in order, [N, C, T', H', W'], memory-mapped from one checked pack file."""
        keys = self._entry_keys(videos)
        pack = self._pack_path(keys)
        if not self._pack_ok(pack):
            missing = [v for v, k in zip(videos, keys) if not self._entry_path(k).is_file()]
            if missing:
                raise RuntimeError(f"{len(missing)} videos have no features yet (first: {missing[0].key}); extract them first")
            self._build_pack(pack, videos, keys)
        # copy-on-write mapping: pages are read lazily and the file can never be changed through it
        maps = np.load(pack, mmap_mode="c", allow_pickle=False)
        if maps.shape[0] != len(videos):
            raise RuntimeError(f"pack {pack} holds {maps.shape[0]} maps for {len(videos)} videos; delete it and run again")
        return torch.from_numpy(maps)


def _npy_parts(payload: memoryview) -> tuple[tuple, np.dtype, memoryview]:
    """(shape, dtype, raw data) of the .npy bytes of one array (C order, no objects); DamagedFile otherwise."""
    # the header alone is copied: 10 or 12 bytes of magic, version and length, then the length it names
    if len(payload) < 12:
        raise DamagedFile("not an .npy array: too short")
    length = int.from_bytes(payload[8:10], "little") + 10 if payload[6] == 1 else int.from_bytes(payload[8:12], "little") + 12
    head = io.BytesIO(bytes(payload[:length]))
    try:
        version = np.lib.format.read_magic(head)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(head)
    except Exception as e:  # numpy raises ValueError, and others for odd headers
        raise DamagedFile(f"not an .npy array: {e}") from None
    if fortran or dtype.hasobject:
        raise DamagedFile("not a plain C-order numeric array")
    data = payload[head.tell():]
    if len(data) != int(np.prod(shape)) * dtype.itemsize:
        raise DamagedFile(f"{len(data)} data bytes for an array of shape {shape}")
    return tuple(shape), dtype, data


def _checked(path: Path, read: Callable, what: str, then: str):
    """read() of a checksummed file; None when the file is missing, or damaged (then reported and deleted)."""
    try:
        return read()
    except FileNotFoundError:
        return None
    except DamagedFile as e:
        warn(f"feature cache: {what} is damaged ({e}); it is deleted, {then} ({path})")
        path.unlink(missing_ok=True)
        return None


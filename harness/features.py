"""The feature store: every video is embedded once per (backbone, weights SHA-256, preprocessing).

Layout under <home>/features/<backbone>-<key>/:
    meta.json                    what the key stands for
    videos/<h[:2]>/<h>.npy       one backbone map [C, T', H', W'] per video (float32, written atomically)
    packs/<list hash>.npy        the maps of one video list stacked [N, C, T', H', W'], memory-mapped on read

Files are .npy loaded with allow_pickle=False: nothing in the store can execute code. A video's entry is
keyed by its folder, frame count and folder modification time, so re-extracted frames are embedded anew.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from harness.data.clips import clip_loader
from harness.data.index import Video
from harness.errors import HarnessError
from harness.files import atomic_save_npy, atomic_write_json
from harness.protocol import FramesSpec, canonical_json, frames_key

STORE_VERSION = 1
PRECISIONS = ("fp32", "bf16")


def video_entry_key(video: Video) -> str:
    stat = os.stat(video.path)
    ident = f"{video.identity}\0{video.n_frames}\0{stat.st_mtime_ns}"  # identity: path, plus the member of a zip
    return hashlib.sha256(ident.encode()).hexdigest()[:40]


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


class FeatureStore:
    def __init__(self, home: Path, backbone: str, weights_sha256: str, frames: FramesSpec, precision: str = "fp32"):
        if precision not in PRECISIONS:
            raise HarnessError(f"unknown precision '{precision}'", fix=f"use one of: {', '.join(PRECISIONS)}")
        # bf16 features differ from fp32 ones in their low bits: another key, never mixed
        self.meta = {"backbone": backbone, "weights_sha256": weights_sha256, "frames": frames_key(frames), "precision": precision, "version": STORE_VERSION}
        self.precision = precision
        self.key = hashlib.sha256(canonical_json(self.meta).encode()).hexdigest()[:16]
        self.dir = home / "features" / f"{backbone}-{self.key}"
        self.frames = frames

    def _video_path(self, video: Video) -> Path:
        h = video_entry_key(video)
        return self.dir / "videos" / h[:2] / f"{h}.npy"

    def missing(self, videos: list[Video]) -> list[Video]:
        return [v for v in videos if not self._video_path(v).is_file()]

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
        loader = clip_loader(todo, self.frames, batch_size, workers, pin_memory=device.type == "cuda")
        for positions, clips in loader:
            maps = embed_clips(backbone, clips, device, self.precision).cpu().numpy()  # [B, C, T', H', W']
            for p, m in zip(positions.tolist(), maps):
                if not np.isfinite(m).all():
                    raise HarnessError(
                        f"the backbone gave NaN or Inf features for video {todo[p].key}",
                        where=str(todo[p].path),
                        fix="check the weights file (a diverged or damaged one gives NaN) and the video's frames; nothing was cached for it",
                    )
                atomic_save_npy(self._video_path(todo[p]), m)
            if progress:
                progress(len(positions))
        return len(todo)

    def load(self, videos: list[Video]) -> torch.Tensor:
        """The maps of `videos` in order, [N, C, T', H', W'], memory-mapped from one pack file."""
        keys = [video_entry_key(v) for v in videos]
        pack = self.dir / "packs" / f"{hashlib.sha256(chr(10).join(keys).encode()).hexdigest()[:32]}.npy"
        if not pack.is_file():
            missing = self.missing(videos)
            if missing:
                raise RuntimeError(f"{len(missing)} videos have no features yet (first: {missing[0].key}); extract them first")
            first = np.load(self._video_path(videos[0]), allow_pickle=False)
            stacked = np.empty((len(videos), *first.shape), dtype=first.dtype)
            for i, k in enumerate(keys):
                stacked[i] = np.load(self.dir / "videos" / k[:2] / f"{k}.npy", allow_pickle=False)
            atomic_save_npy(pack, stacked)
        # copy-on-write mapping: pages are read lazily and the file can never be changed through it
        return torch.from_numpy(np.load(pack, mmap_mode="c", allow_pickle=False))

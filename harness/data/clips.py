"""Clips: deterministic test-time frame indices, decode (see harness.data.sources), resize the short side, centre
crop, normalise. What makes a clip's pixels, and nothing else (batching and worker processes: harness.data.loader):
this module's source is part of every backbone's code hash (harness.provenance), so an edit here embeds every
video anew."""
from __future__ import annotations

import numpy as np
import torch

from harness.data.index import Video
from harness.data.sources import open_source
from harness.protocol import FramesSpec


def uniform_indices(n_frames: int, count: int) -> np.ndarray:
    """`count` indices evenly spaced over the whole video, first and last frame included."""
    return np.linspace(0, n_frames - 1, count).round().astype(np.int64)


def read_frames(video: Video, indices: np.ndarray) -> torch.Tensor:
    """uint8 [T, 3, H, W] for the given frame positions of a video (frame folder, zip member or video file)."""
    return open_source(video).read(np.asarray(indices))


def preprocess(frames: torch.Tensor, spec: FramesSpec, out: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 [..., T, 3, H, W] -> float [..., 3, T, crop, crop]: short side to `resize`, centre crop, scale to [0, 1],
    normalise; written into `out` (a clip's place in a batch) when given. Leading dimensions (clips of one frame
    size) are computed as one batch of frames: each clip's pixels are those it has alone."""
    TF = _transforms()
    x = TF.resize(frames, [spec.resize], antialias=True)
    return _normalise(TF.center_crop(x, [spec.crop, spec.crop]), spec, out)


def jittered_indices(n_frames: int, count: int, jitter: int, rng: np.random.Generator) -> np.ndarray:
    """Train-time sampling of the references: evenly spaced over the video, its start and end each moved by
    up to min(jitter, (n - count) / 2) frames."""
    room = int(min(jitter, max(n_frames - count, 0) // 2))
    start = rng.integers(0, room + 1)
    end = n_frames - 1 - rng.integers(0, room + 1)
    return np.linspace(start, end, count).round().astype(np.int64)


def augment(frames: torch.Tensor, spec: FramesSpec, crop: str, flip: bool, rng: np.random.Generator) -> torch.Tensor:
    """Train-time preprocessing: uint8 [T, 3, H, W] -> float [3, T, crop, crop] with a random (or centre)
    crop and, if asked, a horizontal flip of the whole clip."""
    TF = _transforms()
    x = TF.resize(frames, [spec.resize], antialias=True)
    if crop == "random":
        top = int(rng.integers(0, x.shape[-2] - spec.crop + 1))
        left = int(rng.integers(0, x.shape[-1] - spec.crop + 1))
        x = x[..., top : top + spec.crop, left : left + spec.crop]
    else:
        x = TF.center_crop(x, [spec.crop, spec.crop])
    if flip and rng.random() < 0.5:
        x = x.flip(-1)
    return _normalise(x, spec)


def _transforms():
    """torchvision's functional transforms, imported when a clip is first prepared (torchvision takes 3 s to
    import, which a command that finds every feature stored never needs)."""
    import torchvision.transforms.v2.functional as TF

    return TF


def load_decoders() -> None:
    """Import torchvision's decoders and transforms now (3 s, once per process): before DataLoader workers
    fork, so that they do not each import it again, and before anything is timed."""
    import torchvision.io  # noqa: F401

    _transforms()


def _normalise(x: torch.Tensor, spec: FramesSpec, out: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 [..., T, 3, h, w] -> float32 [..., 3, T, h, w]: (x / 255 - mean) / std, each step one float32 operation
    per pixel. The pixels are converted once, into their final layout (`out`, or a new tensor), and the steps run
    in place there: one float copy of the clip instead of four (9.6 MB each at 16 x 224 x 224), the same bits."""
    if out is None:
        out = torch.empty((*x.shape[:-4], 3, x.shape[-4], *x.shape[-2:]), dtype=torch.float32, device=x.device)
    out.copy_(x.transpose(-4, -3))
    mean = torch.tensor(spec.mean, dtype=torch.float32, device=x.device).view(3, 1, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32, device=x.device).view(3, 1, 1, 1)
    return out.div_(255.0).sub_(mean).div_(std)


def load_clip(video: Video, spec: FramesSpec, out: torch.Tensor | None = None) -> torch.Tensor:
    """float [3, T, crop, crop] with the protocol's deterministic test-time sampling (written into `out` if given)."""
    return preprocess(read_frames(video, uniform_indices(video.n_frames, spec.count)), spec, out)


class EncodedClip:
    """A clip's frames as a worker hands them over for decoding on the device: the image files' (name, bytes),
    or, for a video file (decoded where it is read), the uint8 frames [T, 3, H, W]; `where` names the source."""

    def __init__(self, video: Video, where: str, blobs: list[tuple[str, bytes]] | None, frames: torch.Tensor | None):
        self.video, self.where, self.blobs, self.frames = video, where, blobs, frames


def read_encoded_clip(video: Video, spec: FramesSpec) -> EncodedClip:
    """The frames `load_clip` would decode, left encoded where they are image files."""
    indices = uniform_indices(video.n_frames, spec.count)
    source = open_source(video)
    blobs = source.read_encoded(indices)
    return EncodedClip(video, source.where, blobs, source.read(indices) if blobs is None else None)


def decode_clip(clip: EncodedClip, spec: FramesSpec, out: torch.Tensor | None = None) -> torch.Tensor:
    """float [3, T, crop, crop] of one encoded clip on the CPU (written into `out` if given): the very calls of
    `load_clip` on the bytes it read, so the same pixels."""
    from harness.data.sources import decode_frames, stack_frames

    frames = clip.frames if clip.blobs is None else stack_frames(decode_frames(clip.blobs, clip.video), clip.video, clip.where)
    return preprocess(frames, spec, out)


def decode_clips(clips: list[EncodedClip], spec: FramesSpec, device: torch.device) -> torch.Tensor:
    """float [B, 3, T, crop, crop] on `device` from encoded clips: every JPEG frame of the batch decoded in one
    call there (harness.data.sources.decode_jpegs), then resized, cropped and normalised there, all clips of one
    frame size at once. On the CPU the pixels are those of `load_clip`, bit for bit. When the batch cannot be
    decoded in one call, each clip is decoded on its own, so that an error names its video and frame."""
    from harness.data.sources import decode_frames, decode_jpegs, stack_frames

    together = decode_jpegs([b for c in clips if c.blobs is not None for b in c.blobs], device)
    decoded = iter(together or ())
    frames = []
    for c in clips:  # [T, 3, H, W] uint8 on the device, clip by clip
        if c.blobs is None:
            frames.append(c.frames.to(device, non_blocking=True))
        else:
            images = [next(decoded) for _ in c.blobs] if together is not None else decode_frames(c.blobs, c.video, device)
            frames.append(stack_frames(images, c.video, c.where))
    if len({f.shape for f in frames}) == 1:
        return preprocess(torch.stack(frames), spec)  # [B, T, 3, H, W] -> [B, 3, T, crop, crop], all clips in one call
    return torch.stack([preprocess(f, spec) for f in frames])

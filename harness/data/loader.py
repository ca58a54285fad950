"""Batches of clips for a backbone: which videos go together, in which process they are decoded, how a worker's
error reaches the caller, and, for the feature store, the fingerprint of the bytes each clip was made from
(harness.data.fingerprint). The pixels are harness.data.clips's (`load_clip`, `read_encoded_clip`, `decode_clip`,
`decode_clips`), bit for bit: nothing here computes a pixel, so this module is not part of the backbone's code
hash and an edit here embeds nothing anew."""
from __future__ import annotations

import math
from typing import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from harness.data.clips import decode_clip, decode_clips, load_clip, load_decoders, read_encoded_clip
from harness.data.fingerprint import fingerprint_of_read, video_stamp
from harness.data.index import Video
from harness.errors import HarnessError
from harness.protocol import FramesSpec


class ClipDataset(Dataset):
    """(position, clip) for a list of videos; the position lets a sharded loader put results back in order.
    A batch is made whole by `__getitems__`: every clip written into its place in one tensor. `encoded`: the clip
    is an `EncodedClip`, decoded by the caller (`decode_clips`). `fingerprints`: each batch also carries, per
    clip, (stamp, fingerprint) of the very bytes it was made from (harness.data.fingerprint.fingerprint_of_read).
    `reuse`: batches made in this process are written into one buffer, so a batch's clips are overwritten by the
    next batch's (see `clip_batches`); in DataLoader workers, into the slots of `ring`, shared memory made once by
    `clip_loader` (a worker hands over only the slot's number), each written again once its batch was asked past.
    Fresh shared memory for every batch cost its page faults in the worker: measured on 2 cores, alternating 4
    times, 16 x 224 x 224 clips from 320 x 240 JPEG, 1 worker 44-52 clips/s fresh, 59-63 with the ring (2 workers
    46-77 and 54-80); 16 x 64 x 64 clips, 1 worker 440-531 and 665-757, 2 workers 668-729 and 780-843. One shared
    tensor for all slots was slower with 2 workers (26-60 clips/s at 224): their page faults contend in one file."""

    def __init__(self, videos: list[Video], spec: FramesSpec, encoded: bool = False, fingerprints: bool = False, reuse: bool = False):
        self.videos, self.spec, self.encoded, self.fingerprints, self.reuse = videos, spec, encoded, fingerprints, reuse
        self._buffer: torch.Tensor | None = None
        self.ring: list[torch.Tensor] | None = None  # slots of [B, 3, T, crop, crop] in shared memory, for workers (clip_loader)

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, i: int):
        return i, (read_encoded_clip if self.encoded else load_clip)(self.videos[i], self.spec)

    def __getitems__(self, indices: list[int]):
        """(positions [B], clips float [B, 3, T, crop, crop]) or, `encoded`, (positions, [EncodedClip]), and with
        `fingerprints` a third item, [(stamp, fingerprint)]. The clips are decoded straight into the batch (no stack
        of separate clips: a copy of 154 MB a batch of 16 clips at 16 x 224 x 224). In a worker the batch lies in
        shared memory, which the main process maps without a copy (`_batch_tensor`)."""
        try:
            s, read = self.spec, []
            clips, slot = ([], None) if self.encoded else self._batch_tensor(indices)
            for place, i in enumerate(indices):
                video = self.videos[i]
                stamp = video_stamp(video, s) if self.fingerprints else None  # before the files are read
                encoded = read_encoded_clip(video, s)  # what `load_clip` reads, then decodes (`decode_clip`)
                if self.fingerprints:
                    read.append((stamp, fingerprint_of_read(video, s, encoded.blobs)))
                if self.encoded:
                    clips.append(encoded)
                else:
                    decode_clip(encoded, s, out=clips[place])
            if slot is not None:
                clips = _InRing(slot, len(indices))
            return (torch.tensor(indices), clips, read) if self.fingerprints else (torch.tensor(indices), clips)
        except HarnessError as e:
            if get_worker_info() is None:
                raise
            # a DataLoader worker cannot hand a HarnessError to the main process (it re-raises the type with
            # the worker's traceback as its text): carry the error as data, raised again by _ClipLoader
            return _Failure(e.what, e.where, e.fix)

    def _batch_tensor(self, indices: list[int]) -> tuple[torch.Tensor, int | None]:
        """(an uninitialised float32 tensor for the batch of `indices`, its slot of `ring` or None). In a DataLoader
        worker it lies in shared memory: the slot the batch's number gives (batches come in order), or without a ring
        a new tensor, as torch's own collate makes it; in this process with `reuse`, the buffer of the batch before.
        Fresh memory is paid for at its first write, a page fault per 4 KiB (12.6 MB a batch of 16 clips at
        16 x 64 x 64). Measured on 2 cores, alternating: embedding 1,292 such clips 3.0-5.5 s with a fresh batch each
        time, 2.4-4.0 s reusing one; the loader alone at 16 x 224 x 224 from 320 x 240 JPEG, 38-47 clips/s fresh,
        50-58 reusing."""
        s = self.spec
        shape = (len(indices), 3, s.count, s.crop, s.crop)
        if get_worker_info() is not None:
            if self.ring is None:
                return _shared_tensor(shape), None
            slot = indices[0] // len(self.ring[0]) % len(self.ring)
            return self.ring[slot][: len(indices)], slot
        if not self.reuse:
            return torch.empty(shape, dtype=torch.float32), None
        if self._buffer is None or self._buffer.shape[1:] != shape[1:] or len(self._buffer) < shape[0]:
            self._buffer = torch.empty(shape, dtype=torch.float32)
        return self._buffer[: shape[0]], None


def _shared_tensor(shape: tuple[int, ...]) -> torch.Tensor:
    """An uninitialised float32 tensor in shared memory, which the main process maps without a copy."""
    storage = torch.empty(0, dtype=torch.float32)._typed_storage()._new_shared(math.prod(shape))
    return torch.empty(0, dtype=torch.float32).new(storage).view(shape)


class _Failure:
    """A HarnessError met in a DataLoader worker, on its way to the main process."""

    def __init__(self, what: str, where: str | None, fix: str | None):
        self.what, self.where, self.fix = what, where, fix


def _as_made(batch):
    """The collate step: `ClipDataset.__getitems__` made the batch whole already."""
    return batch


class _InRing:
    """A batch a worker wrote into slot `slot` of the dataset's ring, its first `n` clips."""

    def __init__(self, slot: int, n: int):
        self.slot, self.n = slot, n


class _ClipLoader(DataLoader):
    """A DataLoader that raises a worker's HarnessError in the main process, as it would be without workers."""

    def __iter__(self):
        for item in super().__iter__():
            if isinstance(item, _Failure):
                raise HarnessError(item.what, where=item.where, fix=item.fix)
            if isinstance(item[1], _InRing):
                item = (item[0], self.dataset.ring[item[1].slot][: item[1].n], *item[2:])
            yield item


def clip_batches(videos: list[Video], spec: FramesSpec, batch_size: int, workers: int, device: torch.device, on_device: bool = False,
                 fingerprints: bool = False) -> Iterator[tuple]:
    """(positions [B], clips float [B, 3, T, crop, crop]) in order, for a backbone on `device`; `on_device`: the
    workers only read the files, and the frames are decoded and the clips made on `device` (`decode_clips`).
    `fingerprints`: a third item, [(stamp, fingerprint)] of the bytes each clip was made from.
    A batch's clips are valid until the next batch is asked for (without workers the next batch is written into the
    same memory): use them, or copy them, before."""
    pin = device.type == "cuda" and not on_device
    # the buffer is reused where nothing reads it after the next batch is asked for: on the CPU, and through the
    # pinned copy made for a GPU (another device might still be copying from it)
    loader = clip_loader(videos, spec, batch_size, workers, pin_memory=pin, encoded=on_device, fingerprints=fingerprints, reuse=device.type == "cpu" or pin)
    for positions, clips, *read in loader:
        yield positions, decode_clips(clips, spec, device) if on_device else clips, *read


#: batches each DataLoader worker works ahead of the one asked for (torch's default)
PREFETCH = 2


def clip_loader(videos: list[Video], spec: FramesSpec, batch_size: int, workers: int, pin_memory: bool = False, encoded: bool = False,
                fingerprints: bool = False, reuse: bool = False) -> DataLoader:
    """Batches (positions [B], clips): float [B, 3, T, crop, crop], or with `encoded` a list of `EncodedClip`
    for `decode_clips`; with `fingerprints` a third item (see ClipDataset); `reuse`: see ClipDataset."""
    load_decoders()  # once here, before the workers fork, not once in each of them
    dataset = ClipDataset(videos, spec, encoded, fingerprints, reuse)
    if reuse and workers and not encoded and not pin_memory:
        # batches on their way (PREFETCH a worker), the one held, and one to spare: a slot is written again only
        # after its batch was asked past
        slots = PREFETCH * workers + 2
        dataset.ring = [torch.empty((batch_size, 3, spec.count, spec.crop, spec.crop), dtype=torch.float32).share_memory_() for _ in range(slots)]
    return _ClipLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        pin_memory=pin_memory,
        persistent_workers=False,
        prefetch_factor=PREFETCH if workers else None,
        collate_fn=_as_made,
    )

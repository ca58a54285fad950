"""The video index: class -> videos of one split part, each found on disk and checked before any episode.

Classes and videos are sorted by name, so episodes depend on the set of videos a split lists, not on the
order of its lines. Videos that are missing, empty or shorter than the protocol needs are reported; the
protocol says whether they stop the run (default) or are excluded, and the exclusion is recorded.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from harness.data.splits import read_split_file
from harness.errors import HarnessError

FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class Video:
    class_name: str
    video_id: str
    path: Path  # folder of frames
    n_frames: int

    @property
    def key(self) -> str:
        """'class/video' as the split file writes it; the video's name everywhere in the harness."""
        return f"{self.class_name}/{self.video_id}"


@dataclass
class VideoIndex:
    part: str
    classes: list[str]  # sorted
    videos: list[Video]  # sorted by (class, video)
    by_class: list[list[int]]  # class position -> positions in `videos`
    excluded: list[dict] = field(default_factory=list)  # {"video": "class/video", "reason": ...}

    @property
    def sha256(self) -> str:
        """Hash of the video set (names only)."""
        h = hashlib.sha256()
        for v in self.videos:
            h.update(v.key.encode() + b"\n")
        return h.hexdigest()

    def __len__(self) -> int:
        return len(self.videos)


def list_frames(folder: Path) -> list[str]:
    """Frame file names in a video folder, sorted as strings (so zero-padding matters, as in TRX)."""
    return sorted(n for n in os.listdir(folder) if n.lower().endswith(FRAME_SUFFIXES))


def build_index(root: Path, split_file: Path, part: str, min_frames: int, bad_videos: str = "error") -> VideoIndex:
    if not root.is_dir():
        raise HarnessError(f"data root {root} does not exist", fix="set dataset.root in the protocol (or --set dataset.root=DIR) to the folder holding <class>/<video>/<frames>.jpg")
    entries = sorted(set(read_split_file(split_file)))
    found, problems = [], []
    for class_name, video_id in entries:
        folder = root / class_name / video_id
        if not folder.is_dir():
            problems.append({"video": f"{class_name}/{video_id}", "reason": "missing"})
            continue
        try:
            n = len(list_frames(folder))
        except OSError as e:
            problems.append({"video": f"{class_name}/{video_id}", "reason": f"unreadable: {e.strerror}"})
            continue
        if n == 0:
            problems.append({"video": f"{class_name}/{video_id}", "reason": "empty"})
        elif n < min_frames:
            problems.append({"video": f"{class_name}/{video_id}", "reason": f"too short: {n} frames, {min_frames} needed"})
        else:
            found.append(Video(class_name, video_id, folder, n))
    if problems and bad_videos == "error":
        listing = "\n".join(f"    {p['video']}: {p['reason']}" for p in problems[:20])
        more = f"\n    ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise HarnessError(
            f"{len(problems)} of {len(entries)} videos listed in {split_file} cannot be used:\n{listing}{more}",
            where=f"data root {root}",
            fix="extract the missing videos, or set dataset.bad_videos: exclude to leave them out (the exclusion is recorded in the results)",
        )
    classes = sorted({v.class_name for v in found})
    position = {c: i for i, c in enumerate(classes)}
    by_class: list[list[int]] = [[] for _ in classes]
    for i, v in enumerate(found):
        by_class[position[v.class_name]].append(i)
    return VideoIndex(part, classes, found, by_class, problems)

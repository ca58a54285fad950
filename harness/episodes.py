"""Episodes: episode i is a function of (seed, i) and the video index alone.

    rng = numpy.random.default_rng([seed, i])
    classes = rng.choice(n_classes, way, replace=False)           # label j = classes[j]
    for each chosen class: rng.choice(n_videos, shot + query, replace=False), support first

So any subset, order, batch size or number of processes yields the same episodes, and the content hash
of the whole set proves that two runs saw the same inputs.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from harness.data.index import VideoIndex
from harness.errors import HarnessError
from harness.protocol import Protocol


@dataclass(frozen=True)
class Episodes:
    """A batch of episodes as positions into the index's video list."""

    ids: np.ndarray  # [E] episode indices
    classes: np.ndarray  # [E, way] class positions; the label of classes[e, j] is j
    support: np.ndarray  # [E, way * shot] video positions, class-major: labels repeat shot times
    query: np.ndarray  # [E, way * query] video positions, class-major
    support_labels: np.ndarray  # [E, way * shot]
    query_labels: np.ndarray  # [E, way * query]


class EpisodeSet:
    def __init__(self, index: VideoIndex, way: int, shot: int, query: int, n_episodes: int, seed: int, protocol: Protocol | None = None):
        where = (lambda f: protocol.where(f)) if protocol else (lambda f: f"field '{f}'")
        if way > len(index.classes):
            raise HarnessError(
                f"way {way} is more than the {len(index.classes)} classes of the {index.part} split",
                where=where("way"),
                fix=f"use way <= {len(index.classes)}",
            )
        sizes = [len(v) for v in index.by_class]
        smallest = int(np.argmin(sizes))
        if shot + query > sizes[smallest]:
            raise HarnessError(
                f"shot + query_per_class = {shot + query} is more than the {sizes[smallest]} videos of class '{index.classes[smallest]}' ({index.part} split)",
                where=where("shot"),
                fix=f"use shot + query_per_class <= {sizes[smallest]}, or exclude that class from the split",
            )
        self.index, self.way, self.shot, self.query = index, way, shot, query
        self.n_episodes, self.seed = n_episodes, seed
        self._by_class = [np.asarray(v, dtype=np.int64) for v in index.by_class]
        self._sha256: str | None = None
        self._sampled: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}  # every method scores the same episodes

    def __len__(self) -> int:
        return self.n_episodes

    def episode(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(classes [way], support [way, shot], query [way, query]) of episode i."""
        i = int(i)
        if i not in self._sampled:
            self._sampled[i] = self._sample(i)
        return self._sampled[i]

    def _sample(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, int(i)])
        classes = rng.choice(len(self._by_class), self.way, replace=False)
        picks = np.stack([self._by_class[c][rng.choice(len(self._by_class[c]), self.shot + self.query, replace=False)] for c in classes])
        return classes, picks[:, : self.shot], picks[:, self.shot :]

    def batch(self, ids) -> Episodes:
        ids = np.asarray(ids, dtype=np.int64)
        parts = [self.episode(i) for i in ids]
        classes = np.stack([p[0] for p in parts]).reshape(len(ids), self.way)
        support = np.stack([p[1] for p in parts]).reshape(len(ids), -1)
        query = np.stack([p[2] for p in parts]).reshape(len(ids), -1)
        labels = np.arange(self.way, dtype=np.int64)
        return Episodes(
            ids=ids,
            classes=classes,
            support=support,
            query=query,
            support_labels=np.broadcast_to(np.repeat(labels, self.shot), support.shape).copy(),
            query_labels=np.broadcast_to(np.repeat(labels, self.query), query.shape).copy(),
        )

    @property
    def sha256(self) -> str:
        """SHA-256 over every episode's classes, support and query videos (by name), in episode order."""
        if self._sha256 is None:
            h = hashlib.sha256(f"way={self.way} shot={self.shot} query={self.query} n={self.n_episodes}\n".encode())
            names = [v.key for v in self.index.videos]
            for start in range(0, self.n_episodes, 1000):
                b = self.batch(range(start, min(start + 1000, self.n_episodes)))
                for e in range(len(b.ids)):
                    line = "|".join(names[j] for j in (*b.support[e], *b.query[e]))
                    h.update(f"{b.ids[e]}:{line}\n".encode())
            self._sha256 = h.hexdigest()
        return self._sha256

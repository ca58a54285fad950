"""Episodes: episode i is a function of (seed, i) and the video index alone.

    rng = numpy.random.default_rng([seed, i])
    classes = rng.choice(n_classes, way, replace=False)           # label j = classes[j]
    for each chosen class: rng.choice(n_videos, shot + query, replace=False), support first

So any subset, order, batch size or number of processes yields the same episodes, and the content hash
of the whole set proves that two runs saw the same inputs. Many episodes at once are drawn by harness.sampling,
numpy's very draws written out as array operations over the episodes (0.4 s -> 0.02 s for 10,000 episodes);
a few, or any that harness.sampling cannot follow, by numpy itself.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from harness import sampling
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


#: episodes drawn together by harness.sampling from this many on (below, numpy one by one is quicker)
VECTORISED_FROM = 64


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
        self._sizes = np.array(sizes, dtype=np.int64)
        self._first = np.concatenate([[0], np.cumsum(self._sizes)[:-1]]).astype(np.int64)  # class c's videos: _videos[_first[c]:]
        self._videos = np.concatenate(self._by_class) if self._by_class else np.zeros(0, dtype=np.int64)
        self._vectorised = sampling.applies(seed, n_episodes, [len(sizes), *sizes])
        self._sha256: str | None = None
        # every method scores the same episodes: each is drawn once, on first use
        self._drawn = np.zeros(n_episodes, dtype=bool)
        self._classes = np.zeros((n_episodes, way), dtype=np.int64)  # class positions
        self._picks = np.zeros((n_episodes, way, shot + query), dtype=np.int64)  # video positions, support first

    def __len__(self) -> int:
        return self.n_episodes

    def episode(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(classes [way], support [way, shot], query [way, query]) of episode i."""
        i = int(i)
        self._draw(np.array([i]))
        return self._classes[i], self._picks[i, :, : self.shot], self._picks[i, :, self.shot :]

    def _draw(self, ids: np.ndarray) -> None:
        """Draw the episodes of `ids` not drawn yet: many at once by harness.sampling, a few (fewer than
        VECTORISED_FROM: its fixed cost is that of about 30 episodes) and those it marks by numpy."""
        if len(ids) and (ids.min() < 0 or ids.max() >= self.n_episodes):
            raise IndexError(f"episode ids must be in [0, {self.n_episodes}), not {ids.min()}..{ids.max()}")
        todo = np.unique(ids[~self._drawn[ids]])
        if not len(todo):
            return
        by_numpy = todo
        if self._vectorised and len(todo) >= VECTORISED_FROM:
            classes, within, redo = sampling.draw_episodes(self.seed, todo, self._sizes, self.way, self.shot + self.query)
            self._classes[todo] = classes
            self._picks[todo] = self._videos[self._first[classes][:, :, None] + within]
            by_numpy = todo[redo]
        for i in by_numpy.tolist():
            self._classes[i], self._picks[i] = self._sample(i)
        self._drawn[todo] = True

    def _sample(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(classes [way], videos [way, shot + query]) of episode i, by the rule of the module docstring."""
        rng = np.random.default_rng([self.seed, int(i)])
        classes = rng.choice(len(self._by_class), self.way, replace=False)
        return classes, np.stack([self._by_class[c][rng.choice(len(self._by_class[c]), self.shot + self.query, replace=False)] for c in classes])

    def batch(self, ids) -> Episodes:
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        self._draw(ids)
        classes = self._classes[ids]
        support = self._picks[ids, :, : self.shot].reshape(len(ids), -1)
        query = self._picks[ids, :, self.shot :].reshape(len(ids), -1)
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

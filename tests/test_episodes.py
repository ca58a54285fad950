"""Episodes depend on (seed, index) alone: any subset, order or batch gives the same episodes."""
from pathlib import Path

import numpy as np
import pytest

import harness.sampling as sampling
from harness.data.index import Video, VideoIndex, build_index
from harness.episodes import VECTORISED_FROM, EpisodeSet
from harness.errors import HarnessError


@pytest.fixture(scope="module")
def index(tiny_root):
    return build_index(tiny_root, tiny_root / "testlist.txt", "test", min_frames=8)


def test_same_seed_same_episodes_and_hash(index):
    a = EpisodeSet(index, way=5, shot=1, query=1, n_episodes=300, seed=7)
    b = EpisodeSet(index, way=5, shot=1, query=1, n_episodes=300, seed=7)
    c = EpisodeSet(index, way=5, shot=1, query=1, n_episodes=300, seed=8)
    assert a.sha256 == b.sha256 != c.sha256
    assert np.array_equal(a.batch(range(300)).support, b.batch(range(300)).support)


def test_any_subset_or_order_gives_the_same_episodes(index):
    eps = EpisodeSet(index, way=5, shot=2, query=2, n_episodes=100, seed=0)
    whole = eps.batch(range(100))
    shuffled = np.random.default_rng(1).permutation(100)
    part = eps.batch(shuffled)
    for e, i in enumerate(shuffled):
        assert np.array_equal(part.support[e], whole.support[i])
        assert np.array_equal(part.query[e], whole.query[i])
        assert np.array_equal(part.classes[e], whole.classes[i])


def test_episode_invariants(index):
    eps = EpisodeSet(index, way=5, shot=2, query=3, n_episodes=500, seed=0)
    b = eps.batch(range(500))
    assert b.support.shape == (500, 10) and b.query.shape == (500, 15)
    for e in range(500):
        assert len(set(b.classes[e])) == 5
        videos = np.concatenate([b.support[e], b.query[e]])
        assert len(set(videos)) == len(videos), "a video repeats within an episode"
        for pos, label in zip(b.support[e], b.support_labels[e]):
            assert index.videos[pos].class_name == index.classes[b.classes[e, label]]
        for pos, label in zip(b.query[e], b.query_labels[e]):
            assert index.videos[pos].class_name == index.classes[b.classes[e, label]]
    assert b.support_labels.min() == 0 and b.support_labels.max() == 4


def test_impossible_episodes_name_the_field(index):
    with pytest.raises(HarnessError, match="way 7 is more than the 6 classes"):
        EpisodeSet(index, way=7, shot=1, query=1, n_episodes=1, seed=0)
    with pytest.raises(HarnessError, match="shot \\+ query_per_class = 8 is more than the 7 videos"):
        EpisodeSet(index, way=5, shot=5, query=3, n_episodes=1, seed=0)


def _index_of_sizes(sizes: list[int]) -> VideoIndex:
    """Names only: class c has sizes[c] videos."""
    videos, by_class = [], []
    for c, n in enumerate(sizes):
        by_class.append(list(range(len(videos), len(videos) + n)))
        videos.extend(Video(f"c{c}", f"v{i}", Path("/nonexistent"), 16) for i in range(n))
    return VideoIndex(part="test", classes=[f"c{c}" for c in range(len(sizes))], videos=videos, by_class=by_class)


def _the_rule(index: VideoIndex, way: int, k: int, seed: int, i: int) -> tuple[list, list]:
    """Episode i as the module docstring of harness.episodes writes it, with numpy's own objects."""
    rng = np.random.default_rng([seed, i])
    classes = rng.choice(len(index.by_class), way, replace=False)
    return classes.tolist(), [np.asarray(index.by_class[c])[rng.choice(len(index.by_class[c]), k, replace=False)].tolist() for c in classes]


@pytest.mark.parametrize("sizes, way, shot, query, seed", [
    ([130, 130] + [129] * 8, 5, 1, 1, 0),  # the end to end's pool
    ([3, 7, 2, 40, 9, 5], 6, 1, 1, 2**32 - 1),  # every class in every episode; a class of exactly shot + query videos
    ([31] * 5 + [17, 64, 8], 5, 5, 3, 7),
    ([5000, 10_000, 20], 2, 1, 19, 123456789),
])
def test_episodes_drawn_together_are_numpys_draws(sizes, way, shot, query, seed):
    """Many episodes are drawn at once by harness.sampling, numpy's draws written out: every one must be the rule's
    (the rule with numpy's own objects), or every stored result's episodes would change."""
    index = _index_of_sizes(sizes)
    n = 3 * VECTORISED_FROM
    b = EpisodeSet(index, way, shot, query, n, seed).batch(range(n))
    for e in range(n):
        classes, videos = _the_rule(index, way, shot + query, seed, e)
        assert b.classes[e].tolist() == classes
        assert b.support[e].tolist() == [v for c in videos for v in c[:shot]]
        assert b.query[e].tolist() == [v for c in videos for v in c[shot:]]


def test_episodes_drawn_one_by_one_equal_those_drawn_together(index):
    """A few episodes are drawn by numpy one by one, many by harness.sampling: the same episodes either way."""
    one_by_one = EpisodeSet(index, way=5, shot=2, query=2, n_episodes=2 * VECTORISED_FROM, seed=3)
    together = EpisodeSet(index, way=5, shot=2, query=2, n_episodes=2 * VECTORISED_FROM, seed=3)
    singles = [one_by_one.batch([i]) for i in range(2 * VECTORISED_FROM)]
    whole = together.batch(range(2 * VECTORISED_FROM))
    assert np.array_equal(np.concatenate([b.support for b in singles]), whole.support)
    assert np.array_equal(np.concatenate([b.query for b in singles]), whole.query)
    assert np.array_equal(np.concatenate([b.classes for b in singles]), whole.classes)
    assert one_by_one.sha256 == together.sha256


def test_an_episode_the_draws_together_cannot_follow_is_drawn_by_numpy(index, monkeypatch):
    """A draw Lemire's method rejects (about once in 10^7) marks its episode; numpy then draws it."""
    real = sampling.draw_episodes

    def rejecting(seed, ids, sizes, way, per_class):
        classes, picks, redo = real(seed, ids, sizes, way, per_class)
        marked = ids % 7 == 3
        picks[marked] = 0  # what a draw not followed leaves: wrong
        return classes, picks, redo | marked

    monkeypatch.setattr(sampling, "draw_episodes", rejecting)
    n = 2 * VECTORISED_FROM
    b = EpisodeSet(index, way=5, shot=1, query=2, n_episodes=n, seed=11).batch(range(n))
    for e in range(n):
        classes, videos = _the_rule(index, 5, 3, 11, e)
        assert b.classes[e].tolist() == classes and b.support[e].tolist() == [c[0] for c in videos]


def test_an_episode_outside_the_set_is_an_error(index):
    with pytest.raises(IndexError, match="episode ids must be in"):
        EpisodeSet(index, way=5, shot=1, query=1, n_episodes=10, seed=0).batch([10])

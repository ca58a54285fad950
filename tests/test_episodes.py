"""Episodes depend on (seed, index) alone: any subset, order or batch gives the same episodes."""
import numpy as np
import pytest

from harness.data.index import build_index
from harness.episodes import EpisodeSet
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

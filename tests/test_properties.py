"""Property tests: protocol parsing round-trips and rejects bad values; the sampler's invariants hold."""
import dataclasses

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.data.index import Video, VideoIndex
from harness.episodes import EpisodeSet
from harness.errors import HarnessError
from harness.protocol import load_protocol

fields = st.fixed_dictionaries(
    {
        "way": st.integers(2, 20),
        "shot": st.integers(1, 10),
        "query_per_class": st.integers(1, 10),
        "episodes": st.integers(1, 100_000),
        "seed": st.integers(0, 2**32 - 1),
        "frames": st.fixed_dictionaries({"count": st.integers(1, 64), "resize": st.integers(32, 512)}),
    }
)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fields)
def test_a_protocol_round_trips_through_yaml(tmp_path, data):
    data = {**data, "frames": {**data["frames"], "crop": data["frames"]["resize"]}}
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"name": "p", **data}))
    p = load_protocol(path)
    again = tmp_path / "again.yaml"
    again.write_text(yaml.safe_dump(p.content()))
    q = load_protocol(again)
    assert dataclasses.replace(q, source="", origins={}).content() == p.content() and q.sha256 == p.sha256
    assert (p.way, p.shot, p.query_per_class, p.episodes, p.seed) == tuple(data[k] for k in ("way", "shot", "query_per_class", "episodes", "seed"))


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.sampled_from(["way", "shot", "query_per_class", "episodes", "seed"]),
    st.one_of(st.integers(-1000, 0), st.text(max_size=5), st.floats(allow_nan=True), st.booleans(), st.lists(st.integers(), max_size=2)),
)
def test_invalid_values_are_rejected_with_the_field_named(tmp_path, field, value):
    if field == "seed" and isinstance(value, int) and not isinstance(value, bool) and value == 0:
        return  # seed 0 is valid
    if field in ("shot", "query_per_class", "episodes") and isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"name": "bad", field: value}))
    with pytest.raises(HarnessError) as err:
        load_protocol(path)
    assert f"'{field}'" in err.value.message


def fake_index(sizes: list[int]) -> VideoIndex:
    videos, by_class = [], []
    for c, n in enumerate(sizes):
        by_class.append(list(range(len(videos), len(videos) + n)))
        videos += [Video(f"c{c:02d}", f"v{c:02d}_{i:03d}", None, 16) for i in range(n)]
    return VideoIndex("test", [f"c{c:02d}" for c in range(len(sizes))], videos, by_class)


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(4, 30), min_size=5, max_size=12),
    way=st.integers(2, 5),
    shot=st.integers(1, 2),
    query=st.integers(1, 2),
    seed=st.integers(0, 2**31),
    batch=st.integers(1, 17),
)
def test_episode_invariants_hold_for_any_index_and_batching(sizes, way, shot, query, seed, batch):
    index = fake_index(sizes)
    eps = EpisodeSet(index, way, shot, query, n_episodes=40, seed=seed)
    whole = eps.batch(range(40))
    order = np.random.default_rng(seed).permutation(40)
    pieces = [eps.batch(order[i : i + batch]) for i in range(0, 40, batch)]
    for piece in pieces:
        for e, i in enumerate(piece.ids):
            assert np.array_equal(piece.support[e], whole.support[i]) and np.array_equal(piece.query[e], whole.query[i])
    for e in range(40):
        assert len(set(whole.classes[e])) == way
        videos = np.concatenate([whole.support[e], whole.query[e]])
        assert len(set(videos)) == len(videos)
        assert whole.support_labels[e].min() >= 0 and whole.support_labels[e].max() < way
        for pos, label in zip(videos, np.concatenate([whole.support_labels[e], whole.query_labels[e]])):
            assert index.videos[pos].class_name == index.classes[whole.classes[e, label]]

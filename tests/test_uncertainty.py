"""The three levels of harness.uncertainty against slow, independent computations, and against the spread of
the accuracy over fresh pools of a simulated benchmark."""
import math

import numpy as np
import pytest
from scipy import stats as sps

from harness import stats, uncertainty
from harness.errors import HarnessError


def simulate(rng, n_classes=10, per_class=30, episodes=2000, way=5, shot=1, class_effects=None, distractor=0.3):
    """Outcomes of a benchmark with class effects (as query class, and, with the opposite sign, as distractor),
    query-video and support-video effects. Returns (classes [E, way], support [E, way, shot], query [E, way],
    correct [E, way])."""
    ce = rng.normal(0, 0.8, n_classes) if class_effects is None else class_effects
    qe, se = rng.normal(0, 1.0, (n_classes, per_class)), rng.normal(0, 1.0, (n_classes, per_class))
    classes = np.argsort(rng.random((episodes, n_classes)), axis=1)[:, :way]
    perm = np.argsort(rng.random((episodes, way, per_class)), axis=2)
    s, q = perm[:, :, :shot], perm[:, :, shot]
    others = (ce[classes].sum(1, keepdims=True) - ce[classes]) / (way - 1)
    z = 0.5 + ce[classes] - distractor * others + qe[classes, q] + se[classes[:, :, None], s].mean(-1)
    return classes, s, q, (rng.random(z.shape) < 1 / (1 + np.exp(-z))).astype(int)


def as_records(classes, s, q, correct):
    way = classes.shape[1]
    return [{"episode": e, "classes": [f"c{k}" for k in classes[e]], "support": [f"c{k}/v{v}" for k, vs in zip(classes[e], s[e]) for v in vs],
             "query": [f"c{k}/v{v}" for k, v in zip(classes[e], q[e])], "query_labels": list(range(way)), "correct": correct[e].tolist()}
            for e in range(len(classes))]


@pytest.fixture(scope="module")
def records():
    return as_records(*simulate(np.random.default_rng(0), episodes=300, shot=2))


def slow_class_replicates(records, n_resamples, seed):
    """theta* of the classes level, outcome by outcome with dictionaries (the module docstring's formulas)."""
    outcomes = []  # (query class, episode classes, correct)
    for r in records:
        for name, label, c in zip(r["query"], r["query_labels"], r["correct"]):
            outcomes.append((r["classes"][label], set(r["classes"]), c))
    theta = sum(c for _, _, c in outcomes) / len(outcomes)
    classes = []
    for r in records:  # numbered as harness.stats.query_layout numbers them: first appearance, supports first
        for i, _ in enumerate(r["support"]):
            cls = r["classes"][i // (len(r["support"]) // len(r["classes"]))]
            if cls not in classes:
                classes.append(cls)
        for label in r["query_labels"]:
            if r["classes"][label] not in classes:
                classes.append(r["classes"][label])
    own = {k: [c - theta for qk, _, c in outcomes if qk == k] for k in classes}
    mean_own = {k: sum(v) / len(v) for k, v in own.items()}
    centred = [(qk, ek, c - theta - mean_own[qk]) for qk, ek, c in outcomes]
    influence = []
    for k in classes:
        as_distractor = [r for qk, ek, r in centred if k in ek and qk != k]
        without = [r for qk, ek, r in centred if k not in ek]
        effect = sum(as_distractor) / len(as_distractor) - sum(without) / len(without)
        influence.append(sum(own[k]) + len(as_distractor) * effect)
    K = len(classes)
    draws = np.random.default_rng(seed).integers(0, K, size=(n_resamples, K))
    out = []
    for row in draws:
        w = np.bincount(row, minlength=K)
        out.append(theta + sum((w[k] - 1) * influence[k] for k in range(K)) * math.sqrt(K / (K - 1)) / len(outcomes))
    return np.array(out)


def test_classes_level_matches_an_outcome_by_outcome_computation(records):
    i = uncertainty.level_interval(records, "classes", n_resamples=300, seed=4)
    lo, hi = np.quantile(slow_class_replicates(records, 300, 4), [0.025, 0.975])
    assert (i["low"], i["high"]) == pytest.approx((100 * lo, 100 * hi))
    assert i["n"] == 10 and i["claim"] == "new test classes and new videos" and "10 test classes" in i["meaning"]


def test_videos_level_is_the_video_bootstrap(records):
    i = uncertainty.level_interval(records, "videos", n_resamples=500, seed=2)
    v = stats.video_bootstrap_interval(records, n_resamples=500, seed=2)
    assert (i["estimate"], i["low"], i["high"]) == (v["estimate"], v["low"], v["high"])
    assert i["half_width"] == pytest.approx((v["high"] - v["low"]) / 2)


def test_episodes_level_is_the_papers_interval(records):
    i = uncertainty.level_interval(records, "episodes")
    x = 100 * np.array([np.mean(r["correct"]) for r in records])
    assert i["half_width"] == pytest.approx(stats.paper_ci95(x)) and i["estimate"] == pytest.approx(x.mean())
    assert (i["low"], i["high"]) == pytest.approx((x.mean() - stats.paper_ci95(x), x.mean() + stats.paper_ci95(x)))


def test_every_level_is_seeded_and_says_what_it_covers(records):
    a = uncertainty.level_intervals(records, n_resamples=400, seed=1)
    assert a == uncertainty.level_intervals(records, n_resamples=400, seed=1)
    assert list(a) == ["episodes", "videos", "classes"]
    for level, i in a.items():
        assert i["level"] == level and i["claim"] == uncertainty.CLAIMS[level] and i["meaning"].startswith("95% interval for")
        assert i["low"] <= i["estimate"] <= i["high"]
    with pytest.raises(HarnessError, match="unknown level 'pool'"):
        uncertainty.level_interval(records, "pool")


@pytest.mark.parametrize("level", ["episodes", "videos", "classes"])
def test_a_paired_difference_is_significant_exactly_when_its_interval_excludes_zero(records, level):
    a = np.array([r["correct"] for r in records], dtype=float)
    rng = np.random.default_rng(5)
    for flip in (0.05, 0.1, 0.2, 0.3):
        b = np.where(rng.random(a.shape) < flip, 1.0, a)  # b: a with some wrong answers made right
        t = uncertainty.level_test(records, a - b, level, n_resamples=2000, seed=0)
        assert t["estimate"] == pytest.approx(100 * (a - b).mean())
        assert (t["p"] < 0.05) == (t["high"] < 0 or t["low"] > 0), (flip, t)
    same = uncertainty.level_test(records, a - a, level, n_resamples=200)
    assert same["p"] == 1.0 and same["low"] == same["high"] == 0.0


def test_the_episodes_level_test_is_the_paired_t_test(records):
    a = np.array([r["correct"] for r in records], dtype=float)
    b = np.roll(a, 1, axis=0)
    t = uncertainty.level_test(records, a - b, "episodes")
    ref = sps.ttest_rel(100 * a.mean(1), 100 * b.mean(1))
    assert t["p"] == pytest.approx(ref.pvalue)


@pytest.mark.parametrize("distractor", [0.3, -0.3])
def test_the_classes_level_tracks_the_spread_over_fresh_class_sets(distractor):
    """Across fresh sets of 10 classes (and their videos) the accuracy moves by several points; the classes
    level, computed from ONE set, should be of the size of that spread whichever way distractors act, where
    counting every class of an episode alike would shrink it by 1 - 4/9."""
    spread = 100 * np.std([simulate(np.random.default_rng(100 + k), distractor=distractor)[3].mean() for k in range(40)])
    sds, episode_sds = [], []
    z = sps.norm.ppf(0.975)
    for k in range(3):
        records = as_records(*simulate(np.random.default_rng(200 + k), distractor=distractor))
        levels = uncertainty.level_intervals(records, n_resamples=2000, seed=k)
        sds.append((levels["classes"]["high"] - levels["classes"]["low"]) / (2 * z))
        episode_sds.append(levels["episodes"]["half_width"] / z)
    assert np.mean(episode_sds) < 0.4 * spread, "the premise: the episodes interval understates the spread"
    assert 0.75 * spread < np.mean(sds) < 1.6 * spread, (np.mean(sds), spread)

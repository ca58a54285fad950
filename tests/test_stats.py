"""Every interval and test of harness.stats against scipy or an independent computation, on recorded episodes."""
import json
from pathlib import Path
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from conftest import TINY_PROTOCOL
from harness import stats
from harness.errors import HarnessError
from harness.pipeline import Settings, backbone_for, run_method
from harness.protocol import load_protocol


def tiny_setup(tmp_path_factory, tiny_root, name: str = "tiny-5w1s", shot: int = 1, episodes: int = 200):
    """(protocol, settings) for runs on the tiny benchmark, its backbone pretrained from a fixed seed.

    The backbone's initial weights are drawn from torch's global generator before pretraining seeds
    anything, and torch seeds that generator at random in each process: fixing it here gives every session
    the same backbone, which the committed regression baselines need. The data home is shared by the
    statistics test modules, so the backbone is pretrained once per session."""
    home = tmp_path_factory.getbasetemp() / "stats-home"
    folder = tmp_path_factory.mktemp(name)
    path = folder / f"{name}.yaml"
    path.write_text(TINY_PROTOCOL.format(name=name, root=tiny_root, shot=shot, episodes=episodes))
    p = load_protocol(path)
    s = Settings(home=home, results=folder / "results", show_progress=False)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        backbone_for(p, s, pretrain_if_missing=True)
    return p, s


@pytest.fixture(scope="module")
def records(tmp_path_factory, tiny_root):
    """Per-episode records of protonet on 200 tiny 5-way 1-shot episodes."""
    p, s = tiny_setup(tmp_path_factory, tiny_root)
    summary = run_method(p, "protonet", s)
    return [json.loads(line) for line in Path(summary["records_path"]).read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def per_episode(records):
    return 100 * np.array([np.mean(r["correct"]) for r in records])


# ---------------------------------------------------------------------------------------- episode intervals


def test_kept_functions_behave_as_before(per_episode):
    x = per_episode
    assert stats.paper_ci95(x) == pytest.approx(1.96 * x.std() / math.sqrt(len(x)))
    lo, hi = sps.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=sps.sem(x))
    assert stats.t_interval(x) == pytest.approx((lo, hi))
    summary = stats.accuracy_summary(x / 100)
    assert set(summary) == {"accuracy", "ci95", "ci95_meaning", "t_interval95", "t_interval95_meaning"}
    assert summary["accuracy"] == pytest.approx(x.mean()) and summary["t_interval95"] == pytest.approx([lo, hi])


def test_normal_interval_is_the_papers_plus_minus(per_episode):
    x = per_episode
    i = stats.normal_interval(x)
    half = 1.96 * np.sqrt(np.mean((x - x.mean()) ** 2)) / np.sqrt(len(x))  # population std, written out
    assert i["half_width"] == pytest.approx(half) == pytest.approx(stats.paper_ci95(x))
    assert (i["low"], i["estimate"], i["high"]) == pytest.approx((x.mean() - half, x.mean(), x.mean() + half))
    assert "papers" in i["meaning"]
    i90 = stats.normal_interval(x, 0.90)
    assert i90["half_width"] == pytest.approx(sps.norm.ppf(0.95) * x.std() / np.sqrt(len(x)))


def test_t_interval_matches_scipy(per_episode):
    x = per_episode
    for confidence in (0.95, 0.99):
        i = stats.student_t_interval(x, confidence)
        assert (i["low"], i["high"]) == pytest.approx(sps.t.interval(confidence, len(x) - 1, loc=x.mean(), scale=x.std(ddof=1) / np.sqrt(len(x))))
        assert "Student-t" in i["meaning"]


@pytest.mark.parametrize("method", ["BCa", "percentile"])
def test_bootstrap_interval_matches_scipy_with_the_same_seed(per_episode, method):
    x = per_episode
    i = stats.bootstrap_interval(x, 0.95, n_resamples=2000, seed=7, method=method)
    ref = sps.bootstrap((x,), np.mean, n_resamples=2000, confidence_level=0.95, method=method, rng=np.random.default_rng(7))
    assert (i["low"], i["high"]) == pytest.approx((ref.confidence_interval.low, ref.confidence_interval.high))
    assert i["method"] == method and method in i["meaning"] and "seed 7" in i["meaning"]
    assert stats.bootstrap_interval(x, 0.95, 2000, seed=7, method=method) == i, "seeded: the same call gives the same interval"


def test_bootstrap_of_constant_data_is_a_point():
    i = stats.bootstrap_interval(np.full(50, 40.0))
    assert i["low"] == i["high"] == i["estimate"] == 40.0
    with pytest.raises(HarnessError):
        stats.bootstrap_interval([1.0, 2.0], method="studentized")


# ------------------------------------------------------------------------------------ the video bootstrap


def naive_video_bootstrap(records, n_resamples, seed, confidence=0.95):
    """The same resampling written outcome by outcome: weight W_o = 1 + (m_q - 1) + sum_s (m_s - 1)."""
    videos, video_class, classes = {}, [], {}
    for r in records:  # same video numbering as harness.stats: first appearance, support before query
        shot = len(r["support"]) // len(r["classes"])
        for j, name in enumerate(r["support"]):
            classes.setdefault(r["classes"][j // shot], len(classes))
            if name not in videos:
                videos[name] = len(videos)
                video_class.append(classes[r["classes"][j // shot]])
        for name, label in zip(r["query"], r["query_labels"]):
            classes.setdefault(r["classes"][label], len(classes))
            if name not in videos:
                videos[name] = len(videos)
                video_class.append(classes[r["classes"][label]])
    video_class = np.array(video_class)
    rng = np.random.default_rng(seed)
    m = np.zeros((n_resamples, len(videos)))
    for c in range(len(classes)):
        members = np.flatnonzero(video_class == c)
        draws = rng.integers(0, len(members), size=(n_resamples, len(members)))  # n_class videos drawn with replacement
        for b in range(n_resamples):
            m[b, members] = np.bincount(draws[b], minlength=len(members))
    outcomes = [(r, j) for r in records for j in range(len(r["query"]))]
    c = np.array([r["correct"][j] for r, j in outcomes], dtype=float)
    theta = c.mean()
    estimates = []
    for b in range(n_resamples):
        total = 0.0
        for (r, j), value in zip(outcomes, c):
            shot = len(r["support"]) // len(r["classes"])
            label = r["query_labels"][j]
            w = 1 + (m[b, videos[r["query"][j]]] - 1) + sum(m[b, videos[s]] - 1 for s in r["support"][label * shot : (label + 1) * shot])
            total += (w - 1) * (value - theta)
        estimates.append(theta + total / len(c))
    return 100 * np.quantile(estimates, [(1 - confidence) / 2, (1 + confidence) / 2])


def test_video_bootstrap_matches_an_outcome_by_outcome_computation(records):
    subset = records[:40]
    i = stats.video_bootstrap_interval(subset, 0.95, n_resamples=200, seed=3)
    assert (i["low"], i["high"]) == pytest.approx(naive_video_bootstrap(subset, 200, 3))
    assert i["estimate"] == pytest.approx(100 * np.mean([r["correct"] for r in subset]))
    assert i["n_videos"] == len({v for r in subset for v in r["support"] + r["query"]})
    assert "resampled with replacement within each" in i["meaning"] and "classes are held fixed" in i["meaning"]


def test_video_bootstrap_is_seeded_and_degenerate_data_give_a_point(records):
    a = stats.video_bootstrap_interval(records, n_resamples=500, seed=1)
    assert a == stats.video_bootstrap_interval(records, n_resamples=500, seed=1)
    assert a["low"] <= a["estimate"] <= a["high"]
    all_right = [{**r, "correct": [1] * len(r["correct"])} for r in records]
    i = stats.video_bootstrap_interval(all_right, n_resamples=200)
    assert i["low"] == i["high"] == 100.0


def simulate_records(rng, n_classes=10, per_class=60, episodes=2000, way=5, effect=1.2):
    """Records of a simulated benchmark where each video has its own difficulty (as query) and quality (as
    support): what makes episodes that share videos correlated. Returns (records, a fresh-pool sampler)."""

    def one_pool(rng):
        query_effect = rng.normal(0, effect, (n_classes, per_class))
        support_effect = rng.normal(0, effect, (n_classes, per_class))
        classes = np.argsort(rng.random((episodes, n_classes)), axis=1)[:, :way]  # [E, way]
        s = rng.integers(0, per_class, (episodes, way))
        q = (s + 1 + rng.integers(0, per_class - 1, (episodes, way))) % per_class  # distinct from the support
        z = 0.3 + query_effect[classes, q] + support_effect[classes, s]
        correct = (rng.random(z.shape) < 1 / (1 + np.exp(-z))).astype(int)
        return classes, s, q, correct

    def as_records(classes, s, q, correct):
        return [
            {"episode": e, "classes": [f"c{k}" for k in classes[e]], "support": [f"c{k}/v{v}" for k, v in zip(classes[e], s[e])],
             "query": [f"c{k}/v{v}" for k, v in zip(classes[e], q[e])], "query_labels": list(range(way)), "correct": correct[e].tolist()}
            for e in range(episodes)
        ]

    return as_records(*one_pool(rng)), lambda r: one_pool(r)[3].mean()


def test_video_bootstrap_tracks_the_spread_across_test_pools():
    """Across fresh pools of videos the accuracy moves much more than the episode intervals say; the video
    bootstrap, computed from ONE pool, should be of the size of that spread."""
    records, fresh_pool_accuracy = simulate_records(np.random.default_rng(0))
    spread = np.std([fresh_pool_accuracy(np.random.default_rng(100 + k)) for k in range(60)]) * 100
    video = stats.video_bootstrap_interval(records, n_resamples=2000, seed=0)
    episode = stats.student_t_interval(100 * np.array([np.mean(r["correct"]) for r in records]))
    z = sps.norm.ppf(0.975)
    video_sd = (video["high"] - video["low"]) / (2 * z)
    episode_sd = (episode["high"] - episode["low"]) / (2 * z)
    assert episode_sd < 0.7 * spread, "the premise: episode intervals understate the spread across pools"
    assert 0.7 * spread < video_sd < 2.0 * spread


def test_video_bootstrap_refuses_records_that_contradict_themselves(records):
    bad = [dict(r) for r in records[:3]]
    bad[1] = {**bad[1], "query": [bad[0]["query"][0]] + bad[1]["query"][1:], "classes": ["someclass"] + bad[1]["classes"][1:]}
    with pytest.raises(HarnessError, match="appears under two classes"):
        stats.video_bootstrap_interval(bad, n_resamples=10)


def test_intervals_gathers_the_four_kinds(records):
    out = stats.intervals(records, n_resamples=500)
    assert set(out) == {"normal", "t", "bootstrap", "video_bootstrap"}
    for kind, i in out.items():
        assert i["interval"] == kind and i["meaning"] and i["low"] <= i["estimate"] <= i["high"]


# --------------------------------------------------------------------------------------------- paired tests


@pytest.fixture(scope="module")
def pair(records):
    """Protonet's records, and a second 'method' that is right on a seeded subset of other queries."""
    rng = np.random.default_rng(11)
    a = np.array([r["correct"] for r in records])
    b = np.where(rng.random(a.shape) < 0.15, 1 - a, a)
    return a, b


def test_paired_t_test_matches_scipy_and_the_formula(pair):
    a, b = (100 * x.mean(axis=1) for x in pair)
    res = stats.paired_t_test(a, b)
    ref = sps.ttest_rel(a, b)
    assert (res["statistic"], res["p"]) == pytest.approx((ref.statistic, ref.pvalue))
    d = a - b
    t = d.mean() / (d.std(ddof=1) / np.sqrt(len(d)))
    assert res["statistic"] == pytest.approx(t) and res["p"] == pytest.approx(2 * sps.t.sf(abs(t), len(d) - 1))
    one_sided = stats.paired_t_test(a, b, alternative="less", null=-1.0)
    t_margin = (d.mean() + 1.0) / (d.std(ddof=1) / np.sqrt(len(d)))
    assert one_sided["p"] == pytest.approx(sps.t.cdf(t_margin, len(d) - 1))


def test_paired_t_test_without_spread():
    assert stats.paired_t_test([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])["p"] == 1.0
    assert stats.paired_t_test([2.0, 3.0, 4.0], [1.0, 2.0, 3.0])["p"] == 0.0
    assert stats.paired_t_test([2.0, 3.0, 4.0], [1.0, 2.0, 3.0], alternative="less")["p"] == 1.0


def test_wilcoxon_matches_scipy_and_handles_all_zero_differences(pair):
    a, b = (100 * x.mean(axis=1) for x in pair)
    res = stats.wilcoxon_test(a, b)
    ref = sps.wilcoxon(a - b, zero_method="wilcox")
    assert (res["statistic"], res["p"]) == pytest.approx((ref.statistic, ref.pvalue))
    assert res["n_nonzero"] == np.count_nonzero(a - b)
    same = stats.wilcoxon_test(a, a)
    assert same["p"] == 1.0 and same["n_nonzero"] == 0


def test_mcnemar_is_an_exact_binomial_test_of_the_discordant_queries(pair):
    a, b = pair
    res = stats.mcnemar_exact(a, b)
    only_a, only_b = int(((a == 1) & (b == 0)).sum()), int(((a == 0) & (b == 1)).sum())
    assert (res["only_a_correct"], res["only_b_correct"]) == (only_a, only_b)
    n, k = only_a + only_b, min(only_a, only_b)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n  # P(X <= k), X ~ Binomial(n, 1/2)
    assert res["p"] == pytest.approx(min(1.0, 2 * tail))
    assert stats.mcnemar_exact(a, a)["p"] == 1.0
    less = stats.mcnemar_exact(a, b, alternative="less")
    assert less["p"] == pytest.approx(sum(math.comb(n, i) for i in range(only_a + 1)) / 2**n)


def test_holm_against_a_hand_computation():
    # sorted: 0.005 x 4 = 0.02; 0.01 x 3 = 0.03; 0.03 x 2 = 0.06; 0.04 x 1 = 0.04 -> kept at 0.06 (monotone)
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # capped at 1; ties keep their order
    assert stats.holm([0.5, 0.5, 0.001]) == pytest.approx([1.0, 1.0, 0.003])
    assert stats.holm([0.2]) == pytest.approx([0.2])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=12))
def test_holm_adjusts_upwards_and_keeps_the_order(pvalues):
    p = np.array(pvalues)
    adjusted = stats.holm(p)
    assert np.all(adjusted >= p - 1e-12) and np.all(adjusted <= 1.0)
    order = np.argsort(p, kind="stable")
    assert np.all(np.diff(adjusted[order]) >= -1e-12)
    assert np.all(adjusted <= np.minimum(1.0, len(p) * p) + 1e-12)  # never above Bonferroni

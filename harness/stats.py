"""Intervals and paired tests for accuracy over episodes, each labelled with what it means.

Every interval function returns a plain dict: `estimate`, `low`, `high`, `confidence`, the `interval` kind
and a `meaning` sentence, in the unit of its input (the record-based ones take records and answer in percent).

    normal_interval        the papers' +-: 1.96 x population std / sqrt(n), episodes taken as independent
    student_t_interval     Student-t interval of the mean over episodes
    bootstrap_interval     scipy.stats.bootstrap over episodes (BCa by default), seeded
    video_bootstrap_interval   resamples the test VIDEOS, not the episodes: the uncertainty that comes from
                           evaluating on one finite pool of test videos, which no number of episodes removes

Paired tests (for two methods scored on the same episodes): `paired_t_test`, `wilcoxon_test`,
`mcnemar_exact`, and `holm` for many pairs at once.
"""
from __future__ import annotations

import inspect
import math
import warnings

import numpy as np

from harness.errors import HarnessError


def scipy_stats():
    """scipy.stats, imported on first use: 2 s of start-up that a command serving stored results never needs."""
    from scipy import stats

    return stats

# ------------------------------------------------------------------------------ kept as they were (summaries)


def paper_ci95(per_episode: np.ndarray) -> float:
    """Half-width the few-shot papers print as +-: 1.96 x population std / sqrt(n) (comparable with the literature)."""
    x = np.asarray(per_episode, dtype=np.float64)
    return float(1.96 * x.std(ddof=0) / math.sqrt(len(x)))


def t_interval(per_episode: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Student-t interval for the mean (sample std, n - 1 degrees of freedom)."""
    x = np.asarray(per_episode, dtype=np.float64)
    if len(x) < 2 or x.std(ddof=1) == 0:
        return float(x.mean()), float(x.mean())
    lo, hi = scipy_stats().t.interval(confidence, len(x) - 1, loc=x.mean(), scale=scipy_stats().sem(x))
    return float(lo), float(hi)


def accuracy_summary(per_episode: np.ndarray) -> dict:
    """Accuracy and intervals in percent from per-episode accuracies in [0, 1]."""
    pct = 100.0 * np.asarray(per_episode, dtype=np.float64)
    lo, hi = t_interval(pct)
    return {
        "accuracy": float(pct.mean()),
        "ci95": paper_ci95(pct),
        "ci95_meaning": "1.96 x population std of per-episode accuracy / sqrt(n), as the few-shot papers print it",
        "t_interval95": [lo, hi],
        "t_interval95_meaning": "95% Student-t interval for the mean per-episode accuracy",
    }


# ------------------------------------------------------------------------------------- intervals as dicts


def _values(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64).ravel()
    if len(x) == 0:
        raise HarnessError("an interval needs at least one episode, got none", fix="evaluate some episodes first (fsv-bench run ...)")
    return x


def _pct(confidence: float) -> str:
    return f"{100 * confidence:g}%"


def normal_interval(values, confidence: float = 0.95) -> dict:
    """The papers' interval: mean +- z x population std / sqrt(n), with z = 1.96 at 95% as they print it.

    It treats the n episodes as independent draws. They are not: thousands of episodes reuse a pool of a
    few hundred or thousand test videos, so this interval shrinks towards zero as episodes grow while the
    uncertainty about a new pool of videos does not (see `video_bootstrap_interval`)."""
    x = _values(values)
    z = 1.96 if confidence == 0.95 else float(scipy_stats().norm.ppf(0.5 + confidence / 2))
    half = float(z * x.std(ddof=0) / math.sqrt(len(x)))
    mean = float(x.mean())
    return {
        "interval": "normal",
        "estimate": mean,
        "low": mean - half,
        "high": mean + half,
        "half_width": half,
        "confidence": confidence,
        "n": len(x),
        "meaning": f"mean +- {z:.3g} x population std / sqrt(n) over {len(x)} episodes: the +- the few-shot papers print "
        f"(normal approximation, episodes taken as independent draws)",
    }


def student_t_interval(values, confidence: float = 0.95) -> dict:
    """Student-t interval for the mean over episodes (sample std, n - 1 degrees of freedom)."""
    x = _values(values)
    lo, hi = t_interval(x, confidence)
    return {
        "interval": "t",
        "estimate": float(x.mean()),
        "low": lo,
        "high": hi,
        "confidence": confidence,
        "n": len(x),
        "meaning": f"{_pct(confidence)} Student-t interval for the mean over {len(x)} episodes (sample std, n - 1 degrees of "
        f"freedom; episodes taken as independent draws)",
    }


def _rng_keyword() -> str:
    # scipy >= 1.15 names the seed `rng`; older releases call it `random_state`
    return "rng" if "rng" in inspect.signature(scipy_stats().bootstrap).parameters else "random_state"


def bootstrap_interval(values, confidence: float = 0.95, n_resamples: int = 9999, seed: int = 0, method: str = "BCa") -> dict:
    """Bootstrap interval for the mean over episodes: `scipy.stats.bootstrap`, episodes resampled with
    replacement, seeded, bias-corrected and accelerated (BCa) unless `method="percentile"` is asked for.

    BCa corrects the percentile interval for bias and skew (Efron 1987). When the data leave BCa undefined
    (all resamples alike), the percentile interval is returned and `method` says so. Applied to paired
    differences, this is the paired bootstrap (episodes resampled, both methods kept together)."""
    if method not in ("BCa", "percentile"):
        raise HarnessError(f"bootstrap method must be 'BCa' or 'percentile', not '{method}'")
    x = _values(values)
    mean = float(x.mean())
    out = {
        "interval": "bootstrap",
        "estimate": mean,
        "confidence": confidence,
        "n": len(x),
        "n_resamples": n_resamples,
        "seed": seed,
        "method": method,
        "meaning": f"{_pct(confidence)} {method} bootstrap interval for the mean: the {len(x)} episodes resampled with replacement "
        f"{n_resamples} times (scipy.stats.bootstrap, seed {seed}); episodes taken as independent draws",
    }
    if np.all(x == x[0]):  # every resample has the same mean: the interval is that point
        return {**out, "low": mean, "high": mean}
    batch = max(1, 2_000_000 // len(x))  # bounds memory: BCa's jackknife is n x (n - 1) otherwise
    for m in (method, "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a degenerate BCa is detected below and replaced
            res = scipy_stats().bootstrap((x,), np.mean, n_resamples=n_resamples, batch=batch, vectorized=True, confidence_level=confidence,
                                method=m, **{_rng_keyword(): np.random.default_rng(seed)})
        lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if np.isfinite(lo) and np.isfinite(hi):
            if m != method:
                out["method"] = m
                out["meaning"] = out["meaning"].replace(f"{method} bootstrap", "percentile bootstrap (BCa was undefined here)")
            return {**out, "low": lo, "high": hi}
    raise HarnessError("the bootstrap interval could not be computed", fix="use more episodes")


# --------------------------------------------------------------------- the test pool as the source of doubt


def query_layout(records: list[dict]) -> dict:
    """Who is who in every query outcome of the records, as integer arrays.

    Returns videos (names), video_class [V] (class position of each video), classes (names),
    query_video [O] (the query of outcome o, O = episodes x queries per episode, episode-major),
    support_videos [O, shot] (the support videos of the query's own class) and episode_classes [E, way]."""
    if not records:
        raise HarnessError("no episode records were given", fix="pass the records of a finished run (episodes.jsonl)")
    way = len(records[0]["classes"])
    shot = len(records[0]["support"]) // way
    videos: dict[str, int] = {}
    video_class: list[int] = []
    classes: dict[str, int] = {}

    def video(name: str, cls: str, episode) -> int:
        c = classes.setdefault(cls, len(classes))
        v = videos.get(name)
        if v is None:
            v = videos[name] = len(video_class)
            video_class.append(c)
        elif video_class[v] != c:
            raise HarnessError(f"episode {episode}: video '{name}' appears under two classes in the records", fix="the records are corrupt; run the evaluation again")
        return v

    query_video, support_videos, episode_classes = [], [], []
    for r in records:
        if len(r["classes"]) != way or len(r["support"]) != way * shot:
            raise HarnessError(f"episode {r.get('episode')}: {len(r['classes'])}-way {len(r['support'])} support videos, unlike episode {records[0].get('episode')}", fix="records of one run share way and shot; do not mix runs")
        support = [video(name, r["classes"][i // shot], r["episode"]) for i, name in enumerate(r["support"])]
        for name, label in zip(r["query"], r["query_labels"]):
            query_video.append(video(name, r["classes"][label], r["episode"]))
            support_videos.append(support[label * shot : (label + 1) * shot])
        episode_classes.append([classes[name] for name in r["classes"]])
    return {
        "videos": list(videos),
        "classes": list(classes),
        "video_class": np.asarray(video_class, dtype=np.int64),
        "query_video": np.asarray(query_video, dtype=np.int64),
        "support_videos": np.asarray(support_videos, dtype=np.int64).reshape(len(query_video), shot),
        "episode_classes": np.asarray(episode_classes, dtype=np.int64).reshape(len(records), way),
    }


def query_outcomes(records: list[dict]) -> np.ndarray:
    """Per-query correctness [E, Q] (0/1) of the records, in episode order."""
    if not records:
        raise HarnessError("no episode records were given", fix="pass the records of a finished run (episodes.jsonl)")
    lengths = {len(r["correct"]) for r in records}
    if len(lengths) != 1:
        raise HarnessError(f"episodes have different numbers of queries ({sorted(lengths)})", fix="records of one run share way and query_per_class; do not mix runs")
    return np.asarray([r["correct"] for r in records], dtype=np.float64)


def video_bootstrap_interval(records: list[dict], confidence: float = 0.95, n_resamples: int = 9999, seed: int = 0, outcomes=None, scale: float = 100.0) -> dict:
    """Interval for the accuracy over test POOLS like this one: the test videos are resampled, not the episodes.

    Why: 10,000 episodes reuse a few hundred to a few thousand test videos. A hard query video or a poor
    support video lowers every episode it appears in, so episodes are correlated, and the episode intervals
    (normal, t, bootstrap) shrink as 1/sqrt(episodes) although a new pool of videos of the same classes
    would move the accuracy by an amount that more episodes never remove. This interval measures that.

    How (a first-order pigeonhole bootstrap, Owen 2007, Ann. Appl. Stat. 1(2), on per-query outcomes):
      1. The unit is one query's outcome c_o (its `correct`; or any per-query value given as `outcomes`,
         e.g. the difference of two methods' correctness). Outcome o depends mainly on two groups of
         videos: its query video q(o) and the `shot` support videos S(o) of the query's own class.
      2. The videos that appear in the records are resampled with replacement WITHIN their class (class sizes
         kept): n_class draws per class, video v drawn m_v times (m ~ Multinomial(n_class, uniform)).
      3. In the resampled pool outcome o could be formed m_q x prod_{s in S(o)} m_s times. That product is
         zero for most outcomes when shot > 1, so its first-order (Hajek) expansion is used as the weight:
         W_o = 1 + (m_q - 1) + sum_{s in S(o)} (m_s - 1).
      4. The resampled accuracy is theta* = theta + mean_o (W_o - 1)(c_o - theta), computed through
         per-video influence sums, so 10,000 resamples of 10,000 episodes take well under a second.
      5. The interval is the percentile interval of theta* (n_resamples, seeded).
    Assumptions, and what they cost:
      - The test CLASSES are held fixed: this is the uncertainty given these classes, not over new classes
        (with 10-24 test classes that second source can be larger still).
      - Videos are exchangeable within their class; the pool is the set of videos seen in the records
        (all of the split's videos once there are a few thousand episodes).
      - The support videos of the other classes (the distractors) are treated as fixed: a second-order effect.
      - The linear expansion keeps every outcome in play but counts each outcome's own noise in each of its
        1 + shot videos; in simulations at benchmark scale (10 classes x 130 videos, 10,000 episodes) it was
        mildly conservative (about 1.0-1.4 x the true spread across pools, where the episode intervals were
        about 3 x too narrow). With only a handful of videos per class (shot + query close to the class size)
        it is not reliable.
    Returns percent (`scale` = 100) for outcomes in [0, 1]."""
    layout = query_layout(records)
    c = _outcomes_for(layout, records, outcomes)
    theta = float(c.mean())
    theta_star = theta + video_shifts(layout, c - theta, n_resamples, seed) / len(c)
    n_videos = len(layout["videos"])
    tail = (1 - confidence) / 2
    lo, hi = np.quantile(theta_star, [tail, 1 - tail])
    return {
        "interval": "video_bootstrap",
        "estimate": scale * theta,
        "low": scale * float(lo),
        "high": scale * float(hi),
        "confidence": confidence,
        "n_videos": n_videos,
        "n_classes": len(layout["classes"]),
        "n_outcomes": len(c),
        "n_resamples": n_resamples,
        "seed": seed,
        "method": "percentile",
        "meaning": f"{_pct(confidence)} percentile interval over resampled test pools: the {n_videos} test videos resampled with "
        f"replacement within each of the {len(layout['classes'])} classes ({n_resamples} times, seed {seed}), each query outcome "
        f"re-weighted by the first-order change in how often its query video and its class's support videos occur; "
        f"the test classes are held fixed",
    }


def _outcomes_for(layout: dict, records: list[dict], outcomes) -> np.ndarray:
    """Per-query values [O] (episode-major): the records' correctness, or the `outcomes` given for them."""
    c = (query_outcomes(records) if outcomes is None else np.asarray(outcomes, dtype=np.float64)).ravel()
    if c.shape[0] != layout["query_video"].shape[0]:
        raise HarnessError(f"{c.shape[0]} outcomes were given for {layout['query_video'].shape[0]} queries", fix="pass one value per query, episode-major")
    return c


def video_shifts(layout: dict, residuals: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    """sum_o (W_o - 1) r_o for each of `n_resamples` within-class resamples of the test videos [B]
    (steps 2-4 of `video_bootstrap_interval`; r_o = c_o - theta, one per query outcome)."""
    r = residuals
    n_videos, shot = len(layout["videos"]), layout["support_videos"].shape[1]
    influence = np.bincount(layout["query_video"], weights=r, minlength=n_videos)  # [V]
    influence += np.bincount(layout["support_videos"].ravel(), weights=np.repeat(r, shot), minlength=n_videos)
    rng = np.random.default_rng(seed)
    shift = np.zeros(n_resamples)
    for cls in range(len(layout["classes"])):
        members = influence[layout["video_class"] == cls]  # [n_class]
        # drawing n_class videos with replacement: sum_v (m_v - 1) I_v = sum over the draws of I - sum_v I_v
        rows = max(1, 4_000_000 // len(members))  # bounds memory for very large classes
        for start in range(0, n_resamples, rows):
            draws = rng.integers(0, len(members), size=(min(rows, n_resamples - start), len(members)))  # [B, n_class]
            shift[start : start + len(draws)] += members[draws].sum(axis=1) - members.sum()
    return shift


def episode_accuracy(records: list[dict]) -> np.ndarray:
    """Per-episode accuracy in percent [E], from each episode's per-query correctness."""
    return 100.0 * query_outcomes(records).mean(axis=1)


def intervals(records: list[dict], confidence: float = 0.95, n_resamples: int = 9999, seed: int = 0) -> dict:
    """All four intervals of a run's accuracy (percent), keyed by kind."""
    x = episode_accuracy(records)
    return {
        "normal": normal_interval(x, confidence),
        "t": student_t_interval(x, confidence),
        "bootstrap": bootstrap_interval(x, confidence, n_resamples, seed),
        "video_bootstrap": video_bootstrap_interval(records, confidence, n_resamples, seed),
    }


# ------------------------------------------------------------------------------------------- paired tests


def paired_t_test(a, b, alternative: str = "two-sided", null: float = 0.0) -> dict:
    """Paired t-test (scipy.stats.ttest_rel) of mean(a - b) against `null` (e.g. -margin)."""
    a, b = _values(a), _values(b)
    d = a - b - null
    if len(d) < 2 or np.all(d == d[0]):  # no spread: the sign of the (constant) difference decides
        side = float(d[0]) if len(d) else 0.0
        p = 1.0 if side == 0 else {"two-sided": 0.0, "less": float(side > 0), "greater": float(side < 0)}[alternative]
        return {"test": "paired t-test", "statistic": math.copysign(math.inf, side) if side else 0.0, "df": len(d) - 1, "p": p, "alternative": alternative}
    res = scipy_stats().ttest_rel(a - null, b, alternative=alternative)
    return {"test": "paired t-test", "statistic": float(res.statistic), "df": len(d) - 1, "p": float(res.pvalue), "alternative": alternative}


def wilcoxon_test(a, b) -> dict:
    """Wilcoxon signed-rank test of the per-episode differences (scipy.stats.wilcoxon, zero differences
    dropped as Wilcoxon did, `zero_method="wilcox"`); all differences zero gives p = 1."""
    d = _values(a) - _values(b)
    nonzero = int(np.count_nonzero(d))
    if nonzero == 0:
        return {"test": "Wilcoxon signed-rank", "statistic": 0.0, "p": 1.0, "n_nonzero": 0}
    res = scipy_stats().wilcoxon(d, zero_method="wilcox")
    return {"test": "Wilcoxon signed-rank", "statistic": float(res.statistic), "p": float(res.pvalue), "n_nonzero": nonzero}


def mcnemar_exact(correct_a, correct_b, alternative: str = "two-sided") -> dict:
    """Exact McNemar test on paired per-query correctness: among the discordant queries (one method right,
    the other wrong), is "only A right" a Binomial(n, 1/2) count? (scipy.stats.binomtest)."""
    a = np.asarray(correct_a, dtype=bool).ravel()
    b = np.asarray(correct_b, dtype=bool).ravel()
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    n = only_a + only_b
    p = 1.0 if n == 0 else float(scipy_stats().binomtest(only_a, n, 0.5, alternative=alternative).pvalue)
    return {"test": "exact McNemar", "only_a_correct": only_a, "only_b_correct": only_b, "p": p, "alternative": alternative}


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjusted p-values (Holm 1979): sort ascending; the i-th smallest (i from 0) becomes
    max over j <= i of min(1, (m - j) p_(j)). Reject where adjusted p < alpha: family-wise error <= alpha."""
    p = np.asarray(pvalues, dtype=np.float64).ravel()
    m = len(p)
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(np.argsort(p, kind="stable")):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted

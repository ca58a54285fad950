"""Three levels of uncertainty of an accuracy over episodes: each interval says which claim it supports.

    level      the claim it supports                                   how
    episodes   "on THIS pool of test videos"                           the papers' +-: 1.96 x std / sqrt(episodes)
    videos     "on new videos of the same test classes"                test videos resampled within their class
    classes    "on new test classes (and their new videos)"            test classes resampled

Thousands of episodes reuse a few hundred test videos of 10-24 classes, so episodes are far from independent:
the episodes interval shrinks as 1/sqrt(episodes) while the accuracy on another pool of videos, or on other
classes, moves by an amount that no number of episodes removes. The papers' interval is kept (a row must line
up with the published tables) but it only says how much another draw of episodes from the same videos would
move the number.

Both resampling levels are first-order (Hajek) expansions of a pigeonhole bootstrap (Owen 2007, Ann. Appl.
Stat. 1(2)) on per-query outcomes c_o with residuals r_o = c_o - theta:

    theta* = theta + (1/O) sum_o (W_o - 1) r_o,       percentile interval of theta* over B resamples (seeded)

  videos   W_o - 1 = (m_q - 1) + sum_{s in S(o)} (m_s - 1): m_v how often video v is drawn when each class's
           videos are drawn again with replacement, q the query of o, S(o) the support videos of its class
           (`harness.stats.video_bootstrap_interval` documents the assumptions).
  classes  theta* - theta = sum_k (w_k - 1) I_k / O, w_k how often class k is drawn when the test classes are
           drawn again with replacement. A class moves the accuracy in two roles, and I_k holds both:
             as the query's class   own_k = sum of r_o over the queries of class k;
             as a distractor        D_k = A_k x (mean of r'_o over the A_k queries k is a distractor for
                                    - mean of r'_o over the queries of episodes without k),
           where r'_o = r_o - (mean residual of o's query class). The contrast matters: summing plain r_o over
           the episodes that hold k would charge k with the own effects of the other classes in them, which are
           biased against k (an episode of 5 of 10 classes holds 4 of the other 9), and shrinks the spread by
           1 - (way - 1) / (K - 1). Videos are nested in classes and I_k is computed on this pool's videos of
           k, so the class-to-class spread already holds the video-to-video noise: resampling videos again
           inside the drawn classes would count that noise twice. The shifts are scaled by sqrt(K / (K - 1)),
           the usual small-sample correction for K clusters (the plain bootstrap's variance is (K - 1) / K of
           the jackknife's; 5% of the width at HMDB's 10 test classes). In simulations with class, distractor
           and video effects (10 or 24 classes of 30 videos, 10,000 episodes, 1 and 5 shots) its half-width was
           1.0-1.2x the spread of the accuracy over fresh class sets, and the videos level's 0.9-1.15x the
           spread over fresh video pools of the same classes, where the episodes interval was 0.16-0.27x.
  Cost: one pass over the outcomes for the influences, then B x (videos + classes) integer draws: all three
  levels of 10,000 episodes in about a second (`fsv-bench calibrate` measures how well they cover).

A paired difference of two methods (c_o = correct_A - correct_B on the same queries) uses the same machinery;
`level_test` gives its interval and a p-value that agree (the interval excludes 0 exactly when p < alpha,
up to the resolution 2 / (B + 1)): the paired t-test at the episodes level, the bootstrap at the others.
"""
from __future__ import annotations

import math

import numpy as np

from harness import stats
from harness.errors import HarnessError

LEVELS = ("episodes", "videos", "classes")
#: the claim each level's interval supports, in words a summary or a table caption can carry
CLAIMS = {
    "episodes": "this pool of test videos (another draw of episodes from the same videos)",
    "videos": "new test videos of the same test classes",
    "classes": "new test classes and new videos",
}
DEFAULT_RESAMPLES = 9999


def check_level(level: str, where: str = "--level") -> str:
    if level not in LEVELS:
        raise HarnessError(f"{where}: unknown level '{level}'", fix=f"use one of: {', '.join(LEVELS)}")
    return level


def class_shifts(layout: dict, residuals: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    """sum_k (w_k - 1) I_k x sqrt(K / (K - 1)) for each of `n_resamples` draws of the test classes [B]
    (module docstring); residuals [O], one per query outcome, episode-major."""
    K, (E, way) = len(layout["classes"]), layout["episode_classes"].shape
    query_class = layout["video_class"][layout["query_video"]]  # [O]
    n_query = np.bincount(query_class, minlength=K)  # [K] queries of each class
    own = np.bincount(query_class, weights=residuals, minlength=K)  # [K] sum of r_o over class k's queries
    centred = residuals - (own / np.maximum(n_query, 1))[query_class]  # [O] r'_o: the query class's mean taken out
    per_episode = centred.reshape(E, -1).sum(axis=1)  # [E] sum of r'_o over the episode
    in_episode = np.bincount(layout["episode_classes"].ravel(), weights=np.repeat(per_episode, way), minlength=K)  # [K]
    with_k = np.bincount(layout["episode_classes"].ravel(), minlength=K) * (len(residuals) // E)  # [K] outcomes of episodes holding k
    as_distractor, without_k = with_k - n_query, len(residuals) - with_k
    # sum of r' over the queries k is a distractor for is in_episode (r' sums to 0 over k's own queries), over
    # the episodes without k it is -in_episode (r' sums to 0 overall): the mean difference is k's distractor effect
    effect = np.divide(in_episode, as_distractor, out=np.zeros(K), where=as_distractor > 0) + np.divide(in_episode, without_k, out=np.zeros(K), where=without_k > 0)
    influence = own + as_distractor * np.where(without_k > 0, effect, 0.0)  # [K]
    if K < 2:
        return np.zeros(n_resamples)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, K, size=(n_resamples, K))  # [B, K] K classes drawn with replacement
    # sum_k (w_k - 1) I_k = sum over the draws of I - sum_k I_k
    return (influence[draws].sum(axis=1) - influence.sum()) * math.sqrt(K / (K - 1))


def _replicates(layout: dict, c: np.ndarray, level: str, n_resamples: int, seed: int) -> np.ndarray:
    """theta* [B] at a resampling level (`videos` or `classes`) for per-query values c [O]."""
    theta = float(c.mean())
    shifts = stats.video_shifts if level == "videos" else class_shifts
    return theta + shifts(layout, c - theta, n_resamples, seed) / len(c)


def _percentile(theta_star: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1 - confidence) / 2
    lo, hi = np.quantile(theta_star, [tail, 1 - tail])
    return float(lo), float(hi)


def _bootstrap_p(theta_star: np.ndarray) -> float:
    """Two-sided percentile p-value of 'the mean is 0': twice the smaller share of replicates on either side
    of 0, with the +1 of a resampling test so that it is never 0."""
    below, above = int(np.sum(theta_star <= 0)), int(np.sum(theta_star >= 0))
    return float(min(1.0, 2 * (min(below, above) + 1) / (len(theta_star) + 1)))


def level_interval(records: list[dict], level: str, confidence: float = 0.95, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                   outcomes=None, layout: dict | None = None) -> dict:
    """The interval of the accuracy (percent) at one level, with what it covers in words.

    outcomes: per-query values [E, Q] to use instead of the records' correctness (0/1)."""
    check_level(level, "level")
    layout = stats.query_layout(records) if layout is None else layout
    c = stats._outcomes_for(layout, records, outcomes)
    theta = float(c.mean())
    E = len(layout["episode_classes"])
    common = {"level": level, "claim": CLAIMS[level], "confidence": confidence, "estimate": 100 * theta}
    pct = f"{100 * confidence:g}%"
    if level == "episodes":
        half = float(stats.scipy_stats().norm.ppf(0.5 + confidence / 2) if confidence != 0.95 else 1.96) * float(c.reshape(E, -1).mean(axis=1).std()) / math.sqrt(E) * 100
        return {**common, "low": 100 * theta - half, "high": 100 * theta + half, "half_width": half, "method": "normal", "n": E,
                "meaning": f"{pct} interval for {CLAIMS['episodes']}: mean +- z x population std of the per-episode accuracy / sqrt({E}), "
                f"the +- of the few-shot papers; it treats episodes as independent although they share videos"}
    lo, hi = _percentile(_replicates(layout, c, level, n_resamples, seed), confidence)
    out = {**common, "low": 100 * lo, "high": 100 * hi, "half_width": 50 * (hi - lo), "method": "percentile bootstrap", "n_resamples": n_resamples, "seed": seed}
    if level == "videos":
        return {**out, "n": len(layout["videos"]),
                "meaning": f"{pct} interval for {CLAIMS['videos']}: the {len(layout['videos'])} test videos drawn again with replacement within each "
                f"of the {len(layout['classes'])} classes ({n_resamples} times, seed {seed}), first-order weights per query; the classes held fixed"}
    return {**out, "n": len(layout["classes"]),
            "meaning": f"{pct} interval for {CLAIMS['classes']}: the {len(layout['classes'])} test classes drawn again with replacement "
            f"({n_resamples} times, seed {seed}), each query weighted by how often its class is drawn; the class-to-class spread includes the video-to-video one"}


def level_intervals(records: list[dict], confidence: float = 0.95, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> dict:
    """{level: interval} for the three levels, in LEVELS order (what a summary stores)."""
    layout = stats.query_layout(records)
    return {level: level_interval(records, level, confidence, n_resamples, seed, layout=layout) for level in LEVELS}


def intervals_of(summary: dict, records) -> dict:
    """{level: interval} of a run: the summary's own `intervals` when it holds every level (schema 3 on; a
    verified summary's are the ones its records give), else recomputed with `level_intervals` (older summaries).

    records: the run's records, or a function that returns them (called only when they are needed)."""
    stated = summary.get("intervals")
    if isinstance(stated, dict) and all(isinstance(stated.get(level), dict) and {"low", "high"} <= set(stated[level]) for level in LEVELS):
        return {level: stated[level] for level in LEVELS}
    return level_intervals(records() if callable(records) else records)


def level_test(records: list[dict], outcomes: np.ndarray, level: str, confidence: float = 0.95, n_resamples: int = DEFAULT_RESAMPLES,
               seed: int = 0, layout: dict | None = None) -> dict:
    """A paired difference's interval (percentage points) and two-sided p-value of 'no difference' at a level.

    outcomes [E, Q]: correct_A - correct_B per query. episodes: Student-t interval and paired t-test of the
    per-episode differences; videos, classes: the percentile bootstrap interval of the level and its p-value."""
    check_level(level, "level")
    layout = stats.query_layout(records) if layout is None else layout
    c = stats._outcomes_for(layout, records, outcomes)
    E = len(layout["episode_classes"])
    if level == "episodes":
        d = 100 * c.reshape(E, -1).mean(axis=1)
        t = stats.student_t_interval(d, confidence)
        p = stats.paired_t_test(d, np.zeros_like(d))["p"]
        return {"level": level, "claim": CLAIMS[level], "estimate": t["estimate"], "low": t["low"], "high": t["high"], "p": p,
                "test": "paired t-test on per-episode differences", "confidence": confidence}
    theta_star = _replicates(layout, c, level, n_resamples, seed)
    lo, hi = _percentile(theta_star, confidence)
    unit = "test videos within class" if level == "videos" else "test classes"
    return {"level": level, "claim": CLAIMS[level], "estimate": 100 * float(c.mean()), "low": 100 * lo, "high": 100 * hi, "p": _bootstrap_p(theta_star),
            "test": f"percentile bootstrap over {unit} ({n_resamples} resamples, seed {seed})", "confidence": confidence}

"""Intervals for accuracy over episodes, each labelled with what it means."""
from __future__ import annotations

import math

import numpy as np
from scipy import stats as sps


def paper_ci95(per_episode: np.ndarray) -> float:
    """Half-width the few-shot papers print as +-: 1.96 x population std / sqrt(n) (comparable with the literature)."""
    x = np.asarray(per_episode, dtype=np.float64)
    return float(1.96 * x.std(ddof=0) / math.sqrt(len(x)))


def t_interval(per_episode: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Student-t interval for the mean (sample std, n - 1 degrees of freedom)."""
    x = np.asarray(per_episode, dtype=np.float64)
    if len(x) < 2 or x.std(ddof=1) == 0:
        return float(x.mean()), float(x.mean())
    lo, hi = sps.t.interval(confidence, len(x) - 1, loc=x.mean(), scale=sps.sem(x))
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

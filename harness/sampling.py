"""The episodes' random draws for a whole batch of episodes at once, equal to numpy's one episode at a time.

Episode i draws from numpy.random.default_rng([seed, i]) (harness.episodes). What that is, step by step:

* SeedSequence([seed, i]): the words seed and i, hashed into a pool of 4 words of 32 bits and mixed (M. O'Neill's
  seed_seq hash), then 8 words drawn from the pool: two 128-bit numbers, PCG64's state and stream.
* PCG64: a 128-bit linear congruential state, s <- s * A + c (mod 2^128), seeded as s = 0, step, s += state, step;
  each output is the 64-bit XOR of the state's halves rotated right by its top 6 bits. A 32-bit draw takes the
  low half of an output, the next 32-bit draw its high half.
* Generator.choice(n, k, replace=False) with n <= 10,000: Floyd's algorithm, for j = n-k, ..., n-1 a draw v
  uniform in [0, j], kept if new, else j; then the k picks shuffled (Fisher-Yates: for t = k-1, ..., 1 swap t
  with a draw in [0, t]). A draw uniform in [0, j] is Lemire's: m = (32-bit draw) * (j + 1), v = m >> 32, redrawn
  while m mod 2^32 < (2^32 - 1 - j) mod (j + 1); j = 0 draws nothing.

Here each step is a numpy operation over all the episodes of a batch: 10,000 episodes of 5-way 1-shot in 0.02 s,
against 0.4 s with numpy's own objects one episode at a time (a Generator and six `choice` calls each); a call
costs about 1.3 ms whatever its size, so a few episodes are left to numpy (harness.episodes). A draw Lemire's
method would reject (probability below j / 2^32, about once in 10^7 draws here) is not followed: its episode is
marked and drawn by numpy itself (`redo`). tests/test_episodes.py checks every episode of several sets against
numpy's own draws.
"""
from __future__ import annotations

import numpy as np

#: numpy's Generator.choice uses Floyd's algorithm up to this population (larger ones may shuffle a whole range)
FLOYD_MOST = 10_000

_M32 = 0xFFFFFFFF
_SEED_INIT_A, _SEED_MULT_A, _SEED_INIT_B, _SEED_MULT_B = 0x43B0D7E5, 0x931E8875, 0x8B51F9DD, 0x58F38DED
_MIX_L, _MIX_R = 0xCA01F9DD, 0x4973F715
_PCG_MULT = (2549297995355413924 << 64) + 4865540595714422341


def applies(seed: int, n_episodes: int, populations: list[int]) -> bool:
    """Whether these draws are numpy's: one 32-bit word each for the seed and every episode index, and every
    population small enough for Floyd's algorithm."""
    return 0 <= seed <= _M32 and n_episodes - 1 <= _M32 and max(populations) <= FLOYD_MOST


def _hashmix(value: np.ndarray, const: int) -> tuple[np.ndarray, int]:
    value = value ^ np.uint32(const)
    const = (const * _SEED_MULT_A) & _M32
    value = value * np.uint32(const)
    return value ^ (value >> np.uint32(16)), const


def _mix(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    r = np.uint32(_MIX_L) * x - np.uint32(_MIX_R) * y
    return r ^ (r >> np.uint32(16))


def _seed_state(seed: int, ids: np.ndarray) -> list[np.ndarray]:
    """SeedSequence([seed, i]).generate_state(4, uint64) of every id: 4 arrays of uint64 [E]."""
    entropy = [np.full(len(ids), seed, dtype=np.uint32), ids.astype(np.uint32)]
    const, pool = _SEED_INIT_A, []
    for w in range(4):
        word, const = _hashmix(entropy[w] if w < len(entropy) else np.zeros(len(ids), dtype=np.uint32), const)
        pool.append(word)
    for src in range(4):
        for dst in range(4):
            if src != dst:
                mixed, const = _hashmix(pool[src], const)
                pool[dst] = _mix(pool[dst], mixed)
    const, words = _SEED_INIT_B, []
    for d in range(8):
        value = pool[d % 4] ^ np.uint32(const)
        const = (const * _SEED_MULT_B) & _M32
        value = value * np.uint32(const)
        words.append((value ^ (value >> np.uint32(16))).astype(np.uint64))
    return [words[2 * w] | (words[2 * w + 1] << np.uint64(32)) for w in range(4)]


def _mul_hi(a: np.ndarray, b: int) -> np.ndarray:
    """The high 64 bits of a * b (a: uint64 array, b < 2^64)."""
    a0, a1 = a & np.uint64(_M32), a >> np.uint64(32)
    b0, b1 = np.uint64(b & _M32), np.uint64(b >> 32)
    p00, p01, p10, p11 = a0 * b0, a0 * b1, a1 * b0, a1 * b1
    mid = (p00 >> np.uint64(32)) + (p01 & np.uint64(_M32)) + (p10 & np.uint64(_M32))
    return p11 + (p01 >> np.uint64(32)) + (p10 >> np.uint64(32)) + (mid >> np.uint64(32))


class _PCG64:
    """PCG64 (XSL-RR 128/64) of every episode side by side: state and stream as (high, low) uint64 arrays."""

    def __init__(self, seed: int, ids: np.ndarray):
        state_hi, state_lo, seq_hi, seq_lo = _seed_state(seed, ids)
        self.inc_hi = (seq_hi << np.uint64(1)) | (seq_lo >> np.uint64(63))
        self.inc_lo = (seq_lo << np.uint64(1)) | np.uint64(1)
        self.hi, self.lo = np.zeros(len(ids), dtype=np.uint64), np.zeros(len(ids), dtype=np.uint64)
        self._step()
        self._add(state_hi, state_lo)
        self._step()

    def _add(self, hi: np.ndarray, lo: np.ndarray) -> None:
        low = self.lo + lo
        self.hi, self.lo = self.hi + hi + (low < lo).astype(np.uint64), low

    def _step(self) -> None:  # s <- s * A + c (mod 2^128)
        a_hi, a_lo = _PCG_MULT >> 64, _PCG_MULT & ((1 << 64) - 1)
        hi = _mul_hi(self.lo, a_lo) + self.lo * np.uint64(a_hi) + self.hi * np.uint64(a_lo)
        self.hi, self.lo = hi, self.lo * np.uint64(a_lo)
        self._add(self.inc_hi, self.inc_lo)

    def words(self, n: int) -> np.ndarray:
        """The next n 32-bit draws of every episode: uint64 [E, n] (n even)."""
        out = np.empty((len(self.hi), n), dtype=np.uint64)
        for k in range(n // 2):
            self._step()
            x, rot = self.hi ^ self.lo, self.hi >> np.uint64(58)
            value = (x >> rot) | (x << ((np.uint64(64) - rot) & np.uint64(63)))
            out[:, 2 * k], out[:, 2 * k + 1] = value & np.uint64(_M32), value >> np.uint64(32)
        return out


class _Draws:
    """The 32-bit draws of every episode, each episode at its own place in its stream."""

    def __init__(self, seed: int, ids: np.ndarray, most: int):
        self.words = _PCG64(seed, ids).words(most + most % 2)
        self.at = np.zeros(len(ids), dtype=np.int64)
        self.rows = np.arange(len(ids))
        self.redo = np.zeros(len(ids), dtype=bool)

    def below(self, top: np.ndarray) -> np.ndarray:
        """A draw uniform in [0, top] for every episode (top: int64 [E] or a number; 0 draws nothing)."""
        top = np.broadcast_to(np.asarray(top, dtype=np.uint64), self.at.shape)
        m = self.words[self.rows, self.at] * (top + np.uint64(1))
        self.redo |= (m & np.uint64(_M32)) < (np.uint64(_M32) - top) % (top + np.uint64(1))
        self.at += top > 0
        return np.where(top > 0, m >> np.uint64(32), np.uint64(0)).astype(np.int64)


def _choice(draws: _Draws, n: np.ndarray | int, k: int) -> np.ndarray:
    """Generator.choice(n, k, replace=False) of every episode: int64 [E, k] (n: int64 [E] or a number)."""
    picks = np.empty((len(draws.at), k), dtype=np.int64)
    for t in range(k):
        j = np.asarray(n - k + t, dtype=np.int64)
        v = draws.below(j)
        seen = (picks[:, :t] == v[:, None]).any(axis=1)
        picks[:, t] = np.where(seen, j, v)
    for t in range(k - 1, 0, -1):
        r = draws.below(t)
        here, there = picks[:, t].copy(), picks[draws.rows, r]
        picks[:, t] = there
        picks[draws.rows, r] = here
    return picks


def draw_episodes(seed: int, ids: np.ndarray, class_sizes: np.ndarray, way: int, per_class: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(classes [E, way], picks [E, way, per_class], redo [E]) of the given episode ids: the class positions, and for
    each the positions of its videos within the class (support first), as numpy's draws give them; where `redo` is
    set the episode met a draw Lemire's method rejects and must be drawn by numpy itself."""
    n_classes = len(class_sizes)
    most = way + (way - 1) + way * (2 * per_class - 1)  # every draw of one episode, none rejected
    draws = _Draws(seed, ids, most)
    classes = _choice(draws, n_classes, way)
    picks = np.stack([_choice(draws, class_sizes[classes[:, s]], per_class) for s in range(way)], axis=1)
    return classes, picks, draws.redo

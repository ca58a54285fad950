"""TRX: Temporal-Relational CrossTransformers (Perrett et al., CVPR 2021), after `tobyperrett/trx`; the maths of
METHODS.md §3.

Frames x_f [T, C] get a sinusoidal positional encoding (x 0.1) and dropout. For every cardinality w of the
temporal set, each ordered tuple t = (t_1 < ... < t_w) of frames is the concatenation of its frames, and
    K_t = LN(W_k [x_t1; ..; x_tw] + b_k),    V_t = W_v [x_t1; ..; x_tw] + b_v                 (d = 1152)
For a query and a class c, attention runs over ALL tuples of ALL support videos s of c:
    A[t, (s, t')] = softmax_(s, t') (K_t . K_st' / sqrt(d)),     prototype_t = sum_(s, t') A[t, (s, t')] V_st'
    logit_c = - sum_t |V_t - prototype_t|^2 / n_tuples,          averaged over the cardinalities.

The maps are linear in the frames, W [x_t1; ..; x_tw] = sum_r W_r x_tr, so a video keeps its frame-slot
projections Y [w*T, d] (bias folded into slot 0) and a tuple is a sum of w rows: M Y with M [n_tuples, w*T] the 0/1
tuple matrix. Every product of tuples is then a product of slots, (M Y_q)(M Y_s)^T = M (Y_q Y_s^T) M^T: (wT)^2
instead of n_tuples^2 dot products of length d (256 vs 784 pairs, 576 vs 3136 triples for T = 8).
    keys:   LN(z) = g * (z - mean z) / sigma + beta, and z - mean z is linear too; with h_t = g * (z_t - mean z_t),
            K_t . K_st' = h_t . h_st' / (sigma_t sigma_st') + beta . h_st' / sigma_st' + (terms the softmax ignores)
    values: |V_t - prototype_t|^2 = |V_t|^2 - 2 (M G_qs)_t . B_t + B_t G_ss B_t^T,   B = A M over each shot,
            G_qs = Y_q Y_s^T and G_ss the class's slot Gram matrix, all of value slots centred per episode: each
            slot's mean over the episode's support videos and frames is taken from that slot of every video. That
            moves every tuple value, query and support alike, by one vector (the sum of the w slot means), and every
            prototype with it (the attention sums to 1), so no distance changes; uncentred, the three terms are
            ~|V|^2, far larger than their sum when the videos are nearly parallel (an untrained backbone), and
            float32 loses the distance in the cancellation.
"""
from __future__ import annotations

import math
from itertools import combinations

import torch
import torch.nn.functional as F
from torch import nn

from methods.base import Head, group_by_class, in_episode_blocks, per_episode
from methods.registry import register
from methods.settings import MAP_FRAMES, Integer, Integers, Number
from methods.staf import _check_keys, _reference_items


class _PositionalEncoding(nn.Module):
    def __init__(self, channels: int, max_len: int, scale: float, dropout: float):
        super().__init__()
        position = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)
        div = torch.exp(torch.arange(0, channels, 2, dtype=torch.float32) * (-math.log(10000.0) / channels))
        pe = torch.zeros(max_len, channels)
        pe[:, 0::2] = torch.sin(position * div) * scale
        pe[:, 1::2] = torch.cos(position * div[: channels // 2]) * scale
        self.register_buffer("pe", pe.unsqueeze(0))  # [1, max_len, C], as the reference stores it
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(x + self.pe[:, : x.shape[1]])


class _Cardinality(nn.Module):
    """One cardinality w: the reference's TemporalCrossTransformer (same parameter names)."""

    def __init__(self, frames: int, channels: int, dim: int, w: int, dropout: float, pe_scale: float):
        super().__init__()
        self.w, self.frames, self.dim = w, frames, dim
        self.pe = _PositionalEncoding(channels, int(1.5 * frames), pe_scale, dropout)
        self.k_linear = nn.Linear(w * channels, dim)
        self.v_linear = nn.Linear(w * channels, dim)
        self.norm_k = nn.LayerNorm(dim)
        self.norm_v = nn.LayerNorm(dim)  # unused, as in the reference; kept so its checkpoints load
        tuples = torch.tensor(list(combinations(range(frames), w)), dtype=torch.long).view(-1, w)  # [n, w]
        rows = tuples + frames * torch.arange(w)  # [n, w] the row of Y each frame of a tuple takes, slot by slot
        slots = torch.zeros(len(tuples), w * frames)
        slots[torch.arange(len(tuples)).unsqueeze(1), rows] = 1.0
        self.register_buffer("tuples", tuples, persistent=False)
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("slots", slots, persistent=False)  # M [n, w*T]

    @property
    def n(self) -> int:
        return self.tuples.shape[0]

    def sizes(self) -> dict[str, tuple[int, ...]]:
        """The per-video parts `embed` stores for this cardinality, in order."""
        wt, n, d = self.w * self.frames, self.n, self.dim
        return {"h": (wt, d), "y": (wt, d), "inv_sigma": (n,), "beta_h": (n,)}

    def _slots(self, x: torch.Tensor, linear: nn.Linear) -> torch.Tensor:
        """x [N, T, C] -> per-frame slot projections Y [N, w*T, d] (row r*T + f: W_r x_f), the bias in slot 0.
        weight [d, w*C] viewed as [d*w, C] has row j*w + r = row j of W_r: one product, no copy of the weight."""
        N, T, C = x.shape
        y = x.reshape(N * T, C) @ linear.weight.view(self.dim * self.w, C).T  # [N*T, d*w]
        y = y.view(N, T, self.dim, self.w).permute(0, 3, 1, 2)  # [N, w, T, d]
        return (y + F.pad(linear.bias.view(1, 1, 1, -1), (0, 0, 0, 0, 0, self.w - 1))).reshape(N, -1, self.dim)

    def _tuple_sums(self, slot_rows: torch.Tensor) -> torch.Tensor:
        """[N, w*T, ...] -> [N, n, ...]: each tuple's sum of its w rows, added slot by slot. Sums, not a product
        with M, so that every video is computed alike wherever it sits in the batch."""
        total = slot_rows.index_select(1, self.rows[:, 0])  # index_select: its backward is an index_add, not
        for r in range(1, self.w):  # the serial accumulating index_put of slot_rows[:, rows] (half a training step)
            total = total + slot_rows.index_select(1, self.rows[:, r])
        return total

    def embed(self, frames: torch.Tensor) -> list[torch.Tensor]:
        x = self.pe(frames)  # [N, T, C]; its own encoding and dropout, as each reference transformer has
        ln = self.norm_k
        keys = self._slots(x, self.k_linear)  # [N, wT, d]
        centred = keys - keys.mean(-1, keepdim=True)  # a tuple's z_t - mean z_t is the sum of its rows
        tuple_sq = self._tuple_sums(centred).square().sum(-1)  # [N, n] |z_t - mean z_t|^2
        inv_sigma = torch.rsqrt(tuple_sq / self.dim + ln.eps)
        h = centred * ln.weight  # [N, wT, d]
        beta_h = self._tuple_sums((h * ln.bias).sum(-1)) * inv_sigma  # [N, n]
        return [h, self._slots(x, self.v_linear), inv_sigma, beta_h]

    def attention(self, q: dict, s: dict) -> torch.Tensor:
        """A [E, Q, way, n, shot*n]: each query tuple over all (shot, tuple) pairs of a class.
        q: parts [E, Q, ...]; s: parts grouped by class [E, way, shot, ...]."""
        M, n = self.slots, self.n
        E, Q, way, shot = *q["h"].shape[:2], *s["h"].shape[1:3]
        root_d = math.sqrt(self.dim)

        def scores(qh, sh, q_inv, s_inv, s_beta):  # one episode: K_t . K_st' / sqrt(d) up to a constant per t
            dots = M @ _slot_products(qh, sh) @ M.T  # [Q, way, shot, n, n]  h_t . h_st'
            return (dots * q_inv[:, None, None, :, None] * s_inv[:, :, None, :] + s_beta[:, :, None, :]) / root_d

        att = per_episode(scores, q["h"], s["h"], q["inv_sigma"], s["inv_sigma"], s["beta_h"])
        return torch.softmax(att.transpose(3, 4).reshape(E, Q, way, n, shot * n), dim=-1)

    def _centred(self, qy: torch.Tensor, sy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Value slots less each slot's mean over the episode's support videos and frames (module docstring).
        qy [E, Q, wT, d], sy [E, way, shot, wT, d] -> the same shapes."""
        E, Q, _, d = qy.shape
        by_slot = sy.reshape(E, -1, self.w, self.frames, d)  # [E, S, w, T, d]
        mean = by_slot.mean(1).mean(2, keepdim=True).unsqueeze(1)  # [E, 1, w, 1, d]
        return (qy.view(E, Q, self.w, self.frames, d) - mean).view(qy.shape), (by_slot - mean).view(sy.shape)

    def logits(self, q: dict, s: dict) -> torch.Tensor:
        """-sum_t |V_t - prototype_t|^2 / n  [E, Q, way], from slot products of centred value slots."""
        M, n = self.slots, self.n
        E, Q, way, shot = *q["h"].shape[:2], *s["h"].shape[1:3]
        att = self.attention(q, s).view(E, Q, way, n, shot, n)
        slot_att = per_episode(lambda a: a @ M, att).flatten(-2)  # [E, Q, way, n, shot*wT]  B = A M per shot
        qy, sy = self._centred(q["y"], s["y"])
        v_sq = (per_episode(lambda y: M @ (y @ y.transpose(1, 2)), qy) * M).sum(-1)  # [E, Q, n]  |V_t|^2
        cross = per_episode(lambda a, b: M @ _slot_products(a, b), qy, sy)  # [E, Q, way, shot, n, wT]
        cross = cross.transpose(3, 4).flatten(-2)  # [E, Q, way, n, shot*wT]  V_t . (slots of the class)
        g_ss = per_episode(lambda y: y @ y.transpose(-1, -2), sy.flatten(2, 3))  # [E, way, shot*wT, shot*wT]
        quad = per_episode(torch.matmul, slot_att, g_ss.unsqueeze(1))  # [E, Q, way, n, shot*wT]  (B G_ss)_t
        dist = v_sq.unsqueeze(2) + ((quad - 2 * cross) * slot_att).sum(-1)  # |V_t|^2 + |p_t|^2 - 2 V_t . p_t
        return -dist.sum(-1) / n


def _slot_products(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """One episode: a [Q, wT, d], b [way, shot, wT, d] -> a_q b_s^T of every (query, support video)
    [Q, way, shot, wT, wT], as one product."""
    Q, wt, d = a.shape
    way, shot = b.shape[:2]
    out = a.reshape(Q * wt, d) @ b.reshape(way * shot * wt, d).T
    return out.view(Q, wt, way, shot, wt).permute(0, 2, 3, 1, 4)


#: the most ordered frame tuples one cardinality w may make (C(T, w)): attention runs over tuples x support tuples,
#: so its cost grows with the square (T = 8 makes at most 70; T = 16, w = 4 makes 1,820)
MAX_TUPLES = 2000


def _too_many_tuples(temporal_set, context) -> str | None:
    frames = MAP_FRAMES.value(context)
    if frames is None:
        return None
    for w in temporal_set:
        if 1 <= w <= frames and math.comb(frames, w) > MAX_TUPLES:
            return f"makes {math.comb(frames, w):,} tuples of {w} of the T = {frames} time steps of the backbone map, more than {MAX_TUPLES:,}"
    return None


@register("trx")
class TRX(Head):
    """Embedded video (`embed`): one flat vector per video, for each cardinality in turn the parts of
    `_Cardinality.sizes`: key slots h [wT, d] (LayerNorm-centred and scaled by its gain), value slots y [wT, d],
    and 1 / sigma and beta . h / sigma per tuple."""

    view = "frames"
    trainable = True
    #: the reference's recipe (run.py of the TRX code): SGD at lr 0.001, constant, its 100,020 tasks as 6,251 steps
    #: of 16, 5 training queries per class; fine-tuning (train.finetune_backbone) augments with random crops, flips
    #: and up to 5 frames of jitter
    train_defaults = {"optimizer": "sgd", "lr": 0.001, "momentum": 0.0, "weight_decay": 0.0, "schedule": "constant", "steps": 6251,
                      "tasks_per_batch": 16, "query_per_class": 5, "crop": "random", "flip": True, "jitter": 5}
    #: episodes per block in `forward` (see `in_episode_blocks`)
    episodes_per_block = 8
    #: temporal_set: the tuple cardinalities (each 1..T, the map's frames, and at most MAX_TUPLES tuples each);
    #: dim: the key/value width (the reference's 1152); dropout before the keys; pe_scale: the positional code's
    settings_schema = {"temporal_set": Integers(at_least=1, at_most=MAP_FRAMES, distinct=True, max_items=8, also=lambda v, c: _too_many_tuples(v, c)),
                       "dim": Integer(at_least=1, at_most=16384), "dropout": Number(at_least=0, below=1), "pe_scale": Number(at_least=0)}

    def __init__(self, feature_shape=None, temporal_set=(2, 3), dim: int = 1152, dropout: float = 0.1, pe_scale: float = 0.1):
        super().__init__()
        if feature_shape is None:
            raise ValueError("trx needs feature_shape, the (C, T, H, W) of the backbone map; pass it in the context")
        channels, frames = int(feature_shape[0]), int(feature_shape[1])
        bad = [w for w in temporal_set if not 1 <= int(w) <= frames]
        if bad:
            raise ValueError(f"trx temporal_set {list(temporal_set)}: cardinalities {bad} are not between 1 and T = {frames} frames")
        self.transformers = nn.ModuleList(_Cardinality(frames, channels, dim, int(w), dropout, pe_scale) for w in temporal_set)

    def _unpack(self, reps: torch.Tensor) -> list[dict]:
        parts, start = [], 0
        for t in self.transformers:
            named = {}
            for name, shape in t.sizes().items():
                size = math.prod(shape)
                named[name] = reps[..., start : start + size].unflatten(-1, shape)
                start += size
            parts.append(named)
        return parts

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        """features [N, T, C] -> [N, D], D = sum over cardinalities of the part sizes (class docstring)."""
        return torch.cat([p.flatten(1) for t in self.transformers for p in t.embed(features)], dim=1)

    def _logits(self, support, support_labels, query, way):
        groups = group_by_class(support, support_labels, way)  # [E, way, shot, D]
        per_w = [t.logits(q, s) for t, q, s in zip(self.transformers, self._unpack(query), self._unpack(groups))]
        return torch.stack(per_w).mean(0)  # [E, Q, way]

    def forward(self, support, support_labels, query, way):
        run = lambda s, l, q: self._logits(s, l, q, way)  # noqa: E731
        return in_episode_blocks(run, self.episodes_per_block, support, support_labels, query)

    def loss(self, support, support_labels, query, query_labels, way, class_ids=None):
        """Cross-entropy summed over an episode's queries, averaged over episodes."""
        logits = self._logits(support, support_labels, query, way)
        return F.cross_entropy(logits.flatten(0, 1), query_labels.flatten(), reduction="sum") / logits.shape[0]

    @staticmethod
    def from_reference(state_dict: dict) -> dict:
        """The head's state dict from a `tobyperrett/trx` checkpoint (`resnet.*`, the backbone, is left to the
        caller). Accepts the state dict or the checkpoint holding it under `model_state_dict`; `module.`
        (DataParallel) segments are dropped. One `transformers.{i}` per cardinality, in temporal_set order."""
        head = {k: v for k, v in _reference_items(state_dict).items() if not k.startswith("resnet.")}
        found = {int(k.split(".")[1]) for k in head if k.startswith("transformers.") and k.split(".")[1].isdigit()}
        names = [f"{m}.{p}" for m in ("k_linear", "v_linear", "norm_k", "norm_v") for p in ("weight", "bias")] + ["pe.pe"]
        expected = {f"transformers.{i}.{name}" for i in range(max(found, default=-1) + 1) for name in names}
        if not expected:
            prefixes = sorted({k.split(".")[0] for k in head})
            raise ValueError(f"no TRX head weights (transformers.*) in this checkpoint; its keys start with {prefixes}")
        _check_keys(head, expected, "TRX")
        return dict(sorted(head.items()))

"""STAF: Spatiotemporal Attention Fusion (Liu et al., arXiv 2112.04585; MASTAF, WACV 2023), after `lxhit/STAF`;
the maths of METHODS.md §2.

A video is its backbone map X [C, P] (P = T*H*W positions); X^ is X with every position L2-normalised over C.
Attention from a correlation matrix R [P, P] whose rows are the positions of the map being re-weighted:
    w = fuse(mean_i R_i.)      fuse = conv2(relu(bn(conv1(.)))), 1x1 convs P -> 6 -> P, the positions as channels
    a_i = mean_j R_ij w_j,     A = softmax(a / 0.025) + 1 (every weight in [1, 2]),   X_att = X * A per position
Self-attention: R = X^T X^ of one video (or prototype = mean support map of a class).
Cross-attention of prototype P_k and query Q_q: R = P^T Q^ re-weights P (P_k|q), R^T re-weights Q (Q_q|k).
With GAP the mean over positions and cos the cosine similarity,
    s[q, k] = 7 cos(GAP(Q_q|k), GAP(P_k|q)) + alpha * 7 cos(GAP(Q_q,self), GAP(P_k,self))          (prediction)
Training scores every query position against the pooled prototypes (dense logits, CE averaged over positions)
and adds a global classifier (1x1x1 conv C -> training classes) on Q_q|y, y the query's own class:
    loss = CE_global + lamda * CE_fewshot
The cross R is never formed: mean_i R_ij = mean(P^) . Q^_j, a_i = P^_i . (Q^ w) / P, and
|GAP(P_k|q)|^2 = (|P| A)^T R_self (|P| A) / P^2 with the self-correlation R_self stored per video, so each
episode costs five passes of maps times a few vectors instead of a [P, C] x [C, P] product per (prototype, query).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from methods.base import Head, group_by_class, in_episode_blocks, per_episode
from methods.registry import register
from methods.settings import Integer, Number

#: the reference's BatchNorm calls in one training forward, in the order it makes them (`lxhit/STAF`,
#: models/cam_r3d.py, CAM.forward): get_self_attention(prototypes, queries) fuses the prototypes' self-correlation,
#: then the queries'; get_cross_attention then fuses a1 = R (which re-weights the prototypes), then a2 = R^T (the
#: queries). A call whose batch dimension is 1 skips the BatchNorm and updates nothing.
BN_CALLS = ("prototypes self", "queries self", "prototypes cross", "queries cross")


class _ConvBN(nn.Module):
    """The reference's ConvBlock: 1x1 conv then BatchNorm (kept as modules so checkpoints map key for key)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 1)
        self.bn = nn.BatchNorm2d(c_out)


class _Fusion(nn.Module):
    """The reference's CAM: the learned meta-fusion, shared by self- and cross-attention."""

    def __init__(self, positions: int, hidden: int):
        super().__init__()
        self.conv1 = _ConvBN(positions, hidden)
        self.conv2 = nn.Conv2d(hidden, positions, 1)
        for conv in (self.conv1.conv, self.conv2):  # the reference's init: N(0, 2 / out_channels)
            nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / conv.out_channels))


@register("staf")
class STAF(Head):
    """Embedded video (`embed`), one tensor [L, C] per video, L = P + 2 + ceil((P + P^2) / C):
        rows 0..P-1  X^ transposed: the unit vector of every position
        row  P       mean of those unit vectors (gives the mean correlations without forming R)
        row  P+1     GAP of the self-attended map, with the BatchNorm of an episode of more than one item
        rows P+2..   flattened: |X_i| of every position [P] (the raw map is X^ * |X_i|), then the
                     self-correlation R_self = X^T X^ [P, P], then zeros
    """

    view = "positions"
    trainable = True
    #: the reference's recipe (`lxhit/STAF`, STAF_run.py and its README's command): plain SGD (no momentum, no
    #: weight decay) at lr 0.01, constant (its MultiStepLR milestone, 1,000,000 tasks, is never reached), 128,000
    #: tasks as 2,000 steps of 64, query_per_class 1 (its tasks hold the query of one class; here one of each),
    #: tested every 6,400 tasks (100 steps). It fine-tunes the backbone with a centre crop, horizontal flips and
    #: up to 5 frames of jitter: the augmentation here is that, the fine-tuning the protocol's choice
    #: (train.finetune_backbone).
    train_defaults = {"optimizer": "sgd", "lr": 0.01, "momentum": 0.0, "weight_decay": 0.0, "schedule": "constant", "steps": 2000,
                      "tasks_per_batch": 64, "query_per_class": 1, "val_every": 100, "crop": "centre", "flip": True, "jitter": 5}
    #: episodes per block in `forward` (see `in_episode_blocks`)
    episodes_per_block = 4
    #: alpha weighs the self-attention similarity, lamda the few-shot loss against the global one; scale multiplies
    #: the cosine similarities; temperature sharpens the attention softmax; hidden: the fusion's width (6)
    settings_schema = {"alpha": Number(at_least=0), "lamda": Number(at_least=0), "scale": Number(above=0),
                       "temperature": Number(above=0), "hidden": Integer(at_least=1, at_most=4096)}

    def __init__(self, feature_shape=None, num_train_classes: int | None = None, alpha: float = 1.0, lamda: float = 0.5,
                 scale: float = 7.0, temperature: float = 0.025, hidden: int = 6):
        super().__init__()
        if feature_shape is None:
            raise ValueError("staf needs feature_shape, the (C, T, H, W) of the backbone map; pass it in the context")
        channels, t, h, w = feature_shape
        self.channels, self.positions = int(channels), int(t * h * w)
        self._extra_rows = -(-(self.positions + self.positions**2) // self.channels)  # ceil((P + P^2) / C)
        self.alpha, self.lamda, self.scale, self.temperature = alpha, lamda, scale, temperature
        self.cam = _Fusion(self.positions, hidden)
        self.classifier = nn.Conv3d(self.channels, num_train_classes, 1) if num_train_classes else None

    # -- the attention -------------------------------------------------------------------------------
    def _bn(self, h: torch.Tensor, skip: bool, stats: dict | None, call: str) -> torch.Tensor:
        """h [E, *items, hidden]. The reference's BatchNorm2d sees one episode as a [1, hidden, *items] batch
        (b = 1 task), so training statistics are per episode over its items. It skips the BN when the last
        axis of that input has size 1: the number of prototypes (way) in the prototypes' self-attention and in
        both cross-attentions, the number of queries in the queries' self-attention. In training, the
        episode statistics of `call` (one of BN_CALLS) go to `stats` for `_update_running_stats`."""
        if skip:
            return h
        bn = self.cam.conv1.bn
        if self.training and stats is not None:
            dims = tuple(range(1, h.dim() - 1))
            mean, var = h.mean(dims, keepdim=True), h.var(dims, unbiased=False, keepdim=True)
            stats[call] = (mean.detach().flatten(1), var.detach().flatten(1), math.prod(h.shape[1:-1]))  # [E, hidden] x2, items
        else:
            mean, var = bn.running_mean, bn.running_var
        return (h - mean) * torch.rsqrt(var + bn.eps) * bn.weight + bn.bias

    def _update_running_stats(self, stats: dict) -> None:
        """What the reference's BN calls would have done to the running statistics: one episode after another,
        and within an episode its calls in the reference's order (BN_CALLS), whatever order computed them."""
        bn = self.cam.conv1.bn
        calls = [stats[call] for call in BN_CALLS if call in stats]
        with torch.no_grad():
            for e in range(calls[0][0].shape[0] if calls else 0):
                for mean, var, n in calls:
                    bn.num_batches_tracked += 1
                    m = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
                    bn.running_mean.mul_(1 - m).add_(mean[e], alpha=m)
                    bn.running_var.mul_(1 - m).add_(var[e] * n / max(n - 1, 1), alpha=m)

    def _fuse(self, mean_corr: torch.Tensor, skip: bool, stats: dict | None, call: str) -> torch.Tensor:
        """[E, *items, P] mean correlations -> [E, *items, P] weights w. The 1x1 convs are written as explicit
        sums: a matrix product would stack all episodes' items into one, and BLAS may round a row differently
        by where it falls in that stack."""
        conv1, conv2 = self.cam.conv1.conv, self.cam.conv2
        h = (mean_corr.unsqueeze(-2) * conv1.weight.flatten(1)).sum(-1) + conv1.bias  # [E, *items, hidden]
        h = F.relu(self._bn(h, skip, stats, call))
        return (h.unsqueeze(-2) * conv2.weight.flatten(1)).sum(-1) + conv2.bias

    def _weights(self, a: torch.Tensor, dim: int) -> torch.Tensor:
        return torch.softmax(a / self.temperature, dim=dim) + 1  # A in [1, 2]

    def _self_pooled(self, units, norms, gram, skip: bool, stats: dict | None, call: str) -> torch.Tensor:
        """GAP of the self-attended map. units [E, n, P, C], norms [E, n, P], gram = R [E, n, P, P] -> [E, n, C]."""
        w = self._fuse(gram.mean(dim=-2), skip, stats, call)  # [E, n, P]
        a = (gram * w.unsqueeze(-2)).sum(-1) / self.positions  # a_i = mean_j R_ij w_j
        weights = (self._weights(a, -1) * norms).unsqueeze(-2)  # [E, n, 1, P]
        return per_episode(torch.matmul, weights, units).squeeze(-2) / self.positions

    def _cross(self, p_reps: torch.Tensor, q_reps: torch.Tensor, skip: bool, stats: dict | None):
        """Cross-attention of every (prototype k, query q) of each episode, R = P_k^T Q_q^, as five passes over
        the maps (p_reps [E, K, L, C], q_reps [E, Q, L, C], embedded layout). A product runs over all L rows of a
        video, the rows past P dropped or weighted 0, so no map is copied. Returns cos(GAP(Q_q|k), GAP(P_k|q))
        [E, Q, K], the prototype weights |P_i| A_i [E, K, Q, P], the query weights A_q [E, Q, P, K]."""
        P, (E, K, L, C), Q = self.positions, p_reps.shape, q_reps.shape[1]
        _, _, _, p_norms, p_gram = self._parts(p_reps)
        q_norms = self._parts(q_reps)[3]
        mm = lambda a, b: per_episode(torch.matmul, a, b)  # noqa: E731
        dots = lambda vectors, reps: mm(vectors, reps.transpose(-1, -2))[..., :P]  # noqa: E731  [.., n, C] x map
        weigh = lambda weights, reps: mm(F.pad(weights, (0, L - P)), reps)  # noqa: E731  [.., n, P] -> sum_i w_i X^_i
        # 1 (prototypes): mean_j R_ij = P^_i . mean(Q^), giving the weights w_p on prototype positions (the
        # reference's a2, which re-weights the queries: its BatchNorm call comes second, see BN_CALLS)
        row = mm(q_reps[:, :, P], p_reps.reshape(E, K * L, C).transpose(1, 2)).view(E, Q, K, L)[..., :P]
        w_p = self._fuse(row.transpose(1, 2), skip, stats, "queries cross")  # [E, K, Q, P]
        # 2 (prototypes): v = P^ w_p
        v = weigh(w_p, p_reps)  # [E, K, Q, C]
        # 3 (queries): mean_i R_ij = mean(P^) . Q^_j, and a_j = mean_i R_ij w_p,i = Q^_j . v / P
        vectors = torch.cat([p_reps[:, None, :, P].expand(E, Q, K, C), v.transpose(1, 2)], dim=2)  # [E, Q, 2K, C]
        out = dots(vectors, q_reps)  # [E, Q, 2K, P]
        w_q = self._fuse(out[:, :, :K], skip, stats, "prototypes cross")  # [E, Q, K, P] on query positions (a1's)
        A_q = self._weights(out[:, :, K:] / P, -1)  # [E, Q, K, P]
        # 4 (queries): u = Q^ w_q, and q_sum = P GAP(Q_q|k) = sum_j |Q_j| A_j Q^_j
        out = weigh(torch.cat([w_q, A_q * q_norms.unsqueeze(2)], dim=2), q_reps)  # [E, Q, 2K, C]
        q_sum = out[:, :, K:]  # [E, Q, K, C]
        # 5 (prototypes): a_i = P^_i . u / P, and P^_i . q_sum for the cosine's numerator
        vectors = out.view(E, Q, 2, K, C).permute(0, 3, 1, 2, 4).reshape(E, K, 2 * Q, C)  # each prototype's own
        out = dots(vectors, p_reps).view(E, K, Q, 2, P)  # [E, K, Q, 2, P]
        A_p = self._weights(out[:, :, :, 0] / P, -1)  # [E, K, Q, P]
        alpha = A_p * p_norms.unsqueeze(2)  # [E, K, Q, P] = |P_i| A_i
        dot = (alpha * out[:, :, :, 1]).sum(-1)  # [E, K, Q] = P^2 GAP(P_k|q) . GAP(Q_q|k)
        p_sq = (mm(alpha, p_gram) * alpha).sum(-1)  # [E, K, Q] = P^2 |GAP(P_k|q)|^2
        q_norm = q_sum.norm(dim=-1).transpose(1, 2)  # [E, K, Q] = P |GAP(Q_q|k)|
        eps = 1e-12 * P  # F.normalize's: cos = a . b / (max(|a|, eps) max(|b|, eps)), here scaled by P
        cos = dot / (p_sq.sqrt().clamp_min(eps) * q_norm.clamp_min(eps))
        return cos.transpose(1, 2), alpha, A_q.transpose(-1, -2)

    # -- the episode contract ------------------------------------------------------------------------
    def _parts(self, reps: torch.Tensor):
        """units [.., P, C], mean unit [.., C], self-attended GAP [.., C], norms [.., P], R_self [.., P, P]."""
        P = self.positions
        extra = reps[..., P + 2 :, :].flatten(-2)
        gram = extra[..., P : P + P * P].unflatten(-1, (P, P))
        return reps[..., :P, :], reps[..., P, :], reps[..., P + 1, :], extra[..., :P], gram

    def _layout(self, rows: torch.Tensor, skip: bool, stats: dict | None) -> torch.Tensor:
        """Raw maps as rows [E, n, P, C] -> the embedded layout [E, n, L, C] (class docstring)."""
        P, C = self.positions, self.channels
        norms = rows.norm(dim=-1).clamp_min(1e-12)  # [E, n, P], the reference's normalize eps
        units = rows / norms.unsqueeze(-1)
        flat = units.flatten(0, 1)  # [E*n, P, C]: one product per video, so no BLAS rounds a video by its batch place
        gram = per_episode(torch.matmul, flat, flat.transpose(-1, -2)).view(*units.shape[:2], P, P)  # [E, n, P, P] R = X^T X^
        pooled = self._self_pooled(units, norms, gram, skip, stats, "prototypes self")  # stats: prototypes only (embed has none)
        extra = F.pad(torch.cat([norms, gram.flatten(-2)], dim=-1), (0, self._extra_rows * C - P - P * P))
        rows = [units, units.mean(dim=2, keepdim=True), pooled.unsqueeze(2), extra.unflatten(-1, (-1, C))]
        return torch.cat(rows, dim=2)

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        """features [N, C, P] -> [N, L, C]; row P+1 with the eval-mode BatchNorm (running statistics)."""
        return self._layout(features.transpose(1, 2).unsqueeze(0), skip=False, stats=None)[0]

    def _episode(self, support, support_labels, query, way: int, stats: dict | None):
        """Scores [E, Q, way] and what the loss needs; support [E, S, L, C], query [E, Q, L, C]."""
        groups = group_by_class(support, support_labels, way)  # [E, way, shot, L, C]
        if groups.shape[2] > 1:  # the prototype is the mean raw map of the class's shots
            units, _, _, norms, _ = self._parts(groups)
            p_reps = self._layout((units * norms.unsqueeze(-1)).mean(dim=2), way == 1, stats)
        else:
            p_reps = groups[:, :, 0]
        p_units, _, p_pooled_self, p_norms, p_gram = self._parts(p_reps)
        q_units, _, q_pooled_self, q_norms, q_gram = self._parts(query)
        # embed's row P+1 holds the self-attention with running statistics and the BatchNorm applied;
        # training uses the episode's own statistics, and one prototype (or one query) skips the BatchNorm
        if groups.shape[2] == 1 and (self.training or way == 1):
            p_pooled_self = self._self_pooled(p_units, p_norms, p_gram, way == 1, stats, "prototypes self")
        if self.training or query.shape[1] == 1:
            q_pooled_self = self._self_pooled(q_units, q_norms, q_gram, query.shape[1] == 1, stats, "queries self")
        cross, alpha, A_q = self._cross(p_reps, query, way == 1, stats)
        q_self, p_self = F.normalize(q_pooled_self, dim=-1), F.normalize(p_pooled_self, dim=-1)  # [E, Q|way, C]
        self_ = (q_self.unsqueeze(2) * p_self.unsqueeze(1)).sum(-1)  # [E, Q, way]
        scores = self.scale * (cross + self.alpha * self_)
        return scores, (p_reps, q_units, q_norms, alpha, A_q, p_pooled_self)

    def forward(self, support, support_labels, query, way):
        stats = {} if self.training else None  # training-mode BN: this episode's statistics, nothing recorded
        run = lambda s, l, q: self._episode(s, l, q, way, stats)[0]  # noqa: E731
        return in_episode_blocks(run, self.episodes_per_block, support, support_labels, query)

    def loss(self, support, support_labels, query, query_labels, way, class_ids=None):
        if self.classifier is None or class_ids is None:
            raise ValueError("staf's loss needs its global classifier: build it with num_train_classes, pass class_ids")
        stats: dict = {}
        _, (p_reps, q_units, q_norms, alpha, A_q, p_pooled_self) = self._episode(support, support_labels, query, way, stats)
        self._update_running_stats(stats)
        E, Q, P = q_units.shape[:3]
        p_pooled = alpha @ p_reps[:, :, :P] / P  # [E, way, Q, C] GAP(P_k|q)
        # dense few-shot logits: a query position against the pooled prototypes; the attention weight of a
        # position (> 0) cancels in its cosine, so the unit position stands for the attended one
        cross = q_units @ F.normalize(p_pooled, dim=-1).permute(0, 2, 3, 1)  # [E, Q, P, way]
        self_ = q_units @ F.normalize(p_pooled_self, dim=-1).transpose(1, 2).unsqueeze(1)  # [E, Q, P, way]
        dense = self.scale * (cross + self.alpha * self_)
        position_labels = query_labels.unsqueeze(-1).expand(E, Q, P)
        ce_fewshot = F.cross_entropy(dense.flatten(0, 2), position_labels.flatten())
        # global classifier on the query map cross-attended to its own class
        own = A_q.gather(-1, position_labels.unsqueeze(-1)).squeeze(-1)  # [E, Q, P]
        attended = q_units * (q_norms * own).unsqueeze(-1)  # [E, Q, P, C]
        logits = F.linear(attended, self.classifier.weight.flatten(1), self.classifier.bias)  # [E, Q, P, classes]
        targets = class_ids.gather(1, query_labels).unsqueeze(-1).expand(E, Q, P)
        ce_global = F.cross_entropy(logits.flatten(0, 2), targets.flatten())
        return ce_global + self.lamda * ce_fewshot

    @staticmethod
    def from_reference(state_dict: dict) -> dict:
        """The head's state dict from a `lxhit/STAF` checkpoint (`base.*`, the backbone, is left to the caller).
        Accepts the state dict or a checkpoint holding it under `model_state_dict`/`state_dict`; `module.`
        (DataParallel) segments are dropped. Build the head with num_train_classes = classifier.weight.shape[0]."""
        head = {k: v for k, v in _reference_items(state_dict).items() if not k.startswith("base.")}
        bn = "cam.conv1.bn."
        head.setdefault(bn + "num_batches_tracked", torch.tensor(0, dtype=torch.long))  # older torch omits it
        expected = {f"cam.conv1.conv.{p}" for p in ("weight", "bias")} | {f"cam.conv2.{p}" for p in ("weight", "bias")}
        expected |= {bn + p for p in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")}
        expected |= {"classifier.weight", "classifier.bias"}
        _check_keys(head, expected, "STAF")
        return dict(sorted(head.items()))


def _reference_items(state_dict: dict) -> dict:
    for wrapper in ("model_state_dict", "state_dict"):
        if wrapper in state_dict and isinstance(state_dict[wrapper], dict):
            state_dict = state_dict[wrapper]
    return {".".join(p for p in k.split(".") if p != "module"): v for k, v in state_dict.items()}


def _check_keys(found: dict, expected: set, name: str) -> None:
    missing, unexpected = sorted(expected - found.keys()), sorted(found.keys() - expected)
    if missing or unexpected:
        raise ValueError(
            f"this is not a {name} reference checkpoint as expected: missing keys {missing or 'none'}, "
            f"unexpected keys {unexpected or 'none'}"
        )

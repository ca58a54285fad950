"""OTAM: Ordered Temporal Alignment Module (Cao et al., CVPR 2020), after the re-implementation in
`tobyperrett/few-shot-action-recognition`; the maths of METHODS.md §4.

Frame distance D[l, m] = 1 - q_l . s_m / (|q_l| |s_m| + 0.01), padded with a zero column before the first and
after the last support frame. With softmin(a) = -lam log sum exp(-a / lam), the cumulative matrix C is
    row 0:  C[0, m] = sum_{m' <= m} D[0, m']
    l >= 1: C[l, 0] = 0,  C[l, 1] = D[l, 1] + softmin(C[l-1, 0], C[l-1, 1], C[l, 0]),
            C[l, m] = D[l, m] + softmin(C[l-1, m-1], C[l, m-1])                   for 2 <= m <= Ls,
            C[l, Ls+1] = D[l, Ls+1] + softmin(C[l-1, Ls], C[l-1, Ls+1], C[l, Ls])
and the distance is C[Lq-1, Ls+1], of D and (bidirectional) of D^T. A class's distance is the mean over its
support videos; logit = -distance. No learned parameters.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from methods.base import Head, class_means, in_episode_blocks, per_episode
from methods.registry import register
from methods.settings import Flag, Number


def soft_dtw(D: torch.Tensor, lam: float) -> torch.Tensor:
    """OTAM's alignment cost of every matrix in D [..., Lq, Ls] -> [...]; loops over the cells of the DP only."""

    def softmin(*a: torch.Tensor) -> torch.Tensor:  # -lam log sum exp(-a / lam), shifted by the minimum
        low = a[0]
        for x in a[1:]:
            low = torch.minimum(low, x)
        total = torch.exp((low - a[0]) / lam)
        for x in a[1:]:
            total = total + torch.exp((low - x) / lam)
        return low - lam * torch.log(total)

    cells = F.pad(D, (1, 1)).movedim((-2, -1), (0, 1)).contiguous()  # [Lq, Ls + 2, ...], a cell is contiguous
    last = cells.shape[1] - 1
    prev = list(cells[0].cumsum(dim=0))  # row 0
    for l in range(1, cells.shape[0]):
        d = cells[l]
        row = [torch.zeros_like(d[0])]
        row.append(d[1] + softmin(prev[0], prev[1], row[0]))
        for m in range(2, last):
            row.append(d[m] + softmin(prev[m - 1], row[m - 1]))
        row.append(d[last] + softmin(prev[last - 1], prev[last], row[last - 1]))
        prev = row
    return prev[last]


@register("otam")
class OTAM(Head):
    view = "frames"
    trainable = False
    #: episodes per block in `forward`; the DP's Python loop is paid once per block
    episodes_per_block = 256
    #: lam: the soft-min temperature (the reference's 0.1)
    settings_schema = {"lam": Number(above=0), "bidirectional": Flag()}

    def __init__(self, lam: float = 0.1, bidirectional: bool = True):
        super().__init__()
        if lam <= 0:
            raise ValueError(f"otam lam (the soft-min temperature) must be > 0, not {lam}")
        self.lam, self.bidirectional = float(lam), bool(bidirectional)

    def _logits(self, support, support_labels, query, way):
        # support [E, S, Ls, C], query [E, Q, Lq, C]
        E, S, Ls, C = support.shape
        Q, Lq = query.shape[1:3]
        dots = per_episode(lambda q, s: q.reshape(Q * Lq, C) @ s.reshape(S * Ls, C).T, query, support)
        dots = dots.view(E, Q, Lq, S, Ls).transpose(2, 3)  # [E, Q, S, Lq, Ls]
        norms = query.norm(dim=-1)[:, :, None, :, None] * support.norm(dim=-1)[:, None, :, None, :]
        D = 1 - dots / (norms + 0.01)
        if self.bidirectional and Lq == Ls:  # one DP for both directions
            dist = soft_dtw(torch.stack([D, D.transpose(-1, -2)]), self.lam).sum(0)
        else:
            dist = soft_dtw(D, self.lam) + (soft_dtw(D.transpose(-1, -2), self.lam) if self.bidirectional else 0)
        return -class_means(dist.transpose(1, 2), support_labels, way).transpose(1, 2)  # [E, Q, way]

    def forward(self, support, support_labels, query, way):
        run = lambda s, l, q: self._logits(s, l, q, way)  # noqa: E731
        return in_episode_blocks(run, self.episodes_per_block, support, support_labels, query)

    def loss(self, support, support_labels, query, query_labels, way, class_ids=None):
        logits = self._logits(support, support_labels, query, way)
        return F.cross_entropy(logits.flatten(0, 1), query_labels.flatten())

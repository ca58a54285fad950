"""Prototypical Networks (Snell et al., NeurIPS 2017), video form.

A video is the mean of its backbone map over time and space; the prototype of class k is the mean of its
support vectors; the logit is the negative squared Euclidean distance to each prototype (or the scaled
cosine similarity with `metric="cosine"`). No learned parameters.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from methods.base import Head, class_means
from methods.registry import register


@register("protonet")
class ProtoNet(Head):
    view = "vector"

    def __init__(self, metric: str = "euclidean", scale: float = 10.0):
        super().__init__()
        if metric not in ("euclidean", "cosine"):
            raise ValueError(f"protonet metric must be 'euclidean' or 'cosine', not '{metric}'")
        self.metric, self.scale = metric, scale

    def forward(self, support, support_labels, query, way):
        # support [E, S, C], query [E, Q, C]
        prototypes = class_means(support, support_labels, way)  # [E, way, C]
        if self.metric == "cosine":
            q, p = F.normalize(query, dim=-1), F.normalize(prototypes, dim=-1)
            return self.scale * (q.unsqueeze(2) * p.unsqueeze(1)).sum(-1)  # [E, Q, way]
        return -((query.unsqueeze(2) - prototypes.unsqueeze(1)) ** 2).sum(-1)  # [E, Q, way]

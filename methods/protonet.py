"""Prototypical Networks (Snell et al., NeurIPS 2017), video form.

A video is the mean of its backbone map over time and space; the prototype of class k is the mean of its
support vectors; the logit is the negative squared Euclidean distance to each prototype (or the scaled
cosine similarity with `metric="cosine"`). No learned parameters.

The Euclidean distance is taken after subtracting the episode's mean support vector r from every vector:
|q - p|^2 = |(q - r) - mean_k(s - r)|^2 exactly, but in float32 the prototype of nearly parallel videos is then
rounded to eps |p - r| instead of eps |p|, so the small differences between videos survive.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from methods.base import Head, class_means
from methods.registry import register
from methods.settings import Choice, Number


@register("protonet")
class ProtoNet(Head):
    view = "vector"
    settings_schema = {"metric": Choice("euclidean", "cosine"), "scale": Number(above=0)}

    def __init__(self, metric: str = "euclidean", scale: float = 10.0):
        super().__init__()
        if metric not in ("euclidean", "cosine"):
            raise ValueError(f"protonet metric must be 'euclidean' or 'cosine', not '{metric}'")
        self.metric, self.scale = metric, scale

    def forward(self, support, support_labels, query, way):
        # support [E, S, C], query [E, Q, C]
        if self.metric == "cosine":
            prototypes = class_means(support, support_labels, way)  # [E, way, C]
            q, p = F.normalize(query, dim=-1), F.normalize(prototypes, dim=-1)
            return self.scale * (q.unsqueeze(2) * p.unsqueeze(1)).sum(-1)  # [E, Q, way]
        r = support.mean(dim=1, keepdim=True)  # [E, 1, C] the episode's centre (module docstring)
        prototypes = class_means(support - r, support_labels, way)  # [E, way, C] p - r
        return -(((query - r).unsqueeze(2) - prototypes.unsqueeze(1)) ** 2).sum(-1)  # [E, Q, way]

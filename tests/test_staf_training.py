"""STAF's BatchNorm running statistics after training are the reference's (`lxhit/STAF`): one task at a time,
and within a task its BatchNorm calls in the order of models/cam_r3d.py, CAM.forward: the self-attention of
the prototypes, then of the queries, then the cross-attention's a1 = R (re-weighting the prototypes), then
a2 = R^T (re-weighting the queries). Written out here from METHODS.md §2 in float64, one item at a time."""
from __future__ import annotations

import pytest
import torch

import methods

SHAPE = (16, 1, 2, 3)  # C, T, H, W -> P = 6 positions
CLASSES = 7
#: BatchNorm2d's default momentum, which the reference keeps
MOMENTUM = 0.1
STEPS, EPISODES_PER_STEP = 3, 3


def unit(x: torch.Tensor) -> torch.Tensor:
    """x [C, P] with every position L2-normalised over the channels."""
    return x / x.norm(dim=0).clamp_min(1e-12)


def bn_inputs(w1: torch.Tensor, b1: torch.Tensor, support, labels, query, way: int, order: tuple) -> list[torch.Tensor]:
    """The inputs of one task's BatchNorm calls [items, hidden], in `order`; a call whose BatchNorm input has
    a last axis of 1 (way for the prototypes and both cross-attentions, the query count for the queries) has none.
    w1 [hidden, P], b1 [hidden]; support [S, C, P], labels [S], query [Q, C, P]."""
    prototypes = [support[labels == k].mean(0) for k in range(way)]  # the mean raw map of each class

    def fused(R: torch.Tensor) -> torch.Tensor:  # R [m_a, m_b], rows: positions of the map being re-weighted
        return w1 @ R.mean(0) + b1  # conv1 of the mean correlation, the positions as channels -> [hidden]

    calls = {
        "prototypes self": (way > 1, [fused(unit(p).T @ unit(p)) for p in prototypes]),
        "queries self": (len(query) > 1, [fused(unit(q).T @ unit(q)) for q in query]),
        "prototypes cross": (way > 1, [fused(unit(p).T @ unit(q)) for p in prototypes for q in query]),
        "queries cross": (way > 1, [fused(unit(q).T @ unit(p)) for p in prototypes for q in query]),
    }
    return [torch.stack(calls[name][1]) for name in order if calls[name][0]]


def update(stats: dict, h: torch.Tensor) -> None:
    """BatchNorm2d's running statistics after one training call on the items h [items, hidden]."""
    stats["running_mean"] = (1 - MOMENTUM) * stats["running_mean"] + MOMENTUM * h.mean(0)
    stats["running_var"] = (1 - MOMENTUM) * stats["running_var"] + MOMENTUM * h.var(0, unbiased=True)
    stats["num_batches_tracked"] += 1


REFERENCE_ORDER = ("prototypes self", "queries self", "prototypes cross", "queries cross")
CROSS_SWAPPED = ("prototypes self", "queries self", "queries cross", "prototypes cross")


def episodes(g: torch.Generator, n_videos: int, way: int, shot: int, query: int):
    """EPISODES_PER_STEP episodes: video ids support [E, way*shot], query [E, way*query], labels, class ids [E, way]."""
    picks = torch.stack([torch.randperm(n_videos, generator=g)[: way * (shot + query)] for _ in range(EPISODES_PER_STEP)])
    labels = torch.arange(way).repeat_interleave(shot).expand(EPISODES_PER_STEP, -1)
    query_labels = torch.arange(way).repeat_interleave(query).expand(EPISODES_PER_STEP, -1)
    class_ids = torch.stack([torch.randperm(CLASSES, generator=g)[:way] for _ in range(EPISODES_PER_STEP)])
    return picks[:, : way * shot], labels, picks[:, way * shot :], query_labels, class_ids


@pytest.mark.parametrize("way,shot,query", [(3, 1, 2), (3, 2, 1), (5, 1, 1)])
def test_running_statistics_after_training_follow_the_reference_order(way, shot, query):
    torch.manual_seed(0)
    head = methods.create("staf", context={"feature_shape": SHAPE, "num_train_classes": CLASSES}).double().train()
    bn = head.cam.conv1.bn
    assert bn.momentum == MOMENTUM
    g = torch.Generator().manual_seed(1)
    maps = torch.rand(30, SHAPE[0], 6, generator=g, dtype=torch.float64)  # [N, C, P], non-negative as after a ReLU
    expected = {order: {k: v.clone() for k, v in bn.state_dict().items() if k not in ("weight", "bias")}
                for order in (REFERENCE_ORDER, CROSS_SWAPPED)}
    opt = torch.optim.SGD(head.parameters(), lr=0.5)
    first_w1 = head.cam.conv1.conv.weight.detach().clone()
    for _ in range(STEPS):
        support, labels, query_ids, query_labels, class_ids = episodes(g, len(maps), way, shot, query)
        w1, b1 = head.cam.conv1.conv.weight.detach().flatten(1).clone(), head.cam.conv1.conv.bias.detach().clone()
        for e in range(EPISODES_PER_STEP):  # the reference: one task after another, its calls in order
            for order, stats in expected.items():
                for h in bn_inputs(w1, b1, maps[support[e]], labels[e], maps[query_ids[e]], way, order):
                    update(stats, h)
        s = head.embed(maps[support.flatten()]).unflatten(0, support.shape)  # the harness: a batch of episodes
        q = head.embed(maps[query_ids.flatten()]).unflatten(0, query_ids.shape)
        loss = head.loss(s, labels, q, query_labels, way, class_ids=class_ids)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert not torch.allclose(head.cam.conv1.conv.weight, first_w1), "the fusion must learn between steps"

    reference, swapped = expected[REFERENCE_ORDER], expected[CROSS_SWAPPED]
    assert int(bn.num_batches_tracked) == int(reference["num_batches_tracked"]) == STEPS * EPISODES_PER_STEP * 4
    for name in ("running_mean", "running_var"):
        assert torch.allclose(getattr(bn, name), reference[name], rtol=1e-12, atol=1e-15), name
        # the order matters at these sizes: the test would see the cross-attention's calls swapped
        assert not torch.allclose(swapped[name], reference[name], rtol=1e-6, atol=0), name

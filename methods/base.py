"""What every few-shot head shares: the view of the backbone map it reads, and the episode contract.

A backbone turns a clip into a map [C, T, H, W]. A head reads one *view* of it:
    "vector"    [C]          mean over time and space        (ProtoNet)
    "frames"    [T, C]       mean over space, one per frame  (TRX, OTAM)
    "positions" [C, T*H*W]   every spatio-temporal position  (STAF)

Evaluation runs in two steps so that work which depends on one video only is done once per video:
    reps   = head.embed(features)                 # [N, ...] for the N videos of the pool
    logits = head(support, support_labels, query, way)
with support [E, S, ...] and query [E, Q, ...] gathered from `reps`, support_labels [E, S] in [0, way),
and logits [E, Q, way]. No prediction may depend on how many episodes are in a batch.
"""
from __future__ import annotations

import abc
from typing import Callable

import torch
from torch import nn

VIEWS = ("vector", "frames", "positions")


def feature_view(maps: torch.Tensor, view: str) -> torch.Tensor:
    """maps [N, C, T, H, W] -> the named view, batched over N."""
    if view == "vector":
        return maps.mean(dim=(2, 3, 4))  # [N, C]
    if view == "frames":
        return maps.mean(dim=(3, 4)).transpose(1, 2)  # [N, T, C]
    if view == "positions":
        return maps.flatten(2)  # [N, C, T*H*W]
    raise ValueError(f"unknown feature view '{view}'; expected one of {', '.join(VIEWS)}")


class Head(nn.Module, abc.ABC):
    """Base of all heads. Subclasses set `view` and implement `forward`; `embed` is the per-video step."""

    view: str = "vector"
    method_name: str = ""
    #: whether the head has parameters that episodic training should fit
    trainable: bool = False

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        """Per-video work, done once per video at evaluation. features [N, *view] -> [N, ...]. A video's result must
        not depend on the other videos of the call or on its place among them: `harness.evaluate.embed_pool` keeps N
        fixed, and tests/test_precision.py checks that every video's embedding is the same bits in any pool."""
        return features

    @abc.abstractmethod
    def forward(self, support: torch.Tensor, support_labels: torch.Tensor, query: torch.Tensor, way: int) -> torch.Tensor:
        """Logits [E, Q, way] for a batch of episodes of embedded videos (see the module docstring)."""

    def loss(self, support, support_labels, query, query_labels, way, class_ids=None) -> torch.Tensor:
        """Training loss for a batch of episodes on embedded videos. query_labels [E, Q] in [0, way);
        class_ids [E, way] are the episode classes' global indices among the training classes."""
        logits = self(support, support_labels, query, way)  # [E, Q, way]
        return nn.functional.cross_entropy(logits.flatten(0, 1), query_labels.flatten())

    def config(self) -> dict:
        """The settings this head was built with, defaults included (recorded by the registry: see
        methods.registry; empty for a head class that was never registered)."""
        return dict(getattr(self, "settings", {}))


def class_means(x: torch.Tensor, labels: torch.Tensor, way: int) -> torch.Tensor:
    """Mean of the support items of each class. x [E, S, ...], labels [E, S] -> [E, way, ...]."""
    onehot = torch.nn.functional.one_hot(labels, way).to(x.dtype)  # [E, S, way]
    counts = onehot.sum(dim=1)  # [E, way]
    flat = x.flatten(2)  # [E, S, D]
    # a sum over the S support items written out as a product would let BLAS pick a blocking that depends
    # on E; the explicit sum keeps every episode's prototype bit-identical whatever the batch size
    summed = (onehot.unsqueeze(-1) * flat.unsqueeze(2)).sum(dim=1)  # [E, way, D]
    means = summed / counts.unsqueeze(-1)
    return means.reshape(x.shape[0], way, *x.shape[2:])


# Products and sums that give every episode the same bits whatever else shares its batch.


def group_by_class(support: torch.Tensor, labels: torch.Tensor, way: int) -> torch.Tensor:
    """support [E, S, ...] -> [E, way, shot, ...], shots in their order within each class. A view when the
    labels are already class-major (0,0,..,1,1,..), a copy otherwise."""
    E, S = labels.shape
    shot = S // way
    if S % way:
        raise ValueError(f"{S} support videos cannot hold {way} classes the same number of times each")
    expected = torch.arange(way, device=labels.device).repeat_interleave(shot).expand(E, S)
    if torch.equal(labels, expected):
        return support.view(E, way, shot, *support.shape[2:])
    order = torch.argsort(labels, dim=1, stable=True)  # [E, S]
    if not torch.equal(labels.gather(1, order), expected):
        raise ValueError(f"support labels must hold each class 0..{way - 1} {shot} times; first episode: {labels[0].tolist()}")
    rows = torch.arange(E, device=labels.device).unsqueeze(1)
    return support[rows, order].view(E, way, shot, *support.shape[2:])


def per_episode(product: Callable[..., torch.Tensor], *operands: torch.Tensor) -> torch.Tensor:
    """product(*operands) computed one episode (dim 0) at a time and stacked. BLAS rounds a batched product
    by the batch's size and, for some shapes, by an item's place in it; one call per episode gives every
    episode the same calls whatever else is batched with it. On a GPU, one call per episode is one kernel
    launch per episode; there the product is vectorised over the episodes instead (torch.vmap: one strided
    batched kernel, which computes every item alike), and `in_episode_blocks` keeps the batch's size fixed.
    FSV_TEST_DEVICE=cuda runs tests/test_heads.py's batch-invariance checks on a GPU."""
    if operands[0].is_cuda:
        return torch.vmap(product)(*operands)
    # unbind, not x[e]: the same views, but in training one backward op per operand (a stack of the episodes'
    # gradients) instead of one per episode, each filling a zero tensor of the whole operand's size
    episodes = [x.unbind(0) for x in operands]
    return torch.stack([product(*(x[e] for x in episodes)) for e in range(operands[0].shape[0])])


#: episodes per block on a GPU, where a block costs a few kernel launches whatever its size
GPU_EPISODES_PER_BLOCK = 64


def block_size(block: int, device: torch.device) -> int:
    """The block `in_episode_blocks` uses on `device` for a head that asks for `block` episodes per block
    (1: each episode on its own, unpadded)."""
    return max(block, GPU_EPISODES_PER_BLOCK) if device.type == "cuda" and block > 1 else block


def in_episode_blocks(fn: Callable[..., torch.Tensor], block: int, *episodes: torch.Tensor) -> torch.Tensor:
    """fn over blocks of exactly `block` episodes (dim 0), so that every call sees the same shapes whatever the
    number of episodes E: torch picks how to split a reduction by the shape of the tensor, so a block of fixed
    size keeps an episode's sums the same whatever E (its products go through `per_episode`). The last block
    overlaps the one before it (a view, no copy); fewer than `block` episodes are padded with the last one."""
    E, block = episodes[0].shape[0], block_size(block, episodes[0].device)
    if E == 0:
        raise ValueError("no episodes to score: the support and query tensors have E = 0")
    if E < block:
        idx = torch.arange(block, device=episodes[0].device).clamp_(max=E - 1)
        return fn(*(t.index_select(0, idx) for t in episodes))[:E]
    outs = []
    for start in range(0, E, block):
        low = min(start, E - block)
        outs.append(fn(*(t[low : low + block] for t in episodes))[start - low :])
    return torch.cat(outs)

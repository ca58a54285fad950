"""Numerical robustness of every head: its float32 logits against the same head cast to float64 (on the same
inputs, cast) for inputs that are hard for float32, and per-video embeddings that do not depend on the pool.

Errors are relative to the logit scale, the largest |float64 logit| of an episode. Worst cases measured over the
cases below: ProtoNet 8.2e-7 (cosine metric 3.4e-7), OTAM 1.2e-6, TRX 1.8e-6 (8.3e-7 at its reference size), STAF
2.1e-7. TRX's distance expanded as |V|^2 - 2 V.p + |p|^2 without centring V and p gives 2.7e-5 to 2.6e-4 (2.1e-4 at
the reference size). TOLERANCE is about 3x the worst of the heads, and 5x below the least error of that expansion.
ProtoNet centres on the episode's mean support vector; without it, its 5-shot prototype of videos with cosine >= 0.99999
is off by 1.2e-5."""
from __future__ import annotations

import copy

import pytest
import torch

import methods
from harness.evaluate import EMBED_BLOCK, embed_pool
from test_heads import randomise_bn

TOLERANCE = 5e-6
CPU = torch.device("cpu")
#: (C, T, H, W) of the backbone maps each head reads in these tests
SHAPES = {"protonet": (64, 4, 1, 1), "otam": (64, 8, 1, 1), "trx": (64, 8, 1, 1), "staf": (64, 1, 2, 3)}
HEADS = [
    pytest.param("protonet", {}, id="protonet"), pytest.param("protonet", {"metric": "cosine"}, id="protonet-cosine"),
    pytest.param("otam", {}, id="otam"), pytest.param("trx", {"dim": 32}, id="trx"), pytest.param("staf", {}, id="staf"),
]
CLASSES, PER_CLASS = 6, 7  # enough videos for 5-way 5-shot episodes with one query per class


def make(name: str, shape: tuple, **config) -> torch.nn.Module:
    torch.manual_seed(0)
    head = methods.create(name, context={"feature_shape": shape, "num_train_classes": 7}, **config).eval()
    if name == "staf":
        randomise_bn(head)
    return head


def nearly_parallel(shape: tuple, spread: float, seed: int = 0) -> torch.Tensor:
    """Non-negative maps [CLASSES * PER_CLASS, C, T, H, W]: a shared positive base times 1 + spread * (class, video
    and per-position terms), so that every two videos are nearly parallel (cosine 1 - O(spread^2))."""
    g = torch.Generator().manual_seed(seed)
    C, T, H, W = shape
    n = CLASSES * PER_CLASS
    base = torch.rand(C, 1, 1, 1, generator=g) + 0.5
    terms = torch.randn(CLASSES, C, 1, H, W, generator=g).repeat_interleave(PER_CLASS, 0)
    terms = terms + 0.5 * torch.randn(n, C, 1, 1, 1, generator=g) + 0.5 * torch.randn(n, C, T, H, W, generator=g)
    return base * (1 + spread * terms)


def cosines(maps: torch.Tensor) -> torch.Tensor:
    """Cosine of every two different videos' maps."""
    unit = torch.nn.functional.normalize(maps.flatten(1).double(), dim=1)
    return (unit @ unit.T)[~torch.eye(len(maps), dtype=torch.bool)]


def episodes(shot: int, E: int = 8, seed: int = 0):
    """E 5-way episodes of the pool, one query per class: support [E, 5 * shot], labels [E, 5 * shot], query [E, 5]."""
    g = torch.Generator().manual_seed(seed)
    support, query = [], []
    for _ in range(E):
        classes = torch.randperm(CLASSES, generator=g)[:5]
        picks = [c * PER_CLASS + torch.randperm(PER_CLASS, generator=g)[: shot + 1] for c in classes.tolist()]
        support.append(torch.cat([p[:shot] for p in picks]))
        query.append(torch.stack([p[shot] for p in picks]))
    labels = torch.arange(5).repeat_interleave(shot).expand(E, -1)
    return torch.stack(support), labels, torch.stack(query)


def relative_error(head, maps: torch.Tensor, support, labels, query) -> float:
    """max over episodes of max |float32 logit - float64 logit| / max |float64 logit|: the head on the float32
    view of the maps against the same head cast to float64 on that view cast to float64."""
    view = methods.feature_view(maps, head.view)  # the head's input, float32
    logits = []
    for model, x in ((head, view), (copy.deepcopy(head).double(), view.double())):
        with torch.no_grad():
            reps = model.embed(x)
            logits.append(model(reps[support], labels, reps[query], 5).double())
    single, double = logits
    error = (single - double).abs().flatten(1).max(1).values
    return (error / double.abs().flatten(1).max(1).values).max().item()


#: spread of the maps, the least cosine of two videos it gives, the scale of the maps, whether two classes tie
CASES = {
    "cosine-0.998": dict(spread=0.025, least_cosine=0.998, scale=1.0, tie=False),
    "cosine-1": dict(spread=0.0015, least_cosine=0.99999, scale=1.0, tie=False),
    "norm-1e3": dict(spread=0.025, least_cosine=0.998, scale=1e3, tie=False),
    "tie": dict(spread=0.025, least_cosine=0.998, scale=1.0, tie=True),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("shot", [1, 5])
@pytest.mark.parametrize("name,config", HEADS)
def test_float32_logits_match_float64(name, config, shot, case):
    c = CASES[case]
    maps = nearly_parallel(SHAPES[name], c["spread"])
    assert cosines(maps).min() >= c["least_cosine"]
    support, labels, query = episodes(shot)
    if c["tie"]:  # class 1's support videos are class 0's: the two logits of every query are equal
        support = support.clone()
        support[:, shot : 2 * shot] = support[:, :shot]
    head = make(name, SHAPES[name], **config)
    assert relative_error(head, maps * c["scale"], support, labels, query) < TOLERANCE


@pytest.mark.parametrize("shot", [1, 5])
def test_trx_float32_logits_match_float64_at_the_reference_size(shot):
    """TRX as published: 8 frames of 2048 channels, d = 1152, pairs and triples; videos nearly parallel."""
    shape = (2048, 8, 1, 1)
    maps = nearly_parallel(shape, 0.0015, seed=1)
    assert cosines(maps).min() >= 0.99999
    support, labels, query = episodes(shot, E=2)
    assert relative_error(make("trx", shape), maps, support, labels, query) < TOLERANCE


# -- embeddings ---------------------------------------------------------------------------------------
#: videos of the pool: more than one chunk of 256, and a last block of embed_pool shorter than the others
POOL = 260


def pool_embeddings(head, maps: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every video's embedding [N, ...] (in pool order) by ways of chunking and ordering the pool."""
    N = len(maps)
    reverse = torch.arange(N - 1, -1, -1)
    shuffle = torch.randperm(N, generator=torch.Generator().manual_seed(0))
    in_chunks = lambda k: torch.cat([embed_pool(head, maps[i : i + k], CPU) for i in range(0, N, k)])  # noqa: E731
    return {
        "whole pool": embed_pool(head, maps, CPU),
        "alone": in_chunks(1),
        "chunks of 3": in_chunks(3),
        "chunks of 256": in_chunks(256),
        "reversed": embed_pool(head, maps[reverse], CPU)[reverse],
        "shuffled": embed_pool(head, maps[shuffle], CPU)[torch.argsort(shuffle)],
    }


@pytest.mark.parametrize("name,shape", [
    ("protonet", SHAPES["protonet"]), ("otam", SHAPES["otam"]), ("trx", (12, 5, 1, 1)), ("trx", SHAPES["trx"]),
    ("staf", SHAPES["staf"]), ("staf", (16, 1, 2, 3)),
    ("staf", (32, 1, 9, 1)),
])
def test_embedding_does_not_depend_on_how_the_pool_is_chunked(name, shape):
    head = make(name, shape, **({"dim": 8} if name == "trx" else {}))
    assert POOL > 256 and POOL % EMBED_BLOCK
    maps = torch.rand(POOL, *shape, generator=torch.Generator().manual_seed(1))
    ways = pool_embeddings(head, maps)
    whole = ways.pop("whole pool")
    for way, reps in ways.items():
        differing = [i for i in range(len(maps)) if not torch.equal(reps[i], whole[i])]
        assert not differing, f"{name}: videos {differing[:5]} (of {len(differing)}) differ {way}"

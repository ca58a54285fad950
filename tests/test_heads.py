"""The few-shot heads against their definitions (METHODS.md §2-4), written out plainly here at tiny sizes."""
from __future__ import annotations

import math
import os
from itertools import combinations

import pytest
import torch
import torch.nn.functional as F

import methods
from methods.otam import soft_dtw
from methods.staf import STAF
from methods.trx import TRX

#: where the batch-invariance checks run; FSV_TEST_DEVICE=cuda checks the GPU code paths on a machine with one
DEVICE = torch.device(os.environ.get("FSV_TEST_DEVICE", "cpu"))
STAF_SHAPE = (16, 1, 2, 3)  # C, T, H, W -> P = 6 positions
FRAMES_SHAPE = (12, 5, 1, 1)  # C = 12 channels, T = 5 frames


def make_head(name: str, shape: tuple | None = None, **config):
    context = {"feature_shape": shape or (STAF_SHAPE if name == "staf" else FRAMES_SHAPE), "num_train_classes": 7}
    if name == "trx":
        config.setdefault("dim", 8)
    return methods.create(name, context=context, **config)


def randomise_bn(head: STAF, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    bn = head.cam.conv1.bn
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(bn.num_features, generator=g) * 0.3)
        bn.running_var.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
        bn.weight.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
        bn.bias.copy_(torch.randn(bn.num_features, generator=g) * 0.1)


def view_of(name: str, n: int, seed: int = 0, shape: tuple = STAF_SHAPE) -> torch.Tensor:
    """n random videos in the head's view."""
    g = torch.Generator().manual_seed(seed)
    if name == "staf":
        C, T, H, W = shape
        return torch.rand(n, C, T * H * W, generator=g)  # post-ReLU maps are non-negative
    C, T = FRAMES_SHAPE[:2]
    return torch.rand(n, T, C, generator=g)


def random_episodes(n_videos: int, E: int, way: int, shot: int, query: int, seed: int = 0, shuffle: bool = False):
    g = torch.Generator().manual_seed(seed)
    picks = torch.stack([torch.randperm(n_videos, generator=g)[: way * (shot + query)] for _ in range(E)])
    support, query_ids = picks[:, : way * shot], picks[:, way * shot :]
    labels = torch.arange(way).repeat_interleave(shot).expand(E, -1).clone()
    if shuffle:
        order = torch.stack([torch.randperm(way * shot, generator=g) for _ in range(E)])
        support, labels = support.gather(1, order), labels.gather(1, order)
    query_labels = torch.arange(way).repeat_interleave(query).expand(E, -1).clone()
    return support, labels, query_ids, query_labels


def assert_matches_reference(head, views, episodes, reference, way: int = 3) -> None:
    """The head's logits for each episode equal reference(head, support views, labels, query views, way), the
    definition written out plainly; views [N, ...] in the head's view, episodes from `random_episodes`."""
    support, labels, query, _ = episodes
    reps = head.embed(views)
    logits = head(reps[support], labels, reps[query], way)
    for e in range(len(support)):
        expected = reference(head, views[support[e]], labels[e], views[query[e]], way)
        assert torch.allclose(logits[e], expected, rtol=1e-9, atol=1e-9)


# -- OTAM ---------------------------------------------------------------------------------------------
def hard_otam(D: list[list[float]]) -> float:
    """OTAM's dynamic programme with a hard minimum, on a plain list of rows."""
    Lq, Ls = len(D), len(D[0])
    P = [[0.0] + row + [0.0] for row in D]
    C = [[0.0] * (Ls + 2) for _ in range(Lq)]
    for m in range(Ls + 2):
        C[0][m] = P[0][m] + (C[0][m - 1] if m else 0.0)
    for l in range(1, Lq):
        C[l][0] = 0.0
        C[l][1] = P[l][1] + min(C[l - 1][0], C[l - 1][1], C[l][0])
        for m in range(2, Ls + 1):
            C[l][m] = P[l][m] + min(C[l - 1][m - 1], C[l][m - 1])
        C[l][Ls + 1] = P[l][Ls + 1] + min(C[l - 1][Ls], C[l - 1][Ls + 1], C[l][Ls])
    return C[Lq - 1][Ls + 1]


@pytest.mark.parametrize("lq,ls", [(5, 5), (4, 6), (6, 3), (1, 4), (3, 1)])
def test_otam_soft_min_tends_to_the_hard_min_programme(lq, ls):
    D = torch.rand(6, lq, ls, generator=torch.Generator().manual_seed(lq * 10 + ls), dtype=torch.float64) * 2
    for matrix in (D, D.transpose(1, 2)):  # both directions
        soft = soft_dtw(matrix, lam=1e-4)
        hard = torch.tensor([hard_otam(m.tolist()) for m in matrix], dtype=torch.float64)
        assert torch.allclose(soft, hard, atol=5e-3), (soft, hard)
        assert (soft <= hard + 1e-12).all()  # a soft minimum never exceeds the hard one


def test_otam_logits_are_minus_the_bidirectional_class_mean_distance():
    head = make_head("otam", lam=1e-4).eval()
    frames = view_of("otam", 12).double()
    support, labels, query, _ = random_episodes(12, 3, way=3, shot=2, query=1, shuffle=True)
    logits = head(frames[support], labels, frames[query], 3)
    for e in range(3):
        for q in range(query.shape[1]):
            for k in range(3):
                dists = []
                for s in support[e][labels[e] == k]:
                    a, b = frames[query[e, q]], frames[s]
                    D = 1 - (a @ b.T) / (a.norm(dim=1)[:, None] * b.norm(dim=1)[None] + 0.01)
                    dists.append(hard_otam(D.tolist()) + hard_otam(D.T.tolist()))
                assert logits[e, q, k].item() == pytest.approx(-sum(dists) / len(dists), abs=1e-2)


# -- TRX ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("frames", [8, 5, 3])
def test_trx_tuple_counts(frames):
    head = methods.create("trx", context={"feature_shape": (12, frames, 1, 1)}, dim=8)
    assert [t.n for t in head.transformers] == [math.comb(frames, 2), math.comb(frames, 3)]
    if frames == 8:
        assert [t.n for t in head.transformers] == [28, 56]
    for t in head.transformers:
        assert t.tuples.tolist() == [list(c) for c in combinations(range(frames), t.w)]
        assert (t.slots.sum(1) == t.w).all()  # each tuple uses one frame per slot


def trx_reference(head: TRX, support, labels, query, way: int) -> torch.Tensor:
    """TRX of one episode as METHODS.md §3 states it (eval mode): support [S, T, C], query [Q, T, C] -> [Q, way]."""
    T = support.shape[1]
    all_logits = []
    for t in head.transformers:
        pe = t.pe.pe[0, :T]
        tuples = list(combinations(range(T), t.w))

        def tuple_vectors(x):
            x = x + pe
            return torch.stack([x[:, list(c)].flatten(1) for c in tuples], dim=1)  # [N, n, w*C]

        s, q = tuple_vectors(support), tuple_vectors(query)
        ks, kq = t.norm_k(t.k_linear(s)), t.norm_k(t.k_linear(q))
        vs, vq = t.v_linear(s), t.v_linear(q)
        logits = torch.zeros(len(query), way, dtype=support.dtype)
        for c in range(way):
            k, v = ks[labels == c], vs[labels == c]  # [shot, n, d]
            scores = torch.einsum("qtd,sud->qtsu", kq, k) / math.sqrt(kq.shape[-1])
            att = torch.softmax(scores.flatten(2), dim=-1).view_as(scores)  # over all tuples of all shots
            prototype = torch.einsum("qtsu,sud->qtd", att, v)
            logits[:, c] = -((vq - prototype) ** 2).sum(dim=(1, 2)) / len(tuples)
        all_logits.append(logits)
    return torch.stack(all_logits).mean(0)


@pytest.mark.parametrize("shot,shuffle", [(1, False), (3, True)])
def test_trx_matches_its_definition(shot, shuffle):
    torch.manual_seed(0)
    head = make_head("trx").double().eval()
    frames = view_of("trx", 20).double()
    assert_matches_reference(head, frames, random_episodes(20, 4, way=3, shot=shot, query=2, shuffle=shuffle), trx_reference)


def test_trx_attention_sums_to_one_over_all_tuples_of_all_shots_of_a_class():
    torch.manual_seed(1)
    head = make_head("trx").eval()
    reps = head.embed(view_of("trx", 20))
    support, labels, query, _ = random_episodes(20, 2, way=3, shot=4, query=2)
    for t, q, s in zip(head.transformers, head._unpack(reps[query]), head._unpack(reps[support].view(2, 3, 4, -1))):
        att = t.attention(q, s)
        assert att.shape == (2, 6, 3, t.n, 4 * t.n)
        assert torch.allclose(att.sum(-1), torch.ones(2, 6, 3, t.n), atol=1e-6)


# -- STAF ---------------------------------------------------------------------------------------------
def staf_reference(head: STAF, support, labels, query, way: int) -> torch.Tensor:
    """STAF of one episode as METHODS.md §2 states it (eval mode): support [S, C, P], query [Q, C, P] -> [Q, way]."""
    conv1, bn, conv2 = head.cam.conv1.conv, head.cam.conv1.bn, head.cam.conv2

    def weights(R, skip):  # R [m_a, m_b], rows: positions of the map being re-weighted
        w = R.mean(0)
        h = conv1.weight.flatten(1) @ w + conv1.bias
        if not skip:
            h = (h - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
        w = conv2.weight.flatten(1) @ torch.relu(h) + conv2.bias
        a = (R * w[None, :]).mean(1)
        return torch.softmax(a / 0.025, dim=0) + 1

    unit = lambda x: F.normalize(x, dim=0)  # noqa: E731
    gap = lambda x: x.mean(1)  # noqa: E731
    cos = lambda a, b: (unit(a) * unit(b)).sum()  # noqa: E731
    protos = [support[labels == k].mean(0) for k in range(way)]
    p_self = [gap(p * weights(unit(p).T @ unit(p), way == 1)) for p in protos]
    scores = torch.zeros(len(query), way, dtype=support.dtype)
    for i, q in enumerate(query):
        q_self = gap(q * weights(unit(q).T @ unit(q), len(query) == 1))
        for k, p in enumerate(protos):
            R = unit(p).T @ unit(q)
            p_cross, q_cross = p * weights(R, way == 1), q * weights(R.T, way == 1)
            scores[i, k] = 7 * cos(gap(q_cross), gap(p_cross)) + head.alpha * 7 * cos(q_self, p_self[k])
    return scores


def test_staf_score_on_hand_made_maps():
    head = methods.create("staf", context={"feature_shape": (3, 1, 1, 2)}, hidden=2).eval()
    with torch.no_grad():
        head.cam.conv1.conv.weight.copy_(torch.tensor([[1.0, -1.0], [0.5, 2.0]]).view(2, 2, 1, 1))
        head.cam.conv1.conv.bias.copy_(torch.tensor([0.1, -0.2]))
        head.cam.conv2.weight.copy_(torch.tensor([[1.0, 0.0], [-1.0, 0.5]]).view(2, 2, 1, 1))
        head.cam.conv2.bias.copy_(torch.tensor([0.0, 0.3]))
        head.cam.conv1.bn.running_mean.copy_(torch.tensor([0.2, -0.1]))
        head.cam.conv1.bn.running_var.copy_(torch.tensor([2.0, 0.5]))
    # maps [C = 3, P = 2]: two classes of one shot, two queries
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    b = torch.tensor([[0.0, 3.0], [1.0, 0.0], [2.0, 1.0]])
    q1 = torch.tensor([[1.0, 0.5], [0.0, 2.0], [0.5, 1.0]])
    q2 = torch.tensor([[0.0, 2.0], [1.0, 1.0], [2.0, 0.0]])
    support, query = torch.stack([a, b]), torch.stack([q1, q2])

    def by_hand(x, other, skip):  # P = 2, hidden = 2, weights as set above
        xu, ou = x / x.norm(dim=0), other / other.norm(dim=0)
        R = xu.T @ ou  # [2, 2]
        h = torch.tensor([[1.0, -1.0], [0.5, 2.0]]) @ R.mean(0) + torch.tensor([0.1, -0.2])
        if not skip:
            h = (h - torch.tensor([0.2, -0.1])) / torch.sqrt(torch.tensor([2.0, 0.5]) + 1e-5)
        w = torch.tensor([[1.0, 0.0], [-1.0, 0.5]]) @ torch.relu(h) + torch.tensor([0.0, 0.3])
        A = torch.softmax((R * w).mean(1) / 0.025, dim=0) + 1
        assert ((A >= 1) & (A <= 2)).all()
        return (x * A).mean(1)  # GAP of the attended map

    cos = lambda u, v: float(u @ v / (u.norm() * v.norm()))  # noqa: E731
    expected = [[7 * cos(by_hand(q, p, False), by_hand(p, q, False)) + 7 * cos(by_hand(q, q, False), by_hand(p, p, False))
                 for p in (a, b)] for q in (q1, q2)]
    reps = head.embed(torch.cat([support, query]))
    logits = head(reps[:2][None], torch.tensor([[0, 1]]), reps[2:][None], 2)[0]
    assert torch.allclose(logits, torch.tensor(expected), atol=1e-4)


@pytest.mark.parametrize("shot,query,shuffle,shape", [
    (1, 2, False, STAF_SHAPE), (2, 1, True, STAF_SHAPE), (3, 2, True, STAF_SHAPE),
    (1, 2, False, (4, 2, 2, 2)),  # more positions (8) than channels (4)
])
def test_staf_matches_its_definition(shot, query, shuffle, shape):
    torch.manual_seed(0)
    head = make_head("staf", shape).double().eval()
    randomise_bn(head)
    maps = view_of("staf", 24, shape=shape).double()
    assert_matches_reference(head, maps, random_episodes(24, 5, way=3, shot=shot, query=query, shuffle=shuffle), staf_reference)


def test_staf_batchnorm_is_skipped_when_that_batch_dimension_is_one():
    torch.manual_seed(0)
    head = make_head("staf").double().eval()
    randomise_bn(head, seed=3)
    maps = view_of("staf", 10).double()
    reps = head.embed(maps)
    one_query = head(reps[[0, 1]][None], torch.tensor([[0, 1]]), reps[[2]][None], 2)[0]  # Q = 1: query self-BN skipped
    assert torch.allclose(one_query, staf_reference(head, maps[[0, 1]], torch.tensor([0, 1]), maps[[2]], 2), rtol=1e-9)
    one_way = head(reps[[0]][None], torch.tensor([[0]]), reps[[2, 3]][None], 1)[0]  # way = 1: prototype and cross BN skipped
    assert torch.allclose(one_way, staf_reference(head, maps[[0]], torch.tensor([0]), maps[[2, 3]], 1), rtol=1e-9)


def test_staf_attention_weights_lie_in_one_to_two():
    torch.manual_seed(0)
    head = make_head("staf").eval()
    randomise_bn(head)
    reps = head.embed(view_of("staf", 12) * 5)
    P = head.positions
    p_reps, q_reps = reps[:4][None], reps[4:][None]
    for temperature in (0.025, 1e-4):  # a very sharp softmax still stays within [1, 2]
        head.temperature = temperature
        _, alpha, A_q = head._cross(p_reps, q_reps, False, None)
        A_p = alpha / head._parts(p_reps)[3].unsqueeze(2)  # alpha = |P_i| A_i
        for A in (A_p, A_q.transpose(-1, -2)):  # [E, K, Q, P] and [E, Q, K, P]
            assert ((A >= 1 - 1e-6) & (A <= 2 + 1e-6)).all()
            assert torch.allclose(A.sum(-1), torch.full_like(A.sum(-1), P + 1.0))  # softmax over positions, + 1 each


def test_staf_training_batchnorm_statistics_are_per_episode():
    """Episodes batched together train exactly as the reference's one task at a time."""
    torch.manual_seed(0)
    head = make_head("staf").double().train()
    maps = view_of("staf", 24, seed=4).double()
    support, labels, query, query_labels = random_episodes(24, 3, way=3, shot=1, query=2)
    class_ids = torch.tensor([[0, 1, 2], [3, 4, 5], [6, 0, 1]])

    def loss(e, h):
        return h.loss(h.embed(maps[support[e]].flatten(0, 1)).unflatten(0, support[e].shape), labels[e],
                      h.embed(maps[query[e]].flatten(0, 1)).unflatten(0, query[e].shape), query_labels[e], 3, class_ids[e])

    together, apart = head, make_head("staf").double().train()
    apart.load_state_dict(together.state_dict())
    batched = loss(slice(None), together)
    singles = torch.stack([loss(slice(e, e + 1), apart) for e in range(3)])
    assert torch.allclose(batched, singles.mean(), rtol=1e-10)
    for name, value in together.cam.conv1.bn.state_dict().items():  # running statistics updated in the same order
        assert torch.allclose(value.double(), apart.cam.conv1.bn.state_dict()[name].double(), rtol=1e-10), name
    assert int(together.cam.conv1.bn.num_batches_tracked) == 3 * 4  # self x2 + cross x2 per episode


# -- every head ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["staf", "trx", "otam", "protonet"])
@pytest.mark.parametrize("shot", [1, 2])
def test_predictions_do_not_depend_on_the_episode_batch(name, shot):
    torch.manual_seed(0)
    head = make_head(name) if name != "protonet" else methods.create("protonet")
    head.eval()
    if hasattr(head, "episodes_per_block"):  # small blocks: 37 episodes then span several, the last one padded
        head.episodes_per_block = min(head.episodes_per_block, 8)
    if name == "staf":
        randomise_bn(head)
    features = view_of(name if name != "protonet" else "otam", 40)
    if name == "protonet":
        features = features.mean(1)
    head.to(DEVICE)
    with torch.no_grad():
        reps = head.embed(features.to(DEVICE))
        support, labels, query, _ = (t.to(DEVICE) for t in random_episodes(40, 37, way=5, shot=shot, query=1, seed=2))
        run = lambda i: head(reps[support[i]], labels[i], reps[query[i]], 5)  # noqa: E731
        whole = run(slice(None))
        chunks = torch.cat([run(slice(i, i + 5)) for i in range(0, 37, 5)])
        singles = torch.cat([run(slice(i, i + 1)) for i in range(37)])
    assert whole.shape == (37, 5, 5)
    for other in (chunks, singles):
        assert torch.equal(whole.argmax(-1), other.argmax(-1))
        assert torch.allclose(whole, other, rtol=1e-6, atol=1e-6)
        assert torch.equal(whole, other)  # bit for bit: no product may mix episodes


def separable_task(name: str, seed: int = 0):
    """Videos of 7 classes around class centres, so an episode's classes can be told apart."""
    g = torch.Generator().manual_seed(seed)
    shape = (STAF_SHAPE[0], 6) if name == "staf" else (FRAMES_SHAPE[1], FRAMES_SHAPE[0])
    centres = torch.randn(7, *shape, generator=g)
    video_class = torch.arange(7).repeat_interleave(4)
    videos = centres[video_class] + 0.3 * torch.randn(len(video_class), *shape, generator=g)
    E, way = 4, 5
    classes = torch.stack([torch.randperm(7, generator=g)[:way] for _ in range(E)])  # [E, way]
    pick = lambda k: torch.stack([torch.randperm(4, generator=g)[:k] for _ in range(E * way)]).view(E, way, k)  # noqa: E731
    ids = classes.unsqueeze(-1) * 4 + pick(3)  # [E, way, 3]: 1 shot + 2 queries
    support, query = ids[:, :, 0], ids[:, :, 1:].flatten(1)
    labels = torch.arange(way).expand(E, way)
    query_labels = torch.arange(way).repeat_interleave(2).expand(E, -1)
    return videos, support, labels, query, query_labels, classes


@pytest.mark.parametrize("name", ["staf", "trx"])
def test_loss_falls_on_a_small_training_run(name):
    torch.manual_seed(0)
    head = make_head(name).train()
    videos, support, labels, query, query_labels, classes = separable_task(name)
    opt = torch.optim.Adam(head.parameters(), lr=3e-2)
    losses = []
    for _ in range(40):
        s = head.embed(videos[support.flatten()]).unflatten(0, support.shape)
        q = head.embed(videos[query.flatten()]).unflatten(0, query.shape)
        loss = head.loss(s, labels, q, query_labels, 5, class_ids=classes)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(x) for x in losses)
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5, losses


# -- reference checkpoints ----------------------------------------------------------------------------
def staf_reference_checkpoint(P: int, C: int, classes: int, hidden: int = 6) -> dict:
    g = torch.Generator().manual_seed(5)
    r = lambda *shape: torch.randn(*shape, generator=g)  # noqa: E731
    head = {
        "cam.conv1.conv.weight": r(hidden, P, 1, 1), "cam.conv1.conv.bias": r(hidden),
        "cam.conv1.bn.weight": r(hidden).abs() + 0.5, "cam.conv1.bn.bias": r(hidden),
        "cam.conv1.bn.running_mean": r(hidden), "cam.conv1.bn.running_var": r(hidden).abs() + 0.5,
        "cam.conv1.bn.num_batches_tracked": torch.tensor(1000),
        "cam.conv2.weight": r(P, hidden, 1, 1), "cam.conv2.bias": r(P),
        "classifier.weight": r(classes, C, 1, 1, 1), "classifier.bias": r(classes),
    }
    backbone = {"base.conv1.weight": r(64, 3, 7, 7, 7), "base.bn1.running_mean": r(64), "base.layer1.0.conv1.weight": r(64, 64, 1, 1, 1)}
    return {f"module.{k}": v for k, v in {**backbone, **head}.items()}, head


def reference_pe(frames: int, channels: int, scale: float = 0.1) -> torch.Tensor:
    """TRX's positional encoding buffer as its reference builds it: [1, int(1.5 T), C]."""
    position = torch.arange(int(1.5 * frames)).unsqueeze(1)
    div = torch.exp(torch.arange(0, channels, 2) * -(math.log(10000.0) / channels))
    pe = torch.zeros(int(1.5 * frames), channels)
    pe[:, 0::2] = torch.sin(position * div) * scale
    pe[:, 1::2] = torch.cos(position * div) * scale
    return pe.unsqueeze(0)


def trx_reference_checkpoint(dim: int = 8, temporal_set=(2, 3)) -> tuple[dict, dict]:
    g = torch.Generator().manual_seed(6)
    C, T = FRAMES_SHAPE[:2]
    head = {}
    for i, w in enumerate(temporal_set):
        for name in ("k_linear", "v_linear"):
            head[f"transformers.{i}.{name}.weight"] = torch.randn(dim, w * C, generator=g)
            head[f"transformers.{i}.{name}.bias"] = torch.randn(dim, generator=g)
        for name in ("norm_k", "norm_v"):
            head[f"transformers.{i}.{name}.weight"] = torch.rand(dim, generator=g) + 0.5
            head[f"transformers.{i}.{name}.bias"] = torch.randn(dim, generator=g)
        head[f"transformers.{i}.pe.pe"] = reference_pe(T, C)
    backbone = {"resnet.0.weight": torch.randn(64, 3, 7, 7, generator=g), "resnet.1.running_var": torch.rand(64, generator=g)}
    return {"model_state_dict": {f"module.{k}": v for k, v in {**backbone, **head}.items()}, "iteration": 7}, head


def set_by_name(model: torch.nn.Module, values: dict) -> None:
    """Every parameter and saved buffer of the head set from the reference's tensor of the same name."""
    state = model.state_dict()
    assert set(values) == set(state), set(values) ^ set(state)
    with torch.no_grad():
        for name, tensor in values.items():
            state[name].copy_(tensor)


def test_staf_from_reference_round_trip():
    C, P = STAF_SHAPE[0], STAF_SHAPE[1] * STAF_SHAPE[2] * STAF_SHAPE[3]
    checkpoint, raw = staf_reference_checkpoint(P, C, classes=7)
    loaded, by_hand = make_head("staf"), make_head("staf")
    loaded.load_state_dict(STAF.from_reference(checkpoint), strict=True)
    set_by_name(by_hand, raw)
    maps = view_of("staf", 20)
    support, labels, query, query_labels = random_episodes(20, 3, way=4, shot=1, query=1)
    for model in (loaded, by_hand):
        model.eval()
    with torch.no_grad():
        outs = [m(m.embed(maps)[support], labels, m.embed(maps)[query], 4) for m in (loaded, by_hand)]
    assert torch.equal(outs[0], outs[1])
    losses = [m.train().loss(m.embed(maps)[support], labels, m.embed(maps)[query], query_labels, 4, torch.arange(4).expand(3, 4))
              for m in (loaded, by_hand)]
    assert torch.equal(losses[0], losses[1])


def test_trx_positional_encoding_is_the_reference_buffer():
    for t in make_head("trx").transformers:
        assert torch.allclose(t.pe.pe, reference_pe(FRAMES_SHAPE[1], FRAMES_SHAPE[0]), atol=1e-7)


def test_trx_from_reference_round_trip():
    checkpoint, raw = trx_reference_checkpoint()
    loaded, by_hand = make_head("trx"), make_head("trx")
    loaded.load_state_dict(TRX.from_reference(checkpoint), strict=True)
    set_by_name(by_hand, raw)
    frames = view_of("trx", 20)
    support, labels, query, _ = random_episodes(20, 3, way=4, shot=2, query=1)
    with torch.no_grad():
        outs = [m.eval()(m.embed(frames)[support], labels, m.embed(frames)[query], 4) for m in (loaded, by_hand)]
    assert torch.equal(outs[0], outs[1])


def test_from_reference_names_missing_and_unexpected_keys():
    checkpoint, _ = staf_reference_checkpoint(6, 16, classes=7)
    del checkpoint["module.cam.conv2.bias"]
    checkpoint["module.cam.extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"cam\.conv2\.bias.*cam\.extra\.weight"):
        STAF.from_reference(checkpoint)
    trx_checkpoint, _ = trx_reference_checkpoint()
    del trx_checkpoint["model_state_dict"]["module.transformers.1.norm_k.weight"]
    with pytest.raises(ValueError, match=r"transformers\.1\.norm_k\.weight"):
        TRX.from_reference(trx_checkpoint)
    with pytest.raises(ValueError, match="no TRX head weights"):
        TRX.from_reference({"resnet.0.weight": torch.zeros(1)})

"""Does a head keep the contract the harness relies on? Each property checked on small random backbone maps, in
seconds on a CPU, and reported by name with what broke:

    output shapes          embed takes the head's view [N, ...] and keeps one row per video; forward gives finite
                           logits [E, Q, way]
    batch invariance       every episode's logits are the same bits scored in one batch, in chunks, one per call,
                           in two threads at once, reversed or shuffled (`--batch-episodes` and the lanes of
                           harness/threads.py never change a prediction)
    determinism            the same inputs give the same bits twice, and a head rebuilt from the same seed and
                           settings gives them too
    embed/forward split    a video's embedding is the same bits whatever pool it is embedded in (alone, in chunks,
                           in any order), and scoring an episode on its own videos embedded together, as training
                           does, gives the pool's logits within TOLERANCE
    checkpoint round trip  the settings a checkpoint records (harness.checkpoints) rebuild the head, and with its
                           weights loaded it gives the same bits
    loss falls             a trainable head's loss halves in 40 Adam steps on a separable task (skipped for a head
                           without parameters)

The standards are the built-in tests' (tests/test_heads.py, tests/test_precision.py). In a test of your own:

    from harness.conformance import check_head
    check_head("mymethod")                                   # AssertionError naming each broken property
    check_head("mymethod", settings={"dim": 8}, feature_shape=(32, 8, 1, 1))
"""
from __future__ import annotations

import inspect
import math
import os
import tempfile
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

import methods
from harness.checkpoints import load_checkpoint, save_checkpoint
from harness.errors import HarnessError
from harness.evaluate import EMBED_BLOCK, embed_pool
from harness.threads import one_thread_per_lane
from methods.base import VIEWS, feature_view

PROPERTIES = ("output shapes", "batch invariance", "determinism", "embed/forward split", "checkpoint round trip", "loss falls")
#: the backbone map (C, T, H, W) the checks feed a head: four different sizes, so that no two axes can be mistaken
#: for each other; 3 time steps for frame tuples, 6 positions
FEATURE_SHAPE = (16, 3, 1, 2)
#: float32 logits of the same episode computed two legitimate ways may differ by this much of the episode's
#: largest |logit| (tests/test_precision.py's standard)
TOLERANCE = 5e-6
#: the pool: more videos than one embedding block, and a last block shorter than the others
CLASSES, PER_CLASS = 8, 9
#: (way, shot, queries per class) of the scored episodes, and how many: more than a few blocks of any head's size
GEOMETRIES = ((5, 1, 2), (5, 2, 1))
EPISODES = 37
#: the episodes also scored one per call (each call costs a whole block of a head that scores in blocks)
ALONE = torch.tensor([0, 1, 2, 18, 35, 36])
#: the training run of `loss falls` (tests/test_heads.py test_loss_falls_on_a_small_training_run)
TRAIN_STEPS, TRAIN_LR, TRAIN_CLASSES = 40, 3e-2, 7
#: the spread of a training video around its class's centre (whose entries have spread 1): the first a head does not
#: already tell apart before training (a loss below SOLVED) is the task; a wide head (TRX at d = 1152) solves 0.3
NOISE, SOLVED = (0.3, 1.0, 3.0), 0.01


@dataclass(frozen=True)
class Outcome:
    name: str  # one of PROPERTIES
    status: str  # "passed", "failed" or "skipped"
    detail: str = ""  # what broke, or why it was skipped


@dataclass
class Report:
    method: str
    settings: dict
    feature_shape: tuple
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    @property
    def ok(self) -> bool:
        return not self.failures

    def text(self) -> str:
        mark = {"passed": "ok  ", "failed": "FAIL", "skipped": "skip"}
        lines = [f"method '{self.method}' on maps (C, T, H, W) = {self.feature_shape}, settings {self.settings}:"]
        lines += [f"  {mark[o.status]} {o.name}" + (f": {o.detail}" if o.detail else "") for o in self.outcomes]
        broken = len(self.failures)
        lines.append(f"{broken} of {len(self.outcomes)} properties broken" if broken else "every property holds")
        return "\n".join(lines)


def check_head(method: str, settings: dict | None = None, feature_shape: tuple = FEATURE_SHAPE, seed: int = 0, device: str | torch.device = "cpu") -> Report:
    """For tests: the report when every property holds; an AssertionError naming each broken one otherwise."""
    report = check_method(method, settings, feature_shape, seed, device)
    if not report.ok:
        raise AssertionError(report.text())
    return report


def check_method(method: str, settings: dict | None = None, feature_shape: tuple = FEATURE_SHAPE, seed: int = 0, device: str | torch.device = "cpu") -> Report:
    """Every property of the head registered as `method` (or given as package.module:Class), built with `settings` (its defaults for the rest) for
    backbone maps of `feature_shape`. An unknown method, or settings its schema refuses, is a HarnessError. The
    caller's random state is left as it was."""
    from methods.external import method_name

    method = method_name(method, where="method")  # package.module:Class is imported and registered, as --method does
    if not methods.registered(method):
        raise HarnessError(f"unknown method '{method}'", where="method", fix=f"use one of: {', '.join(methods.list_methods())}, or register your own (README: Adding a method)")
    feature_shape = tuple(int(x) for x in feature_shape)
    if len(feature_shape) != 4 or min(feature_shape) < 1:
        raise HarnessError(f"feature shape {feature_shape} is not the (C, T, H, W) of a backbone map", where="feature_shape", fix="give four sizes of 1 or more, e.g. 16,3,1,2")
    context = {"feature_shape": feature_shape, "num_train_classes": TRAIN_CLASSES}
    try:
        resolved = methods.resolve_settings(method, dict(settings or {}), context)
    except methods.SettingsError as e:
        fix = (e.fix or f"use the settings the constructor of '{method}' takes").replace(f"methods.{method}.", "")  # not a protocol's field here
        raise HarnessError(str(e), where=f"settings of method '{method}'", fix=fix) from None
    # one intra-op thread, as `run` scores and embeds (harness/threads.py): the low bits of a reduction may depend on
    # how many threads split it, so the harness never lets them vary
    device = torch.device(device)
    gpus = [device.index or 0] if device.type == "cuda" else []  # dropout in training draws from the GPU's generator
    with torch.random.fork_rng(devices=gpus), one_thread_per_lane():
        c = _Case(method, dict(settings or {}), resolved, context, seed, device)
        c.build(seed)  # a head that cannot be built for these maps is the caller's to fix, not a property
        outcomes = [_run(name, check, c) for name, check in _CHECKS.items()]
    return Report(method, resolved, feature_shape, outcomes)


def _run(name: str, check: Callable[["_Case"], str | None], c: "_Case") -> Outcome:
    try:
        problem = check(c)
    except _Skip as e:
        return Outcome(name, "skipped", str(e))
    except Exception as e:  # a head that raises breaks the property it was being checked for
        frames = traceback.extract_tb(e.__traceback__)
        where = next((f for f in reversed(frames) if f"{os.sep}torch{os.sep}" not in f.filename), frames[-1])  # the head's line, not torch's
        return Outcome(name, "failed", f"raised {type(e).__name__}: {e} ({Path(where.filename).name}, line {where.lineno})")
    return Outcome(name, "failed" if problem else "passed", problem or "")


class _Skip(Exception):
    pass


class _Case:
    """The head's inputs: a pool of random maps [N, C, T, H, W] in classes, and seeded episodes over it."""

    def __init__(self, method: str, given: dict, settings: dict, context: dict, seed: int, device: torch.device):
        self.method, self.given, self.settings, self.context, self.seed, self.device = method, given, settings, context, seed, device
        g = torch.Generator().manual_seed(seed)
        C, T, H, W = context["feature_shape"]
        centres = torch.rand(CLASSES, C, T, H, W, generator=g)
        # non-negative like a backbone's post-ReLU map; a video is its class's centre and noise of its own
        self.maps = centres.repeat_interleave(PER_CLASS, 0) + 0.5 * torch.rand(CLASSES * PER_CLASS, C, T, H, W, generator=g)
        self.episodes = [_episodes(way, shot, query, seed) for way, shot, query in GEOMETRIES]

    def build(self, seed: int, by_hand: bool = False) -> torch.nn.Module:
        """The head, its parameters drawn from `seed`: through the registry as `run` and `train` build it, or
        `by_hand` from its class with the settings as the caller gave them and its own defaults for the rest."""
        torch.manual_seed(seed)
        cls = methods.get(self.method)
        if by_hand:
            accepted = inspect.signature(cls.__init__).parameters
            head = cls(**{k: v for k, v in self.context.items() if k in accepted}, **self.given)
        else:
            try:
                head = methods.create(self.method, context=self.context, **self.settings)
            except (ValueError, TypeError) as e:
                raise HarnessError(f"method '{self.method}' cannot be built for maps (C, T, H, W) = {self.context['feature_shape']}: {e}",
                                   fix="pass a feature shape and settings the head accepts (--feature-shape, --set)") from None
        return head.to(self.device).eval()

    def view(self, maps: torch.Tensor | None = None) -> torch.Tensor:
        """maps [N, C, T, H, W] (default: the pool) in the head's view."""
        return feature_view(self.maps if maps is None else maps, methods.get(self.method).view)

    def reps(self, head) -> torch.Tensor:
        """Every video of the pool embedded as `run` embeds it: [N, ...]."""
        return embed_pool(head, self.maps, self.device)

    def logits(self, head) -> torch.Tensor:
        """The first geometry's episodes scored in one call on the pool as `head` embeds it: [E, Q, way]."""
        return _score(head, self.reps(head), self.episodes[0])


def _episodes(way: int, shot: int, query: int, seed: int):
    """EPISODES episodes over the pool, drawn as harness.episodes draws them: support [E, way*shot] and query
    [E, way*query] video positions, class-major, and support labels [E, way*shot]."""
    support, queries = [], []
    for i in range(EPISODES):
        rng = np.random.default_rng([seed, i])
        classes = rng.choice(CLASSES, way, replace=False)
        picks = np.stack([c * PER_CLASS + rng.choice(PER_CLASS, shot + query, replace=False) for c in classes])  # [way, shot + query]
        support.append(picks[:, :shot].ravel())
        queries.append(picks[:, shot:].ravel())
    labels = torch.arange(way).repeat_interleave(shot).expand(EPISODES, -1).contiguous()
    return way, torch.from_numpy(np.stack(support)), labels, torch.from_numpy(np.stack(queries))


@torch.inference_mode()
def _score(head, reps: torch.Tensor, episodes, ids=None) -> torch.Tensor:
    """Logits [E, Q, way] of the episodes `ids` (default: all, in order), gathered from the embedded pool."""
    way, support, labels, query = episodes
    ids = torch.arange(len(support)) if ids is None else torch.as_tensor(ids)
    d = reps.device
    return head(reps[support[ids].to(d)], labels[ids].to(d), reps[query[ids].to(d)], way)


def _geometry(episodes) -> str:
    way, support, _, query = episodes
    per_class = query.shape[1] // way
    return f"{way}-way {support.shape[1] // way}-shot episodes of {per_class} {'query' if per_class == 1 else 'queries'} per class"


def _first_difference(expected: torch.Tensor, got: torch.Tensor, numbers: list[int] | None = None, tolerance: float | None = None) -> str | None:
    """Where logits [E, Q, way] differ: None when bit-identical (or, with `tolerance`, within it relative to each
    episode's largest |logit|), else the first episode that differs (its number from `numbers`), by how much, and
    whether a prediction moves."""
    if got.shape != expected.shape:
        return f"logits of shape {tuple(got.shape)} instead of {tuple(expected.shape)}"
    for i in range(expected.shape[0]):
        e = numbers[i] if numbers else i
        a, b = expected[i].double(), got[i].double()
        gap = (a - b).abs().max().item()
        scale = a.abs().max().item()
        same = torch.equal(expected[i], got[i]) if tolerance is None else gap <= tolerance * scale
        if not same:
            moved = int((a.argmax(-1) != b.argmax(-1)).sum())
            return (f"episode {e}'s logits differ by up to {gap:.3g} ({gap / scale if scale else math.inf:.2g} of its largest |logit|"
                    + (f", more than {tolerance:g}" if tolerance is not None else "") + "), "
                    + (f"{moved} of its {a.shape[0]} predictions change" if moved else "its predictions do not change"))
    return None


# -- the properties ---------------------------------------------------------------------------------------------


def _output_shapes(c: _Case) -> str | None:
    cls = methods.get(c.method)
    if cls.view not in VIEWS:
        return f"view is {cls.view!r}, not one of {', '.join(VIEWS)}"
    head = c.build(c.seed)
    with torch.inference_mode():
        for n in (1, 3, 7):
            x = c.view(c.maps[:n]).to(c.device)  # [n, *view]
            out = head.embed(x)
            if not isinstance(out, torch.Tensor):
                return f"embed of {n} videos returned {type(out).__name__}, not a tensor [N, ...]"
            if out.dim() < 1 or out.shape[0] != n:
                return f"embed of {n} videos in the '{cls.view}' view {tuple(x.shape)} returned shape {tuple(out.shape)}: its first dimension must be the {n} videos"
            if n == 1:
                row = out.shape[1:]
            elif out.shape[1:] != row:
                return f"embed gives a video the shape {tuple(out.shape[1:])} among {n} videos and {tuple(row)} alone: a video's embedding must not depend on the others"
            if not out.is_floating_point():
                return f"embed returned {out.dtype}, not floating point"
        reps = c.reps(head)
        for episodes in c.episodes:
            way, support, _, query = episodes
            logits = _score(head, reps, episodes)
            expected = (support.shape[0], query.shape[1], way)
            if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != expected:
                shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
                return f"forward on {len(support)} {_geometry(episodes)} returned {shape}, not [E, Q, way] = {expected}"
            if not logits.is_floating_point() or not torch.isfinite(logits).all():
                return f"forward on {_geometry(episodes)} returned logits that are not all finite floating-point numbers"
    return None


def _batch_invariance(c: _Case) -> str | None:
    head = c.build(c.seed)
    reps = c.reps(head)
    for episodes in c.episodes:
        E = len(episodes[1])
        whole = _score(head, reps, episodes)
        reverse, shuffle = torch.arange(E - 1, -1, -1), torch.randperm(E, generator=torch.Generator().manual_seed(c.seed))
        ways = {
            "in chunks of 8": (lambda: torch.cat([_score(head, reps, episodes, range(i, min(i + 8, E))) for i in range(0, E, 8)]), slice(None)),
            "one per call": (lambda: torch.cat([_score(head, reps, episodes, [i]) for i in ALONE.tolist()]), ALONE),
            "in two threads at once": (lambda: torch.cat(_side_by_side(lambda i: _score(head, reps, episodes, range(i, min(i + 8, E))), range(0, E, 8))), slice(None)),
            "in reverse order": (lambda: _score(head, reps, episodes, reverse)[reverse], slice(None)),
            "shuffled": (lambda: _score(head, reps, episodes, shuffle)[torch.argsort(shuffle)], slice(None)),
        }
        for how, (score, which) in ways.items():
            problem = _first_difference(whole[which], score(), torch.arange(E)[which].tolist())
            if problem:
                return (f"{_geometry(episodes)} scored {how} against all {E} in one call: {problem}. A prediction must not depend on "
                        "the other episodes of a batch: keep every sum and product within an episode (methods/base.py: per_episode, in_episode_blocks)")
    return None


def _side_by_side(work: Callable, items) -> list:
    """[work(item) for item in items] in two Python threads at once, as `run` scores slices of episodes in lanes
    (harness/threads.py): a head that keeps per-call state on itself gives other logits."""
    def in_inference_mode(item):
        with torch.inference_mode():
            return work(item)

    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(in_inference_mode, items))


def _determinism(c: _Case) -> str | None:
    head = c.build(c.seed)
    first = c.logits(head)
    problem = _first_difference(first, c.logits(head))
    if problem:
        return f"the same head called twice on the same videos: {problem}. At evaluation (eval mode) nothing may be drawn at random"
    problem = _first_difference(first, c.logits(c.build(c.seed)))
    if problem:
        return (f"a head rebuilt with seed {c.seed} and the same settings: {problem}. Its construction must draw only from torch's "
                "seeded generator (no time, no unseeded numpy or random)")
    return None


def _embed_split(c: _Case) -> str | None:
    head = c.build(c.seed)
    whole = c.reps(head)  # [N, ...]
    N = len(c.maps)
    reverse, shuffle = torch.arange(N - 1, -1, -1), torch.randperm(N, generator=torch.Generator().manual_seed(c.seed))
    in_chunks = lambda k: torch.cat([embed_pool(head, c.maps[i : i + k], c.device) for i in range(0, N, k)])  # noqa: E731
    ways = {
        "alone": lambda: in_chunks(1),
        "in chunks of 3": lambda: in_chunks(3),
        "in reverse order": lambda: embed_pool(head, c.maps[reverse], c.device)[reverse],
        "shuffled": lambda: embed_pool(head, c.maps[shuffle], c.device)[torch.argsort(shuffle)],
    }
    for how, embed in ways.items():
        reps = embed()
        if reps.shape != whole.shape:
            return f"the pool of {N} videos embedded {how} has shape {tuple(reps.shape)}, in one pass {tuple(whole.shape)}"
        differing = [i for i in range(N) if not torch.equal(reps[i], whole[i])]
        if differing:
            return (f"videos {differing[:5]} (of {len(differing)}) of a pool of {N} get other embeddings {how} than in the whole pool "
                    f"(embedded {EMBED_BLOCK} at a time): embed must treat each video on its own, never the pool's statistics")
    # end to end, as training runs: each call embeds the episodes' own videos, then scores them
    way, support, labels, query = episodes = c.episodes[0]
    split = _score(head, whole, episodes)
    with torch.inference_mode():
        view = c.view().to(c.device)
        s = head.embed(view[support.flatten()]).unflatten(0, support.shape)
        q = head.embed(view[query.flatten()]).unflatten(0, query.shape)
        direct = head(s, labels.to(c.device), q, way)
    problem = _first_difference(split, direct, tolerance=TOLERANCE)
    if problem:
        return (f"{_geometry(episodes)} scored on their own videos embedded in one call against on the embedded pool: {problem}. "
                "forward must see in an embedding everything a video contributes")
    return None


def _checkpoint_round_trip(c: _Case) -> str | None:
    original = c.build(c.seed, by_hand=True)
    expected = c.logits(original)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "best.pt"
        save_checkpoint(path, {"method": c.method, "method_config": original.config(), "num_train_classes": TRAIN_CLASSES, "state_dict": original.state_dict()})
        state = load_checkpoint(path)
    recorded = state["method_config"]
    if set(recorded) != set(c.settings):
        return f"the checkpoint records the settings {sorted(recorded)}, the head takes {sorted(c.settings)}"
    try:
        settings = methods.resolve_settings(c.method, recorded, c.context)
    except methods.SettingsError as e:
        return f"the settings the checkpoint records cannot rebuild the head: {e}"
    torch.manual_seed(c.seed + 1)  # other initial weights: the checkpoint's must replace them all
    rebuilt = methods.create(c.method, context={**c.context, "num_train_classes": state["num_train_classes"]}, **settings).to(c.device).eval()
    try:
        rebuilt.load_state_dict(state["state_dict"])
    except RuntimeError as e:
        return f"the rebuilt head does not take the checkpoint's weights: {str(e).splitlines()[0]}"
    if rebuilt.config() != recorded:
        return f"the rebuilt head records the settings {rebuilt.config()}, the checkpoint {recorded}"
    problem = _first_difference(expected, c.logits(rebuilt))
    if problem:
        return (f"the head rebuilt from its checkpoint (settings {recorded} read back, weights loaded) against the head as built: {problem}. "
                "Everything the logits depend on must be a setting that JSON holds as given, a parameter or a persistent buffer")
    return None


def _loss_falls(c: _Case) -> str | None:
    cls = methods.get(c.method)
    head = c.build(c.seed)
    params = [p for p in head.parameters() if p.requires_grad]
    if not getattr(cls, "trainable", False):
        if params:
            raise _Skip(f"{sum(p.numel() for p in params):,} parameters, but trainable is False: `train` will not fit them")
        raise _Skip("no parameters to train")
    if not params:
        return "trainable is True but the head has no parameters that require a gradient"
    if getattr(cls, "train_defaults", None):
        from harness.protocol import train_spec

        train_spec(dict(cls.train_defaults), f"{c.method}'s train_defaults")
    head.train()
    for noise in NOISE:
        videos, support, labels, query, query_labels, classes = task = _separable_task(c, noise)
        view = c.view(videos).to(c.device)
        with torch.no_grad():
            start = _train_loss(head, view, *task[1:]).item()
        if not start < SOLVED:
            break
    else:
        raise _Skip(f"the loss is below {SOLVED:g} before any training on every task tried (noise {', '.join(map(str, NOISE))}): nothing left to learn")
    optimizer = torch.optim.Adam(params, lr=TRAIN_LR)
    losses = []
    for _ in range(TRAIN_STEPS):
        loss = _train_loss(head, view, support, labels, query, query_labels, classes)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if not math.isfinite(losses[-1]):
            return f"the loss is {losses[-1]} at step {len(losses)} of {TRAIN_STEPS} (Adam, lr {TRAIN_LR:g}) on a separable task (noise {noise})"
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    if not last < 0.5 * first:
        return (f"{TRAIN_STEPS} Adam steps (lr {TRAIN_LR:g}) on a separable task of {TRAIN_CLASSES} classes (noise {noise}) took the loss from {first:.4g} "
                f"(mean of the first 5 steps) to {last:.4g} (of the last 5), not below half: do the logits depend on the parameters through the loss?")
    return None


def _train_loss(head, view, support, labels, query, query_labels, classes) -> torch.Tensor:
    """The head's training loss on episodes of videos in its view, each call embedding them as `train` does."""
    d = view.device
    s = head.embed(view[support.flatten()]).unflatten(0, support.shape)  # [E, S, ...]
    q = head.embed(view[query.flatten()]).unflatten(0, query.shape)  # [E, Q, ...]
    return head.loss(s, labels.to(d), q, query_labels.to(d), labels.shape[1], class_ids=classes.to(d))


def _separable_task(c: _Case, noise: float):
    """Maps [28, C, T, H, W] of TRAIN_CLASSES classes around class centres, and 4 training episodes of 5 ways, one
    shot and 2 queries per class, with the classes' global indices (tests/test_heads.py separable_task)."""
    g = torch.Generator().manual_seed(c.seed)
    shape = c.context["feature_shape"]
    centres = torch.randn(TRAIN_CLASSES, *shape, generator=g)
    video_class = torch.arange(TRAIN_CLASSES).repeat_interleave(4)
    videos = centres[video_class] + noise * torch.randn(len(video_class), *shape, generator=g)
    E, way = 4, 5
    classes = torch.stack([torch.randperm(TRAIN_CLASSES, generator=g)[:way] for _ in range(E)])  # [E, way]
    picks = torch.stack([torch.randperm(4, generator=g)[:3] for _ in range(E * way)]).view(E, way, 3)
    ids = classes.unsqueeze(-1) * 4 + picks  # [E, way, 3]: 1 shot + 2 queries
    support, query = ids[:, :, 0], ids[:, :, 1:].flatten(1)
    labels = torch.arange(way).expand(E, way)
    query_labels = torch.arange(way).repeat_interleave(2).expand(E, -1)
    return videos, support, labels, query, query_labels, classes


_CHECKS: dict[str, Callable[[_Case], str | None]] = dict(zip(PROPERTIES, (
    _output_shapes, _batch_invariance, _determinism, _embed_split, _checkpoint_round_trip, _loss_falls)))

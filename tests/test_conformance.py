"""The conformance check: every built-in head keeps the contract, and a head that breaks one property is reported
by that property's name, with what broke."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import methods
from harness.conformance import PROPERTIES, check_head, check_method
from harness.errors import HarnessError
from methods.base import Head, class_means
from methods.registry import _REGISTRY, register

ROOT = Path(__file__).resolve().parents[1]
#: where the checks run; FSV_TEST_DEVICE=cuda checks the GPU code paths on a machine with one
DEVICE = os.environ.get("FSV_TEST_DEVICE", "cpu")


@pytest.mark.parametrize("name,settings", [
    ("protonet", {}), ("protonet", {"metric": "cosine"}), ("otam", {}), ("otam", {"bidirectional": False}),
    ("trx", {"dim": 8}),  # the reference's d = 1152 checks the same properties, ten times slower
    ("staf", {}),
])
def test_built_in_heads_keep_the_contract(name, settings):
    report = check_head(name, settings, device=DEVICE)
    assert [o.name for o in report.outcomes] == list(PROPERTIES)
    expected = "passed" if methods.get(name).trainable else "skipped"  # a head without parameters has nothing to train
    assert {o.name: o.status for o in report.outcomes}["loss falls"] == expected


def test_a_check_leaves_the_callers_random_state_alone():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    check_head("protonet")
    assert torch.equal(torch.get_rng_state(), before)


def test_unknown_method_is_an_error_naming_the_registered_ones():
    with pytest.raises(HarnessError, match=r"unknown method 'nosuchhead'(.|\n)*protonet"):
        check_method("nosuchhead")


def test_settings_the_schema_refuses_are_an_error_before_any_check():
    with pytest.raises(HarnessError, match="metric"):
        check_method("protonet", {"metric": "manhattan"})


# -- heads that each break one property ---------------------------------------------------------------------
class _Nearest(Head):
    """ProtoNet's squared distance, the base of the broken heads below."""

    view = "vector"

    def forward(self, support, support_labels, query, way):  # [E, S, C], [E, S], [E, Q, C]
        prototypes = class_means(support, support_labels, way)  # [E, way, C]
        return -((query.unsqueeze(2) - prototypes.unsqueeze(1)) ** 2).sum(-1)  # [E, Q, way]


class CentredOnTheBatch(_Nearest):
    """Centres on the mean support vector of all the episodes of a call, not of each episode."""

    def forward(self, support, support_labels, query, way):
        r = support.mean(dim=(0, 1), keepdim=True)  # [1, 1, C]
        return super().forward(support - r, support_labels, query - r, way)


class WaysBeforeQueries(_Nearest):
    """Returns [E, way, Q]."""

    def forward(self, support, support_labels, query, way):
        return super().forward(support, support_labels, query, way).transpose(1, 2)


class NoisyAtEvaluation(_Nearest):
    """Dropout that ignores eval mode."""

    def forward(self, support, support_labels, query, way):
        return super().forward(F.dropout(support, 0.5, training=True), support_labels, query, way)


class UnseededInit(_Nearest):
    """A projection drawn from an unseeded numpy generator: a checkpoint keeps it, the seed does not."""

    def __init__(self, feature_shape=None):
        super().__init__()
        C = feature_shape[0]
        self.projection = nn.Parameter(torch.from_numpy(np.random.default_rng().standard_normal((C, C))).float(), requires_grad=False)

    def forward(self, support, support_labels, query, way):
        return super().forward(support @ self.projection, support_labels, query @ self.projection, way)


class FrameWeights(Head):
    """Frame weights keyed by frame number: JSON keeps the keys as text, so the rebuilt head weighs no frame."""

    view = "frames"

    def __init__(self, frame_weights={0: 3.0}):  # noqa: B006 (read, never changed)
        super().__init__()
        self.frame_weights = frame_weights

    def forward(self, support, support_labels, query, way):  # [E, S, T, C], [E, S], [E, Q, T, C]
        w = torch.tensor([float(self.frame_weights.get(t, 1.0)) for t in range(support.shape[2])], device=support.device)
        s, q = (support * w[:, None]).flatten(2), (query * w[:, None]).flatten(2)
        return _Nearest.forward(self, s, support_labels, q, way)


class UnsavedProjection(_Nearest):
    """A random projection kept as a plain tensor attribute: not in the state dict, so not in a checkpoint."""

    def __init__(self, feature_shape=None):
        super().__init__()
        self.projection = torch.randn(feature_shape[0], 8)

    def forward(self, support, support_labels, query, way):
        p = self.projection.to(support.device)
        return super().forward(support @ p, support_labels, query @ p, way)


class FrozenByData(_Nearest):
    """A learned projection read through `.data` (no gradient), and a learned offset that the softmax ignores."""

    trainable = True

    def __init__(self, feature_shape=None):
        super().__init__()
        self.projection = nn.Linear(feature_shape[0], 8)
        self.offset = nn.Parameter(torch.zeros(()))

    def forward(self, support, support_labels, query, way):
        w = self.projection.weight.data  # [8, C]
        return super().forward(support @ w.T, support_labels, query @ w.T, way) + self.offset


class CentredOnThePool(_Nearest):
    """embed subtracts the mean of the videos of the call: a video's embedding depends on the others."""

    def embed(self, features):  # [N, C]
        return features - features.mean(dim=0, keepdim=True)


@contextmanager
def registered(cls: type, name: str):
    """`cls` registered as `name` for the block only, so no other test sees it."""
    register(name)(cls)
    try:
        yield name
    finally:
        _REGISTRY.pop(name, None)


@pytest.mark.parametrize("cls,broken,says", [
    (CentredOnTheBatch, "batch invariance", r"scored (one per call|in chunks of 8) against all 37 in one call: episode \d+'s logits differ"),
    (WaysBeforeQueries, "output shapes", r"returned \(37, 5, 10\), not \[E, Q, way\] = \(37, 10, 5\)"),
    (NoisyAtEvaluation, "determinism", "the same head called twice on the same videos"),
    (UnseededInit, "determinism", "a head rebuilt with seed 0 and the same settings"),
    (FrameWeights, "checkpoint round trip", r"the head rebuilt from its checkpoint \(settings \{'frame_weights': \{'0': 3.0\}\}"),
    (UnsavedProjection, "checkpoint round trip", "the head rebuilt from its checkpoint"),
    (FrozenByData, "loss falls", r"took the loss from [\d.]+ \(mean of the first 5 steps\) to [\d.]+ \(of the last 5\), not below half"),
    (CentredOnThePool, "embed/forward split", r"videos \[0, 1, 2, 3, 4\] \(of 72\) of a pool of 72 get other embeddings alone"),
])
def test_a_broken_property_fails_by_its_name(cls, broken, says):
    with registered(cls, f"broken-{cls.__name__.lower()}") as name:
        with pytest.raises(AssertionError, match=rf"FAIL {re.escape(broken)}: ") as failure:
            check_head(name)
        report = check_method(name)
    assert broken in {o.name for o in report.failures}
    detail = next(o.detail for o in report.failures if o.name == broken)
    assert re.search(says, detail), detail
    assert f"FAIL {broken}: {detail[:30]}" in str(failure.value)  # (an unseeded head's figures differ from run to run)
    if cls is not NoisyAtEvaluation:  # random logits break every comparison; each other head breaks its own property only
        assert [o.name for o in report.failures] == [broken], report.text()


def test_a_head_that_raises_fails_with_the_exception_and_its_line():
    class Raises(_Nearest):
        def forward(self, support, support_labels, query, way):
            if support.shape[0] > 1:
                raise RuntimeError("only one episode at a time")
            return super().forward(support, support_labels, query, way)

    with registered(Raises, "broken-raises") as name:
        report = check_method(name)
    failed = {o.name: o.detail for o in report.failures}
    assert "output shapes" in failed and "batch invariance" in failed
    assert failed["output shapes"].startswith("raised RuntimeError: only one episode at a time (test_conformance.py, line ")


# -- the command line ---------------------------------------------------------------------------------------
def bench(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "bench.py"), *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_check_method_command_passes_a_built_in_head():
    done = bench("check-method", "protonet")
    assert done.returncode == 0, done.stderr
    for name in PROPERTIES:
        assert name in done.stdout
    assert "every property holds" in done.stdout


def test_check_method_command_refuses_an_unknown_name_without_a_traceback():
    done = bench("check-method", "nosuchhead")
    assert done.returncode == 2
    assert "unknown method 'nosuchhead'" in done.stderr and "fix:" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_check_method_command_exits_1_naming_the_broken_property(tmp_path):
    (tmp_path / "batchy.py").write_text(
        "from methods.base import Head, class_means\n\n"
        "class Batchy(Head):\n"
        "    view = 'vector'\n\n"
        "    def forward(self, support, support_labels, query, way):\n"
        "        r = support.mean(dim=(0, 1), keepdim=True)  # over every episode of the call\n"
        "        p = class_means(support - r, support_labels, way)\n"
        "        return -(((query - r).unsqueeze(2) - p.unsqueeze(1)) ** 2).sum(-1)\n")
    done = bench("check-method", "batchy:Batchy", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert "FAIL batch invariance: " in done.stdout and "1 of 6 properties broken" in done.stdout

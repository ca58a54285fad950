"""Episodic training: the loss falls, selection happens on val, and --resume reaches the same result."""
import json

import pytest
import torch
from torch import nn

import methods
from harness.checkpoints import load_checkpoint
from harness.errors import HarnessError
from harness.pipeline import run_method
from harness.protocol import load_protocol
from harness.train import train
from conftest import settings
from methods.base import Head, class_means


class _LinearProto(Head):
    """A prototype head on a learned linear map: the smallest head with something to train."""

    view = "vector"
    trainable = True
    train_defaults = {"steps": 12, "tasks_per_batch": 4, "query_per_class": 2, "val_every": 4, "val_episodes": 40, "lr": 0.01}

    def __init__(self, feature_shape, dim: int = 16):
        super().__init__()
        self.map = nn.Linear(feature_shape[0], dim)

    def embed(self, features):  # [N, C] -> [N, dim]
        return self.map(features)

    def forward(self, support, support_labels, query, way):
        prototypes = class_means(support, support_labels, way)
        return -((query.unsqueeze(2) - prototypes.unsqueeze(1)) ** 2).sum(-1)


@pytest.fixture(scope="module", autouse=True)
def linear_proto():
    methods.register("test-linear-proto")(_LinearProto)
    yield
    from methods import registry

    registry._REGISTRY.pop("test-linear-proto")


def test_training_selects_on_val_and_run_finds_the_checkpoint(write_protocol, home, tmp_path):
    p = load_protocol(write_protocol())
    summary = train(p, "test-linear-proto", settings(home), out=None)
    assert summary["selected_on"]["part"] == "val"
    log = [json.loads(line) for line in (home / "checkpoints/tiny-5w1s/test-linear-proto/train_log.jsonl").read_text().splitlines()]
    val_points = [e for e in log if "val_accuracy" in e]
    assert [e["step"] for e in val_points] == [4, 8, 12]
    assert summary["selected_val_accuracy"] == max(e["val_accuracy"] for e in val_points)
    best = load_checkpoint(home / "checkpoints/tiny-5w1s/test-linear-proto/best.pt")
    assert best["step"] == summary["selected_step"]
    result = run_method(p, "test-linear-proto", settings(home, tmp_path))
    assert result["checkpoint_sha256"] and result["n_episodes"] == 200


def test_resume_reaches_the_same_result_as_an_uninterrupted_run(write_protocol, home, tmp_path, monkeypatch):
    p = load_protocol(write_protocol())
    whole = train(p, "test-linear-proto", settings(home), out=tmp_path / "whole")

    import harness.train as train_module

    real = train_module.save_checkpoint
    saves = []

    def save_then_stop(path, payload):
        real(path, payload)
        saves.append(path.name)
        if path.name == "last.pt" and payload["step"] == 8:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "save_checkpoint", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        train(p, "test-linear-proto", settings(home), out=tmp_path / "killed")
    monkeypatch.setattr(train_module, "save_checkpoint", real)
    resumed = train(p, "test-linear-proto", settings(home), resume=True, out=tmp_path / "killed")

    a = load_checkpoint(tmp_path / "whole/last.pt")
    b = load_checkpoint(tmp_path / "killed/last.pt")
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key])
    assert a["history"] == b["history"]
    assert whole["selected_step"] == resumed["selected_step"]
    assert (tmp_path / "whole/train_log.jsonl").read_bytes() == (tmp_path / "killed/train_log.jsonl").read_bytes()


def test_run_without_a_checkpoint_says_how_to_train(write_protocol, home, tmp_path):
    p = load_protocol(write_protocol(name="untrained"))
    with pytest.raises(HarnessError, match="fsv-bench train --protocol .* --method test-linear-proto"):
        run_method(p, "test-linear-proto", settings(home, tmp_path))


def test_protonet_has_nothing_to_train(write_protocol, home):
    with pytest.raises(HarnessError, match="nothing to train"):
        train(load_protocol(write_protocol()), "protonet", settings(home))


def test_fine_tuning_the_backbone_changes_it_and_run_uses_the_tuned_weights(write_protocol, home, tmp_path):
    extra = "train: {finetune_backbone: true, steps: 2, tasks_per_batch: 2, val_every: 2, val_episodes: 10, crop: random, flip: true, jitter: 2}\n"
    p = load_protocol(write_protocol(name="tuned", extra=extra))
    summary = train(p, "test-linear-proto", settings(home))
    best = load_checkpoint(home / "checkpoints/tuned/test-linear-proto/best.pt")
    assert best["backbone"]["weights_sha256"] != best["backbone"]["base_weights_sha256"]
    assert summary["selected_step"] == 2
    result = run_method(p, "test-linear-proto", settings(home, tmp_path))
    assert result["backbone"]["weights_sha256"] == best["backbone"]["weights_sha256"]
    assert result["videos_embedded_this_run"] == 42, "the tuned backbone's features are new, not the cached ones"


def test_train_time_sampling_stays_inside_the_video():
    import numpy as np

    from harness.data.clips import jittered_indices

    rng = np.random.default_rng(0)
    for n in (16, 17, 40, 300):
        for _ in range(50):
            idx = jittered_indices(n, 16, 5, rng)
            assert idx.min() >= 0 and idx.max() <= n - 1 and (np.diff(idx) >= 0).all() and len(idx) == 16

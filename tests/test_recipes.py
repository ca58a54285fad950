"""Training recipes: on a real benchmark a head trains as its reference does, the quickstart's synthetic protocols
keep their short schedule, a protocol field wins over a head's default, and a training records what it used.

The reference numbers, read from the references' code:
  STAF (`lxhit/STAF`, STAF_run.py and the README's command): torch.optim.SGD(lr) with no momentum or weight
  decay, --learning_rate 0.01, --tasks_per_batch 64, --training_iterations 128000 (tasks), --query_per_class 1,
  --test_iters 6400; MultiStepLR stepped once a task with its default milestone 1,000,000 (never reached).
  TRX (`tobyperrett/trx`, run.py defaults and README command): torch.optim.SGD(lr), --learning_rate 0.001,
  --tasks_per_batch 16, --training_iterations 100020 (tasks), --query_per_class 5; the same MultiStepLR.
  Fine-tuning augmentation: STAF centre crop, random flip (video_reader.py); TRX random crop and flip; both
  jitter the ends of the frame range by up to 5 frames.
"""
from __future__ import annotations

import dataclasses
import json

import pytest

import methods
from conftest import settings
from harness.checkpoints import load_checkpoint
from harness.errors import HarnessError
from harness.protocol import PROTOCOLS_DIR, TrainSpec, list_protocols, load_protocol
from harness.train import DEFAULTS, resolve_train_settings, train

REFERENCES = {
    "staf": {"optimizer": "sgd", "lr": 0.01, "momentum": 0.0, "weight_decay": 0.0, "schedule": "constant",
             "tasks_per_batch": 64, "steps": 128_000 // 64, "query_per_class": 1, "val_every": 6_400 // 64,
             "crop": "centre", "flip": True, "jitter": 5},
    # 100,020 tasks are 6,251 whole steps of 16 (the reference ends with a step of 4 tasks)
    "trx": {"optimizer": "sgd", "lr": 0.001, "momentum": 0.0, "weight_decay": 0.0, "schedule": "constant",
            "tasks_per_batch": 16, "steps": 100_020 // 16, "query_per_class": 5,
            "crop": "random", "flip": True, "jitter": 5},
}
#: the quickstart's schedule, as the synthetic protocols resolved before heads had recipes of their own
QUICKSTART = {"seed": 1, "steps": 200, "tasks_per_batch": 8, "query_per_class": 2, "optimizer": "adam", "lr": 0.001,
              "momentum": 0.9, "weight_decay": 0.0, "schedule": "cosine", "val_every": 50, "val_episodes": 300,
              "val_seed": 2, "finetune_backbone": False, "crop": "random", "flip": False, "jitter": 5}
SEEDS = {"seed": 1, "val_seed": 2}
REAL = [name for name in list_protocols() if not name.startswith("synthetic")]
SYNTHETIC = [name for name in list_protocols() if name.startswith("synthetic")]


def shipped(name: str, overrides: list[str] | None = None):
    return load_protocol(PROTOCOLS_DIR / f"{name}.yaml", overrides)


def test_every_trainable_head_has_its_reference_recipe():
    trainable = {n for n in methods.list_methods() if methods.get(n).trainable and methods.get(n).__module__.startswith("methods.")}
    assert trainable == set(REFERENCES)
    assert REAL and SYNTHETIC


def test_the_harness_defaults_cover_every_recipe_field():
    recipe = {f.name for f in dataclasses.fields(TrainSpec) if f.default is None}
    assert set(DEFAULTS) == recipe and set(SEEDS) == {f.name for f in dataclasses.fields(TrainSpec)} - recipe


@pytest.mark.parametrize("protocol", REAL)
@pytest.mark.parametrize("method", sorted(REFERENCES))
def test_a_real_benchmark_trains_as_the_reference_does(protocol, method):
    t, source = resolve_train_settings(shipped(protocol), methods.get(method))
    assert t == {**DEFAULTS, **REFERENCES[method], **SEEDS}
    assert {k for k, v in source.items() if v == "method"} == set(REFERENCES[method])
    assert {k for k, v in source.items() if v == "protocol"} == set(SEEDS)


@pytest.mark.parametrize("protocol", SYNTHETIC)
@pytest.mark.parametrize("method", sorted(REFERENCES))
def test_the_synthetic_protocols_keep_the_quickstart_schedule(protocol, method):
    t, source = resolve_train_settings(shipped(protocol), methods.get(method))
    assert t == QUICKSTART
    assert set(source.values()) == {"protocol"}, "every field written out: no head's recipe applies"


def test_a_protocol_field_wins_over_the_heads_default_and_null_leaves_it():
    p = shipped("hmdb-arn-5w1s", ["train.lr=0.05", "train.steps=10", "train.momentum=null"])
    t, source = resolve_train_settings(p, methods.get("staf"))
    assert (t["lr"], source["lr"]) == (0.05, "protocol") and (t["steps"], source["steps"]) == (10, "protocol")
    assert (t["momentum"], source["momentum"]) == (0.0, "method")
    assert (t["optimizer"], source["optimizer"]) == ("sgd", "method")
    assert (t["val_episodes"], source["val_episodes"]) == (DEFAULTS["val_episodes"], "harness")


@pytest.mark.parametrize("field,value,message", [
    ("steps", "0", "train.steps must be at least 1"),
    ("momentum", "1.5", "train.momentum must be at least 0 and below 1"),
    ("optimizer", "sgdm", "train.optimizer must be 'sgd' or 'adam'"),
    ("lr", "0", "train.lr must be positive"),
    ("weight_decay", "-1", "train.weight_decay must not be negative"),
])
def test_an_impossible_train_field_names_its_place(field, value, message):
    with pytest.raises(HarnessError) as e:
        shipped("hmdb-arn-5w1s", [f"train.{field}={value}"])
    assert message in e.value.message and f"field 'train.{field}'" in e.value.message and e.value.fix


@pytest.mark.parametrize("defaults,message", [
    ({"lr": -0.1}, "train.lr must be positive"),
    ({"learning_rate": 0.1}, "unknown field 'train.learning_rate'"),
    ({"seed": 3}, "train_defaults sets seed, which only a protocol sets"),
])
def test_a_heads_impossible_defaults_name_the_head(defaults, message):
    head = type("Bad", (methods.get("staf"),), {"train_defaults": defaults})
    with pytest.raises(HarnessError) as e:
        resolve_train_settings(shipped("hmdb-arn-5w1s"), head)
    assert message in e.value.message and "Bad.train_defaults" in e.value.message


def test_a_training_uses_and_records_its_recipe(write_protocol, home):
    short = "train: {steps: 2, tasks_per_batch: 2, val_every: 2, val_episodes: 10}\n"  # the rest: STAF's recipe
    p = load_protocol(write_protocol(name="recipe", extra=short))
    summary = train(p, "staf", settings(home))
    folder = home / "checkpoints/recipe/staf"
    expected = {**DEFAULTS, **REFERENCES["staf"], **SEEDS, "steps": 2, "tasks_per_batch": 2, "val_every": 2, "val_episodes": 10}
    source = {k: "protocol" if k in ("steps", "tasks_per_batch", "val_every", "val_episodes", *SEEDS) else
              "method" if k in REFERENCES["staf"] else "harness" for k in DEFAULTS.keys() | SEEDS.keys()}
    on_disk = json.loads((folder / "summary.json").read_text())
    for record in (summary, on_disk, load_checkpoint(folder / "best.pt"), load_checkpoint(folder / "last.pt")):
        assert record["train_settings"] == expected
        assert record["train_settings_source"] == source
    last = load_checkpoint(folder / "last.pt")
    group = last["optimizer"]["param_groups"][0]  # what the optimizer was, not only what was written down
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.01, 0.0, 0.0)
    assert "betas" not in group, "SGD, not Adam"
    assert [entry["lr"] for entry in last["history"]] == [0.01, 0.01], "constant, no schedule"

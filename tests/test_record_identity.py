"""A result is a record: served again only when everything that made it is identical, settings kept, files once."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import methods
from harness.errors import HarnessError
from harness.pipeline import run_method
from harness.protocol import find_protocol, load_protocol, protocol_origin
from conftest import settings

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------ code is identity


def _copy_checkout(dst: Path) -> Path:
    dst.mkdir(parents=True)
    for name in ("bench.py", "harness", "methods", "protocols", "splits"):
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dst / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dst / name)
    return dst


def _bench(checkout: Path, *args: str) -> tuple[dict, str]:
    """Run the checkout's bench.py; return the summary it wrote and what it printed."""
    env = {**os.environ, "PYTHONPATH": str(checkout), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(checkout / "bench.py"), *args], cwd=checkout, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    results = Path(args[args.index("--results") + 1])
    summary = json.loads((results / "tiny-5w1s/protonet/summary.json").read_text())
    return summary, done.stdout + done.stderr


@pytest.mark.slow
def test_editing_a_head_scores_again_and_reverting_finds_the_earlier_run(protocol, home, tmp_path):
    checkout = _copy_checkout(tmp_path / "checkout")
    results = tmp_path / "results"
    command = ["--quiet", "run", "--protocol", protocol.source, "--method", "protonet", "--home", str(home), "--results", str(results)]
    head_file = checkout / "methods/protonet.py"
    original = head_file.read_text()

    first, _ = _bench(checkout, *command)
    negated = original.replace("return -(((query - r).unsqueeze(2)", "return (((query - r).unsqueeze(2)")
    assert negated != original
    head_file.write_text(negated)
    edited, out = _bench(checkout, *command)
    assert "already there" not in out, "an edited head must be scored, not served from disk"
    assert edited["code"]["head_sha256"] != first["code"]["head_sha256"] and edited["run_fingerprint"] != first["run_fingerprint"]
    assert edited["accuracy"] < first["accuracy"], "the negated head picks the farthest prototype"

    head_file.write_text(original)
    again, out = _bench(checkout, *command)
    assert "already there" in out and again["run_fingerprint"] == first["run_fingerprint"] and again["accuracy"] == first["accuracy"]

    # an edit of another head's file changes nothing that made protonet's number
    other = checkout / "methods/otam.py"
    other.write_text(other.read_text() + "\n# an edit elsewhere\n")
    unrelated, out = _bench(checkout, *command)
    assert "already there" in out and unrelated["run_fingerprint"] == first["run_fingerprint"]

    # an edit of the backbone's code invalidates its pretrained weights and its features: pretraining again
    # gives the same weights (it is seeded), and every video is embedded again
    backbone = checkout / "harness/backbones/tiny3d.py"
    backbone.write_text(backbone.read_text() + "\n# an edit of the backbone's file\n")
    env = {**os.environ, "PYTHONPATH": str(checkout), "OMP_NUM_THREADS": "1"}
    stale = subprocess.run([sys.executable, str(checkout / "bench.py"), *command], cwd=checkout, env=env, capture_output=True, text=True, timeout=300)
    assert stale.returncode == 2 and "has not been pretrained" in stale.stderr, "weights pretrained by other backbone code are not used"
    pretrained = subprocess.run([sys.executable, str(checkout / "bench.py"), "pretrain", "--protocol", protocol.source, "--home", str(home)], cwd=checkout, env=env, capture_output=True, text=True, timeout=300)
    assert pretrained.returncode == 0, pretrained.stderr[-2000:]
    rebuilt, out = _bench(checkout, *command)
    assert "already there" not in out and rebuilt["videos_embedded_this_run"] == rebuilt["n_videos"]
    assert rebuilt["code"]["backbone_code_sha256"] != first["code"]["backbone_code_sha256"]
    assert rebuilt["accuracy"] == first["accuracy"], "a comment changes no feature"


# ----------------------------------------------------------------------------- settings by the registry


def test_the_registry_records_every_setting_defaults_included():
    head = methods.create("protonet", metric="cosine")
    assert head.settings == {"metric": "cosine", "scale": 10.0} and head.config() == head.settings
    trx = methods.create("trx", context={"feature_shape": (16, 8, 1, 1)}, dim=8)
    assert trx.settings == {"temporal_set": [2, 3], "dim": 8, "dropout": 0.1, "pe_scale": 0.1}
    from methods.protonet import ProtoNet

    assert ProtoNet(scale=3.0).settings == {"metric": "euclidean", "scale": 3.0}, "built without the registry, still recorded"


@pytest.mark.parametrize("value", [float("nan"), float("inf"), object()])
def test_a_setting_json_cannot_hold_is_refused_when_the_head_is_built(value):
    with pytest.raises(methods.SettingsError, match="'scale'.*cannot be stored as JSON"):
        methods.create("protonet", scale=value)


def test_a_nan_setting_in_a_protocol_is_named(write_protocol, home, tmp_path):
    p = load_protocol(write_protocol(extra="methods: {protonet: {scale: .nan}}\n"))
    with pytest.raises(HarnessError, match=r"methods\.protonet.*'scale'"):
        run_method(p, "protonet", settings(home, tmp_path))
    assert not (tmp_path / "tiny-5w1s").exists()


def test_summary_records_the_resolved_settings(protocol, home, tmp_path):
    summary = run_method(protocol, "protonet", settings(home, tmp_path))
    assert summary["method_config"] == {"metric": "euclidean", "scale": 10.0}


class _ScaledProto(methods.Head):
    """Prototypes on a learned linear map of width `dim`: a small head with settings and a checkpoint."""

    view = "vector"
    trainable = True
    train_defaults = {"steps": 4, "tasks_per_batch": 2, "query_per_class": 1, "val_every": 2, "val_episodes": 10, "lr": 0.01}

    def __init__(self, feature_shape, dim: int = 16, metric: str = "euclidean"):
        super().__init__()
        self.map = methods.base.nn.Linear(feature_shape[0], dim)
        self.metric = metric

    def embed(self, features):  # [N, C] -> [N, dim]
        return self.map(features)

    def forward(self, support, support_labels, query, way):  # [E, S, dim], [E, S], [E, Q, dim] -> [E, Q, way]
        prototypes = methods.class_means(support, support_labels, way)
        return -((query.unsqueeze(2) - prototypes.unsqueeze(1)) ** 2).sum(-1)


@pytest.fixture(scope="module")
def scaled_proto():
    methods.register("identity-scaled-proto")(_ScaledProto)
    yield "identity-scaled-proto"
    methods.registry._REGISTRY.pop("identity-scaled-proto")


def test_run_rebuilds_a_head_with_its_checkpoints_settings(scaled_proto, write_protocol, home, tmp_path):
    from harness.train import train

    trained_with = load_protocol(write_protocol(extra="methods: {identity-scaled-proto: {dim: 8}}\n"))
    s = settings(home, tmp_path / "results")
    train(trained_with, scaled_proto, s)
    summary = run_method(trained_with, scaled_proto, s, n_episodes=20)
    assert summary["method_config"] == {"dim": 8, "metric": "euclidean"}

    plain = load_protocol(write_protocol())  # same name, default settings: dim 16
    with pytest.raises(HarnessError) as e:
        run_method(plain, scaled_proto, s, n_episodes=20)
    assert "methods.identity-scaled-proto.dim: checkpoint 8, protocol 16" in e.value.message
    assert "--set methods.identity-scaled-proto.dim=8" in e.value.message


# ------------------------------------------------------------------------------------ data is identity


def test_other_videos_under_the_same_names_are_scored_afresh(protocol, home, tiny_root, tmp_path):
    s = settings(home, tmp_path / "results")
    first = run_method(protocol, "protonet", s)

    copy = shutil.copytree(tiny_root, tmp_path / "copy")
    moved = load_protocol(protocol.source, [f"dataset.root={copy}"])
    same = run_method(moved, "protonet", s)
    assert same["run_fingerprint"] == first["run_fingerprint"] and same["videos_embedded_this_run"] == 0, "the same data elsewhere is the same data"

    # swap the frames of two test videos of different classes: same names, other content
    test_videos = sorted(p for p in copy.glob("*/*") if p.is_dir() and p.parent.name in _test_classes(copy))
    a, b = test_videos[0], next(v for v in test_videos if v.parent != test_videos[0].parent)
    swap = tmp_path / "swap"
    shutil.move(a, swap), shutil.move(b, a), shutil.move(swap, b)
    other = run_method(moved, "protonet", s)
    assert other["data_sha256"] != first["data_sha256"] and other["run_fingerprint"] != first["run_fingerprint"]
    assert other["videos_embedded_this_run"] == 2


def _test_classes(root: Path) -> set[str]:
    return {line.split("/")[0] for line in (root / "testlist.txt").read_text().split()}


# ---------------------------------------------------------------------------------- protocol origin


def test_a_changed_shipped_protocol_is_recorded_as_modified_with_its_fields():
    shipped = find_protocol("hmdb-arn-5w5s")
    assert protocol_origin(load_protocol(shipped, ["dataset.root=/data/hmdb51", "backbone.weights=/w/r3d50.pth"])) == {"shipped": True, "modified": False, "fields": {}}
    changed = protocol_origin(load_protocol(shipped, ["backbone.name=tiny3d", "frames.count=4", "methods.staf.alpha=2.0"]))
    assert changed["shipped"] and changed["modified"]
    assert changed["fields"]["backbone.name"] == {"shipped": "r3d50", "run": "tiny3d"}
    assert changed["fields"]["frames.count"]["run"] == 4 and changed["fields"]["methods.staf.alpha"] == {"shipped": None, "run": 2.0}
    assert set(changed["fields"]) == {"backbone.name", "frames.count", "methods.staf.alpha"}


def test_a_protocol_of_its_own_name_is_not_a_shipped_one(protocol, home, tmp_path):
    summary = run_method(protocol, "protonet", settings(home, tmp_path), n_episodes=10)
    assert summary["protocol_origin"] == {"shipped": False, "modified": False, "fields": {}}


# ------------------------------------------------------------------------------ summary and its schema


def _documented_summary_fields() -> list[str]:
    readme = (REPO / "README.md").read_text()
    section = readme.split("### summary.json", 1)[1].split("\n#", 1)[0]
    fields = []
    for row in re.findall(r"^\| (`[^|]+) \|", section, re.M):
        fields += re.findall(r"`([a-z0-9_]+)`", row)
    return fields


def test_summary_holds_every_documented_field_and_documents_every_field(protocol, home, tmp_path):
    run_method(protocol, "protonet", settings(home, tmp_path), n_episodes=30)
    written = json.loads((tmp_path / "tiny-5w1s/protonet/summary.json").read_text())
    documented = _documented_summary_fields()
    assert len(documented) > 25
    assert sorted(set(documented) - set(written)) == [], "documented but not written"
    assert sorted(set(written) - set(documented)) == [], "written but not documented"
    assert written["schema_version"] == 3 and written["processes"] == 1 and written["resumed_episodes"] == 0
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", written["created_utc"])
    assert {"harness_version", "head_sha256", "head_modules", "backbone_code_sha256", "git_commit", "git_dirty"} <= set(written["code"])
    assert written["code"]["head_modules"] == ["methods.base", "methods.protonet", "methods.registry", "methods.settings"]
    assert written["environment"]["torch_threads"] >= 1 and written["environment"]["cuda"] is None


# ----------------------------------------------------------------------------------- what is stored


def test_each_record_file_is_stored_once(protocol, home, tmp_path):
    first = run_method(protocol, "protonet", settings(home, tmp_path), n_episodes=40)
    folder = tmp_path / "tiny-5w1s/protonet"
    own = folder / "runs" / first["run_fingerprint"]
    for name in ("episodes.jsonl", "summary.json"):
        assert os.path.samefile(folder / name, own / name)
    second = run_method(protocol, "protonet", settings(home, tmp_path), n_episodes=50)
    assert os.path.samefile(folder / "episodes.jsonl", folder / "runs" / second["run_fingerprint"] / "episodes.jsonl")
    assert len((own / "episodes.jsonl").read_text().splitlines()) == 40, "the earlier run keeps its own records"


def test_a_run_without_a_finite_number_for_every_episode_is_not_stored(protocol, home, tmp_path, monkeypatch):
    import harness.pipeline as pipeline

    real = pipeline.evaluate

    def nan_accuracy(*args, **kwargs):
        records = real(*args, **kwargs)
        return [{**r, "accuracy": float("nan")} for r in records]

    monkeypatch.setattr(pipeline, "evaluate", nan_accuracy)
    with pytest.raises(HarnessError, match="nothing was stored"):
        run_method(protocol, "protonet", settings(home, tmp_path), n_episodes=20)
    assert not list((tmp_path / "tiny-5w1s/protonet").glob("runs/*/summary.json"))
    assert not (tmp_path / "tiny-5w1s/protonet/summary.json").exists()


@pytest.mark.parametrize("field, value", [("n_episodes", 0), ("batch_episodes", -1)])
def test_a_request_that_scores_nothing_is_refused_before_any_work(protocol, home, tmp_path, field, value):
    s = settings(home, tmp_path, **({"batch_episodes": value} if field == "batch_episodes" else {}))
    with pytest.raises(HarnessError, match="episodes"):
        run_method(protocol, "protonet", s, **({"n_episodes": value} if field == "n_episodes" else {}))
    assert not (tmp_path / "tiny-5w1s").exists()


def test_an_edited_summary_is_never_served_by_run(protocol, home, tmp_path, capsys):
    s = settings(home, tmp_path)
    first = run_method(protocol, "protonet", s, n_episodes=60)
    own = tmp_path / "tiny-5w1s/protonet/runs" / first["run_fingerprint"] / "summary.json"
    edited = json.loads(own.read_text())
    edited["accuracy"] = 99.9
    own.write_text(json.dumps(edited))
    again = run_method(protocol, "protonet", s, n_episodes=60)
    assert again["accuracy"] == first["accuracy"] and again["records_sha256"] == first["records_sha256"]
    said = " ".join(capsys.readouterr().err.split())  # the console may fold long lines
    assert "summary.json says accuracy 99.90" in said and "this run is scored again" in said
    assert json.loads(own.read_text())["accuracy"] == first["accuracy"], "the run's files hold the measured number again"

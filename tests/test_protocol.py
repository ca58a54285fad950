"""Protocols: include, validation errors that name the file, field and fix, and the content hash."""
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.protocol import PROTOCOLS_DIR, find_protocol, list_protocols, load_protocol


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_shipped_protocols_load_and_differ_only_in_shot():
    one = load_protocol(PROTOCOLS_DIR / "synthetic-5w1s.yaml")
    five = load_protocol(PROTOCOLS_DIR / "synthetic-5w5s.yaml")
    assert (one.way, one.shot, one.query_per_class, one.episodes) == (5, 1, 1, 10_000)
    assert five.shot == 5 and five.frames == one.frames and five.dataset == one.dataset
    assert one.sha256 != five.sha256
    assert {"synthetic-5w1s", "synthetic-5w5s"} <= set(list_protocols())


def test_include_is_overridden_by_the_including_file(tmp_path):
    write(tmp_path, "base.yaml", "way: 5\nshot: 1\nframes: {count: 8, resize: 32, crop: 32}\n")
    child = write(tmp_path, "child.yaml", "include: base.yaml\nname: child\nshot: 5\nframes: {count: 4}\n")
    p = load_protocol(child)
    assert (p.way, p.shot, p.frames.count, p.frames.resize) == (5, 5, 4, 32)
    assert p.origins["shot"].endswith("child.yaml") and p.origins["way"].endswith("base.yaml")


def test_hash_ignores_machine_local_paths_but_not_content(tmp_path):
    a = load_protocol(write(tmp_path, "a.yaml", "name: x\ndataset: {root: /data/a}\n"))
    b = load_protocol(write(tmp_path, "b.yaml", "name: x\ndataset: {root: /elsewhere/b}\n"))
    c = load_protocol(write(tmp_path, "c.yaml", "name: x\ndataset: {root: /data/a}\nseed: 1\n"))
    assert a.sha256 == b.sha256 != c.sha256


def test_overrides_apply_after_includes():
    p = load_protocol(PROTOCOLS_DIR / "synthetic-5w1s.yaml", ["way=3", "dataset.root=/tmp/elsewhere"])
    assert p.way == 3 and p.dataset.root == "/tmp/elsewhere" and p.origins["way"] == "--set"


@pytest.mark.parametrize(
    "text, field, words",
    [
        ("wya: 5\n", "wya", "did you mean 'way'"),
        ("frames: {cont: 8}\n", "frames.cont", "did you mean 'frames.count'"),
        ("way: five\n", "way", "whole number"),
        ("shot: 1.5\n", "shot", "whole number"),
        ("frames: {mean: 0.5}\n", "frames.mean", "expected a list"),
        ("way: 1\n", "way", "at least 2"),
        ("frames: {resize: 32, crop: 64}\n", "frames.crop", "between 1 and frames.resize"),
        ("dataset: {part: testing}\n", "dataset.part", "one of train, val, test"),
        ("backbone: tiny3d\n", "backbone", "expected a section"),
    ],
)
def test_bad_fields_name_file_field_and_fix(tmp_path, text, field, words):
    path = write(tmp_path, "bad.yaml", "name: bad\n" + text)
    with pytest.raises(HarnessError) as err:
        load_protocol(path)
    message = err.value.message
    assert str(path) in message and f"'{field}'" in message and words in message


def test_yaml_syntax_error_gives_line_and_column(tmp_path):
    path = write(tmp_path, "broken.yaml", "name: x\nway: [5\nshot: 1\n")
    with pytest.raises(HarnessError) as err:
        load_protocol(path)
    assert "line 3" in err.value.message and "column" in err.value.message and str(path) in err.value.message


def test_include_cycle_and_missing_include_are_reported(tmp_path):
    write(tmp_path, "a.yaml", "include: b.yaml\n")
    write(tmp_path, "b.yaml", "include: a.yaml\n")
    with pytest.raises(HarnessError, match="cycle"):
        load_protocol(tmp_path / "a.yaml")
    with pytest.raises(HarnessError, match="does not exist"):
        load_protocol(write(tmp_path, "c.yaml", "include: nowhere.yaml\n"))


def test_unknown_protocol_name_lists_the_shipped_ones():
    with pytest.raises(HarnessError) as err:
        find_protocol("synthetic-5w9s")
    assert "synthetic-5w1s" in err.value.message


def test_every_shipped_protocol_loads_and_the_published_ones_name_their_split_files():
    from harness.data.manifests import load_manifests

    manifests = load_manifests()
    for name in list_protocols():
        p = load_protocol(find_protocol(name))
        assert p.name == name and p.episodes == 10_000 and p.way == 5 and p.query_per_class == 1
        if p.dataset.name == "synthetic":
            continue
        split = Path(p.dataset.split_dir).name
        parts = manifests[split].parts
        listed = {"train": p.dataset.splits.train, "val": p.dataset.splits.val, "test": p.dataset.splits.test}
        assert listed == {part: parts[part].file for part in listed}, name
        if name.endswith("-resnet50"):
            assert (p.backbone.name, p.frames.count, p.frames.crop) == ("resnet50", 8, 224)
        else:
            assert (p.backbone.name, p.frames.count, p.frames.crop, p.frames.mean) == ("r3d50", 16, 224, (0.0, 0.0, 0.0))

"""The feature store never serves damaged bytes: checksummed entries and packs, recomputed when damaged;
other weights bytes, another store key."""
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.data.index import build_index
from harness.features import FeatureStore
from harness.files import TRAILER_SIZE, DamagedFile, atomic_save_npy_checksummed, read_checksummed, verify_checksummed
from harness.pipeline import backbone_for, run_method
from harness.protocol import load_protocol
from conftest import settings


def store_and_videos(protocol, home, summary):
    store = FeatureStore(home, protocol.backbone.name, summary["backbone"]["weights_sha256"], protocol.frames)
    assert store.key == summary["backbone"]["feature_store"]
    root = Path(protocol.dataset.root)
    return store, build_index(root, root / "testlist.txt", "test", protocol.frames.count).videos


def records(summary) -> bytes:
    return Path(summary["records_path"]).read_bytes()


def flip_byte(path: Path, offset_from_end: int) -> None:
    data = bytearray(path.read_bytes())
    data[-offset_from_end] ^= 0x01
    path.write_bytes(bytes(data))


def warnings(err: str) -> list[str]:
    return [line for line in err.splitlines() if "feature cache:" in line]


def test_a_flipped_byte_in_an_entry_is_embedded_again_with_identical_results(protocol, home, tmp_path, capsys):
    clean = run_method(protocol, "protonet", settings(home, tmp_path / "clean"))
    store, videos = store_and_videos(protocol, home, clean)
    entry = store._video_path(videos[5])
    flip_byte(entry, TRAILER_SIZE + 100)  # a data byte: numpy alone would load the changed value
    np.load(entry, allow_pickle=False)
    with pytest.raises(DamagedFile, match="checksum mismatch"):
        read_checksummed(entry)
    shutil.rmtree(store.dir / "packs")  # the entries are read when a pack is built
    capsys.readouterr()

    again = run_method(protocol, "protonet", settings(home, tmp_path / "again"))
    lines = warnings(capsys.readouterr().err)
    assert len(lines) == 1 and videos[5].key in lines[0] and "damaged" in lines[0], lines
    assert again["videos_embedded_this_run"] == 1
    assert records(again) == records(clean) and again["records_sha256"] == clean["records_sha256"]
    read_checksummed(entry)  # written anew, good


def test_garbage_truncated_and_unchecksummed_entries_are_embedded_again(protocol, home, tmp_path, capsys):
    clean = run_method(protocol, "protonet", settings(home, tmp_path / "clean"))
    store, videos = store_and_videos(protocol, home, clean)
    garbage, truncated, legacy = (store._video_path(v) for v in videos[:3])
    garbage.write_bytes(np.random.default_rng(0).bytes(garbage.stat().st_size))
    truncated.write_bytes(truncated.read_bytes()[:-1000])
    np.save(legacy, np.load(legacy, allow_pickle=False))  # a plain .npy: right values, but nothing proves it
    shutil.rmtree(store.dir / "packs")
    capsys.readouterr()

    again = run_method(protocol, "protonet", settings(home, tmp_path / "again"))
    lines = warnings(capsys.readouterr().err)
    assert len(lines) == 3 and all(any(v.key in line for line in lines) for v in videos[:3]), lines
    assert again["videos_embedded_this_run"] == 3 and records(again) == records(clean)


def test_a_truncated_pack_is_rebuilt_from_the_entries(protocol, home, tmp_path, capsys):
    clean = run_method(protocol, "protonet", settings(home, tmp_path / "clean"))
    store, videos = store_and_videos(protocol, home, clean)
    (pack,) = (store.dir / "packs").glob("*.npy")
    pack.write_bytes(pack.read_bytes()[: pack.stat().st_size // 2])
    capsys.readouterr()

    again = run_method(protocol, "protonet", settings(home, tmp_path / "again"))
    lines = warnings(capsys.readouterr().err)
    assert len(lines) == 1 and "pack" in lines[0] and "rebuilt" in lines[0], lines
    assert again["videos_embedded_this_run"] == 0 and records(again) == records(clean)
    verify_checksummed(pack)


def test_a_flipped_byte_in_a_pack_is_never_served(protocol, home, tmp_path, capsys):
    clean = run_method(protocol, "protonet", settings(home, tmp_path / "clean"))
    store, videos = store_and_videos(protocol, home, clean)
    good = store.load(videos).clone()
    (pack,) = (store.dir / "packs").glob("*.npy")
    flip_byte(pack, TRAILER_SIZE + 4)  # the last map's last float: numpy's memory map would serve it
    capsys.readouterr()

    fresh = FeatureStore(home, protocol.backbone.name, clean["backbone"]["weights_sha256"], protocol.frames)
    assert fresh.missing(videos) == [] and torch.equal(fresh.load(videos), good)
    assert len(warnings(capsys.readouterr().err)) == 1


def test_entries_and_packs_carry_a_checksum_and_stay_plain_npy(tmp_path):
    array = np.random.default_rng(0).standard_normal((8, 2, 3, 3)).astype(np.float32)
    atomic_save_npy_checksummed(tmp_path / "a.npy", array)
    assert np.array_equal(np.load(tmp_path / "a.npy", allow_pickle=False), array)  # numpy reads it as it is
    assert np.array_equal(np.load(tmp_path / "a.npy", mmap_mode="r"), array)
    read_checksummed(tmp_path / "a.npy")
    verify_checksummed(tmp_path / "a.npy", block=7)  # block by block, the same verdict
    (tmp_path / "b.npy").write_bytes(b"")
    for check in (read_checksummed, verify_checksummed):
        with pytest.raises(DamagedFile, match="no checksum trailer"):
            check(tmp_path / "b.npy")
    assert not list(tmp_path.glob(".*.tmp"))


def test_changed_weights_bytes_give_a_new_store_key_and_new_features(write_protocol, protocol, home, tmp_path):
    _, _, pretrained = backbone_for(protocol, settings(home, tmp_path))
    weights = tmp_path / "weights.pt"
    shutil.copy(pretrained, weights)
    p = load_protocol(write_protocol(), [f"backbone.weights={weights}"])
    first = run_method(p, "protonet", settings(home, tmp_path / "first"))
    same = run_method(p, "protonet", settings(home, tmp_path / "same"))
    assert same["backbone"]["feature_store"] == first["backbone"]["feature_store"] and same["videos_embedded_this_run"] == 0

    state = torch.load(weights, weights_only=True)
    name = next(k for k, v in state.items() if v.is_floating_point() and v.dim() > 1)  # a conv kernel
    state[name] = state[name] * 1.01
    torch.save(state, weights)  # same path, same size, other bytes
    changed = run_method(p, "protonet", settings(home, tmp_path / "changed"))
    assert changed["backbone"]["weights_sha256"] != first["backbone"]["weights_sha256"]
    assert changed["backbone"]["feature_store"] != first["backbone"]["feature_store"]
    assert changed["videos_embedded_this_run"] == first["n_videos"], "no stale feature may be served"
    old_store, videos = store_and_videos(p, home, first)
    new_store, _ = store_and_videos(p, home, changed)
    assert not torch.equal(old_store.load(videos), new_store.load(videos))

"""Bad input, end to end through the command line: every case exits 2 with one `error:` paragraph that names
the file, field or video and says what to do, and never shows a traceback.

Covered at library level elsewhere, and not repeated here: r3d18 weights given to r3d50 and a weight file
that carries code (test_backbones.py), NaN features at extraction (test_run.py), unreadable video files and
zip members at index time (test_sources.py), the episode-size limits (test_episodes.py).

The tests go through `harness.cli.main` in-process, on the tiny synthetic test split (42 videos of 8 frames
at 32 x 32, copied where a test damages it) with random tiny3d weights passed in, so nothing is pretrained.
"""
from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import shlex
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.io import read_image

from harness.backbones import create_backbone
from harness.backbones.tiny3d import Tiny3D
from harness.checkpoints import FORMAT, load_checkpoint, save_checkpoint
from harness.cli import main
from harness.errors import HarnessError

# ------------------------------------------------------------------------------------------------ helpers


def save_state(state: dict, path: Path) -> Path:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    path.write_bytes(buffer.getvalue())
    return path


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """Random tiny3d weights (seeded): features are meaningless, but deterministic and cheap."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        state = create_backbone("tiny3d").state_dict()
    return save_state(state, tmp_path_factory.mktemp("weights") / "tiny3d-random.pt")


def copy_test_split(tiny_root: Path, dest: Path) -> Path:
    """The test classes of the tiny benchmark and their split file (the only part these runs read)."""
    lines = (tiny_root / "testlist.txt").read_text().splitlines()
    for cls in sorted({line.split("/")[0] for line in lines}):
        shutil.copytree(tiny_root / cls, dest / cls)
    shutil.copyfile(tiny_root / "testlist.txt", dest / "testlist.txt")
    return dest


def write_protocol(path: Path, root: Path, weights: Path | str, *, split_dir: Path | None = None, episodes: int = 20, extra: str = "") -> Path:
    splits = f", split_dir: '{split_dir}'" if split_dir else ""
    path.write_text(
        f"name: {path.stem}\n"
        f"dataset: {{name: tiny, root: '{root}'{splits}, part: test}}\n"
        f"way: 5\nshot: 1\nquery_per_class: 1\nepisodes: {episodes}\nseed: 0\n"
        f"frames: {{count: 8, resize: 32, crop: 32}}\n"
        f"backbone: {{name: tiny3d, weights: '{weights}'}}\n" + extra
    )
    return path


def run_args(protocol: Path, tmp_path: Path, *more: str, method: str = "protonet") -> list[str]:
    return ["run", "--protocol", str(protocol), "--method", method, "--home", str(tmp_path / "home"),
            "--results", str(tmp_path / "results"), "--device", "cpu", "--quiet", *more]


def fails(capsys, argv: list[str], *words: str) -> str:
    """Run the command line; it must exit 2 with `error: ...` and a fix, no traceback, naming `words`."""
    rc = main(argv)
    out, err = capsys.readouterr()
    assert rc == 2, f"exit {rc}\nstdout: {out}\nstderr: {err}"
    assert "Traceback" not in out + err
    # progress lines may come first; the error is one paragraph at the end: `error: ...`, then `  fix: ...`
    assert err.startswith("error: ") or "\nerror: " in err, err
    err = err[err.index("error: ") if err.startswith("error: ") else err.index("\nerror: ") + 1 :]
    assert sum(line.startswith("error: ") for line in err.splitlines()) == 1 and "\n  fix: " in err, err
    for w in words:
        assert w in err, f"{w!r} not in:\n{err}"
    return err


@pytest.fixture
def protocol(tmp_path, tiny_root, weights) -> Path:
    """A protocol on the tiny test split as it is (read only)."""
    return write_protocol(tmp_path / "tiny.yaml", tiny_root, weights)


# ------------------------------------------------------------------------------------------- protocols


@pytest.mark.parametrize(
    "text, words",
    [
        ("way: [5\nshot: 1\n", ["YAML syntax error", "line 4, column", "fix: correct the YAML"]),
        ("wya: 5\n", ["unknown field 'wya'", "did you mean 'way'?"]),
        ("frames: {cont: 8}\n", ["unknown field 'frames.cont'", "did you mean 'frames.count'?"]),
        ("way: five\n", ["field 'way'", "expected a whole number, got 'five'", "fix: write a whole number"]),
        ("train: {flip: 'yes'}\n", ["field 'train.flip'", "expected true or false", "fix: write true or false"]),
        ("train: {lr: .nan}\n", ["field 'train.lr'", "expected a finite number, got nan"]),
        ("frames: {std: [1.0, .inf, 1.0]}\n", ["field 'frames.std[1]'", "expected a finite number, got inf"]),
        ("way: 1\n", ["field 'way'", "way must be at least 2, got 1"]),
        ("frames: {resize: 32, crop: 64}\n", ["field 'frames.crop'", "between 1 and frames.resize (32), got 64"]),
        ("backbone: tiny3d\n", ["field 'backbone'", "expected a section of fields", "fix: write the fields of 'backbone' under it"]),
        ("backbone: {name: r3d51}\n", ["field 'backbone.name'", "unknown backbone 'r3d51'", "r3d50", "tiny3d"]),
    ],
    ids=["yaml-syntax", "unknown-key", "unknown-nested-key", "wrong-type-int", "wrong-type-bool", "nan", "inf", "range", "crop-range", "section", "unknown-backbone"],
)
def test_bad_protocol_files(tmp_path, capsys, text, words):
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\ndataset: {name: tiny, root: /nowhere}\n" + text)
    fails(capsys, run_args(path, tmp_path), str(path), *words)


def test_bad_override_names_the_option(tmp_path, capsys, protocol):
    fails(capsys, run_args(protocol, tmp_path, "--set", "way=five"), "--set, field 'way'", "expected a whole number")
    fails(capsys, run_args(protocol, tmp_path, "--set", "wya=5"), "unknown field 'wya'", "did you mean 'way'?")


def test_unknown_protocol_method_and_backbone_list_what_exists(tmp_path, capsys, protocol):
    fails(capsys, run_args(Path("synthetic-5w9s"), tmp_path), "no protocol file or shipped protocol named 'synthetic-5w9s'", "synthetic-5w1s")
    fails(capsys, run_args(protocol, tmp_path, method="protonett"), "unknown method 'protonett'", "protonet, staf, trx")
    # train looked the method up in the registry and let its KeyError through as a traceback
    fails(capsys, ["train", "--protocol", str(protocol), "--method", "trxx", "--home", str(tmp_path), "--quiet"], "unknown method 'trxx'", "otam, protonet, staf, trx")
    fails(capsys, run_args(protocol, tmp_path, "--set", "backbone.name=resnet51"), "--set, field 'backbone.name'", "unknown backbone 'resnet51'", "resnet50")


# ------------------------------------------------------------------------------------------------ data


def test_impossible_episodes_name_the_field_and_the_limit(tmp_path, capsys, protocol):
    fails(capsys, run_args(protocol, tmp_path, "--set", "way=7"), "--set, field 'way'", "way 7 is more than the 6 classes of the test split", "use way <= 6")
    fails(capsys, run_args(protocol, tmp_path, "--set", "shot=5", "--set", "query_per_class=3"),
          "shot + query_per_class = 8 is more than the 7 videos of class", "use shot + query_per_class <= 7")


def test_missing_data_root(tmp_path, capsys, weights):
    path = write_protocol(tmp_path / "p.yaml", Path("/nowhere/hmdb51"), weights)
    fails(capsys, run_args(path, tmp_path), f"{path}, field 'dataset.root': data root /nowhere/hmdb51 does not exist", "fix: set dataset.root")
    data_file = tmp_path / "root.txt"
    data_file.write_text("not a folder")
    path = write_protocol(tmp_path / "q.yaml", data_file, weights)
    fails(capsys, run_args(path, tmp_path), f"data root {data_file} is neither a folder nor a .zip file")


def test_missing_empty_and_short_video_folders_are_listed(tmp_path, capsys, tiny_root, weights):
    root = copy_test_split(tiny_root, tmp_path / "data")
    entries = (root / "testlist.txt").read_text().splitlines()
    missing, empty, short = entries[0], entries[9], entries[20]
    shutil.rmtree(root / missing)
    for frame in (root / empty).iterdir():
        frame.unlink()
    for frame in sorted((root / short).iterdir())[3:]:
        frame.unlink()
    path = write_protocol(tmp_path / "p.yaml", root, weights)
    err = fails(capsys, run_args(path, tmp_path), f"3 of {len(entries)} videos listed in {root / 'testlist.txt'} cannot be used",
                f"{missing}: missing", f"{empty}: empty", f"{short}: too short: 3 frames, 8 needed",
                "lower frames.count (now 8)", "dataset.bad_videos: exclude")
    assert err.count("\n    ") == 3


@pytest.mark.parametrize("workers", [0, 1])
def test_a_corrupt_jpeg_names_the_frame_and_the_video(tmp_path, capsys, tiny_root, weights, workers):
    """A frame that does not decode is found when the clip is read: from a DataLoader worker too, where the
    error used to come back as a TypeError with the worker's traceback."""
    root = copy_test_split(tiny_root, tmp_path / "data")
    video = (root / "testlist.txt").read_text().splitlines()[5]
    frame = sorted((root / video).iterdir())[3]
    frame.write_bytes(frame.read_bytes()[:150])  # truncated
    path = write_protocol(tmp_path / "p.yaml", root, weights)
    fails(capsys, run_args(path, tmp_path, "--workers", str(workers)), f"video {video}", f"frame {frame} cannot be decoded: Image is incomplete or truncated",
          "re-extract the frames of this video", "dataset.bad_videos: exclude cannot leave it out")
    frame.write_bytes(b"this is not an image")
    err = fails(capsys, run_args(path, tmp_path, "--workers", str(workers)), f"frame {frame} cannot be decoded: Unsupported image file")
    assert ".cpp" not in err  # torchvision's source location is not the user's business


def test_truncated_and_unreadable_video_files_are_listed(tmp_path, capsys, tiny_root, weights):
    av = pytest.importorskip("av")
    if "mpeg4" not in av.codecs_available:
        pytest.skip("this PyAV build has no mpeg4 encoder")
    root = copy_test_split(tiny_root, tmp_path / "data")
    entries = (root / "testlist.txt").read_text().splitlines()
    cut, noise = entries[2], entries[30]
    frames = [read_image(str(f)).permute(1, 2, 0).contiguous().numpy() for f in sorted((root / cut).iterdir())]
    shutil.rmtree(root / cut)
    shutil.rmtree(root / noise)
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as out:
        stream = out.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for image in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        out.mux(stream.encode())
    data = buffer.getvalue()
    (root / f"{cut}.mp4").write_bytes(data[: len(data) // 3])
    (root / f"{noise}.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    path = write_protocol(tmp_path / "p.yaml", root, weights)
    err = fails(capsys, run_args(path, tmp_path), "2 of 42 videos", f"{cut}: unreadable", f"{noise}: unreadable", "dataset.bad_videos: exclude")
    assert err.count("\n    ") == 2


@pytest.mark.parametrize(
    "line, words",
    [
        ("../outside/clip", ["climbs out of the data root with '..'"]),
        ("cls/../../etc/passwd", ["climbs out of the data root with '..'"]),
        ("/etc/passwd", ["split entry '/etc/passwd' is an absolute or Windows path"]),
        ("C:\\data\\clip", ["is an absolute or Windows path"]),
        ("cls/clip\x00.jpg", ["a split entry contains a NUL byte"]),
    ],
    ids=["dotdot", "dotdot-inside", "absolute", "windows", "nul"],
)
def test_split_entries_that_leave_the_data_root_are_refused(tmp_path, capsys, tiny_root, weights, line, words):
    splits = tmp_path / "splits"
    splits.mkdir()
    lines = (tiny_root / "testlist.txt").read_text().splitlines()
    (splits / "testlist.txt").write_text("\n".join([*lines[:10], line, *lines[10:]]) + "\n")
    path = write_protocol(tmp_path / "p.yaml", tiny_root, weights, split_dir=splits)
    fails(capsys, run_args(path, tmp_path), f"{splits / 'testlist.txt'}, line 11", "fix: ", *words)


# --------------------------------------------------------------------------------------------- weights


def test_a_missing_weights_file_names_the_protocol_field(tmp_path, capsys, tiny_root):
    path = write_protocol(tmp_path / "p.yaml", tiny_root, "/nowhere/r3d50_KMS_200ep.pth")
    fails(capsys, run_args(path, tmp_path), f"{path}, field 'backbone.weights'", "weights file /nowhere/r3d50_KMS_200ep.pth does not exist", "the harness never downloads weights")
    fails(capsys, run_args(path, tmp_path, "--set", f"backbone.weights={tmp_path}"), "--set, field 'backbone.weights'", f"weights file {tmp_path} is not a file")


def test_weights_of_another_width_are_refused(tmp_path, capsys, tiny_root):
    wide = save_state(Tiny3D(widths=(8, 16, 32, 64)).state_dict(), tmp_path / "tiny3d-narrow.pt")
    path = write_protocol(tmp_path / "p.yaml", tiny_root, wide)
    fails(capsys, run_args(path, tmp_path), f"{path}, field 'backbone.weights'", f"weights file {wide} does not fit backbone 'tiny3d'",
          "keys of another shape (e.g. features.0.0.weight: file (8, 3, 1, 4, 4), model (16, 3, 1, 4, 4))",
          "check that backbone.name matches the architecture")


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_weights_holding_nan_or_inf_are_refused(tmp_path, capsys, tiny_root, weights, value):
    state = torch.load(weights, weights_only=True)
    state["features.2.1.running_var"][5] = value
    bad = save_state(state, tmp_path / "tiny3d-bad.pt")
    path = write_protocol(tmp_path / "p.yaml", tiny_root, bad)
    fails(capsys, run_args(path, tmp_path), f"{path}, field 'backbone.weights'", f"weights file {bad} holds NaN or Inf values in features.2.1.running_var", "use another")


def test_inf_features_from_finite_weights_name_the_video(tmp_path, capsys, tiny_root, weights):
    state = torch.load(weights, weights_only=True)
    state["features.3.1.weight"].fill_(1e38)  # finite, but the last BatchNorm's output overflows to inf
    state["features.3.1.bias"].fill_(3.4e38)
    huge = save_state(state, tmp_path / "tiny3d-huge.pt")
    path = write_protocol(tmp_path / "p.yaml", tiny_root, huge)
    err = fails(capsys, run_args(path, tmp_path), "the backbone gave NaN or Inf features for video ", "nothing was cached for it")
    video = err.split("features for video ", 1)[1].split("\n")[0]
    assert video in (tiny_root / "testlist.txt").read_text().splitlines()
    assert not list((tmp_path / "home").rglob("*.npy"))


class RunsCode:
    """Unpickling this calls os.system: what a malicious checkpoint does."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


@pytest.mark.parametrize("how", ["run --checkpoint", "import-checkpoint", "resume"])
def test_a_checkpoint_that_carries_code_is_refused_without_running_it(tmp_path, capsys, protocol, how):
    marker = tmp_path / "pwned"
    payload = RunsCode(f"touch {shlex.quote(str(marker))}")
    evil = save_state({"format": FORMAT, "method": "protonet", "state_dict": {"w": torch.zeros(1)}, "extra": payload}, tmp_path / "best.pt")
    if how == "run --checkpoint":
        argv = run_args(protocol, tmp_path, "--checkpoint", str(evil))
    elif how == "import-checkpoint":
        argv = ["import-checkpoint", "--from", "trx", str(evil), "--protocol", str(protocol)]
    else:
        with pytest.raises(HarnessError) as e:
            load_checkpoint(evil)  # what train --resume reads last.pt with
        assert "cannot be loaded safely" in e.value.message and "posix.system" in e.value.message and "fix" in e.value.message
        assert not marker.exists()
        return
    # (import-checkpoint reads with its own loader, harness/import_reference.py, which does not name the global)
    fails(capsys, argv, str(evil), "cannot be loaded safely", *(["posix.system"] if how == "run --checkpoint" else []))
    assert not marker.exists()


def test_damaged_and_non_finite_checkpoints_are_refused(tmp_path):
    path = tmp_path / "best.pt"
    save_checkpoint(path, {"method": "trx", "state_dict": {"w": torch.tensor([1.0, float("inf")])}})
    with pytest.raises(HarnessError, match=r"holds NaN or Inf in 'w'"):
        load_checkpoint(path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(HarnessError, match=r"damaged or not a PyTorch file") as e:
        load_checkpoint(path)
    assert str(path) in e.value.message and "fix" in e.value.message
    save_checkpoint(path, {"method": "trx", "state_dict": {"w": 3}})
    with pytest.raises(HarnessError, match=r"'state_dict' is not a dict of tensors"):
        load_checkpoint(path)


# --------------------------------------------------------------------------------------------- results


def _root_ignores_permissions(folder: Path) -> bool:
    probe = folder / "probe"
    probe.mkdir()
    probe.chmod(0o500)
    try:
        (probe / "x").write_text("x")
        return True
    except PermissionError:
        return False
    finally:
        probe.chmod(0o700)


@pytest.mark.parametrize("how", ["a file", "under a file", "chmod 0o500"])
def test_a_results_folder_that_cannot_be_written_stops_before_any_work(tmp_path, capsys, protocol, how):
    if how == "a file":
        results = tmp_path / "results"
        results.write_text("")
        words = [f"results folder {results} is a file"]
    elif how == "under a file":
        (tmp_path / "plain").write_text("")
        results = tmp_path / "plain" / "results"
        words = [f"results folder {results} would be created under {tmp_path / 'plain'}, which is a file"]
    else:
        if _root_ignores_permissions(tmp_path):
            pytest.skip("running with permissions that ignore chmod (root): the file variants cover this")
        results = tmp_path / "results"
        results.mkdir(mode=0o500)
        words = [f"results folder {results} cannot be written: Permission denied"]
    argv = run_args(protocol, tmp_path)
    argv[argv.index("--results") + 1] = str(results)
    try:
        fails(capsys, argv, "--results: ", *words, "pass --results a folder you can write to")
    finally:
        if results.is_dir():
            results.chmod(0o700)
    assert not (tmp_path / "home").exists(), "nothing may be indexed or embedded before the check"


class FullDisk:
    """Simulates a disk that fills up: the first file the harness writes under `under` whose name holds
    `fail_on` gets half of its first write, then ENOSPC; the files before it are written normally."""

    def __init__(self, monkeypatch, under: Path, fail_on: str):
        self.under, self.fail_on, self.opened, self.failed = str(under), fail_on, [], None
        self.paths: dict[int, str] = {}
        real_mkstemp, real_fdopen = tempfile.mkstemp, os.fdopen

        def mkstemp(*args, **kwargs):
            fd, name = real_mkstemp(*args, **kwargs)
            self.paths[fd] = name
            return fd, name

        def fdopen(fd, *args, **kwargs):
            f = real_fdopen(fd, *args, **kwargs)
            name = self.paths.pop(fd, "")
            if not name.startswith(self.under + os.sep):
                return f
            self.opened.append(name)
            if self.failed is None and self.fail_on in os.path.basename(name):
                self.failed = name
                return _NoSpace(f)
            return f

        monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
        monkeypatch.setattr(os, "fdopen", fdopen)


class _NoSpace:
    def __init__(self, f):
        self._f = f

    def write(self, data) -> int:
        self._f.write(bytes(memoryview(data)[: len(data) // 2]))
        self._f.flush()  # half of it reaches the disk, as when the disk fills in the middle of a file
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()
        return False


def leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


def pairs_are_whole(folder: Path) -> None:
    """Wherever records and a summary lie together, they are one run's: never new records beside an old summary."""
    for summary in folder.rglob("summary.json"):
        records = summary.with_name("episodes.jsonl")
        assert records.is_file(), f"{summary} without its records"
        assert json.loads(summary.read_text())["records_sha256"] == hashlib.sha256(records.read_bytes()).hexdigest(), summary
    for records in folder.rglob("episodes.jsonl"):
        assert records.with_name("summary.json").is_file(), f"{records} without its summary"


def test_a_full_disk_keeps_finished_work_and_a_rerun_completes_byte_identical(tmp_path, capsys, monkeypatch, tiny_root, weights):
    path = write_protocol(tmp_path / "disk.yaml", tiny_root, weights, episodes=200)
    home = tmp_path / "home"

    def run(results: Path, *more: str) -> int:
        return main(["run", "--protocol", str(path), "--method", "protonet", "--home", str(home), "--results", str(results),
                     "--device", "cpu", "--quiet", "--batch-episodes", "50", *more])

    assert run(tmp_path / "clean") == 0
    clean = (tmp_path / "clean/disk/protonet/episodes.jsonl").read_bytes()
    capsys.readouterr()

    # the disk fills while the third of four chunks is written
    results = tmp_path / "results"
    argv = ["run", "--protocol", str(path), "--method", "protonet", "--home", str(home), "--results", str(results), "--device", "cpu", "--quiet", "--batch-episodes", "50"]
    with monkeypatch.context() as m:
        disk = FullDisk(m, results, fail_on="000000100.jsonl")
        err = fails(capsys, argv, "No space left on device", "000000100.jsonl", "free space on that disk", "run the same command again", "nothing already written was lost")
    assert [Path(p).name.split(".")[1] for p in disk.opened] == ["000000000", "000000050", "000000100"]
    folder = results / "disk/protonet"
    assert f"cannot write {folder}/.parts/" in err
    assert leftovers(results) == [], "a partial temporary file was left behind"
    chunks = sorted(folder.glob(".parts/*/*.jsonl"))
    assert [c.name for c in chunks] == ["000000000.jsonl", "000000050.jsonl"]
    lines = clean.decode().splitlines(keepends=True)
    assert chunks[0].read_text() == "".join(lines[:50]) and chunks[1].read_text() == "".join(lines[50:100])
    assert not list(folder.rglob("episodes.jsonl")) and not list(folder.rglob("summary.json"))

    # space is freed: the same command resumes from the two chunks and writes what a clean run writes
    assert main(argv) == 0
    assert (folder / "episodes.jsonl").read_bytes() == clean
    assert not (folder / ".parts").exists() and leftovers(results) == []
    pairs_are_whole(results)

    assert json.loads((folder / "summary.json").read_text())["resumed_episodes"] == 100
    capsys.readouterr()

    # a finished run is there; another run of the same method fills the disk while writing its summary:
    # the records must not be replaced without their summary (both files stay as they were)
    before = {p: p.read_bytes() for p in results.rglob("*") if p.is_file() and p.name != ".lock"}
    with monkeypatch.context() as m:
        disk = FullDisk(m, results, fail_on="summary.json")  # after the two chunks and the records
        err = fails(capsys, [*argv, "--episodes", "100"], "summary.json: No space left on device", "free space on that disk")
    assert [Path(p).name.split(".")[1] for p in disk.opened] == ["000000000", "000000050", "episodes", "summary"]
    assert f"cannot write {disk.failed.rsplit('/.', 1)[0]}/summary.json" in err
    assert {p: p.read_bytes() for p in before} == before, "a finished run's files changed"
    assert leftovers(results) == [] and len(list(folder.glob(".parts/*/*.jsonl"))) == 2
    pairs_are_whole(results)
    assert main([*argv, "--episodes", "100"]) == 0
    assert (folder / "episodes.jsonl").read_bytes() == "".join(lines[:100]).encode()
    pairs_are_whole(results)



def test_a_head_checkpoint_for_other_feature_shapes_names_the_file_and_says_retrain(tmp_path, write_protocol):
    import methods
    from harness.pipeline import Settings, head_for
    from harness.protocol import load_protocol

    p = load_protocol(write_protocol())
    trained = methods.create("staf", context={"feature_shape": (128, 1, 2, 2), "num_train_classes": 6})
    path = tmp_path / "best.pt"
    save_checkpoint(path, {"format": FORMAT, "method": "staf", "state_dict": trained.state_dict(), "method_config": trained.config(),
                           "num_train_classes": 6, "backbone": {"weights_sha256": "w"}})
    settings = Settings(home=tmp_path / "home", results=tmp_path / "results")
    with pytest.raises(HarnessError) as e:
        head_for(p, "staf", settings, (128, 2, 2, 2), "w", checkpoint=path)  # 8 positions now, 4 at training
    assert str(path) in str(e.value) and "retrain" in str(e.value) and "Traceback" not in str(e.value)

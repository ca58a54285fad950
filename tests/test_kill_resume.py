"""SIGKILL at random moments: a killed command, run again as it was, ends with the bytes of an uninterrupted run.

The real command line runs in subprocesses on the tiny synthetic benchmark (its 8 frames of 32 x 32 upsampled to
112 x 112, so that embedding is real work), with a small TRX head:

    bench.py train --protocol P --method trx   stage "extract": embed the train and val videos; then "train"
    bench.py run --protocol P --method trx     (embed the test videos,) then stage "evaluate": score the episodes

Each command runs once uninterrupted into folder A; the line each stage logs when it begins says when it began
and how long it lasted. Then, into folder B, the same command is started again and again and killed with SIGKILL
(its whole process group) inside the stage under test: the first time as soon as the stage is seen writing a
file (a temporary file exists beside its target), then at random points drawn from a seeded random.Random over
what is left of the stage: after a random amount of its work (feature entries, validations, chunks of episodes)
plus a random part of the time one unit of that work took in A. Every start must resume from what the killed
ones finished (its log line says how much it found done), and after the command has run to completion, B must
equal A byte for byte: the feature store (entries and packs), best.pt, last.pt, train_log.jsonl, the records,
and the summaries but for their timings; and B holds no temporary file and no chunk folder.

FSV_KILLS_PER_STAGE (default 2: one kill in a write, one at a random point) sets the kills per stage; 8 makes a
soak of a few minutes.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import TINY_PROTOCOL

REPO = Path(__file__).resolve().parents[1]
KILLS = int(os.environ.get("FSV_KILLS_PER_STAGE", "2"))
PROTOCOL, METHOD = "killresume", "trx"
SIZE = 112  # the 3D CNNs' usual frame size
STEPS, VAL_EVERY = 12, 3
EPISODES, BATCH_EPISODES = 300, 50
EXTRACT_BATCH = 16  # videos embedded per batch (Settings.extract_batch)
EXTRA = f"""\
methods: {{{METHOD}: {{dim: 32}}}}
train: {{steps: {STEPS}, tasks_per_batch: 2, query_per_class: 2, val_every: {VAL_EVERY}, val_episodes: 20, lr: 0.001}}
"""

# the line each stage logs when it begins (on stderr), with what it found done; a stage lasts until the next begins
MARKERS = {
    "extract": re.compile(r"^embedding (\d+) (train|val|test) videos(?: \((\d+) are in the feature store already\))?"),
    "train": re.compile(rf"^(?:training {METHOD} on \S+: \d+ steps|resuming {METHOD} at step (\d+) of \d+)"),
    "evaluate": re.compile(rf"^{METHOD} on \S+: scoring \d+ episodes(?: \((\d+) were scored before a stop\))?"),
}
#: fields that differ between two runs by design: durations, what a run found done, when and by which command line it ran
TIMING_FIELDS = {"timings", "resumed_episodes", "videos_embedded_this_run", "train_seconds", "resumed_from_step", "checkpoint", "created_utc", "command"}


class Command:
    """One start of the command line, its stderr lines timestamped as they arrive."""

    def __init__(self, args: list[str]):
        self.args = args
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "bench.py", *args], cwd=REPO, env={**os.environ, "COLUMNS": "400"},  # unwrapped lines
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True,  # its own process group: the kill takes any child with it
        )
        self.lines: list[tuple[float, str]] = []  # stderr: the log
        self.printed: list[float] = []  # when stdout got a line: the result, printed once the work is done
        self.readers = [threading.Thread(target=self._read, daemon=True), threading.Thread(target=self._read_stdout, daemon=True)]
        for reader in self.readers:
            reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append((time.monotonic() - self.started, line.rstrip("\n")))

    def _read_stdout(self) -> None:
        for _ in self.proc.stdout:
            self.printed.append(time.monotonic() - self.started)

    def marker(self, stage: str) -> tuple[float, re.Match] | None:
        """(seconds since the start, match) of the line that announced `stage`."""
        for t, line in list(self.lines):
            if m := MARKERS[stage].match(line):
                return t, m
        return None

    def stage_at(self, t: float) -> str:
        """The stage the command was in `t` seconds after its start: the last one announced before."""
        if self.printed and self.printed[0] <= t:
            return "the end"  # the result is printed: the work is done
        current = "startup"
        for when, line in list(self.lines):
            if when > t:
                break
            current = next((stage for stage, pattern in MARKERS.items() if pattern.match(line)), current)
        return current

    def wait(self) -> int:
        rc = self.proc.wait(300)
        for reader in self.readers:
            reader.join(10)
        self.ended = time.monotonic() - self.started
        return rc

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def check(self, rc: int) -> None:
        log = "\n".join(f"{t:7.2f}s {line}" for t, line in self.lines)
        assert rc == 0, f"bench.py {' '.join(self.args)} failed ({rc}):\n{log}"


def cli(command: str, folder: Path, weights: Path, protocol: Path) -> list[str]:
    """The same command every time: only the folder differs between the uninterrupted and the killed runs."""
    args = [command, "--protocol", str(protocol), "--method", METHOD, "--home", str(folder / "home"),
            "--quiet", "--device", "cpu", "--set", f"frames.resize={SIZE}", "--set", f"frames.crop={SIZE}", "--set", f"backbone.weights={weights}"]
    return args + (["--results", str(folder / "results"), "--batch-episodes", str(BATCH_EPISODES)] if command == "run" else [])


def run_through(args: list[str]) -> Command:
    c = Command(args)
    c.check(c.wait())
    return c


# ------------------------------------------------------------------------------------------- the stages


def entries(folder: Path) -> int:
    return len(list((folder / "home/features").glob("*/videos/*/*.npy")))


def logged_steps(folder: Path) -> int:
    try:
        return len((folder / "home/checkpoints" / PROTOCOL / METHOD / "train_log.jsonl").read_bytes().splitlines())
    except OSError:
        return 0


def chunks(folder: Path) -> int:
    return len(list((folder / "results" / PROTOCOL / METHOD / ".parts").glob("*/*.jsonl")))


class Stage:
    """A stage of a command: how much of its work is on disk (in units), how much there is, where it writes."""

    def __init__(self, name: str, command: str, progress, total: int, unit: int, written):
        self.name, self.command, self.progress, self.total, self.unit, self.written = name, command, progress, total, unit, written

    def kill_points(self, folder: Path) -> list[int]:
        """Amounts of finished work after which a kill may come: the stage's work left, a unit at a time."""
        return list(range(self.progress(folder), self.total, self.unit))

    def found_done(self, c: Command, split_sizes: dict) -> int | None:
        """How much of the stage the command found done when it began it (its announcement says), in units of
        `progress`; None when it never began it."""
        found = c.marker(self.name)
        if found is None:
            return None
        m = found[1]
        if self.name == "extract":  # the train split is embedded first, then val
            return int(m.group(3) or 0) + (split_sizes["train"] if m.group(2) == "val" else 0)
        if self.name == "train":
            return int(m.group(1) or 0)
        return int(m.group(1) or 0) // BATCH_EPISODES


def temporaries(folders: list[Path]) -> set[str]:
    """The temporary files in `folders` (harness.files writes `.<name>.<random>.tmp`, then renames it)."""
    found = set()
    for folder in folders:
        try:
            found |= {e.path for e in os.scandir(folder) if e.name.endswith(".tmp")}
        except OSError:
            pass
    return found


def kill_during(stage: Stage, args: list[str], folder: Path, timing: dict, rng: random.Random, in_write: bool, split_sizes: dict) -> dict:
    """Start the command and SIGKILL it inside `stage`. At random: a delay after the stage began, drawn over what
    is left of the stage (its uninterrupted duration, times the share of its work left, times how much slower
    than uninterrupted this start reached its first log line). In a write (`in_write`): at the first write seen
    (a new temporary file beside its target) once a random amount of the stage's work is done, at least one unit
    of it, so that the next start has work to resume. Returns where the kill landed."""
    done_before = stage.progress(folder)
    points = stage.kill_points(folder)
    target = rng.choice(points[1 : len(points) // 2 + 1] or points)  # in a write: early in what is left
    share = rng.random()  # at random: where in what is left of the stage
    c = Command(args)
    delay = writing = None
    while c.proc.poll() is None and time.monotonic() - c.started < 300:
        now = time.monotonic() - c.started
        if writing is not None:
            if temporaries(stage.written(folder)) - writing:
                break
        elif in_write:
            if c.marker(stage.name) is not None and stage.progress(folder) >= target:
                writing = temporaries(stage.written(folder))
        elif delay is None:
            if found := c.marker(stage.name):
                slower = min(4.0, max(0.5, c.lines[0][0] / timing["first_line_s"]))
                delay = found[0] + share * timing["duration_s"] * (1 - done_before / stage.total) * slower
        elif now >= delay:
            break
        time.sleep(0.001 if writing is not None else 0.005)
    at = time.monotonic() - c.started
    c.kill()
    rc = c.wait()
    kill = {"stage": stage.name, "aim": f"a write after {target} done" if in_write else f"{share:.2f} into what is left",
            "done_before": done_before, "found_done": stage.found_done(c, split_sizes)}
    if rc != -signal.SIGKILL:  # it ended on its own before the kill
        c.check(rc)
        return {**kill, "landed": "after the end"}
    return {**kill, "landed": c.stage_at(at), "at_s": round(at, 2), "left_behind": len(leftovers(folder))}


# ------------------------------------------------------------------------------------------- comparisons


def tree(root: Path) -> dict[str, bytes]:
    """Every file under `root` by its relative path, but lock files (empty, and left in place by design) and the
    empty marks of verified runs (named by their summary's hash, whose timings differ between two runs)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.endswith(".lock") and not p.name.startswith(".verified-")}


def same_files(a: dict[str, bytes], b: dict[str, bytes], what: str) -> None:
    assert sorted(a) == sorted(b), f"{what}: other files (only uninterrupted: {sorted(set(a) - set(b))[:5]}, only killed: {sorted(set(b) - set(a))[:5]})"
    differ = [k for k in a if a[k] != b[k]]
    assert not differ, f"{what}: {len(differ)} files differ after the killed runs, e.g. {differ[:5]}"


def without_timings(path: Path) -> dict:
    return {k: v for k, v in json.loads(path.read_bytes()).items() if k not in TIMING_FIELDS}


def leftovers(folder: Path) -> list[str]:
    """Temporary files and chunk folders: what a killed writer leaves and the next run must clear."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.name.endswith(".tmp") or p.name == ".parts")


# ------------------------------------------------------------------------------------------- the test


@pytest.fixture(scope="module")
def setup(tiny_root, tmp_path_factory):
    """The protocol file, and tiny3d weights pretrained in this process (at 32 x 32) that both folders share."""
    from harness.pipeline import Settings, backbone_for
    from harness.protocol import load_protocol

    base = tmp_path_factory.mktemp("kill-resume")
    small = base / "pretrain.yaml"
    small.write_text(TINY_PROTOCOL.format(name="pretrain", root=tiny_root, shot=1, episodes=10))
    _, _, weights = backbone_for(load_protocol(small), Settings(home=base / "weights", results=base / "unused", show_progress=False), pretrain_if_missing=True)
    protocol = base / f"{PROTOCOL}.yaml"
    protocol.write_text(TINY_PROTOCOL.format(name=PROTOCOL, root=tiny_root, shot=1, episodes=EPISODES) + EXTRA)
    return base, Path(weights), protocol


@pytest.mark.slow
def test_commands_killed_at_random_moments_resume_and_end_byte_identical(setup, tiny_root):
    base, weights, protocol = setup
    a, b = base / "uninterrupted", base / "killed"
    rng = random.Random(20240611)
    split_sizes = {part: len((tiny_root / f"{part}list.txt").read_text().splitlines()) for part in ("train", "val", "test")}

    # uninterrupted: when each stage begins, and how long it lasts (until the next, or the printed result)
    trained = run_through(cli("train", a, weights, protocol))
    evaluated = run_through(cli("run", a, weights, protocol))
    timings = {  # each stage's duration, and when its command logged its first line (the start-up time)
        "extract": {"duration_s": trained.marker("train")[0] - trained.marker("extract")[0], "first_line_s": trained.lines[0][0]},
        "train": {"duration_s": trained.printed[0] - trained.marker("train")[0], "first_line_s": trained.lines[0][0]},
        "evaluate": {"duration_s": evaluated.printed[0] - evaluated.marker("evaluate")[0], "first_line_s": evaluated.lines[0][0]},
    }

    # each stage killed again and again (the first kill inside a write), then its command run to completion
    ckpt = Path("home/checkpoints") / PROTOCOL / METHOD
    stages = [
        Stage("extract", "train", entries, split_sizes["train"] + split_sizes["val"], EXTRACT_BATCH, lambda f: [*f.glob("home/features/*/packs"), *f.glob("home/features/*/videos/*")]),
        Stage("train", "train", logged_steps, STEPS, VAL_EVERY, lambda f: [f / ckpt]),
        Stage("evaluate", "run", chunks, EPISODES // BATCH_EPISODES, 1, lambda f: list((f / "results" / PROTOCOL / METHOD / ".parts").glob("*"))),
    ]
    kills = []
    for stage in stages:
        for k in range(KILLS):
            if stage.kill_points(b):
                kills.append(kill_during(stage, cli(stage.command, b, weights, protocol), b, timings[stage.name], rng, k == 0, split_sizes))
        if stage.name != "extract":  # extraction is the first stage of `train`: its command goes on to training
            done_before = stage.progress(b)
            c = run_through(cli(stage.command, b, weights, protocol))
            kills.append({"stage": stage.name, "aim": "none: to completion", "done_before": done_before, "found_done": stage.found_done(c, split_sizes), "landed": "completed"})
    report = f"uninterrupted (s): { {k: {n: round(x, 2) for n, x in v.items()} for k, v in timings.items()} }\nkills: " + "\n  ".join(map(str, kills))
    print(report)

    # kills land inside the stage they aim at, and every start resumes from what was finished before it
    for stage in stages:
        aimed = [k for k in kills if k["stage"] == stage.name]
        assert any(k["landed"] == stage.name for k in aimed) or not aimed, f"no kill landed in stage '{stage.name}'\n{report}"
        for k in aimed:
            assert k["found_done"] is None or k["found_done"] >= k["done_before"], f"stage '{stage.name}' started again from less than was done\n{report}"
        # (a stage whose first kill came after its last write leaves nothing to resume: one start, nothing to check)
        assert any(k["done_before"] and k["found_done"] for k in aimed) or len(aimed) < 2, f"no start of stage '{stage.name}' found some of it done\n{report}"

    # the feature store: every per-video entry and every pack, byte for byte
    same_files(tree(a / "home/features"), tree(b / "home/features"), "feature store")
    # training: the selected weights, the state to resume from, the log (each step once), the summary
    for name in ("best.pt", "last.pt", "train_log.jsonl"):
        assert (a / ckpt / name).read_bytes() == (b / ckpt / name).read_bytes(), f"{name} differs after the killed runs\n{report}"
    assert [json.loads(line)["step"] for line in (b / ckpt / "train_log.jsonl").read_text().splitlines()] == list(range(1, STEPS + 1))
    assert without_timings(a / ckpt / "summary.json") == without_timings(b / ckpt / "summary.json")
    # evaluation: the records (top level and the run's own copy), and every summary field that holds no timing
    res_a, res_b = a / "results" / PROTOCOL / METHOD, b / "results" / PROTOCOL / METHOD
    same_files({k: v for k, v in tree(res_a).items() if not k.endswith("summary.json")}, {k: v for k, v in tree(res_b).items() if not k.endswith("summary.json")}, "records")
    summaries = sorted(p.relative_to(res_b) for p in res_b.rglob("summary.json"))
    assert summaries == sorted(p.relative_to(res_a) for p in res_a.rglob("summary.json")) and len(summaries) == 2
    for name in summaries:
        assert without_timings(res_a / name) == without_timings(res_b / name)
    summary = json.loads((res_b / "summary.json").read_bytes())
    assert summary["n_episodes"] == EPISODES and summary["records_sha256"] == hashlib.sha256((res_b / "episodes.jsonl").read_bytes()).hexdigest()
    # nothing a killed writer left behind
    assert leftovers(b) == [], f"left behind by the killed runs: {leftovers(b)}\n{report}"


# ------------------------------------------------------------------------------------------- the narrow windows
# Some moments are too short for a random kill to find often: each is made here as a kill would leave it.


def settings(folder: Path, **kw):
    from harness.pipeline import Settings

    return Settings(home=folder / "home", results=folder / "results", show_progress=False, **kw)


@pytest.fixture
def small(setup):
    """The commands' protocol, as their --set options make it (at 32 x 32, TRX's training meets denormal floats
    and is ten times slower)."""
    from harness.protocol import load_protocol

    _, weights, protocol = setup
    return load_protocol(protocol, [f"backbone.weights={weights}", f"frames.resize={SIZE}", f"frames.crop={SIZE}"])


def test_equal_checkpoints_are_equal_bytes_whatever_their_objects_came_from(tmp_path):
    import torch

    from harness.checkpoints import load_checkpoint, save_checkpoint

    model = torch.nn.Linear(4, 2)
    opt = torch.optim.Adam(model.parameters(), lr=0.001)
    model(torch.ones(1, 4)).sum().backward()
    opt.step()
    save_checkpoint(tmp_path / "fresh.pt", {"settings": {"lr": 0.001}, "optimizer": opt.state_dict(), "state_dict": model.state_dict()})
    # a resumed training: its settings fresh, its optimizer state loaded (keys that are other string objects)
    again = torch.optim.Adam(model.parameters(), lr=0.001)
    again.load_state_dict(load_checkpoint(tmp_path / "fresh.pt")["optimizer"])
    save_checkpoint(tmp_path / "resumed.pt", {"settings": {"lr": 0.001}, "optimizer": again.state_dict(), "state_dict": model.state_dict()})
    assert (tmp_path / "fresh.pt").read_bytes() == (tmp_path / "resumed.pt").read_bytes()


def test_training_stopped_after_its_last_checkpoint_finishes_its_log_and_summary(small, tmp_path, monkeypatch):
    import harness.train as train_module
    from harness.train import train

    whole = train(small, METHOD, settings(tmp_path / "a"))
    real = train_module.save_checkpoint

    def save_then_stop(path, payload):  # killed after the final last.pt, before train_log.jsonl and summary.json
        real(path, payload)
        if path.name == "last.pt" and payload["step"] == STEPS:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "save_checkpoint", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        train(small, METHOD, settings(tmp_path / "b"))
    monkeypatch.undo()
    resumed = train(small, METHOD, settings(tmp_path / "b"))  # the same call: no --resume
    a, b = tmp_path / "a/home/checkpoints" / PROTOCOL / METHOD, tmp_path / "b/home/checkpoints" / PROTOCOL / METHOD
    for name in ("best.pt", "last.pt", "train_log.jsonl"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert without_timings(a / "summary.json") == without_timings(b / "summary.json")
    assert resumed["resumed_from_step"] == STEPS and whole["selected_step"] == resumed["selected_step"]

    # finished: the same command again trains nothing and writes nothing; --recompute trains again, to the same bytes
    (b / "train_log.jsonl").write_bytes((b / "train_log.jsonl").read_bytes()[:-40])  # and a damaged log is rewritten
    written = {name: (b / name).stat().st_mtime_ns for name in ("best.pt", "last.pt", "summary.json")}
    assert train(small, METHOD, settings(tmp_path / "b"))["selected_step"] == whole["selected_step"]
    assert {name: (b / name).stat().st_mtime_ns for name in written} == written
    assert (a / "train_log.jsonl").read_bytes() == (b / "train_log.jsonl").read_bytes()
    assert train(small, METHOD, settings(tmp_path / "b", recompute=True))["resumed_from_step"] == 0
    for name in ("best.pt", "last.pt", "train_log.jsonl"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_a_last_checkpoint_of_other_settings_is_replaced_by_the_same_command_and_refused_by_resume(small, tmp_path):
    from harness.errors import HarnessError
    from harness.protocol import load_protocol
    from harness.train import train

    train(small, METHOD, settings(tmp_path))
    other = load_protocol(small.source, [f"backbone.weights={small.backbone.weights}", f"frames.resize={SIZE}", f"frames.crop={SIZE}", "train.steps=6"])
    with pytest.raises(HarnessError, match=r"last.pt was written for another run \(protocol_sha256, train_settings differ\)"):
        train(other, METHOD, settings(tmp_path), resume=True)
    assert train(other, METHOD, settings(tmp_path))["resumed_from_step"] == 0
    log = (tmp_path / "home/checkpoints" / PROTOCOL / METHOD / "train_log.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in log] == list(range(1, 7))


def test_a_run_stopped_inside_its_finish_is_completed_by_the_same_command(small, tmp_path):
    from harness.pipeline import run_method

    whole = run_method(small, "protonet", settings(tmp_path / "a", batch_episodes=100))
    run_method(small, "protonet", settings(tmp_path / "b", batch_episodes=100))
    a, b = tmp_path / "a/results" / PROTOCOL / "protonet", tmp_path / "b/results" / PROTOCOL / "protonet"
    fingerprint = whole["run_fingerprint"]
    # as a kill leaves it after the run's own copy (runs/<fingerprint>/) was written: no top-level pair yet, the
    # chunks still there, half-written temporary files beside the top-level pair and among the chunks
    (b / "episodes.jsonl").unlink()
    (b / "summary.json").unlink()
    parts = b / ".parts" / fingerprint
    parts.mkdir(parents=True)
    (parts / "000000000.jsonl").write_bytes((b / "runs" / fingerprint / "episodes.jsonl").read_bytes().splitlines(keepends=True)[0])
    (parts / ".000000100.jsonl.k1ll3d.tmp").write_bytes(b"{")
    (b / ".summary.json.k1ll3d.tmp").write_bytes(b"{")
    again = run_method(small, "protonet", settings(tmp_path / "b", batch_episodes=100))
    assert again["records_sha256"] == whole["records_sha256"]
    assert (a / "episodes.jsonl").read_bytes() == (b / "episodes.jsonl").read_bytes()
    assert without_timings(a / "summary.json") == without_timings(b / "summary.json")
    assert leftovers(tmp_path / "b/results") == []

    # the run asked for last is the top-level pair, whether it was scored or served from runs/
    run_method(small, "protonet", settings(tmp_path / "b", batch_episodes=100), n_episodes=50)
    assert json.loads((b / "summary.json").read_bytes())["n_episodes"] == 50
    run_method(small, "protonet", settings(tmp_path / "b", batch_episodes=100))
    assert json.loads((b / "summary.json").read_bytes())["run_fingerprint"] == fingerprint
    assert (b / "episodes.jsonl").read_bytes() == (a / "episodes.jsonl").read_bytes()


def test_temporary_files_of_killed_writers_are_removed_by_the_next_run(small, tmp_path):
    from harness.pipeline import run_method

    run_method(small, "protonet", settings(tmp_path))
    store = next((tmp_path / "home/features").glob("*-*"))
    stale = [store / "packs" / ".0123.npy.k1ll3d.tmp", next(store.glob("videos/*")) / ".4567.npy.k1ll3d.tmp", store / ".meta.json.k1ll3d.tmp"]
    for path in stale:
        path.write_bytes(b"\x93NUMPY")
    keep = store / "packs" / "notes.tmp"  # not one of ours (no leading dot): left alone
    keep.write_bytes(b"")
    run_method(small, "protonet", settings(tmp_path))
    assert not any(p.exists() for p in stale) and keep.exists()


def test_an_entry_does_not_depend_on_the_videos_embedded_beside_it(small, tmp_path):
    """A resumed extraction embeds what the killed one left, maybe a single video: its entry must have the bytes
    an uninterrupted extraction gives it (on a CPU a batch of one clip takes other kernels, other low bits)."""
    import torch

    from harness.features import FeatureStore
    from harness.pipeline import backbone_for, load_index

    p = small
    videos = load_index(p, settings(tmp_path), "test").videos
    backbone, sha, _ = backbone_for(p, settings(tmp_path))
    stores = {}
    for name, groups in (("whole", [videos]), ("resumed", [videos[:-1], videos[-1:]]), ("two processes", [videos[0::2], videos[1::2]])):
        store = FeatureStore(tmp_path / name, "tiny3d", sha, p.frames)
        for group in groups:
            store.extract(group, backbone, torch.device("cpu"), batch_size=EXTRACT_BATCH)
        stores[name] = tree(store.dir / "videos")
    assert len(stores["whole"]) == len(videos)
    same_files(stores["whole"], stores["resumed"], "resumed extraction")
    same_files(stores["whole"], stores["two processes"], "sharded extraction")


def test_a_synthetic_folder_killed_while_being_marked_is_generated_by_the_same_command(tmp_path):
    from harness.data.synthetic import PARTIAL_MARKER, SyntheticSpec, generate, is_complete

    spec = SyntheticSpec(seed=3, videos_per_class=1, frames=8, size=32, n_train=2, n_val=2, n_test=2)
    root = tmp_path / "data"
    root.mkdir()
    (root / f"{PARTIAL_MARKER}.tmp").write_text('{"vers')  # killed while writing the marker of a new folder
    assert is_complete(generate(root, spec), spec)
    assert not list(root.glob(".*.tmp")) and not (root / PARTIAL_MARKER).exists()

"""Bad protocols, head settings, names and huge requests, end to end through the
command line: every case exits 2 with one `error:` paragraph that names the culprit (file and line, field or
option) and has a `fix:`, never shows a traceback, never hangs, and leaves what was stored before as it was.

* Head settings: each head declares the kind and bounds of its settings (`settings_schema`, methods/settings.py);
  the registry refuses a value outside them, naming `methods.<name>.<setting>`, from `run --set`, a protocol file
  and `train`, before any video is read. Frames are checked against what the backbone can take (its spatial
  stride, a forward pass on the meta device) and against the memory there is.
* YAML: duplicate keys (both lines), empty files, alias bombs, recursive aliases, deep nesting, files over 1 MB,
  include fan-out, tags that build objects, numbers too long to read, control characters; in included files
  and in `--set` values too.
* Names: protocol, dataset and method names that would leave the results or checkpoint folders are refused;
  symbolic links that leave the data root are followed and listed in the summary.
* Huge requests: episodes beyond MAX_EPISODES (a protocol asking for 10^12 hung before), training episodes,
  workers, and memory needs (frames, batches of clips, episodes) beyond what the machine has: refused with the
  figure, quickly.

Memory figures depend on the machine, so the cases that need a machine of a given size set
`harness.limits.available_memory` (the in-process command line reads it).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

import harness.limits as limits
import methods
from harness.checkpoints import checkpoint_dir
from harness.cli import main
from harness.errors import HarnessError
from harness.protocol import MAX_EPISODES, MAX_YAML_VALUES, load_protocol
from harness.results import RunFolder
from methods.settings import MAP_FRAMES, Integer, Integers, Number
from test_bad_input import copy_test_split, fails, run_args, weights, write_protocol  # noqa: F401  (weights: a fixture)

GB = 10**9


def snapshot(*folders: Path) -> dict[Path, bytes]:
    """Every file under `folders` (lock files aside: they are empty and stay) with its bytes."""
    return {p: p.read_bytes() for folder in folders if folder.exists() for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"}


def train_args(protocol: Path, tmp_path: Path, *more: str, method: str = "trx") -> list[str]:
    return ["train", "--protocol", str(protocol), "--method", method, "--home", str(tmp_path / "home"), "--device", "cpu", "--quiet", *more]


@pytest.fixture
def protocol(tmp_path, tiny_root, weights) -> Path:
    return write_protocol(tmp_path / "tiny.yaml", tiny_root, weights)


@pytest.fixture
def memory(monkeypatch):
    """Pretend the machine (and any device) has `set(bytes)` free."""

    class Memory:
        def set(self, n: int) -> None:
            monkeypatch.setattr(limits, "available_memory", lambda device="cpu": n)

    return Memory()


# ------------------------------------------------------------------------------------- 1. head settings

HEAD_SETTINGS = [
    # (method run, --set, words in the error)
    ("protonet", "methods.protonet.metric=foo", ["field 'methods.protonet.metric'", "must be one of 'euclidean', 'cosine', got \"foo\"", "leave it out for the default"]),
    ("protonet", "methods.protonet.metric=cosin", ["did you mean 'cosine'?"]),
    ("protonet", "methods.protonet.scale=ten", ["field 'methods.protonet.scale'", "must be a finite number above 0, got \"ten\""]),
    ("protonet", "methods.protonet.scale=-1", ["field 'methods.protonet.scale'", "must be above 0, got -1"]),
    ("protonet", "methods.protonet.scale=.nan", ["field 'methods.protonet.scale'", "cannot be stored as JSON"]),
    ("protonet", "methods.protonet.scale=.inf", ["field 'methods.protonet.scale'", "cannot be stored as JSON"]),
    ("protonet", "methods.protonet.scale=[1, 2]", ["field 'methods.protonet.scale'", "must be a finite number"]),
    ("protonet", "methods.protonet.metrc=cosine", ["field 'methods.protonet.metrc'", "has no setting 'metrc'", "did you mean 'metric'?"]),
    ("protonet", "methods.protonett.scale=2", ["field 'methods.protonett'", "no registered method", "did you mean 'protonet'?"]),
    ("protonet", "methods.protonet=5", ["field 'methods.protonet'", "must be a section of name: value"]),
    ("trx", "methods.trx.dim=-1", ["field 'methods.trx.dim'", "must be at least 1, got -1", "at most 16384"]),
    ("trx", "methods.trx.dim=256.0", ["field 'methods.trx.dim'", "must be a whole number"]),
    ("trx", "methods.trx.dim=10000000000", ["must be at most 16384"]),
    ("trx", "methods.trx.dropout=1.0", ["field 'methods.trx.dropout'", "must be below 1, got 1.0"]),
    ("trx", "methods.trx.dropout=-0.1", ["must be at least 0, got -0.1"]),
    ("trx", "methods.trx.temporal_set=[2, 9]", ["field 'methods.trx.temporal_set'", "at most 4 (T, the time steps of the backbone map, more with frames.count), and holds 9"]),
    ("trx", "methods.trx.temporal_set=[0, 2]", ["must hold numbers at least 1, and holds 0"]),
    ("trx", "methods.trx.temporal_set=[2, 2]", ["must not hold a number twice"]),
    ("trx", "methods.trx.temporal_set=[]", ["a list of 1 to 8 whole numbers"]),
    ("trx", "methods.trx.temporal_set=two", ["a list of 1 to 8 whole numbers"]),
    ("otam", "methods.otam.lam=0", ["field 'methods.otam.lam'", "must be above 0, got 0"]),
    ("otam", "methods.otam.bidirectional=yes please", ["field 'methods.otam.bidirectional'", "must be true or false, got \"yes please\""]),
    ("staf", "methods.staf.hidden=0", ["field 'methods.staf.hidden'", "must be at least 1"]),
    ("staf", "methods.staf.temperature=-0.025", ["field 'methods.staf.temperature'", "must be above 0"]),
]


@pytest.mark.parametrize("method, override, words", HEAD_SETTINGS, ids=[c[1] for c in HEAD_SETTINGS])
def test_a_head_setting_outside_its_schema_is_named_from_set(tmp_path, capsys, protocol, method, override, words):
    fails(capsys, run_args(protocol, tmp_path, "--set", override, method=method), "--set", *words)
    assert not (tmp_path / "home").exists() and not (tmp_path / "results").exists(), "refused before any work"


def test_a_head_setting_in_a_protocol_file_names_the_file(tmp_path, capsys, tiny_root, weights):
    path = write_protocol(tmp_path / "p.yaml", tiny_root, weights, extra="methods:\n  protonet: {metric: manhattan}\n")
    fails(capsys, run_args(path, tmp_path), f"{path}, field 'methods.protonet.metric'", "one of 'euclidean', 'cosine'")
    path = write_protocol(tmp_path / "q.yaml", tiny_root, weights, extra="methods:\n  trx: {temporal_set: [1, 5]}\n")
    fails(capsys, run_args(path, tmp_path, method="protonet"), f"{path}, field 'methods.trx.temporal_set'", "at most 4")


def test_train_refuses_bad_head_settings_before_any_work(tmp_path, capsys, protocol):
    fails(capsys, train_args(protocol, tmp_path, "--set", "methods.trx.dim=0"), "--set, field 'methods.trx.dim'", "must be at least 1")
    fails(capsys, train_args(protocol, tmp_path, "--set", "methods.staf.lamda=-1", method="staf"), "--set, field 'methods.staf.lamda'", "must be at least 0")
    # the default temporal_set [2, 3] cannot be taken from a map of one time step (2 frames through tiny3d)
    fails(capsys, train_args(protocol, tmp_path, "--set", "frames.count=2"), f"{protocol}, field 'methods.trx.temporal_set'",
          "at most 1 (T, the time steps of the backbone map, more with frames.count)", "got [2, 3]")
    assert not (tmp_path / "home").exists(), "nothing pretrained, indexed or embedded"


def test_too_many_frame_tuples_are_refused(tmp_path, capsys, protocol):
    # 32 frames through tiny3d: T = 16, and C(16, 8) = 12,870 tuples of 8
    fails(capsys, run_args(protocol, tmp_path, "--set", "frames.count=32", "--set", "methods.trx.temporal_set=[2, 8]", method="trx"),
          "field 'methods.trx.temporal_set'", "makes 12,870 tuples of 8 of the T = 16 time steps", "more than 2,000")


def test_the_registry_checks_schemas_however_a_head_is_built():
    with pytest.raises(methods.SettingsError) as e:
        methods.create("trx", context={"feature_shape": (16, 8, 1, 1)}, temporal_set=[2, 9])
    assert e.value.setting == "temporal_set" and "at most 8" in str(e.value) and e.value.fix
    from methods.protonet import ProtoNet

    with pytest.raises(methods.SettingsError, match="'metric' must be one of"):
        ProtoNet(metric="foo")  # built without the registry: still checked
    assert methods.resolve_settings("trx", {"dim": 8}) == {"temporal_set": [2, 3], "dim": 8, "dropout": 0.1, "pe_scale": 0.1}


def test_a_schema_is_checked_when_a_head_is_registered():
    class Head(methods.Head):
        settings_schema = {"widht": Integer(at_least=1)}

        def __init__(self, width: int = 4):
            super().__init__()

        def forward(self, support, support_labels, query, way):
            return query

    with pytest.raises(ValueError, match="names 'widht', which is not a setting of its constructor"):
        methods.register("schema-typo")(Head)
    Head.settings_schema = {"width": 3}
    with pytest.raises(ValueError, match="not a kind from methods.settings"):
        methods.register("schema-kind")(Head)
    assert "schema-typo" not in methods.list_methods()


def test_schema_kinds():
    assert Number(above=0).problem(0, None) == "must be above 0"
    assert Number(at_least=0, below=1).problem(True, None).startswith("must be a finite number")
    assert Number().problem(float("nan"), None) is not None
    assert Integer(at_most=MAP_FRAMES).problem(9, None) is None, "a fact the context lacks is checked where it is known"
    assert "at most 8" in Integer(at_most=MAP_FRAMES).problem(9, {"feature_shape": (4, 8, 1, 1)})
    assert Integers(distinct=True).problem([1, 1], None) == "must not hold a number twice, and holds 1 twice"
    assert Integers().problem([1, True], None) is not None


# ------------------------------------------------------------------------------- 1. frames and backbone


@pytest.mark.parametrize(
    "overrides, words",
    [
        (["frames.crop=1"], ["--set, field 'frames.crop'", "frames.crop 1 is smaller than what one position of backbone 'tiny3d''s map covers (32 x 32 pixels)", "at least 32"]),
        (["frames.crop=16"], ["frames.crop 16 is smaller", "at least 32"]),
        (["backbone.name=r3d_18", "frames.resize=112", "frames.crop=8"], ["frames.crop 8", "backbone 'r3d_18'", "(16 x 16 pixels)", "at least 16"]),
        (["frames.resize=1000000"], ["--set, field 'frames.resize'", "decoding one clip of frames.count 8 at frames.resize 1,000,000", "GB of memory", "lower frames.resize"]),
        (["frames.count=100000000"], ["--set, field 'frames.count'", "GB of memory"]),
        (["frames.crop=0"], ["field 'frames.crop'", "between 1 and frames.resize"]),
        (["frames.resize=-5"], ["field 'frames.resize'", "must be positive"]),
    ],
    ids=["crop-1", "crop-16", "crop-below-stride-16", "resize-huge", "count-huge", "crop-0", "resize-negative"],
)
def test_frames_the_backbone_cannot_take(tmp_path, capsys, protocol, overrides, words):
    argv = run_args(protocol, tmp_path, *[x for o in overrides for x in ("--set", o)])
    started = time.perf_counter()
    fails(capsys, argv, *words)
    assert time.perf_counter() - started < 30
    assert not (tmp_path / "home").exists()


def test_memory_figures_for_frames_and_clips(tmp_path, capsys, protocol, memory):
    memory.set(16 * GB)
    # 8 frames resized to a short side of 30,000: 8 x 3 x 30,000 x 40,000 bytes = 28.8 GB ("can't allocate" before)
    fails(capsys, run_args(protocol, tmp_path, "--set", "frames.resize=30000"), "--set, field 'frames.resize'",
          "8 frames x 3 x 30,000 x 40,000 bytes for 4:3 video", "needs about 28.8 GB of memory, and this machine has 16.0 GB free")
    # a batch of 16 clips, the backbone's largest activation and its weights
    memory.set(2 * 10**6)
    err = fails(capsys, run_args(protocol, tmp_path), f"{protocol}, field 'frames.", "embedding a batch of 16 clips of 8 x 32 x 32 with backbone 'tiny3d'",
                "needs at least", "this machine has 2 MB free", "lower frames.crop or frames.count")
    assert "largest activation" in err and "weights" in err
    assert not (tmp_path / "home").exists()


# ------------------------------------------------------------------------------------------------ 2. YAML

BOMB = "name: bomb\na: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi"))


@pytest.mark.parametrize(
    "text, words",
    [
        ("way: 5\nshot: 1\nway: 10\n", ["line 5", "key 'way' is written twice in one section: line 3 and line 5", "fix: keep one of the two"]),
        ("frames: {count: 8, count: 16}\n", ["line 3", "key 'count' is written twice in one section: line 3, column 10 and column 20"]),
        ("methods:\n  protonet:\n    metric: cosine\n    metric: euclidean\n", ["key 'metric' is written twice", "line 5 and line 6"]),
        (BOMB.replace("name: bomb\n", ""), ["aliases expand to more than 100,000 values", "fix: write the values out"]),
        ("methods: &m {protonet: *m}\n", ["alias '*m' (line 3) stands for the section it is written in (anchor '&m', line 3)"]),
        ("a: &a [1, *a]\n", ["alias '*a' (line 3) stands for the section it is written in"]),
        ("seed: " + "[" * 60 + "]" * 60 + "\n", ["line 3", "nested more than 50 deep"]),
        ("".join(f"x{i}: &x{i} [*x{i - 1}]\n" if i else "x0: &x0 [1]\n" for i in range(60)), ["aliases nest sections and lists more than 50 deep"]),
        ("seed: !!python/object/apply:os.system [touch /tmp/pwned]\n", ["line 3", "tag 'tag:yaml.org,2002:python/object/apply:os.system' is not allowed", "fix: remove the tag"]),
        ("seed: " + "7" * 5000 + "\n", ["a value cannot be read: Exceeds the limit (4300 digits)", "fix: write numbers with fewer digits"]),
        ("seed: 1\x01\n", ["control character (#x0001", "fix: remove it"]),
        ("way: 5\n---\nway: 6\n", ["line 4", "more than one YAML document", "fix: a protocol is one document"]),
    ],
    ids=["duplicate", "duplicate-same-line", "duplicate-nested", "alias-bomb", "recursive-alias", "recursive-list", "deep", "deep-aliases",
         "python-tag", "long-number", "control-character", "two-documents"],
)
def test_yaml_read_strictly(tmp_path, capsys, text, words):
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\ndataset: {name: tiny, root: /nowhere}\n" + text)
    started = time.perf_counter()
    fails(capsys, run_args(path, tmp_path), str(path), *words)
    assert time.perf_counter() - started < 5


def test_an_alias_bomb_is_refused_well_under_a_second(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB)  # nine levels of nine aliases: 9^9 = 387,420,489 values
    started = time.perf_counter()
    with pytest.raises(HarnessError) as e:
        load_protocol(path)
    assert time.perf_counter() - started < 0.5
    assert f"more than {MAX_YAML_VALUES:,} values" in e.value.message and str(path) in e.value.message


def test_merge_keys_and_aliases_within_bounds_still_work(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("name: ok\nframes: &f {count: 8, resize: 32, crop: 32}\ntrain: {seed: 3}\nmethods:\n  protonet: &p {metric: cosine}\n"
                    "  otam: {<<: {lam: 0.5}, lam: 0.2}\n")
    p = load_protocol(path)
    assert p.frames.count == 8 and p.methods == {"protonet": {"metric": "cosine"}, "otam": {"lam": 0.2}}


@pytest.mark.parametrize("content", ["", "# nothing but a comment\n", "\n\n"], ids=["empty", "comments", "blank-lines"])
def test_an_empty_protocol_file_is_an_error(tmp_path, capsys, content):
    path = tmp_path / "empty.yaml"
    path.write_text(content)
    fails(capsys, run_args(path, tmp_path), f"{path}: the protocol file is empty (or holds only comments)", "fix: write its fields")


def test_included_files_are_read_by_the_same_rules(tmp_path, capsys, protocol):
    (tmp_path / "dup.yaml").write_text("way: 5\nway: 6\n")
    (tmp_path / "empty.yaml").write_text("")
    for included, words in (("dup.yaml", ["key 'way' is written twice"]), ("empty.yaml", ["the protocol file is empty"])):
        path = tmp_path / f"with-{included}"
        path.write_text(f"include: {included}\nname: x\n")
        fails(capsys, run_args(path, tmp_path), str(tmp_path / included), *words)
    big = tmp_path / "big.yaml"
    big.write_text("# padding\n" * 120_000)
    path = tmp_path / "with-big.yaml"
    path.write_text("include: big.yaml\nname: x\n")
    fails(capsys, run_args(path, tmp_path), str(big), "the file is 1,200,000 bytes, more than the 1,000,000 a protocol file may have")
    # ten files each including the next one ten times: 10^10 reads before; now the count stops it
    for i in range(10):
        (tmp_path / f"fan{i}.yaml").write_text(f"include: [{', '.join([f'fan{i + 1}.yaml'] * 10)}]\n" if i < 9 else "way: 5\n")
    path = tmp_path / "fan.yaml"
    path.write_text("include: fan0.yaml\nname: x\n")
    started = time.perf_counter()
    fails(capsys, run_args(path, tmp_path), "field 'include'", "reads more than 100 files through include:")
    assert time.perf_counter() - started < 5


def test_a_protocol_file_over_a_megabyte_is_refused(tmp_path, capsys):
    path = tmp_path / "big.yaml"
    path.write_text("name: big\n" + "# padding line\n" * 80_000)
    fails(capsys, run_args(path, tmp_path), f"{path}: the file is 1,200,010 bytes, more than the 1,000,000 a protocol file may have")


@pytest.mark.parametrize(
    "value, words",
    [
        ("{metric: cosine, metric: euclidean}", ["--set, field 'methods.protonet'", "key 'metric' is written twice"]),
        ("&a {x: *a}", ["alias '*a'", "stands for the section it is written in"]),
        ("{" + ", ".join(f"k{i}: &k{i} [{', '.join([f'*k{i - 1}'] * 9)}]" if i else "k0: &k0 [1, 1, 1, 1, 1, 1, 1, 1, 1]" for i in range(9)) + "}", ["more than 100,000 values"]),
    ],
    ids=["duplicate", "recursive", "bomb"],
)
def test_set_values_are_read_by_the_same_rules(tmp_path, capsys, protocol, value, words):
    fails(capsys, run_args(protocol, tmp_path, "--set", f"methods.protonet={value}"), "the value of --set methods.protonet is refused", *words)


def test_set_text_that_is_not_yaml_is_still_text(tmp_path, protocol):
    p = load_protocol(protocol, ["dataset.root=[data, a", "dataset.split_dir=!odd"])
    assert p.dataset.root == "[data, a" and p.dataset.split_dir == "!odd"


# ----------------------------------------------------------------------------------------------- 3. names


@pytest.mark.parametrize(
    "name, words",
    [
        ("../../escaped", ["holds a path separator"]),
        ("..", ["holds '..'"]),
        ("a..b", ["holds '..'"]),
        ("/tmp/absolute", ["holds a path separator"]),
        ("C:\\\\results", ["holds a path separator"]),
        (".hidden", ["starts with '.'"]),
        ("-rf", ["starts with '-'"]),
        ("two words", ["holds ' '"]),
        ("tab\\tname", ["holds '\\t'"]),
        ("émoji", ["holds 'é'"]),
        ("x" * 101, ["101 characters long, more than 100"]),
        ("''", ["the name is empty"]),
    ],
    ids=["dotdot-path", "dotdot", "dotdot-inside", "absolute", "windows", "hidden", "option", "space", "tab", "non-ascii", "long", "empty"],
)
def test_protocol_names_that_are_not_plain_folder_names_are_refused(tmp_path, capsys, tiny_root, weights, name, words):
    path = write_protocol(tmp_path / "p.yaml", tiny_root, weights)
    path.write_text(path.read_text().replace("name: p\n", f'name: "{name}"\n' if name != "''" else "name: ''\n"))
    results = tmp_path / "deep" / "er" / "results"
    argv = run_args(path, tmp_path)
    argv[argv.index("--results") + 1] = str(results)
    fails(capsys, argv, f"{path}, field 'name'", "name cannot be used as a folder or file name", *words, "letters, digits, '.', '_' or '-'")
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix in (".jsonl", ".json", ".pt")], "nothing written anywhere"


def test_other_names_that_become_paths(tmp_path, capsys, tiny_root, weights, protocol):
    fails(capsys, run_args(protocol, tmp_path, "--set", "name=../x"), "--set, field 'name'", "holds a path separator")
    fails(capsys, train_args(protocol, tmp_path, "--set", "name=../../checkpoints-elsewhere"), "--set, field 'name'")
    fails(capsys, run_args(protocol, tmp_path, "--set", "dataset.name=../../weights"), "--set, field 'dataset.name'", "holds a path separator")
    fails(capsys, run_args(protocol, tmp_path, "--set", "methods={../x: {}}"), "field 'methods'", "methods holds a section named '../x', which is no method name")
    # no name: field, and a file name that cannot be one
    odd = write_protocol(tmp_path / "my protocol.yaml", tiny_root, weights)
    odd.write_text("\n".join(line for line in odd.read_text().splitlines() if not line.startswith("name:")) + "\n")
    fails(capsys, run_args(odd, tmp_path), f"{odd}: the protocol has no name: field, and its file name cannot be one", "holds ' '", "fix: add `name: NAME`")
    # compare reads folders named by its arguments
    fails(capsys, ["compare", "protonet", "otam", "--protocol", "../..", "--results", str(tmp_path)], "--protocol", "holds a path separator")
    fails(capsys, ["compare", "protonet", "../otam", "--protocol", "tiny", "--results", str(tmp_path)], "method '../otam'", "holds a path separator")
    assert not (tmp_path / "home").exists() and not (tmp_path / "results").exists()


def test_names_are_checked_where_they_become_folders(tmp_path):
    for bad in ("../x", "/abs", "a/b", ".."):
        with pytest.raises(HarnessError, match="cannot be used as a folder name"):
            RunFolder(tmp_path, bad, "protonet", "0" * 16)
        with pytest.raises(HarnessError, match="cannot be used as a folder name"):
            RunFolder(tmp_path, "tiny", bad, "0" * 16)
        with pytest.raises(HarnessError, match="cannot be used as a folder name"):
            checkpoint_dir(tmp_path, bad, "trx")
    with pytest.raises(ValueError, match="cannot be registered"):
        methods.register("../evil")
    from harness.backbones import register_backbone

    with pytest.raises(ValueError, match="cannot be registered"):
        register_backbone("a/b")
    assert RunFolder(tmp_path, "hmdb-arn-5w1s.v2_x", "protonet", "0" * 16).dir == tmp_path / "hmdb-arn-5w1s.v2_x" / "protonet"


def test_symbolic_links_out_of_the_data_root_are_followed_and_listed(tmp_path, capsys, tiny_root, weights):
    root = copy_test_split(tiny_root, tmp_path / "data")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    entries = (root / "testlist.txt").read_text().splitlines()
    moved_class = entries[0].split("/")[0]
    (root / moved_class).rename(elsewhere / moved_class)
    (root / moved_class).symlink_to(elsewhere / moved_class, target_is_directory=True)  # a whole class folder
    video = next(e for e in entries if not e.startswith(moved_class + "/"))
    (root / video).rename(elsewhere / "one-video")
    (root / video).symlink_to(elsewhere / "one-video", target_is_directory=True)  # one video folder
    inside = next(e for e in entries if not e.startswith((moved_class + "/", video.split("/")[0] + "/")))
    (root / inside).rename(root / "kept-inside")
    (root / inside).symlink_to(root / "kept-inside", target_is_directory=True)  # a link within the root: not listed
    path = write_protocol(tmp_path / "p.yaml", root, weights)
    assert main(run_args(path, tmp_path)) == 0
    err = " ".join(capsys.readouterr().err.split())  # the console wraps long lines
    assert "read through symbolic links that leave the data root" in err
    summary = json.loads((tmp_path / "results/p/protonet/summary.json").read_text())
    per_class = sum(e.startswith(moved_class + "/") for e in entries)
    assert summary["linked_outside_root"] == sorted([
        {"link": moved_class, "target": str((elsewhere / moved_class).resolve()), "videos": per_class},
        {"link": video, "target": str((elsewhere / "one-video").resolve()), "videos": 1},
    ], key=lambda d: d["link"])
    # the same videos without links: the same data, the same numbers
    plain = write_protocol(tmp_path / "p2.yaml", copy_test_split(tiny_root, tmp_path / "plain"), weights)
    plain.write_text(plain.read_text().replace("name: p2", "name: p"))
    assert main(run_args(plain, tmp_path / "second")) == 0
    other = json.loads((tmp_path / "second/results/p/protonet/summary.json").read_text())
    assert other["linked_outside_root"] == [] and (other["data_sha256"], other["accuracy"]) == (summary["data_sha256"], summary["accuracy"])


def test_broken_and_looping_links_are_reported_as_videos(tmp_path, capsys, tiny_root, weights):
    root = copy_test_split(tiny_root, tmp_path / "data")
    entries = (root / "testlist.txt").read_text().splitlines()
    dangling, looping = entries[3], entries[12]
    for entry, target in ((dangling, tmp_path / "nowhere"), (looping, root / looping)):
        for frame in sorted((root / entry).iterdir()):
            frame.unlink()
        (root / entry).rmdir()
        (root / entry).symlink_to(target)
    path = write_protocol(tmp_path / "p.yaml", root, weights)
    # (a link that loops makes its class folder unlistable: every video of that class is reported with it)
    fails(capsys, run_args(path, tmp_path), f"{dangling}: missing", f"{looping}: unreadable: Too many levels of symbolic links")


# ----------------------------------------------------------------------------------------- 5. huge requests


def test_a_protocol_asking_for_a_trillion_episodes_fails_at_once(tmp_path, capsys, tiny_root, weights):
    path = write_protocol(tmp_path / "p.yaml", tiny_root, weights, episodes=10**12)
    started = time.perf_counter()
    fails(capsys, run_args(path, tmp_path), f"{path}, field 'episodes'", f"episodes must be at most {MAX_EPISODES:,}, got 1,000,000,000,000")
    assert time.perf_counter() - started < 10


@pytest.mark.parametrize(
    "argv_more, words",
    [
        (["--episodes", str(10**12)], ["--episodes: 1,000,000,000,000 episodes were asked for, more than the 1,000,000 one set may hold"]),
        (["--set", "train.val_episodes=1000000000"], ["field 'train.val_episodes'", "must be at most 1,000,000"]),
        (["--set", "train.steps=100000000000"], ["field 'train.steps'", "must be at most 10,000,000"]),
        (["--set", "train.steps=100000", "--set", "train.tasks_per_batch=1000"], ["field 'train.tasks_per_batch'", "is 100,000,000 training episodes, more than 10,000,000"]),
        (["--workers", "100000"], ["--workers: 100,000 worker processes is more than"]),
    ],
    ids=["episodes-option", "val-episodes", "train-steps", "train-product", "workers"],
)
def test_huge_counts_are_refused_at_once(tmp_path, capsys, protocol, argv_more, words):
    argv = run_args(protocol, tmp_path, *argv_more) if "--episodes" in argv_more or "--workers" in argv_more else train_args(protocol, tmp_path, *argv_more)
    started = time.perf_counter()
    fails(capsys, argv, *words)
    assert time.perf_counter() - started < 10
    assert not (tmp_path / "home").exists()


def test_episodes_and_training_episodes_that_do_not_fit_in_memory(tmp_path, capsys, protocol, memory):
    memory.set(100 * 10**6)
    fails(capsys, run_args(protocol, tmp_path, "--episodes", "100000"), "--episodes: holding 100,000 episodes (5-way 1-shot, 1 queries per class; about 1,580 bytes each with its record)",
          "needs at least 158 MB of memory, and this machine has 100 MB free", "fix: ask for fewer episodes")
    fails(capsys, run_args(protocol, tmp_path, "--set", "episodes=100000"), f"--set, field 'episodes': holding 100,000 episodes")
    fails(capsys, train_args(protocol, tmp_path, "--set", "train.steps=100000", "--set", "train.tasks_per_batch=16"),
          "--set, field 'train.steps'", "holding 1,600,000 training episodes", "needs at least")
    assert not (tmp_path / "home").exists()


def test_a_batch_larger_than_the_episodes_is_one_batch(tmp_path, capsys, protocol):
    assert main(run_args(protocol, tmp_path, "--batch-episodes", str(10**12), "--episodes", "5")) == 0
    assert json.loads((tmp_path / "results/tiny/protonet/summary.json").read_text())["n_episodes"] == 5


# ----------------------------------------------------------------------------------- nothing stored changes


def test_refused_requests_change_nothing_already_stored(tmp_path, capsys, protocol):
    assert main(run_args(protocol, tmp_path)) == 0
    capsys.readouterr()
    before = snapshot(tmp_path / "home", tmp_path / "results")
    assert any(p.name == "summary.json" for p in before)
    refused = [
        ["--set", "methods.protonet.metric=foo"], ["--set", "methods.protonet.scale=-3"], ["--set", "frames.crop=1"], ["--set", "name=../tiny"],
        ["--set", f"episodes={10**12}"], ["--episodes", str(10**9)], ["--set", "methods.protonet={a: 1, a: 2}"], ["--set", "frames.resize=1000000"],
    ]
    for more in refused:
        fails(capsys, run_args(protocol, tmp_path, *more))
    fails(capsys, train_args(protocol, tmp_path, "--set", "methods.trx.dim=0"))
    assert snapshot(tmp_path / "home", tmp_path / "results") == before
    assert not (tmp_path / "tiny").exists(), "nothing written beside the results folder (results/../tiny)"


def test_the_shipped_protocols_pass_every_check():
    from harness.limits import check_protocol
    from harness.protocol import find_protocol, list_protocols

    for name in list_protocols():
        p = load_protocol(find_protocol(name))
        context = check_protocol(p, "cpu")
        assert context["feature_shape"] == {"tiny3d": (128, 8, 2, 2), "r3d50": (2048, 1, 7, 7), "resnet50": (2048, 8, 7, 7)}[p.backbone.name]
        assert os.path.basename(p.source).removesuffix(".yaml") == p.name


@pytest.mark.parametrize("option,value", [("--size", "30000"), ("--size", "8"), ("--frames", "2"), ("--frames", "100000"), ("--videos-per-class", "0"),
                                          ("--videos-per-class", "10000000")])
def test_synth_refuses_sizes_it_cannot_write(capsys, tmp_path, option, value):
    fails(capsys, ["synth", "--out", str(tmp_path / "out"), option, value], option, value)
    assert not (tmp_path / "out").exists(), "refused before anything is written"


def test_synth_refuses_what_the_disk_cannot_hold(capsys, tmp_path, monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10 * 2**30, 10 * 2**30 - 2**20, 2**20))
    fails(capsys, ["synth", "--out", str(tmp_path / "out")], "--out", "GiB", "are free there")
    assert not (tmp_path / "out").exists()

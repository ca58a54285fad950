"""Split manifests: their numbers against the published files, and `splits verify` on exact and altered copies.

The published files are not part of the project; the tests that need them read them from ../shared/splits and
are skipped where that folder is absent.
"""
from __future__ import annotations

import hashlib
import os
import shutil
from collections import Counter
from pathlib import Path

import pytest

from harness.data.manifests import FINGERPRINT_BYTES, SPLITS_DIR, cmd_splits_verify, fingerprints, identify, load_manifests, verify
from harness.data.splits import read_split_file
from harness.data.synthetic import SyntheticSpec
from harness.errors import HarnessError

SHARED_SPLITS = Path(__file__).resolve().parents[2] / "shared" / "splits"
PUBLISHED = ("hmdb_arn", "ucf_arn", "kinetics_cmn", "ssv2_cmn", "ssv2_otam")
REPO = Path(__file__).resolve().parents[1]


def published_folder(name: str) -> Path:
    folder = SHARED_SPLITS / name
    if not folder.is_dir():
        pytest.skip(f"the published split files are not in {folder}")
    return folder


def copy_split(name: str, dest: Path) -> Path:
    """A writable copy of a published split's three files."""
    dest.mkdir(parents=True, exist_ok=True)
    for path in sorted(published_folder(name).glob("*.txt")):
        shutil.copyfile(path, dest / path.name)
    return dest


def edit_lines(path: Path, change) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    path.write_text("".join(line + "\n" for line in change(lines)), encoding="utf-8")


def report_text(report) -> str:
    return "\n".join(report.lines())


# ------------------------------------------------------------------------------ the manifests themselves


def test_manifests_load_and_are_self_consistent():
    manifests = load_manifests()
    assert set(manifests) == {*PUBLISHED, "synthetic"}
    for name in PUBLISHED:
        m = manifests[name]
        assert m.published and m.path == SPLITS_DIR / f"{name}.yaml"
        assert {"paper", "repository", "path", "commit"} <= set(m.source)
        assert len(m.source["commit"]) == 40
        assert m.trx_split in (3, 7)
        seen_classes: set[str] = set()
        for part, spec in m.parts.items():
            assert spec.file == f"{part}list{m.trx_split:02d}.txt"
            assert len(spec.sha256) == 64 and int(spec.sha256, 16) >= 0
            assert spec.lines == spec.n_videos == sum(spec.classes.values())
            assert spec.n_classes == len(spec.classes)
            assert len(spec.fingerprints) == FINGERPRINT_BYTES * spec.lines
            assert not seen_classes & set(spec.classes), f"{name}: a class is in two parts"
            seen_classes |= set(spec.classes)
        example_class = m.example.partition("/")[0]
        assert example_class in m.parts["train"].classes
    assert len({p.sha256 for name in PUBLISHED for p in manifests[name].parts.values()}) == 15
    otam = manifests["ssv2_otam"]
    for part, count in (("train", 64), ("val", 12), ("test", 24)):
        assert sorted(otam.parts[part].classes) == sorted(f"{part}{i}" for i in range(count))


def test_synthetic_manifest_describes_the_generator_defaults():
    m = load_manifests()["synthetic"]
    default = SyntheticSpec()
    assert not m.published
    for part, n in (("train", default.n_train), ("val", default.n_val), ("test", default.n_test)):
        spec = m.parts[part]
        assert spec.sha256 is None and not spec.classes and not spec.fingerprints
        assert spec.n_classes == n
        assert spec.lines == spec.n_videos == n * default.videos_per_class


def test_no_published_split_file_is_in_the_repository():
    hashes = {p.sha256 for m in load_manifests().values() for p in m.parts.values() if p.sha256}
    for folder, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in ("__pycache__", "results")]
        for name in files:
            path = Path(folder) / name
            if path.stat().st_size < 2_000_000:
                assert hashlib.sha256(path.read_bytes()).hexdigest() not in hashes, f"{path} is a published split file"


# --------------------------------------------------------------------------------- the published files


@pytest.mark.parametrize("name", PUBLISHED)
def test_manifest_numbers_match_the_published_files(name):
    folder = published_folder(name)
    m = load_manifests()[name]
    for part, spec in m.parts.items():
        raw = (folder / spec.file).read_bytes()
        lines = raw.decode("ascii").split("\n")
        assert lines.pop() == ""  # ends with a newline
        classes = Counter(line.split("/", 1)[0] for line in lines)
        assert hashlib.sha256(raw).hexdigest() == spec.sha256
        assert len(lines) == spec.lines == len(set(lines)) == spec.n_videos
        assert len(classes) == spec.n_classes
        assert dict(classes) == spec.classes
        assert fingerprints(lines) == spec.fingerprints


@pytest.mark.parametrize("name", PUBLISHED)
def test_every_published_line_is_read_by_the_split_reader(name):
    folder = published_folder(name)
    for spec in load_manifests()[name].parts.values():
        path = folder / spec.file
        entries = read_split_file(path)
        assert [f"{c}/{v}" for c, v in entries] == path.read_text(encoding="ascii").splitlines()


@pytest.mark.parametrize("name", PUBLISHED)
def test_published_split_verifies(name):
    report = verify(published_folder(name))
    assert report.ok and report.manifest.name == name and report.picked_by == "hash"
    assert all(check.matches for check in report.parts.values())
    assert report.lines()[-1].startswith("OK")


def test_identify_by_hash(tmp_path):
    hmdb, ucf = published_folder("hmdb_arn"), published_folder("ucf_arn")
    assert identify(sorted(hmdb.glob("*.txt"))).name == "hmdb_arn"
    assert identify([ucf / "testlist03.txt"]).name == "ucf_arn"
    assert identify([hmdb / "trainlist03.txt", ucf / "testlist03.txt"]) is None  # two splits
    other = tmp_path / "trainlist03.txt"
    other.write_bytes((hmdb / "trainlist03.txt").read_bytes() + b"extra/line\n")
    assert identify([other]) is None
    assert identify([]) is None


def test_cmd_splits_verify_prints_and_returns_status(capsys, tmp_path):
    assert cmd_splits_verify(str(published_folder("hmdb_arn")), None) == 0
    assert "OK: these are the hmdb_arn files" in capsys.readouterr().out
    folder = copy_split("hmdb_arn", tmp_path / "copy")
    edit_lines(folder / "vallist03.txt", lambda lines: lines[1:])
    assert cmd_splits_verify(str(folder), "hmdb_arn") == 1
    assert "NOT OK" in capsys.readouterr().out


# ----------------------------------------------------------------------------------- altered copies


def test_a_removed_line_is_named_by_its_published_line(tmp_path):
    folder = copy_split("hmdb_arn", tmp_path / "hmdb")
    edit_lines(folder / "trainlist03.txt", lambda lines: lines[:16] + lines[17:])
    report = verify(folder)
    assert not report.ok and report.manifest.name == "hmdb_arn"
    train = report.parts["train"]
    assert train.missing == [17] and not train.added and not train.classes_missing
    assert report.parts["val"].matches and report.parts["test"].matches
    text = report_text(report)
    assert "4279 lines" in text and "published 4280 lines" in text
    assert "missing, by their line in the published trainlist03.txt (1): line 17" in text
    assert "'brush_hair' 106 (published 107)" in text


def test_a_renamed_class_is_reported(tmp_path):
    folder = copy_split("hmdb_arn", tmp_path / "hmdb")
    edit_lines(folder / "testlist03.txt", lambda lines: [line.replace("smoke/", "smoking/", 1) for line in lines])
    report = verify(folder)
    test = report.parts["test"]
    assert not report.ok
    assert test.classes_missing == ["smoke"] and [c for c, _ in test.classes_added] == ["smoking"]
    assert not test.added and not test.missing  # every video was found under the new name
    assert "class 'smoke' seems renamed to 'smoking'" in report_text(report)


def test_crlf_line_ends_are_the_only_difference(tmp_path):
    folder = copy_split("ucf_arn", tmp_path / "ucf")
    path = folder / "vallist03.txt"
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    report = verify(folder)
    assert not report.ok and report.manifest.name == "ucf_arn"
    val = report.parts["val"]
    assert not val.matches and val.same_lines
    text = report_text(report)
    assert "line ends: 1421 '\\r\\n'" in text
    assert "every published line is there once and unchanged" in text
    assert report.lines()[-1].startswith("NOT OK: the lines are the ucf_arn lines, but the bytes differ")


def test_a_case_change_is_told_apart_from_a_new_video(tmp_path):
    folder = copy_split("ucf_arn", tmp_path / "ucf")
    # The published quirk: folder HandstandPushups, clips v_HandStandPushups_*. "Fixing" it is a difference.
    edit_lines(folder / "vallist03.txt", lambda lines: [line.replace("HandstandPushups/", "HandStandPushups/") for line in lines])
    edit_lines(folder / "testlist03.txt", lambda lines: [lines[0].lower(), *lines[1:]])
    report = verify(folder)
    val, test = report.parts["val"], report.parts["test"]
    assert val.classes_missing == ["HandstandPushups"] and val.classes_added == [("HandStandPushups", 128)]
    assert len(val.case_or_spacing) == 128 and not val.added and not val.missing
    assert test.case_or_spacing == [(1, "blowingcandles/v_blowingcandles_g01_c01", 1)]
    assert not test.added and not test.missing
    assert "only in case or spacing (1): line 1 'blowingcandles/v_blowingcandles_g01_c01' (published line 1)" in report_text(report)


def test_spaces_for_underscores_whitespace_duplicates_blank_lines_and_a_missing_file(tmp_path):
    folder = copy_split("kinetics_cmn", tmp_path / "kinetics")
    (folder / "vallist03.txt").unlink()
    edit_lines(folder / "trainlist03.txt", lambda lines: [line.replace("air drumming/", "air_drumming/") for line in lines])
    edit_lines(folder / "testlist03.txt", lambda lines: [lines[0] + "  ", "", *lines[1:], lines[1]])
    report = verify(folder)
    assert report.picked_by == "closest" and report.manifest.name == "kinetics_cmn"
    train, val, test = report.parts["train"], report.parts["val"], report.parts["test"]
    assert len(train.case_or_spacing) == 100 and train.classes_missing == ["air drumming"]
    assert val.text is None
    assert test.whitespace == [1] and test.blank == [2] and test.duplicates == [(test.text.lines[2], 2)]
    text = report_text(report)
    assert "val   vallist03.txt: MISSING" in text
    assert "8800 of its 10000 published lines are in these files" in text
    assert "lines with spaces or tabs at the start or end (1): line 1" in text
    assert "blank lines (1): line 2" in text and "duplicate lines (1)" in text


def test_added_videos_and_lines_the_reader_refuses(tmp_path):
    folder = copy_split("hmdb_arn", tmp_path / "hmdb")
    edit_lines(folder / "vallist03.txt", lambda lines: [*lines, "cartwheel/new_clip", "../escape"])
    val = verify(folder).parts["val"]
    assert val.added == [(1195, "cartwheel/new_clip"), (1196, "../escape")]
    assert "climbs out of the data root" in val.unreadable


def test_mixed_splits_are_named(tmp_path):
    folder = copy_split("ssv2_cmn", tmp_path / "mixed")
    (folder / "testlist03.txt").unlink()
    shutil.copyfile(published_folder("ssv2_otam") / "testlist07.txt", folder / "testlist07.txt")
    report = verify(folder)
    assert not report.ok and report.manifest.name == "ssv2_cmn"
    assert "testlist07.txt is the published test file of ssv2_otam, not of ssv2_cmn" in report_text(report)


def test_renamed_files_are_found_by_hash_and_by_part_name(tmp_path):
    folder = tmp_path / "renamed"
    folder.mkdir()
    source = published_folder("ssv2_otam")
    for part in ("train", "val", "test"):
        shutil.copyfile(source / f"{part}list07.txt", folder / f"{part}_few_shot.txt")
    report = verify(folder)
    assert report.ok and report.manifest.name == "ssv2_otam"
    assert {c.chosen_by for c in report.parts.values()} == {"hash"}


def test_a_named_split_is_compared_even_when_the_files_are_another(tmp_path):
    report = verify(published_folder("hmdb_arn"), "ucf_arn")
    assert not report.ok and report.manifest.name == "ucf_arn" and report.picked_by == "name"
    assert "trainlist03.txt is the published train file of hmdb_arn, not of ucf_arn" in report_text(report)


def test_files_of_no_known_split(tmp_path):
    (tmp_path / "trainlist.txt").write_text("a/b\nc/d\n")
    report = verify(tmp_path)
    assert not report.ok and report.manifest is None
    assert report.lines()[-1] == "NOT OK: these are not the files of a known split."


def test_bad_arguments_are_errors(tmp_path):
    with pytest.raises(HarnessError, match="absent does not exist"):
        verify(tmp_path / "absent")
    (tmp_path / "file").write_text("")
    with pytest.raises(HarnessError, match="file is not a folder"):
        verify(tmp_path / "file")
    (tmp_path / "file").unlink()
    with pytest.raises(HarnessError, match="holds no .txt or .list file"):
        verify(tmp_path)
    (tmp_path / "x.txt").write_text("a/b\n")
    with pytest.raises(HarnessError, match="unknown split 'hmdb'"):
        verify(tmp_path, "hmdb")


# -------------------------------------------------------------------------------------------- synthetic


def test_synthetic_split_is_rebuilt_from_its_seed(tiny_root, tmp_path):
    folder = tmp_path / "synthetic"
    folder.mkdir()
    for name in ("trainlist.txt", "vallist.txt", "testlist.txt", "synthetic.json"):
        shutil.copyfile(tiny_root / name, folder / name)
    report = verify(folder)
    assert report.ok and report.picked_by == "synthetic", report_text(report)
    edit_lines(folder / "testlist.txt", lambda lines: lines[1:])
    report = verify(folder, "synthetic")
    assert not report.ok and report.parts["test"].missing == [1]
    assert "expected videos missing" in report_text(report)

"""An installed harness finds its shipped protocols and split manifests, and says so clearly when they are missing.

The wheel is built from a copy of the checkout's sources (the checkout's own build/ folder is neither read nor
written), unpacked as pip installs a pure-Python wheel, and imported from there by a fresh interpreter started
outside the checkout. `tox -e wheel` goes further: it installs the wheel into a fresh environment and runs
`fsv-bench` itself (tests/wheel_smoke.py).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from harness import shipped
from harness.cli import main
from harness.data.manifests import load_manifests
from harness.errors import HarnessError
from harness.protocol import find_protocol, list_protocols, load_protocol

REPO = Path(__file__).resolve().parents[1]
# what a build never needs: generated, cached or version-control folders, and the tests
NOT_SOURCES = shutil.ignore_patterns(".git", ".tox", "build", "dist", "*.egg-info", "__pycache__", ".fsv", "results",
                                     ".hypothesis", ".benchmarks", ".pytest_cache", ".venv", "tests")

# run by the installed copy: where it found everything, and what it read there
PROBE = """
import json, harness
from harness.shipped import shipped_dir
from harness.protocol import find_protocol, list_protocols, load_protocol
from harness.data.manifests import load_manifests
print(json.dumps({
    "harness": harness.__file__,
    "dirs": [str(shipped_dir("protocols")), str(shipped_dir("splits"))],
    "protocols": {name: load_protocol(find_protocol(name)).sha256 for name in list_protocols()},
    "manifests": {name: [part.sha256 for part in m.parts.values()] for name, m in load_manifests().items()},
}))
"""


def shipped_content() -> dict:
    """The probe's findings for the checkout this test runs from."""
    return {
        "protocols": {name: load_protocol(find_protocol(name)).sha256 for name in list_protocols()},
        "manifests": {name: [part.sha256 for part in m.parts.values()] for name, m in load_manifests().items()},
    }


@pytest.mark.slow
def test_the_wheel_carries_the_shipped_files_and_an_installed_harness_reads_them(tmp_path):
    source = shutil.copytree(REPO, tmp_path / "source", ignore=NOT_SOURCES)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", str(source), "-w", str(tmp_path / "dist")],
                           cwd=tmp_path, capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("fsv_bench-*.whl")

    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        z.extractall(tmp_path / "site")
    for kind in shipped.KINDS:
        carried = sorted(n.rsplit("/", 1)[1] for n in names if n.startswith(f"harness/_shipped/{kind}/"))
        assert carried == sorted(p.name for p in (REPO / kind).glob("*.yaml")), f"the wheel's {kind}"
    assert "harness/__main__.py" in names

    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    probe = subprocess.run([sys.executable, "-c", PROBE], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert probe.returncode == 0, probe.stderr
    found = json.loads(probe.stdout)
    site = (tmp_path / "site").resolve()
    assert Path(found["harness"]).resolve().parent == site / "harness"
    assert [Path(d).resolve() for d in found["dirs"]] == [site / "harness" / "_shipped" / kind for kind in shipped.KINDS]
    assert {k: found[k] for k in ("protocols", "manifests")} == shipped_content()
    assert {"synthetic-5w1s", "hmdb-arn-5w1s"} <= set(found["protocols"]) and "hmdb_arn" in found["manifests"]


def test_a_checkout_reads_its_own_folders():
    assert shipped.shipped_dir("protocols") == REPO / "protocols"
    assert shipped.shipped_dir("splits") == REPO / "splits"


def test_an_install_without_its_data_is_an_error_not_an_empty_list(monkeypatch, tmp_path, capsys):
    import harness.data.manifests
    import harness.protocol

    for module in (shipped, harness.protocol, harness.data.manifests):  # every reader asks the locator
        monkeypatch.setattr(module, "shipped_dir", lambda kind: tmp_path / "install" / kind)
    with pytest.raises(HarnessError, match="the shipped protocols are missing"):
        list_protocols()
    assert main(["list"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the shipped protocols are missing") and "fix: reinstall fsv-bench" in err
    work = ["--home", str(tmp_path / "home"), "--results", str(tmp_path / "results")]
    assert main(["run", "--protocol", "synthetic-5w1s", "--method", "protonet", *work]) == 2
    assert capsys.readouterr().err.startswith("error: the shipped protocols are missing")
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits" / "trainlist01.txt").write_text("a/b\n")
    assert main(["splits", "verify", str(tmp_path / "splits")]) == 2
    assert capsys.readouterr().err.startswith("error: no split manifest")
    assert not (tmp_path / "home").exists() and not (tmp_path / "results").exists()


def test_a_folder_without_split_manifests_is_an_error(tmp_path):
    with pytest.raises(HarnessError, match="no split manifest"):
        load_manifests(tmp_path)


@pytest.mark.parametrize("folder", ["empty", "absent", "a-file"])
def test_splits_verify_on_a_wrong_folder_is_one_error(tmp_path, capsys, folder):
    (tmp_path / "empty").mkdir()
    (tmp_path / "a-file").write_text("")
    assert main(["splits", "verify", str(tmp_path / folder)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "\n  fix: " in err and "Traceback" not in err

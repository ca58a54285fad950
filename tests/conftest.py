"""Shared fixtures: a tiny synthetic benchmark on disk and a protocol that points at it."""
from __future__ import annotations

from pathlib import Path

import pytest

from harness.data.synthetic import SyntheticSpec, generate

pytest_plugins = ["harness.regression"]

SHARED = Path(__file__).resolve().parents[2] / "shared"

# small enough for a 2-core CI machine: 18 classes x 7 videos x 8 frames of 32 x 32
TINY = SyntheticSpec(seed=3, videos_per_class=7, frames=8, size=32, n_train=6, n_val=6, n_test=6)

TINY_PROTOCOL = """\
name: {name}
dataset: {{name: synthetic, root: {root}, part: test}}
way: 5
shot: {shot}
query_per_class: 1
episodes: {episodes}
seed: 0
frames: {{count: 8, resize: 32, crop: 32}}
backbone: {{name: tiny3d}}
"""


def settings(home: Path, results: Path | None = None, **kw):
    """Settings for tests: no progress bars; results in <home>/results unless given."""
    from harness.pipeline import Settings

    return Settings(home=home, results=results or home / "results", show_progress=False, **kw)


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """A data home shared by the tests of one module (weights pretrained once, features embedded once)."""
    return tmp_path_factory.mktemp("home")


@pytest.fixture
def protocol(write_protocol, home):
    """The tiny 5-way 1-shot protocol, its tiny3d backbone pretrained in `home`."""
    from harness.pipeline import backbone_for
    from harness.protocol import load_protocol

    p = load_protocol(write_protocol())
    backbone_for(p, settings(home, home / "unused"), pretrain_if_missing=True)
    return p


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("data") / "tiny-synthetic", TINY)


@pytest.fixture
def write_protocol(tmp_path, tiny_root):
    def write(name: str = "tiny-5w1s", shot: int = 1, episodes: int = 200, extra: str = "") -> Path:
        path = tmp_path / f"{name}.yaml"
        path.write_text(TINY_PROTOCOL.format(name=name, root=tiny_root, shot=shot, episodes=episodes) + extra)
        return path

    return write

"""A small dataset in the real layout, named like the published splits, through verify, index, extraction
and evaluation: the awkward names (spaces, brackets, quotes, `&`, `;`, leading `-`) survive the whole road."""
import io
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.io import encode_jpeg

from harness.backbones import create_backbone
from harness.data.manifests import verify
from harness.data.synthetic import ALL_CLASSES, render_video
from harness.pipeline import Settings, run_method
from harness.protocol import load_protocol

SPLITS = Path(__file__).resolve().parents[2] / "shared" / "splits"


def awkward_entries(per_class: int = 3) -> list[str]:
    """Five classes of real published names: HMDB clips with brackets and `;&!`, Kinetics names with spaces,
    parentheses and ids starting with '-', SSv2 templates with quotes and commas."""
    picks: list[str] = []
    sources = [
        ("hmdb_arn/testlist03.txt", lambda line: any(c in line for c in "[];&!(")),
        ("kinetics_cmn/testlist03.txt", lambda line: line.split("/")[1].startswith("-")),
        ("kinetics_cmn/testlist03.txt", lambda line: line.startswith("hurling (sport)/")),
        ("ssv2_cmn/trainlist03.txt", lambda line: "'" in line),
        ("ssv2_cmn/trainlist03.txt", lambda line: "," in line.split("/")[0]),
    ]
    for name, wanted in sources:
        lines = (SPLITS / name).read_text().splitlines()
        taken = {p.split("/")[0] for p in picks}
        first = next(line for line in lines if wanted(line) and line.split("/")[0] not in taken)
        cls = first.split("/")[0]
        same = [line for line in lines if line.startswith(cls + "/")]
        picks += sorted(same, key=lambda line: not wanted(line))[:per_class]  # the awkward ones first
    return picks


@pytest.mark.skipif(not SPLITS.is_dir(), reason="../shared/splits is not here (a fresh clone has none)")
def test_awkward_real_names_survive_verify_index_extraction_and_evaluation(tmp_path):
    entries = awkward_entries()
    root = tmp_path / "data"
    classes = sorted({e.split("/")[0] for e in entries})
    for e in entries:  # each class moves as one synthetic sequence, so the task is learnable
        cls, video = e.split("/", 1)
        rng = np.random.default_rng(zlib.crc32(e.encode()))
        frames = render_video(ALL_CLASSES[classes.index(cls) * 7], rng, frames=8, size=32)  # [T, H, W, 3]
        folder = root / cls / video
        folder.mkdir(parents=True)
        for i, frame in enumerate(frames, start=1):
            (folder / f"{i:08d}.jpg").write_bytes(encode_jpeg(torch.from_numpy(frame).permute(2, 0, 1).contiguous()).numpy().tobytes())
    for part in ("trainlist03.txt", "vallist03.txt", "testlist03.txt"):
        (root / part).write_text("".join(f"{e}\n" for e in entries))

    report = verify(root, "hmdb_arn")
    assert not report.ok  # not the published files, and verify says so without tripping on the names

    weights = tmp_path / "tiny3d.pt"
    torch.manual_seed(0)
    buffer = io.BytesIO()
    torch.save(create_backbone("tiny3d").state_dict(), buffer)
    weights.write_bytes(buffer.getvalue())
    protocol = tmp_path / "awkward.yaml"
    protocol.write_text(
        f"name: awkward\ndataset: {{name: mixed, root: '{root}', splits: {{train: trainlist03.txt, val: vallist03.txt, test: testlist03.txt}}}}\n"
        f"way: 5\nshot: 1\nquery_per_class: 1\nepisodes: 50\nframes: {{count: 8, resize: 32, crop: 32}}\n"
        f"backbone: {{name: tiny3d, weights: '{weights}'}}\n"
    )
    s = run_method(load_protocol(protocol), "protonet", Settings(home=tmp_path / "home", results=tmp_path / "results", show_progress=False))
    assert s["n_videos"] == len(entries) == 15 and s["videos_embedded_this_run"] == 15
    records = (tmp_path / "results/awkward/protonet/episodes.jsonl").read_text()
    for e in entries:  # the names travel into the records unchanged
        assert f'"{e}"' in records

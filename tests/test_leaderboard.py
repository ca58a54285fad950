"""The leaderboard: cells with provenance, best per protocol, mixed episode sets flagged, reported numbers apart."""
import argparse
import csv
import io
import json
import shutil
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness import leaderboard
from harness.errors import HarnessError
from harness.pipeline import Settings, run_method
from harness.protocol import load_protocol
from harness.reported import REPORTED, reported_for
from methods.protonet import ProtoNet
from test_stats import tiny_setup


@pytest.fixture(scope="module")
def results(tmp_path_factory, tiny_root):
    """protonet and its cosine variant on tiny-5w1s (200 episodes), protonet on tiny-5w5s (100 episodes)."""
    p1, s = tiny_setup(tmp_path_factory, tiny_root, "tiny-5w1s")
    run_method(p1, "protonet", s)
    run_method(p1, "protonet-cosine", s, head=ProtoNet(metric="cosine"))
    p5, s5 = tiny_setup(tmp_path_factory, tiny_root, "tiny-5w5s", shot=5, episodes=100)
    run_method(p5, "protonet", Settings(home=s5.home, results=s.results, show_progress=False))
    return s.results


def content(dataset: str, way: int = 5, shot: int = 5, files=("trainlist03.txt", "vallist03.txt", "testlist03.txt"), part: str = "test") -> dict:
    return {"dataset": {"name": dataset, "part": part, "splits": dict(zip(("train", "val", "test"), files))}, "way": way, "shot": shot}


SHIPPED = {"shipped": True, "modified": False, "fields": {}}


def fake_benchmark_run(results, source_folder, protocol: str, protocol_content: dict, method: str = "protonet", origin: dict = SHIPPED):
    """A copy of a real run filed under a real-benchmark protocol: only names, content and origin change (none of
    them a figure that verification recomputes, so the copy verifies)."""
    folder = results / protocol / method
    shutil.copytree(source_folder, folder)
    summary = json.loads((folder / "summary.json").read_text())
    summary.update(protocol=protocol, protocol_content=protocol_content, protocol_origin=origin, method=method)
    (folder / "summary.json").write_text(json.dumps(summary))


def edit_summary(folder, **changes):
    """Change summary.json by hand (None removes a field), as someone might."""
    summary = json.loads((folder / "summary.json").read_text())
    summary.update(changes)
    (folder / "summary.json").write_text(json.dumps({k: v for k, v in summary.items() if v is not None}))


SVG = "{http://www.w3.org/2000/svg}"


def means(root) -> list:
    """The dots of measured means in a picture (the legend's sample dot is not one)."""
    return [c for c in root.iter(f"{SVG}circle") if c.get("class") == "mean"]


def test_cells_carry_accuracy_interval_best_and_provenance(results):
    board = leaderboard.build(results)
    assert [c["name"] for c in board["protocols"]] == ["tiny-5w1s", "tiny-5w5s"]
    cells = {(m["method"], m["protocol"]): m for m in board["measured"]}
    assert set(cells) == {("protonet", "tiny-5w1s"), ("protonet-cosine", "tiny-5w1s"), ("protonet", "tiny-5w5s")}
    one_shot = [cells[("protonet", "tiny-5w1s")], cells[("protonet-cosine", "tiny-5w1s")]]
    best = max(one_shot, key=lambda m: m["accuracy"])
    assert best["best"] and sum(m["best"] for m in one_shot) == 1
    assert not cells[("protonet", "tiny-5w5s")]["best"], "a protocol with one method has no best"
    for m in board["measured"]:
        summary = json.loads((results / m["protocol"] / m["method"] / "summary.json").read_text())
        assert m["accuracy"] == summary["accuracy"] and m["ci95"] == summary["ci95"] and m["n_episodes"] == summary["n_episodes"]
        assert m["episode_set_sha256"] == summary["episode_set_sha256"] and m["protocol_sha256"] == summary["protocol_sha256"]
        assert m["backbone_weights_sha256"] == summary["backbone"]["weights_sha256"] and m["records_sha256"] == summary["records_sha256"]
        assert m["harness_version"] and m["records_verified"] is True and not m["mixed_episode_sets"]
    assert board["reported"] == [], "the synthetic benchmark has no published numbers"


def test_text_formats_hold_the_footer_and_the_sidecar_fields(results):
    board = leaderboard.build(results)
    md = leaderboard.to_markdown(board)
    assert "| method | tiny-5w1s (5-way 1-shot), n=200 | tiny-5w5s (5-way 5-shot), n=100 |" in md
    for m in board["measured"]:
        assert f"[{m['ref']}] {m['method']} on {m['protocol']}: n={m['n_episodes']}, protocol {m['protocol_sha256'][:12]}, episode set {m['episode_set_sha256'][:12]}" in md
        assert f"weights {m['backbone_weights_sha256'][:12]}" in md
    assert " *" in md and "Reported in papers" not in md
    rows = list(csv.DictReader(io.StringIO(leaderboard.to_csv(board))))
    assert len(rows) == 3 and {r["kind"] for r in rows} == {"measured"}
    for r in rows:
        for field in ("protocol_sha256", "episode_set_sha256", "backbone_weights_sha256", "records_sha256", "harness_version", "torch_version"):
            assert r[field], field
    assert json.loads(leaderboard.to_json(board))["measured"] == json.loads(json.dumps(board["measured"]))
    text = leaderboard.render(board, "rich")
    assert "measured here" in text and "protonet-cosine" in text and "[3]" in text


def test_results_on_different_episode_sets_are_flagged(results, tmp_path, tiny_root, tmp_path_factory):
    mixed = tmp_path / "results"
    shutil.copytree(results, mixed)
    p, s = tiny_setup(tmp_path_factory, tiny_root, "tiny-5w1s")
    run_method(p, "protonet-short", Settings(home=s.home, results=mixed, show_progress=False), head=ProtoNet(), n_episodes=50)
    board = leaderboard.build(mixed)
    column = next(c for c in board["protocols"] if c["name"] == "tiny-5w1s")
    assert column["mixed"] and len(column["sets"]) == 2
    cells = {m["method"]: m for m in board["measured"] if m["protocol"] == "tiny-5w1s"}
    assert cells["protonet"]["episode_set"] == cells["protonet-cosine"]["episode_set"] == "a" and cells["protonet-short"]["episode_set"] == "b"
    assert not cells["protonet-short"]["best"], "the best is marked within an episode set, never across"
    md = leaderboard.to_markdown(board)
    assert "WARNING: protocol tiny-5w1s holds results on 2 different episode sets" in md and "(set b)" in md
    assert "n=50/200" in md


def test_published_numbers_match_dataset_split_way_and_shot():
    names = lambda rs: sorted((r.method, r.accuracy) for r in rs)  # noqa: E731
    assert names(reported_for("hmdb-arn-5w5s", content("hmdb51"))) == [("ARN", 60.6), ("TRX", 75.6)]
    assert names(reported_for("ucf-5w5s", content("UCF-101"))) == [("ARN", 83.1), ("TRX", 96.1)]
    assert names(reported_for("ucf101-5w1s", content("ucf101", shot=1))) == [("STAF", 91.6)]
    assert names(reported_for("hmdb-5w1s", content("hmdb51", shot=1))) == [("STAF", 69.5)]
    otam = content("ssv2", files=("trainlist07.txt", "vallist07.txt", "testlist07.txt"))
    assert names(reported_for("ssv2-full-5w5s", otam)) == [("OTAM", 52.3), ("TRX", 64.6)]
    assert names(reported_for("ssv2-cmn-5w5s", content("ssv2"))) == [], "STRM's SSv2 numbers are on the OTAM split"
    assert names(reported_for("ssv2-cmn-5w1s", content("something-something-v2", shot=1))) == [("STAF", 60.7)]
    assert names(reported_for("kinetics-cmn-5w5s", content("kinetics100"))) == [("ARN", 82.4), ("CMN-J", 78.9), ("OTAM", 85.8), ("TRX", 85.9)]
    assert reported_for("synthetic-5w1s", content("synthetic", shot=1)) == []
    assert reported_for("hmdb-arn-5w5s", content("hmdb51", part="val")) == [], "published numbers are test numbers"
    assert reported_for("hmdb-arn-10w5s", content("hmdb51", way=10)) == []
    assert all(r.source for r in REPORTED) and len(REPORTED) == 13


def test_reported_numbers_stay_in_a_section_of_their_own(results, tmp_path):
    real = tmp_path / "results"
    shutil.copytree(results, real)
    fake_benchmark_run(real, results / "tiny-5w1s" / "protonet", "hmdb-arn-5w5s", content("hmdb51"))
    board = leaderboard.build(real)
    assert {(r["method"], r["protocol"]) for r in board["reported"]} == {("ARN", "hmdb-arn-5w5s"), ("TRX", "hmdb-arn-5w5s")}
    assert all(m["kind"] == "measured" for m in board["measured"]) and all(r["kind"] == "reported" for r in board["reported"])
    md = leaderboard.to_markdown(board)
    measured_part, reported_part = md.split("## Reported in papers")
    assert "75.6" not in measured_part and "| TRX | 75.6 | STRM (Thatipelli et al., CVPR 2022), Table 1 |" in reported_part
    rows = list(csv.DictReader(io.StringIO(leaderboard.to_csv(board))))
    reported = [r for r in rows if r["kind"] == "reported"]
    assert len(reported) == 2 and all(r["source"] and not r["records_sha256"] for r in reported)
    assert "reported in papers (NOT measured here" in leaderboard.render(board, "rich")


def test_svg_picture_needs_nothing_and_png_asks_for_matplotlib(results, tmp_path, monkeypatch):
    board = leaderboard.build(results)
    out = tmp_path / "pics" / "board.svg"
    leaderboard.plot(board, out)
    root = ET.fromstring(out.read_text())
    labels = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert "protonet-cosine" in labels and any(l and l.startswith("tiny-5w1s") for l in labels)
    assert len(means(root)) == 3
    assert [p.name for p in out.parent.iterdir()] == ["board.svg"], "written atomically"
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)  # as if it were not installed
    with pytest.raises(HarnessError, match="pip install matplotlib"):
        leaderboard.plot(board, tmp_path / "board.png")
    assert leaderboard.to_markdown(board), "the tables never need matplotlib"
    with pytest.raises(HarnessError, match="name a .svg file"):
        leaderboard.plot(board, tmp_path / "board.pdf")


def test_png_picture_when_matplotlib_is_installed(results, tmp_path):
    pytest.importorskip("matplotlib")
    leaderboard.plot(leaderboard.build(results), tmp_path / "board.png")
    assert (tmp_path / "board.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_command_writes_files_and_explains_bad_input(results, tmp_path, capsys):
    args = argparse.Namespace(results=str(results), format="csv", out=str(tmp_path / "board.csv"), plot=str(tmp_path / "board.svg"))
    assert leaderboard.cmd_leaderboard(args) == 0
    assert (tmp_path / "board.csv").read_text().startswith("kind,method,protocol,accuracy")
    assert (tmp_path / "board.svg").read_text().startswith("<svg")
    assert leaderboard.cmd_leaderboard(argparse.Namespace(results=str(results), format="md", out=None, plot=None)) == 0
    assert "## Measured here" in capsys.readouterr().out
    with pytest.raises(HarnessError, match="does not exist"):
        leaderboard.build(tmp_path / "nowhere")
    with pytest.raises(HarnessError, match="no finished runs"):
        leaderboard.build(tmp_path)


def test_a_run_that_fails_verification_is_not_shown_as_measured(results, tmp_path):
    board_dir = tmp_path / "results"
    shutil.copytree(results, board_dir)
    edited, unhashed = board_dir / "tiny-5w1s" / "protonet", board_dir / "tiny-5w5s" / "protonet"
    true = json.loads((edited / "summary.json").read_text())["accuracy"]
    edit_summary(edited, accuracy=99.9)
    edit_summary(unhashed, records_sha256=None)
    board = leaderboard.build(board_dir)
    assert [(m["method"], m["protocol"]) for m in board["measured"]] == [("protonet-cosine", "tiny-5w1s")]
    assert not board["measured"][0]["best"], "an unverified run is ranked against nothing"
    reasons = {u["folder"]: u["reason"] for u in board["unverified"]}
    assert reasons == {str(edited): f"summary.json says accuracy 99.90, its records give {true:.2f}",
                       str(unhashed): "records without records_sha256 cannot be verified (summary.json names no SHA-256 of episodes.jsonl)"}
    md = leaderboard.to_markdown(board)
    table, notes = md.split("\n- ", 1)
    assert "99.9" not in table and "tiny-5w5s" not in table
    assert f"NOT SHOWN (fails verification): {edited}: summary.json says accuracy 99.90, its records give {true:.2f}; score it again with --recompute" in notes
    assert f"NOT SHOWN (fails verification): {unhashed}: records without records_sha256 cannot be verified" in notes
    rows = list(csv.DictReader(io.StringIO(leaderboard.to_csv(board))))
    assert {(r["kind"], r["method"], r["protocol"], r["accuracy"]) for r in rows if r["kind"] == "unverified"} == {
        ("unverified", "protonet", "tiny-5w1s", ""), ("unverified", "protonet", "tiny-5w5s", "")}
    assert "records without records_sha256" in next(r["note"] for r in rows if r["protocol"] == "tiny-5w5s")
    picture = ET.fromstring(leaderboard.svg(board))
    assert len(means(picture)) == 1


def test_the_accuracy_shown_is_recomputed_from_the_records(results, tmp_path):
    board_dir = tmp_path / "results"
    shutil.copytree(results, board_dir)
    folder = board_dir / "tiny-5w1s" / "protonet"
    summary = json.loads((folder / "summary.json").read_text())
    edit_summary(folder, accuracy=summary["accuracy"] * (1 + 1e-12))  # float printing noise: still verified
    cell = next(m for m in leaderboard.build(board_dir)["measured"] if m["method"] == "protonet" and m["protocol"] == "tiny-5w1s")
    assert cell["accuracy"] == summary["accuracy"]


def test_a_modified_protocol_gets_a_column_of_its_own_without_published_numbers(results, tmp_path):
    board_dir = tmp_path / "results"
    shutil.copytree(results, board_dir)
    changed = {"backbone.name": {"shipped": "r3d50", "run": "tiny3d"}, "frames.count": {"shipped": 8, "run": 16}}
    fake_benchmark_run(board_dir, results / "tiny-5w1s" / "protonet", "hmdb-arn-5w5s", content("hmdb51"), "protonet",
                       {"shipped": True, "modified": True, "fields": changed})
    fake_benchmark_run(board_dir, results / "tiny-5w1s" / "protonet-cosine", "hmdb-arn-5w5s", content("hmdb51"), "protonet-cosine")
    board = leaderboard.build(board_dir)
    assert [c["name"] for c in board["protocols"]] == ["hmdb-arn-5w5s", "hmdb-arn-5w5s*", "tiny-5w1s", "tiny-5w5s"]
    cells = {(m["method"], m["column"]): m for m in board["measured"] if m["protocol"] == "hmdb-arn-5w5s"}
    assert set(cells) == {("protonet", "hmdb-arn-5w5s*"), ("protonet-cosine", "hmdb-arn-5w5s")}
    assert cells[("protonet", "hmdb-arn-5w5s*")]["origin"] == "modified" and cells[("protonet", "hmdb-arn-5w5s*")]["modified_fields"] == changed
    assert {r["protocol"] for r in board["reported"]} == {"hmdb-arn-5w5s"}, "published numbers only beside the protocol as shipped"
    md = leaderboard.to_markdown(board)
    assert "| method | hmdb-arn-5w5s (5-way 5-shot), n=200 | hmdb-arn-5w5s* (5-way 5-shot), n=200 |" in md
    ref = cells[("protonet", "hmdb-arn-5w5s*")]["ref"]
    assert (f"hmdb-arn-5w5s* = protocol hmdb-arn-5w5s changed from the shipped protocols/hmdb-arn-5w5s.yaml, so not that benchmark's protocol, "
            f'and no published numbers are shown beside it: [{ref}] backbone.name: shipped "r3d50", run "tiny3d"; frames.count: shipped 8, run 16') in md
    labels = {title: [r["label"] for r in rows] for title, rows in leaderboard._plot_rows(board)}
    assert labels["hmdb-arn-5w5s* (5-way 5-shot), n=200"] == ["protonet"]
    assert "TRX (reported)" in labels["hmdb-arn-5w5s (5-way 5-shot), n=200"]
    row = next(r for r in csv.DictReader(io.StringIO(leaderboard.to_csv(board))) if r["column"] == "hmdb-arn-5w5s*")
    assert row["protocol"] == "hmdb-arn-5w5s" and json.loads(row["modified_fields"]) == changed

    shutil.rmtree(board_dir / "hmdb-arn-5w5s" / "protonet-cosine")  # the modified run alone: no published numbers at all
    board = leaderboard.build(board_dir)
    assert board["reported"] == [] and "Reported in papers" not in leaderboard.to_markdown(board)


def test_summaries_without_origin_get_no_published_numbers(results, tmp_path):
    board_dir = tmp_path / "results"
    shutil.copytree(results, board_dir)
    fake_benchmark_run(board_dir, results / "tiny-5w1s" / "protonet", "hmdb-arn-5w5s", content("hmdb51"))
    edit_summary(board_dir / "hmdb-arn-5w5s" / "protonet", protocol_origin=None)
    board = leaderboard.build(board_dir)
    cell = next(m for m in board["measured"] if m["protocol"] == "hmdb-arn-5w5s")
    assert cell["column"] == "hmdb-arn-5w5s" and cell["origin"] == "unknown" and board["reported"] == []
    assert f"[{cell['ref']}]: origin unknown (the summary predates protocol_origin)" in leaderboard.to_markdown(board)


def test_a_real_run_of_a_changed_shipped_protocol_is_marked(results, tmp_path, tiny_root, tmp_path_factory):
    _, s = tiny_setup(tmp_path_factory, tiny_root, "tiny-5w1s")  # the data home with tiny3d pretrained
    shipped = Path(leaderboard.__file__).resolve().parents[1] / "protocols" / "synthetic-5w1s.yaml"
    p = load_protocol(shipped, overrides=[f"dataset.root={tiny_root}", "frames.count=8", "frames.resize=32", "frames.crop=32", "episodes=50"])
    run_method(p, "protonet", Settings(home=s.home, results=tmp_path / "results", show_progress=False))
    board = leaderboard.build(tmp_path / "results")
    assert [c["name"] for c in board["protocols"]] == ["synthetic-5w1s*"]
    md = leaderboard.to_markdown(board)
    assert "synthetic-5w1s* = protocol synthetic-5w1s changed from the shipped protocols/synthetic-5w1s.yaml" in md
    assert "episodes: shipped 10000, run 50; frames.count: shipped 16, run 8" in md


def test_a_method_setting_in_the_protocol_is_named_and_is_no_other_episode_set(results, tmp_path, tiny_root, tmp_path_factory):
    board_dir = tmp_path / "results"
    shutil.copytree(results, board_dir)
    p, s = tiny_setup(tmp_path_factory, tiny_root, "tiny-5w1s")
    cosine = load_protocol(p.source, overrides=["methods.protonet.metric=cosine"])
    run_method(cosine, "protonet", Settings(home=s.home, results=board_dir, show_progress=False))
    board = leaderboard.build(board_dir)
    column = next(c for c in board["protocols"] if c["name"] == "tiny-5w1s")
    cells = {m["method"]: m for m in board["measured"] if m["protocol"] == "tiny-5w1s"}
    assert cells["protonet"]["episode_set_sha256"] == cells["protonet-cosine"]["episode_set_sha256"]
    assert [(d["what"], d["field"]) for d in column["differences"]] == [("protocol", "methods.protonet.metric")]
    assert not column["mixed"] and {m["episode_set"] for m in cells.values()} == {"a"}, "one episode set: the cells stay comparable"
    md = leaderboard.to_markdown(board)
    refs = {m: cells[m]["ref"] for m in cells}
    assert (f'WARNING: the cells of tiny-5w1s ran with different protocol fields: methods.protonet.metric '
            f'("cosine": [{refs["protonet"]}]; absent: [{refs["protonet-cosine"]}])') in md
    assert not [line for line in md.splitlines() if "WARNING" in line and "episode set" in line] and "in different sets" not in md


def test_code_data_and_weights_differences_are_named(results, tmp_path):
    board_dir = tmp_path / "results"
    shutil.copytree(results, board_dir)
    folder = board_dir / "tiny-5w1s" / "protonet-cosine"
    summary = json.loads((folder / "summary.json").read_text())
    edit_summary(folder, data_sha256="d" * 64, backbone={**summary["backbone"], "weights_sha256": "e" * 64}, code={**summary["code"], "harness_version": "0.0.1"})
    board = leaderboard.build(board_dir)
    column = next(c for c in board["protocols"] if c["name"] == "tiny-5w1s")
    assert [d["what"] for d in column["differences"]] == ["harness version", "data", "backbone weights"]
    md = leaderboard.to_markdown(board)
    line = next(l for l in md.splitlines() if "WARNING: the cells of tiny-5w1s differ in" in l)
    assert '"0.0.1"' in line and "dddddddddddd" in line and "eeeeeeeeeeee" in line
    assert "different episode sets" not in md and "protocol fields" not in md


# ------------------------------------------------------------------------------- the intervals shown


def spans(m: dict, level: str) -> str:
    return f"{m['intervals'][level]['low']:.2f}–{m['intervals'][level]['high']:.2f}"


LEGEND_EPISODES = "± episodes: this pool of test videos (the papers' interval"
LEGEND = {"videos": "videos: new videos of the same classes", "classes": "classes: new classes and their new videos"}


def test_every_text_format_shows_the_papers_interval_and_the_videos_interval_labelled(results):
    board = leaderboard.build(results)
    assert board["interval"] == "videos", "videos first unless --interval says otherwise"
    md, text = leaderboard.to_markdown(board), leaderboard.render(board, "rich")
    for m in board["measured"]:
        cell = f"{m['accuracy']:.2f} (videos {spans(m, 'videos')}; episodes ± {m['ci95']:.2f})"
        assert cell in md and cell in text, cell
        assert m["intervals"]["episodes"]["half_width"] == pytest.approx(m["ci95"])
    for out in (md, text):
        assert LEGEND_EPISODES in " ".join(out.split()) and LEGEND["videos"] in " ".join(out.split())
        assert "Shown first: videos" in " ".join(out.split())


@pytest.mark.parametrize("headline", ["episodes", "videos", "classes"])
def test_the_interval_option_picks_the_headline_and_keeps_the_papers_interval(results, headline, capsys):
    args = argparse.Namespace(results=str(results), format="md", out=None, plot=None, interval=headline)
    assert leaderboard.cmd_leaderboard(args) == 0
    md = capsys.readouterr().out
    board = leaderboard.build(results, headline)
    second = "videos" if headline == "episodes" else headline
    for m in board["measured"]:
        if headline == "episodes":  # the papers' form first, so a row lines up with the published tables
            cell = f"{m['accuracy']:.2f} ± {m['ci95']:.2f} (videos {spans(m, 'videos')})"
        else:
            cell = f"{m['accuracy']:.2f} ({headline} {spans(m, headline)}; episodes ± {m['ci95']:.2f})"
        assert cell in md, cell
    flat = " ".join(md.split())
    assert f"Shown first: {headline}" in flat and LEGEND_EPISODES in flat and LEGEND[second] in flat
    assert [r["headline_interval"] for r in csv.DictReader(io.StringIO(leaderboard.to_csv(board)))] == [headline] * 3


def test_a_bad_interval_is_refused_with_the_usual_error(results, capsys):
    from harness.cli import main

    for argv in (["leaderboard", "--results", str(results), "--interval", "pool"], ["--interval", "Videos", "leaderboard", "--results", str(results)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: --interval: unknown interval") and "\n  fix: use episodes" in err and "Traceback" not in err
    with pytest.raises(HarnessError, match="unknown level 'pool'"):
        leaderboard.build(results, "pool")


def test_csv_and_json_carry_every_level(results):
    board = leaderboard.build(results, "episodes")
    rows = list(csv.DictReader(io.StringIO(leaderboard.to_csv(board))))
    for r, m in zip(rows, board["measured"]):
        for level in ("episodes", "videos", "classes"):
            assert float(r[f"{level}_low"]) == pytest.approx(m["intervals"][level]["low"]) and float(r[f"{level}_high"]) == pytest.approx(m["intervals"][level]["high"])
            assert float(r[f"{level}_low"]) < float(r["accuracy"]) < float(r[f"{level}_high"])
        assert float(r["episodes_high"]) - float(r["accuracy"]) == pytest.approx(float(r["ci95"]))
    data = json.loads(leaderboard.to_json(board))
    assert data["interval"] == "episodes" and LEGEND_EPISODES in data["interval_legend"]
    for m in data["measured"]:
        assert set(m["intervals"]) == {"episodes", "videos", "classes"}
        for level, i in m["intervals"].items():
            assert i["level"] == level and i["low"] < m["accuracy"] < i["high"] and i["claim"] and i["meaning"]


def test_the_picture_draws_both_intervals_visibly_with_a_legend(results, tmp_path):
    for headline, second in (("videos", "videos"), ("episodes", "videos"), ("classes", "classes")):
        root = ET.fromstring(leaderboard.svg(leaderboard.build(results, headline)))
        lines = [l for l in root.iter(f"{SVG}line") if (l.get("class") or "").startswith("interval ")]
        dots = means(root)
        assert len(dots) == 3
        for dot in dots:
            at = {l.get("class").split()[1]: l for l in lines if l.get("y1") == dot.get("cy")}
            assert set(at) == {"episodes", second}, at
            diameter = 2 * float(dot.get("r")) + float(dot.get("stroke-width"))
            for bar in at.values():  # wider than the dot: never hidden under it
                assert float(bar.get("x2")) - float(bar.get("x1")) > diameter
                assert float(bar.get("x1")) < float(dot.get("cx")) < float(bar.get("x2"))
            assert float(at[second].get("stroke-width")) > float(at["episodes"].get("stroke-width")), "a thick bar and a thin one"
            assert at[second].get("stroke") != at["episodes"].get("stroke")
        legend = " ".join(t.text or "" for t in root.iter(f"{SVG}text"))
        assert LEGEND_EPISODES in legend and LEGEND[second] in legend and "reported in a paper" in legend
        assert {l.get("class") for l in root.iter(f"{SVG}line") if (l.get("class") or "").startswith("legend")} == {"legend episodes", f"legend {second}"}


def test_a_summary_from_before_intervals_still_renders_them_from_its_records(results, tmp_path):
    board_dir = tmp_path / "results"
    shutil.copytree(results, board_dir)
    before = {(m["method"], m["protocol"]): m["intervals"] for m in leaderboard.build(results)["measured"]}
    folder = board_dir / "tiny-5w1s" / "protonet"
    edit_summary(folder, intervals=None, schema_version=2)
    assert "intervals" not in json.loads((folder / "summary.json").read_text())
    board = leaderboard.build(board_dir)
    assert board["unverified"] == []
    cell = next(m for m in board["measured"] if m["method"] == "protonet" and m["protocol"] == "tiny-5w1s")
    for level, i in before[("protonet", "tiny-5w1s")].items():
        assert (cell["intervals"][level]["low"], cell["intervals"][level]["high"]) == (i["low"], i["high"])
    assert f"(videos {spans(cell, 'videos')}; episodes ± {cell['ci95']:.2f})" in leaderboard.to_markdown(board)
    assert float(next(csv.DictReader(io.StringIO(leaderboard.to_csv(board))))["classes_low"]) == pytest.approx(cell["intervals"]["classes"]["low"])
    assert len(means(ET.fromstring(leaderboard.svg(board)))) == 3


def test_rich_tables_are_never_cut(results, capsys, monkeypatch):
    board = leaderboard.build(results)
    monkeypatch.setenv("COLUMNS", "80")
    args = argparse.Namespace(results=str(results), format="rich", out=None, plot=None, interval="videos")
    assert leaderboard.cmd_leaderboard(args) == 0  # not a terminal: printed wide enough for the table
    piped = capsys.readouterr().out
    for m in board["measured"]:
        assert f"{m['accuracy']:.2f} (videos {spans(m, 'videos')}; episodes ± {m['ci95']:.2f})" in piped
    assert "…" not in piped and "…" not in leaderboard.render(board, "rich")
    table = leaderboard.to_rich(board).renderables[0]
    assert {c.overflow for c in table.columns} == {"fold"}, "on a narrow terminal a cell wraps, never loses digits"

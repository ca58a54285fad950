"""Paired comparison of methods: refusals, every statistic against scipy, verdicts on noise and on real gaps."""
import argparse
import hashlib
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats as sps

from harness.compare import Run, cmd_compare, compare, compare_runs, load_run, verdict
from harness.errors import HarnessError
from harness.pipeline import run_method
from harness.verify import records_episode_set_sha256
from methods.protonet import ProtoNet
from test_stats import tiny_setup

PROTOCOL = "tiny-5w1s"


def pseudo_random(query: torch.Tensor, way: int, seed: float) -> torch.Tensor:
    """Numbers in [-1, 1] [E, Q, way] that look random but are a function of each query's own features, so that a
    head using them still gives an episode the same logits whatever the batch (as every head must)."""
    x = query.flatten(2).double().sum(-1, keepdim=True)  # [E, Q, 1]
    return torch.sin(1e4 * x * seed + 1.7 * torch.arange(1, way + 1, dtype=torch.float64)).float()  # [E, Q, way]


class NoisyProtoNet(ProtoNet):
    """ProtoNet with a small noise on its logits: a few near-ties flip, nothing else changes."""

    def forward(self, support, support_labels, query, way):
        logits = super().forward(support, support_labels, query, way)  # [E, Q, way]
        return logits + 0.1 * logits.std(dim=-1, keepdim=True) * pseudo_random(query, way, 1.0)  # per query: batch-free


class RandomGuess(ProtoNet):
    """Guesses: logits that look random and ignore the support videos."""

    def forward(self, support, support_labels, query, way):
        return pseudo_random(query, way, 0.37)


@pytest.fixture(scope="module")
def lab(tmp_path_factory, tiny_root):
    """A results folder with protonet, a noisy twin, an exact twin and a random guesser on the same 200
    episodes, plus protonet on only the first 100 episodes (another episode set)."""
    p, s = tiny_setup(tmp_path_factory, tiny_root, PROTOCOL)
    run_method(p, "protonet", s)
    for name, head in [("noisy", NoisyProtoNet()), ("twin", ProtoNet()), ("guess", RandomGuess())]:
        run_method(p, name, s, head=head)
    run_method(p, "protonet-100", s, head=ProtoNet(), n_episodes=100)
    return {"results": s.results, "protocol_file": Path(p.source), "protocol": p}


def per_episode(lab, method):
    records = load_run(lab["results"] / PROTOCOL / method).records
    return 100 * np.array([np.mean(r["correct"]) for r in records]), np.array([r["correct"] for r in records])


def test_methods_that_differ_only_by_noise_are_not_called_different(lab):
    res = compare(["protonet", "noisy"], PROTOCOL, lab["results"])
    pair = res["pairs"][0]
    assert pair["mcnemar"]["only_a_correct"] + pair["mcnemar"]["only_b_correct"] > 0, "the noise must flip some predictions"
    assert not pair["significant"]
    assert res["verdict"] == [pair["verdict"]]
    assert pair["verdict"].startswith("No significant difference between protonet and noisy at alpha 0.05 at the videos level, new test videos")
    assert pair["t_interval"]["low"] < 0 < pair["t_interval"]["high"]
    assert all(t["low"] < 0 < t["high"] and t["p"] >= 0.05 for t in pair["levels"].values())


def test_a_clearly_better_method_is_called_better(lab):
    """On this pool of 42 tiny videos protonet is 5 points above guessing: clear at the episodes level (and the
    classes level), while 7 videos per class leave the videos level wide open."""
    res = compare(["guess", "protonet"], PROTOCOL, lab["results"], level="episodes")
    pair = res["pairs"][0]
    assert pair["significant"] and pair["mean_difference"] < 0
    assert pair["verdict"].startswith("protonet is better than guess by ")
    assert "paired t-test on per-episode differences p" in pair["verdict"] and "the videos level" in pair["verdict"]
    assert pair["paired_t"]["p"] < 0.05 and pair["levels"]["episodes"]["p"] == pytest.approx(pair["paired_t"]["p"])
    assert pair["wilcoxon"]["p"] < 0.05 and pair["mcnemar"]["p"] < 0.05
    assert pair["t_interval"]["high"] < 0 and pair["bootstrap"]["high"] < 0


def test_every_statistic_matches_scipy_on_the_recorded_episodes(lab):
    res = compare(["protonet", "guess"], PROTOCOL, lab["results"], n_resamples=3000, seed=5)
    pair = res["pairs"][0]
    a, ca = per_episode(lab, "protonet")
    b, cb = per_episode(lab, "guess")
    d = a - b
    assert pair["mean_difference"] == pytest.approx(d.mean())
    assert (pair["t_interval"]["low"], pair["t_interval"]["high"]) == pytest.approx(sps.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=sps.sem(d)))
    ref = sps.ttest_rel(a, b)
    assert (pair["paired_t"]["statistic"], pair["paired_t"]["p"]) == pytest.approx((ref.statistic, ref.pvalue))
    ref = sps.wilcoxon(a, b)
    assert (pair["wilcoxon"]["statistic"], pair["wilcoxon"]["p"]) == pytest.approx((ref.statistic, ref.pvalue))
    only_a, only_b = int(((ca == 1) & (cb == 0)).sum()), int(((ca == 0) & (cb == 1)).sum())
    n = only_a + only_b
    exact = min(1.0, 2 * sum(math.comb(n, i) for i in range(min(only_a, only_b) + 1)) / 2**n)
    assert (pair["mcnemar"]["only_a_correct"], pair["mcnemar"]["only_b_correct"]) == (only_a, only_b)
    assert pair["mcnemar"]["p"] == pytest.approx(exact)
    ref = sps.bootstrap((d,), np.mean, n_resamples=3000, method="BCa", rng=np.random.default_rng(5)).confidence_interval
    assert (pair["bootstrap"]["low"], pair["bootstrap"]["high"]) == pytest.approx((ref.low, ref.high))
    assert pair["levels"]["videos"]["estimate"] == pytest.approx(d.mean()) == pair["levels"]["classes"]["estimate"]
    assert (pair["levels"]["episodes"]["low"], pair["levels"]["episodes"]["high"]) == pytest.approx((pair["t_interval"]["low"], pair["t_interval"]["high"]))
    assert pair["a_better_episodes"] + pair["b_better_episodes"] + pair["tied_episodes"] == len(d)
    first = res["methods"][0]
    assert first["accuracy"] == pytest.approx(a.mean())
    assert first["intervals"]["episodes"]["half_width"] == pytest.approx(1.96 * a.std() / np.sqrt(len(a)))


def test_identical_methods_tie_without_nan(lab):
    res = compare(["protonet", "twin"], PROTOCOL, lab["results"])
    pair = res["pairs"][0]
    assert pair["mean_difference"] == 0 and pair["tied_episodes"] == 200
    assert pair["paired_t"]["p"] == pair["wilcoxon"]["p"] == pair["mcnemar"]["p"] == 1.0
    assert [t["p"] for t in pair["levels"].values()] == [1.0, 1.0, 1.0]
    assert pair["verdict"].startswith("No significant difference between protonet and twin")
    json.dumps(res, allow_nan=False)  # plain, valid JSON


def test_many_methods_are_holm_corrected_and_ranked(lab):
    methods = ["guess", "noisy", "protonet", "twin"]
    res = compare(methods, PROTOCOL, lab["results"], level="episodes")
    assert len(res["pairs"]) == 6
    raw = np.array([p["levels"]["episodes"]["p"] for p in res["pairs"]])
    # Holm by hand: k-th smallest p times (m - k), then a running maximum, capped at 1
    order = np.argsort(raw, kind="stable")
    expected, running = np.empty(6), 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, (6 - k) * raw[i]))
        expected[i] = running
    assert [p["p_holm"] for p in res["pairs"]] == pytest.approx(expected)
    assert all(p["significant"] == (p["p_holm"] < 0.05) for p in res["pairs"])
    ranking = {r["method"]: r for r in res["ranking"]}
    assert res["ranking"][-1]["method"] == "guess"
    assert set(ranking["guess"]["significantly_worse_than"]) == {"noisy", "protonet", "twin"}
    assert ranking["guess"]["possible_ranks"] == [4, 4]
    assert "twin" in ranking["protonet"]["not_distinguished_from"] and "noisy" in ranking["protonet"]["not_distinguished_from"]
    assert "Holm-adjusted" in res["pairs"][0]["verdict"]


def _pair(diff, levels: dict, wilcoxon=0.03, mcnemar=0.07) -> dict:
    tests = {"episodes": "paired t-test on per-episode differences", "videos": "percentile bootstrap over test videos within class",
             "classes": "percentile bootstrap over test classes"}
    return {"a": "A", "b": "B", "mean_difference": diff, "wilcoxon": {"p": wilcoxon, "p_holm": None}, "mcnemar": {"p": mcnemar, "p_holm": None},
            "levels": {lvl: {"low": lo, "high": hi, "p": p, "p_holm": None, "test": tests[lvl]} for lvl, (lo, hi, p) in levels.items()}}


def test_the_verdict_rests_on_the_level_asked_for_and_names_the_levels_that_disagree():
    pair = _pair(0.6, {"episodes": (0.05, 1.15, 0.034), "videos": (-0.4, 1.6, 0.21), "classes": (-1.5, 2.7, 0.5)})
    assert verdict(pair, 0.05, "videos") == (
        "No significant difference between A and B at alpha 0.05 at the videos level, new test videos of the same test classes "
        "(A - B = +0.6 points, 95% CI -0.4 to 1.6; percentile bootstrap over test videos within class p = 0.210); "
        "the episodes level, this pool of test videos (another draw of episodes from the same videos) (p = 0.034) finds one.")
    assert verdict(pair, 0.05, "episodes") == (
        "A is better than B by 0.6 points at the episodes level, this pool of test videos (another draw of episodes from the same videos) "
        "(95% CI 0.1 to 1.1; paired t-test on per-episode differences p = 0.034); the videos level, new test videos of the same test "
        "classes (p = 0.210) and the classes level, new test classes and new videos (p = 0.500) and the exact McNemar test (p = 0.070) do not confirm it.")
    flipped = _pair(-0.6, {"episodes": (-1.15, -0.05, 0.034), "videos": (-1.6, -0.1, 0.04), "classes": (-2.7, 1.5, 0.5)})
    assert verdict(flipped, 0.05, "videos").startswith("B is better than A by 0.6 points at the videos level, new test videos of the same test classes (95% CI 0.1 to 1.6;")
    assert verdict(flipped, 0.01, "videos").startswith("No significant difference between A and B at alpha 0.01 at the videos level")


def test_a_gain_on_a_few_videos_is_significant_on_this_pool_only(lab):
    """B = protonet made right on every query of ONE video: a gain that many episodes repeat (the episodes
    level calls it significant) but that rests on one video (the videos and classes levels do not)."""
    a = load_run(lab["results"] / PROTOCOL / "protonet")
    lucky = {a.records[0]["query"][0]}
    records = []
    for r in a.records:
        correct = [1 if q in lucky else c for q, c in zip(r["query"], r["correct"])]
        records.append({**r, "correct": correct, "accuracy": sum(correct) / len(correct)})
    b = Run("lucky", a.folder, a.summary, records)
    by_level = {level: compare_runs([b, a], level=level) for level in ("episodes", "videos", "classes")}
    pair = by_level["episodes"]["pairs"][0]
    assert pair["levels"]["episodes"]["p"] < 0.05 <= pair["levels"]["videos"]["p"]
    assert by_level["episodes"]["pairs"][0]["significant"] and by_level["episodes"]["verdict"][0].startswith("lucky is better than protonet")
    assert "the videos level" in by_level["episodes"]["verdict"][0] and "do not confirm it" in by_level["episodes"]["verdict"][0]
    for level in ("videos", "classes"):
        assert not by_level[level]["pairs"][0]["significant"]
        assert by_level[level]["verdict"][0].startswith(f"No significant difference between lucky and protonet at alpha 0.05 at the {level} level")
    assert by_level["videos"]["ranking"][0]["not_distinguished_from"] == ["protonet"]
    assert by_level["episodes"]["ranking"][0]["significantly_better_than"] == ["protonet"]


def test_different_episode_sets_are_refused(lab):
    with pytest.raises(HarnessError, match="different episode sets") as e:
        compare(["protonet", "protonet-100"], PROTOCOL, lab["results"])
    assert "fix:" in e.value.message


def test_records_that_do_not_line_up_are_refused(lab, tmp_path):
    results = tmp_path / "results"
    shutil.copytree(lab["results"] / PROTOCOL / "protonet", results / PROTOCOL / "protonet")
    changed = results / PROTOCOL / "guess"
    shutil.copytree(lab["results"] / PROTOCOL / "guess", changed)
    lines = (changed / "episodes.jsonl").read_text().splitlines()
    record = json.loads(lines[3])
    record["support"][0], record["support"][1] = record["support"][1], record["support"][0]
    lines[3] = json.dumps(record, sort_keys=True, separators=(",", ":"))
    data = ("\n".join(lines) + "\n").encode()
    (changed / "episodes.jsonl").write_bytes(data)
    with pytest.raises(HarnessError, match="summary.json was written for"):
        compare(["protonet", "guess"], PROTOCOL, results)
    summary = json.loads((changed / "summary.json").read_text())
    summary["records_sha256"] = hashlib.sha256(data).hexdigest()
    (changed / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(HarnessError, match="summary.json says episode set .*, its records hold episode set"):
        compare(["protonet", "guess"], PROTOCOL, results)
    # runs in memory that name one episode set but hold others are refused by the pairing itself
    guess = load_run(lab["results"] / PROTOCOL / "guess")
    mixed = Run(guess.method, guess.folder, guess.summary, guess.records[:3] + [record] + guess.records[4:])
    with pytest.raises(HarnessError, match="episode 3: field 'support' differs between protonet and guess"):
        compare_runs([load_run(lab["results"] / PROTOCOL / "protonet"), mixed])


def tampered(lab, tmp_path, summary_changes: dict | None = None, record_change=None) -> Path:
    """A results folder holding protonet as run and guess changed by hand: its summary (`summary_changes`,
    None removes a field) and/or its record 5 (`record_change`, with records_sha256 made to match)."""
    results = tmp_path / "results"
    for m in ("protonet", "guess"):
        shutil.copytree(lab["results"] / PROTOCOL / m, results / PROTOCOL / m)
    folder = results / PROTOCOL / "guess"
    summary = json.loads((folder / "summary.json").read_text())
    if record_change:
        lines = (folder / "episodes.jsonl").read_text().splitlines()
        record = json.loads(lines[5])
        record_change(record)
        lines[5] = json.dumps(record, sort_keys=True, separators=(",", ":"))
        data = ("\n".join(lines) + "\n").encode()
        (folder / "episodes.jsonl").write_bytes(data)
        summary["records_sha256"] = hashlib.sha256(data).hexdigest()
    summary.update(summary_changes or {})
    (folder / "summary.json").write_text(json.dumps({k: v for k, v in summary.items() if v is not None}))
    return results


def test_a_summary_edited_by_hand_is_refused(lab, tmp_path):
    results = tampered(lab, tmp_path, {"accuracy": 99.9})
    with pytest.raises(HarnessError, match=r"summary.json says accuracy 99.90, its records give \d+\.\d\d") as e:
        compare(["protonet", "guess"], PROTOCOL, results)
    assert e.value.where == str(results / PROTOCOL / "guess" / "summary.json") and "--recompute" in e.value.fix


def test_records_without_a_hash_are_refused(lab, tmp_path):
    results = tampered(lab, tmp_path, {"records_sha256": None})
    with pytest.raises(HarnessError, match="records without records_sha256 cannot be verified"):
        compare(["protonet", "guess"], PROTOCOL, results)


def test_a_record_that_is_no_record_is_refused_even_with_a_matching_hash(lab, tmp_path):
    def seven(record):
        record["correct"][0] = 7

    def flip_first(record):  # `correct` and `accuracy` changed together, the prediction left as it was
        record["correct"][0] = 1 - record["correct"][0]
        record["accuracy"] = sum(record["correct"]) / len(record["correct"])

    results = tampered(lab, tmp_path, record_change=seven)
    with pytest.raises(HarnessError, match=r"line 6 \(episode 5\): field 'correct' must hold 0 or 1 per query, holds 7") as e:
        compare(["protonet", "guess"], PROTOCOL, results)
    assert e.value.where == str(results / PROTOCOL / "guess" / "episodes.jsonl")
    results = tampered(lab, tmp_path / "2", record_change=flip_first)
    with pytest.raises(HarnessError, match=r"line 6 \(episode 5\): field 'correct' says query 0 is (right|wrong), but its prediction is \d and its label \d"):
        compare(["protonet", "guess"], PROTOCOL, results)


def test_records_prove_their_episode_set(lab):
    run = load_run(lab["results"] / PROTOCOL / "protonet")
    assert records_episode_set_sha256(run.records) == run.summary["episode_set_sha256"]


def test_missing_runs_and_a_changed_protocol_are_explained(lab, tmp_path):
    with pytest.raises(HarnessError, match="no run of method 'trx'") as e:
        compare(["protonet", "trx"], PROTOCOL, lab["results"])
    assert "fsv-bench run" in e.value.message
    with pytest.raises(HarnessError, match="at least two methods"):
        compare(["protonet"], PROTOCOL, lab["results"])
    # a protocol file names the folder and must hold the content the runs used
    assert compare(["protonet", "twin"], str(lab["protocol_file"]), lab["results"])["protocol"] == PROTOCOL
    edited = tmp_path / f"{PROTOCOL}.yaml"
    edited.write_text(lab["protocol_file"].read_text().replace("seed: 0", "seed: 1"))
    with pytest.raises(HarnessError, match="another content of protocol"):
        compare(["protonet", "twin"], str(edited), lab["results"])


def test_command_prints_the_verdict_and_writes_json(lab, tmp_path, capsys):
    out = tmp_path / "cmp" / "protonet-guess.json"
    args = argparse.Namespace(methods=["protonet", "guess"], protocol=PROTOCOL, results=str(lab["results"]), alpha=0.01, json=str(out),
                              level="episodes", resamples=2000, seed=3)
    assert cmd_compare(args) == 0
    printed = capsys.readouterr().out
    assert "protonet is better than guess by" in printed and "99% CI" in printed and "at the episodes level" in printed
    assert "…" not in printed, "no number is cut short"
    data = json.loads(out.read_text())
    assert data["level"] == "episodes" and data["n_resamples"] == 2000 and data["seed"] == 3
    assert data["alpha"] == 0.01 and data["episode_set_sha256"] == load_run(lab["results"] / PROTOCOL / "guess").summary["episode_set_sha256"]
    assert not list(out.parent.glob(".*.tmp")), "written atomically, nothing left beside it"

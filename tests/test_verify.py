"""Verification of stored runs: a summary is believed only when its records are intact, well formed and give
its figures; every refusal names the file, the line or episode, and the field."""
import copy
import hashlib
import json
import random

import numpy as np
import pytest

from harness.errors import HarnessError
from harness.stats import accuracy_summary
from harness.verify import check_records, load_verified, parse_records, records_episode_set_sha256, verify_run


def make_records(n: int = 20, way: int = 5, shot: int = 1, query: int = 2, seed: int = 0) -> list[dict]:
    """n consistent episode records, about 60% of the queries right, the first query of each wrong."""
    rng = random.Random(seed)
    records = []
    for i in range(n):
        classes = rng.sample([f"c{k:02d}" for k in range(12)], way)
        labels = [c for c in range(way) for _ in range(query)]
        predictions = [(labels[0] + 1) % way] + [y if rng.random() < 0.6 else rng.randrange(way) for y in labels[1:]]
        correct = [int(p == y) for p, y in zip(predictions, labels)]
        records.append({
            "episode": i, "classes": classes,
            "support": [f"{c}/s{rng.randrange(99)}" for c in classes for _ in range(shot)],
            "query": [f"{c}/q{rng.randrange(99)}" for c in classes for _ in range(query)],
            "query_labels": labels, "predictions": predictions, "correct": correct, "accuracy": sum(correct) / len(correct),
        })
    return records


def records_bytes(records: list[dict]) -> bytes:
    return "".join(json.dumps(r, sort_keys=True, separators=(",", ":")) + "\n" for r in records).encode()


def summary_for(records: list[dict], data: bytes | None = None) -> dict:
    """The summary the pipeline writes for these records (the fields verification reads)."""
    data = records_bytes(records) if data is None else data
    figures = accuracy_summary(np.array([r["accuracy"] for r in records]))
    return {"protocol": "tiny-5w1s", "method": "protonet", "n_episodes": len(records), "episode_set_sha256": records_episode_set_sha256(records),
            **figures, "records_sha256": hashlib.sha256(data).hexdigest()}


def write_run(folder, records: list[dict], figures_of: list[dict] | None = None, **changes):
    """A run folder whose summary matches its records (or states the figures of `figures_of`, the records the
    run wrote before one was changed, under the changed records' hash), then `changes` applied to the
    summary (None removes a field)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = records_bytes(records)
    summary = {**summary_for(figures_of or records, data), **changes}
    summary = {k: v for k, v in summary.items() if v is not None}
    (folder / "episodes.jsonl").write_bytes(data)
    (folder / "summary.json").write_text(json.dumps(summary))
    return folder


def test_a_consistent_run_verifies_and_gives_its_records(tmp_path):
    records = make_records()
    folder = write_run(tmp_path / "run", records)
    summary, loaded, data = load_verified(folder)
    assert loaded == records and data == (folder / "episodes.jsonl").read_bytes() and summary["accuracy"] == summary_for(records)["accuracy"]
    assert verify_run(summary, data, folder) == records
    bools = [{**r, "correct": [bool(c) for c in r["correct"]]} for r in records]  # True/False are 0/1 too
    check_records(bools, "x")


@pytest.mark.parametrize("field, value, stated", [
    ("accuracy", 99.9, "accuracy 99.90"),
    ("ci95", 0.01, "ci95 0.01"),
    ("t_interval95", [10.0, 99.0], r"t_interval95 \[10.00, 99.00\]"),
    ("n_episodes", 21, "n_episodes 21"),
    ("accuracy", "60", 'accuracy "60"'),
])
def test_a_summary_that_states_other_figures_than_its_records_is_refused(tmp_path, field, value, stated):
    records = make_records()
    folder = write_run(tmp_path / "run", records, **{field: value})
    with pytest.raises(HarnessError, match=f"summary.json says {stated}, its records give") as e:
        load_verified(folder)
    assert e.value.where == str(folder / "summary.json")
    assert "--recompute" in e.value.fix and "never edit result files" in e.value.fix


def test_the_accuracy_message_gives_both_numbers(tmp_path):
    records = make_records()
    true = summary_for(records)["accuracy"]
    with pytest.raises(HarnessError) as e:
        load_verified(write_run(tmp_path / "run", records, accuracy=99.9))
    assert e.value.what == f"summary.json says accuracy 99.90, its records give {true:.2f}"


def test_only_float_printing_noise_is_tolerated(tmp_path):
    records = make_records()
    true = summary_for(records)
    load_verified(write_run(tmp_path / "a", records, accuracy=true["accuracy"] * (1 + 1e-12), ci95=true["ci95"] * (1 - 1e-12)))
    with pytest.raises(HarnessError, match="summary.json says accuracy"):
        load_verified(write_run(tmp_path / "b", records, accuracy=true["accuracy"] * (1 + 1e-7)))  # 60.5 -> 60.500006


def test_records_without_a_hash_or_with_another_are_refused(tmp_path):
    records = make_records()
    with pytest.raises(HarnessError, match="records without records_sha256 cannot be verified"):
        load_verified(write_run(tmp_path / "a", records, records_sha256=None))
    folder = write_run(tmp_path / "b", records)
    lines = (folder / "episodes.jsonl").read_text().splitlines(keepends=True)
    (folder / "episodes.jsonl").write_text("".join(lines[:-1]))  # one episode dropped
    with pytest.raises(HarnessError, match="episodes.jsonl has SHA-256 .* but summary.json was written for"):
        load_verified(folder)


def test_an_edited_episode_set_is_refused(tmp_path):
    with pytest.raises(HarnessError, match="summary.json says episode set 000000000000..., its records hold episode set"):
        load_verified(write_run(tmp_path / "run", make_records(), episode_set_sha256="0" * 64))


def _set(field, value):
    def change(r):
        r[field] = value
    return change


def _set_item(field, k, value):
    def change(r):
        r[field][k] = value
    return change


def _flip_both(r):  # a wrong answer made right in `correct` only
    q = r["correct"].index(0)
    r["correct"][q] = 1


@pytest.mark.parametrize("change, message", [
    (_set_item("correct", 0, 7), r"line 4 \(episode 3\): field 'correct' must hold 0 or 1 per query, holds 7"),
    (_set_item("correct", 0, 0.5), r"field 'correct' must hold 0 or 1 per query, holds 0.5"),
    (_flip_both, r"line 4 \(episode 3\): field 'correct' says query \d is right, but its prediction is \d and its label \d"),
    (_set("accuracy", 1.0), r"line 4 \(episode 3\): field 'accuracy' is 1.0, but \d of 10 queries are correct"),
    (_set_item("query_labels", 0, 5), r"field 'query_labels' must hold integers in \[0, 5\)"),
    (_set_item("predictions", 1, -1), r"field 'predictions' must hold integers in \[0, 5\)"),
    (_set_item("predictions", 1, 1.0), r"field 'predictions' must hold integers in \[0, 5\)"),
    (_set("episode", 7), r"line 4 \(episode 3\): field 'episode' is 7, expected 3"),
    (_set("predictions", [0] * 9), r"field 'predictions' holds 9 values, expected 10"),
    (_set("accuracy", None), r"field 'accuracy' is null, expected a number"),
    (lambda r: r.pop("query"), r"field 'query' is missing, expected a list"),
    (_set_item("support", 2, 3), r"field 'support' must hold names \(strings\)"),
    (lambda r: r["classes"].__setitem__(1, r["classes"][0]), r"field 'classes' names a class twice"),
])
def test_a_malformed_record_is_named_by_line_and_field(tmp_path, change, message):
    written = make_records(way=5, query=2)
    records = copy.deepcopy(written)
    change(records[3])
    folder = write_run(tmp_path / "run", records, figures_of=written)  # a hash that matches: only the record is wrong
    with pytest.raises(HarnessError, match=message) as e:
        load_verified(folder)
    assert e.value.where == str(folder / "episodes.jsonl")
    with pytest.raises(HarnessError, match=message):
        check_records(records, "records")  # the same check on records in memory


@pytest.mark.parametrize("data, message", [
    (b'{"episode": 0}\nnot json\n', r"line 2 is not JSON"),
    (b'{"episode": 0}\n[1, 2]\n', r"line 2 is a JSON list, not an episode record"),
    (b'{"episode": 0}\n\n{"episode": 2}\n', r"line 2 is not JSON"),
    (b'{"episode": 0}\n{"episode": 1, "x": "\xff"}\n', r"line 2 is not UTF-8 text"),
])
def test_lines_that_are_not_records_are_named(data, message):
    with pytest.raises(HarnessError, match=message) as e:
        parse_records(data, "results/p/m/episodes.jsonl")
    assert e.value.where == "results/p/m/episodes.jsonl"


@pytest.mark.parametrize("text, message", [
    (b"{not json", "summary.json is not JSON"),
    (b"[1, 2]", "summary.json holds a JSON list, not an object"),
    (b'{"accuracy": "\xff"}', "summary.json is not UTF-8 text"),
])
def test_a_summary_that_is_not_a_json_object_is_named(tmp_path, text, message):
    folder = write_run(tmp_path / "run", make_records())
    (folder / "summary.json").write_bytes(text)
    with pytest.raises(HarnessError, match=message) as e:
        load_verified(folder)
    assert e.value.where == str(folder / "summary.json")


def test_a_folder_without_a_finished_run_is_explained(tmp_path):
    with pytest.raises(HarnessError, match="no finished run in .* \\(summary.json is missing\\)"):
        load_verified(tmp_path)


# ---- the mark of a verified pair ------------------------------------------------------------------------------


def _marks(folder):
    return sorted(p.name for p in folder.glob(".verified-*"))


def test_a_verified_pair_is_not_checked_again_while_nothing_changed(tmp_path, monkeypatch):
    """Checks 2 and 3 are a function of the summary, the records' bytes and the verifier: once passed, the mark
    lets them be skipped; the records are still hashed and still come back whole."""
    import harness.verify as verify

    records = make_records()
    folder = write_run(tmp_path / "run", records)
    load_verified(folder)
    assert len(_marks(folder)) == 1
    monkeypatch.setattr(verify, "check_figures", lambda *a: pytest.fail("a marked pair was checked again"))
    monkeypatch.setattr(verify, "check_records", lambda *a: pytest.fail("a marked pair was checked again"))
    summary, loaded, _ = load_verified(folder)
    assert loaded == records


@pytest.mark.parametrize("change", ["summary figure", "records and their hash", "records alone", "verifier code"])
def test_any_change_after_the_mark_is_verified_in_full(tmp_path, monkeypatch, change):
    import harness.verify as verify

    records = make_records()
    folder = write_run(tmp_path / "run", records)
    load_verified(folder)
    mark = _marks(folder)
    if change == "summary figure":  # an edited summary, records untouched
        summary = json.loads((folder / "summary.json").read_text())
        (folder / "summary.json").write_text(json.dumps({**summary, "accuracy": 99.9}))
        expected = "accuracy 99.90"
    elif change == "records and their hash":  # an edited record, the summary's hash made to fit
        edited = copy.deepcopy(records)
        edited[3]["predictions"][1] = (edited[3]["predictions"][1] + 1) % 5
        write_run(folder, edited, figures_of=records)
        expected = "correct"
    elif change == "records alone":
        (folder / "episodes.jsonl").write_bytes(records_bytes(records[:-1]))
        expected = "SHA-256"
    else:  # another verifier: the same good pair is checked again, and marked anew
        monkeypatch.setattr(verify, "verifier_sha256", lambda: "another verifier")
        load_verified(folder)
        assert _marks(folder) != mark and len(_marks(folder)) == 1
        return
    with pytest.raises(HarnessError, match=expected):
        load_verified(folder)


def test_a_folder_that_cannot_be_written_is_verified_every_time(tmp_path, monkeypatch):
    import harness.verify as verify

    folder = write_run(tmp_path / "run", make_records())
    calls = []
    original = verify.check_figures
    monkeypatch.setattr(verify, "check_figures", lambda *a: calls.append(1) or original(*a))
    monkeypatch.setattr(verify.Path, "touch", lambda *a, **k: (_ for _ in ()).throw(PermissionError(13, "read-only")))
    load_verified(folder)
    load_verified(folder)
    assert calls == [1, 1] and not _marks(folder)

"""Regression tests on accuracy: a pytest plugin that checks runs against a stored, checksummed baseline.

    def test_mymethod_has_not_regressed(fsv_regression):
        def run(k):  # the method on a backbone pretrained from seed k (tests/regression_calibration.py)
            p, s = seeded_protocol(work, data, k)
            return run_method(p, "mymethod", s)
        runs = {f"seed {k}": run(k) for k in (0, 1, 2)}                       # 3 pretraining seeds
        more = lambda: {f"seed {k}": run(k) for k in range(3, 20)}           # 17 more, only when writing
        fsv_regression.check("synthetic-5w1s-mymethod", runs, mode="exact", spread=more)          # the first run
        fsv_regression.check("synthetic-5w1s-mymethod", runs, mode="statistical", spread=more)

    pytest --fsv-update-baselines        # write (or rewrite) every baseline the tests check, then review the diff

Three modes:

  exact        every prediction of the run's first (primary) run is the baseline's. For ONE environment. On a
               failure the message counts the changed episodes and queries (right->wrong, wrong->right,
               wrong->other wrong), shows the first ones, and lists what the run's summary says differs from the
               baseline's run: backbone weights, head code or settings, checkpoint, protocol, torch and the
               other versions, device, threads. Weights that differ while every prediction is the same pass,
               with a RegressionNote warning that says so (the tiny3d weights' bits depend on the number of
               torch threads and the CPU's vector instructions at pretraining; the predictions usually do not).
               RegressionFailure.environment_only tells a failure whose recorded causes are all environment
               (weights, versions, device) from one where the code or settings changed too.
  statistical  the run is not worse than unchanged runs are ACROSS ENVIRONMENTS: the mean accuracy of the run's m
               replicates must reach a lower tolerance bound, mean_K - c sd_K of the baseline's K replicates, set
               so that with 90% confidence (`confidence`) at most `alpha` of the means of m unchanged replicates
               fall below it (normal tolerance factor c from the noncentral t; `tolerance_factor`). A replicate is
               a run of the same protocol, episodes and method on a backbone pretrained from another seed (or
               in another environment).
  paired       the former statistical mode, for one environment: a one-sided paired t-test of the per-episode
               accuracy of the primary run against the baseline's, H0 "mean(run - baseline) >= -margin" (margin
               1 point by default). It tolerates a few changed predictions (a GPU kernel's ties), but another
               backbone changes predictions everywhere, and this test cannot see that spread: do not use it
               across environments.

Why replicates, and why a tolerance bound (tests/regression_calibration.py measures it; numbers in the README).
Another environment means other backbone weights (another torch release draws other initial weights; tiny3d is
pretrained where it runs), which moves the accuracy of every episode at once. A paired per-episode test is blind
to that: it failed 3 of 12 times when only the pretraining seed changed. On the tiny benchmark the accuracy of
protonet moves by about 1.9 points (sd over 108 seeds: 0-47, 100-135, 200-223) from pretraining seed to
pretraining seed, as much at 200 episodes as at 2,000: it is the backbone that moves, not the episode sample. So:

  * one run is not enough: with a single run's sd of 1.9, no test keeps false alarms at 5% and catches a 5-point
    drop 9 times in 10 (even knowing the true mean, one run gives at most about 84% power); the run brings m = 3
    replicates (pretraining seeds), whose mean moves by 1.9 / sqrt(3) = 1.1;
  * the between-environment spread is measured, not assumed: the baseline stores the accuracies of K = 20
    replicates (`spread=`, called only when the baseline is written);
  * a t-test of the two means is exact on average over baselines, but every later check uses the SAME baseline:
    one whose mean came out high (a 1.5-point excess happened with 10 seeds) gave 3 false alarms in 12. The
    tolerance bound holds for the baseline at hand, with 90% confidence: simulated on 108 measured seeds, it
    meets "at most 1 false alarm and at least 11 detections in 12" 92% of the time with K = 20, m = 3 (a t-test:
    86%, bounded by the 12% chance of 2 or more false alarms at an exact 5%);
  * the video-level interval of the run (harness.uncertainty, `videos`) is no help: it answers "on new test
    videos", is +-7 points here, and every replicate is scored on the SAME videos and episodes, so the
    between-replicate spread already holds every source of variation between two runs on them.
A statistical check of a single run is allowed; its bound (c for m = 1) lies lower and it misses more drops.
`margin` (default 0) is a drop you choose to tolerate on top of that.

A baseline is a small JSON file, `<dir>/<name>.json`, meant to be committed and reviewed: the primary run's
hashes, accuracy and provenance, the replicates' accuracies, and two rows per episode, one line each, so a diff
shows which episodes changed: `predictions` (the predicted class of each query, one digit each, or comma
separated when a class index has two digits) and `correct` (0/1 per query). `content_sha256` is the SHA-256 of
the canonical JSON of everything else in the file (sort_keys, no spaces): a baseline edited by hand is refused,
naming the file, the rows or fields that no longer agree and, in a git checkout, the edited lines. Rewrite it
with --fsv-update-baselines and review the diff instead. `<dir>` is --fsv-baselines, else `baselines/` beside
the test file.

All modes refuse a run on another episode set than the baseline's (its hash). A run folder or summary is
verified first (harness.verify: its records have the SHA-256 its summary names, are well formed and give its
figures) and refused otherwise; records given without a summary are checked record by record.

The plugin is registered by the package's `pytest11` entry point; in a checkout without it, add
`pytest_plugins = ["harness.regression"]` to the root conftest.py, or pass `-p harness.regression`.
(PYTEST_DONT_REWRITE: failures are raised as RegressionFailure, not by assert statements, so pytest need not
rewrite this module, and does not warn when a test module imported it first.)
"""
from __future__ import annotations

import hashlib
import json
import math
import re
import subprocess
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from harness import stats
from harness.compare import load_run
from harness.errors import HarnessError
from harness.files import atomic_write_text
from harness.verify import RECORDS, SUMMARY, check_records, parse_records, records_episode_set_sha256

FORMAT = "fsv-bench regression baseline 2"
MODES = ("exact", "statistical", "paired")
#: the default tolerated drop (points) of each mode
MARGINS = {"exact": 0.0, "statistical": 0.0, "paired": 1.0}
#: fewest baseline replicates statistical mode accepts (a spread needs a few)
MIN_REPLICATES = 3
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_FIX_UPDATE = "run pytest --fsv-update-baselines and review the baseline's diff"

#: (label, path in a run's summary, kind): what a baseline records of its primary run, and what a failure
#: names when it differs. kind "environment": the machine and its libraries; "code": what the project controls.
PROVENANCE = (
    ("method", ("method",), "code"),
    ("head settings", ("method_config",), "code"),
    ("head checkpoint", ("checkpoint_sha256",), "code"),
    ("protocol", ("protocol_sha256",), "code"),
    ("head code", ("code", "head_sha256"), "code"),
    ("backbone code", ("code", "backbone_code_sha256"), "code"),  # also covers the torch and torchvision versions
    ("harness version", ("code", "harness_version"), "code"),
    ("backbone", ("backbone", "name"), "code"),
    ("feature precision", ("backbone", "precision"), "code"),
    ("backbone weights", ("backbone", "weights_sha256"), "environment"),
    ("torch", ("versions", "torch"), "environment"),
    ("torchvision", ("versions", "torchvision"), "environment"),
    ("numpy", ("versions", "numpy"), "environment"),
    ("scipy", ("versions", "scipy"), "environment"),
    ("python", ("versions", "python"), "environment"),
    ("device", ("device",), "environment"),
    ("device name", ("environment", "device_name"), "environment"),
    ("cpu count", ("environment", "cpu_count"), "environment"),
    ("torch threads", ("environment", "torch_threads"), "environment"),
    ("cuda", ("environment", "cuda"), "environment"),
    ("cudnn", ("environment", "cudnn"), "environment"),
    ("deterministic algorithms", ("environment", "deterministic_algorithms"), "environment"),
)
_KIND = {label: kind for label, _, kind in PROVENANCE}


class RegressionFailure(AssertionError):
    """The run differs from its baseline (exact), or is significantly worse (statistical, paired).

    found: what the check found (as a passing check returns it); differences: {label: (baseline's value,
    run's value)} of the recorded provenance that differs; environment_only: something differs, and all of it
    is environment (weights, versions, device, threads)."""

    def __init__(self, message: str, found: dict | None = None):
        super().__init__(message)
        self.found = found or {}
        self.differences = self.found.get("differences") or {}

    @property
    def environment_only(self) -> bool:
        return bool(self.differences) and all(_KIND.get(k) == "environment" for k in self.differences)


class RegressionNote(UserWarning):
    """A check passed, but something the user should know differs from the baseline (e.g. the weights)."""


@dataclass
class Observed:
    """What a check needs of a run: its records, and its summary when there is one."""

    records: list[dict]
    summary: dict = field(default_factory=dict)
    source: str = "records"
    label: str | None = None


def observe(run) -> Observed:
    """Records from a list of records, a run folder, an episodes.jsonl file, or a summary dict (run_method's
    return value, which names its records_path). A run folder, a summary, or an episodes.jsonl beside its
    summary.json is verified as a stored run (harness.verify); records without a summary are checked record
    by record (`check_records`)."""
    if isinstance(run, Observed):
        return run
    if isinstance(run, dict):
        if "records_path" not in run:
            raise HarnessError("a summary given to the regression check must name its records ('records_path')", fix="pass run_method's return value, the run folder, or the records")
        folder = Path(run["records_path"]).parent
        loaded = load_run(folder)
        if run.get("records_sha256") and run["records_sha256"] != loaded.summary["records_sha256"]:
            raise HarnessError(f"the summary given names records {run['records_sha256'][:12]}..., but {folder} holds records {loaded.summary['records_sha256'][:12]}...",
                               where=str(folder), fix="pass the summary of the run in that folder, or the folder itself")
        return Observed(loaded.records, loaded.summary, str(folder))
    if isinstance(run, (str, Path)):
        path = Path(run)
        if path.is_dir() or (path.name == RECORDS and (path.parent / SUMMARY).is_file()):
            folder = path if path.is_dir() else path.parent
            loaded = load_run(folder)
            return Observed(loaded.records, loaded.summary, str(folder))
        if path.is_file():
            return Observed(_read_records(path), {}, str(path))
        raise HarnessError(f"{path} is neither a run folder nor an episodes.jsonl file", fix="pass <results>/<protocol>/<method>, its episodes.jsonl, or the records")
    records = list(run)
    if not records or not isinstance(records[0], dict):
        raise HarnessError("the regression check needs episode records (dicts), a run folder or a summary", fix="pass run_method's return value or <results>/<protocol>/<method>")
    check_records(records, "the records given to the regression check")
    return Observed(records, {}, "records")


def observe_all(runs) -> list[Observed]:
    """One run, or several replicates of it: a list (or tuple) of runs, or a dict {label: run}. A list of
    episode records is ONE run. The first is the primary run (exact mode, the baseline's rows)."""
    if isinstance(runs, dict) and "records_path" not in runs:
        items = list(runs.items())
    elif isinstance(runs, (list, tuple)) and runs and not (isinstance(runs[0], dict) and "episode" in runs[0]):
        items = [(None, r) for r in runs]
    else:
        items = [(None, runs)]
    if not items:
        raise HarnessError("no run was given to the regression check", fix="pass run_method's return value, a run folder, or a list of them")
    out = []
    for label, run in items:
        obs = observe(run)
        out.append(Observed(obs.records, obs.summary, obs.source, str(label) if label is not None else _default_label(obs, len(out))))
    return out


def _default_label(obs: Observed, i: int) -> str:
    weights = (obs.summary.get("backbone") or {}).get("weights_sha256")
    return f"weights {weights[:12]}" if weights else f"run {i + 1}"


def _read_records(path: Path) -> list[dict]:
    """The checked records of an episodes.jsonl without a summary beside it (nothing to hash them against)."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise HarnessError(f"cannot read {path}: {e.strerror or e}", fix="pass the records of a finished run") from None
    records = parse_records(data, str(path))
    check_records(records, str(path))
    return records


# ------------------------------------------------------------------------------------------- the baseline


def predictions_sha256(records: list[dict]) -> str:
    """SHA-256 over every episode's predictions, one line "episode:p,p,p" per episode, in order."""
    h = hashlib.sha256()
    for r in records:
        h.update(f"{r['episode']}:{','.join(map(str, r['predictions']))}\n".encode())
    return h.hexdigest()


def _row(values) -> str:
    """One episode's classes as a baseline row: digits when every class is below 10, else comma separated."""
    values = [int(v) for v in values]
    return "".join(map(str, values)) if all(v < 10 for v in values) else ",".join(map(str, values))


def _parse_row(row: str, n: int) -> list[int] | None:
    parts = list(row) if "," not in row and len(row) == n else row.split(",")
    if len(parts) != n or not all(p.isdigit() for p in parts):
        return None
    return [int(p) for p in parts]


def _lookup(summary: dict, path: tuple[str, ...]):
    value = summary
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def provenance(summary: dict) -> dict:
    """{label: value} of PROVENANCE that the run's summary records (labels it does not record are left out)."""
    out = {}
    for label, path, _ in PROVENANCE:
        value = _lookup(summary, path)
        if value is not None:
            out[label] = value
    return out


def _accuracy(records: list[dict]) -> float:
    return float(100 * stats.query_outcomes(records).mean())


def _query_labels(records: list[dict], where: str) -> list[int]:
    labels = records[0]["query_labels"]
    odd = next((r["episode"] for r in records if r["query_labels"] != labels), None)
    if odd is not None:
        other = next(r["query_labels"] for r in records if r["episode"] == odd)
        raise HarnessError(f"{where}: episode {odd} lists its queries' labels as {other}, episode {records[0]['episode']} as {labels}",
                           fix="a regression baseline needs the harness's layout: the queries of every episode in class order")
    return [int(x) for x in labels]


def _replicate_entries(observed: list[Observed], episode_set: str, what: str) -> list[dict]:
    """[{label, accuracy, predictions_sha256}] of replicates, checked to be on one episode set and distinct."""
    entries, seen = [], {}
    for obs in observed:
        es = records_episode_set_sha256(obs.records)
        if es != episode_set:
            raise HarnessError(f"{what} '{obs.label}' ({obs.source}) holds episode set {es[:12]}... ({len(obs.records)} episodes), the first run {episode_set[:12]}...",
                               fix="every replicate evaluates the same protocol and number of episodes")
        digest = predictions_sha256(obs.records)
        if digest in seen:
            raise HarnessError(f"{what} '{obs.label}' has the very predictions of '{seen[digest]}': a replicate must come from its own pretraining seed or environment",
                               fix="give each replicate a backbone pretrained from another seed")
        seen[digest] = obs.label
        entries.append({"label": obs.label, "accuracy": round(_accuracy(obs.records), 6), "predictions_sha256": digest})
    return entries


def make_baseline(name: str, run, spread=None) -> dict:
    """The baseline of a run (or of replicates of it: the first is the primary run): small, plain JSON, two
    rows per episode, the replicates' accuracies, and `content_sha256`. `spread`: more replicates, a list or
    dict {label: run}, or a callable returning one (called here, so only when a baseline is written)."""
    observed = observe_all(run)
    if spread is not None:
        observed += observe_all(spread() if callable(spread) else spread)
    primary = observed[0]
    records, summary = primary.records, primary.summary  # verified: it names this episode set, when it names one
    episode_set = records_episode_set_sha256(records)
    correct = stats.query_outcomes(records)
    runs = _replicate_entries(observed, episode_set, "replicate")
    accuracies = np.array([r["accuracy"] for r in runs])
    baseline = {
        "format": FORMAT,
        "name": name,
        "method": summary.get("method"),
        "protocol": summary.get("protocol"),
        "episode_set_sha256": episode_set,
        "n_episodes": len(records),
        "queries_per_episode": int(correct.shape[1]),
        "query_labels": _query_labels(records, "the records of the baseline's run"),
        "accuracy": round(float(100 * correct.mean()), 6),
        "predictions_sha256": predictions_sha256(records),
        "provenance": provenance(summary),
        "replicates": {
            "about": "accuracy (percent) of runs of the same protocol, episodes and method on backbones pretrained from other seeds "
                     "or in other environments; statistical mode's tolerance bound comes from their mean and spread",
            "runs": runs,
            "mean": round(float(accuracies.mean()), 6),
            "sd": round(float(accuracies.std(ddof=1)), 6) if len(runs) > 1 else None,
        },
        "predictions": [_row(r["predictions"]) for r in records],
        "correct": ["".join(str(int(c)) for c in row) for row in correct],
    }
    baseline["content_sha256"] = content_sha256(baseline)
    return baseline


def content_sha256(baseline: dict) -> str:
    """SHA-256 of the canonical JSON (sorted keys, no spaces, UTF-8) of the baseline without this field."""
    body = {k: v for k, v in baseline.items() if k != "content_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")).hexdigest()


_ROWS = ("predictions", "correct")


def baseline_json(baseline: dict) -> str:
    # one episode per line in each row list: a reviewer's diff shows exactly which episodes changed
    head = {k: v for k, v in baseline.items() if k not in _ROWS}
    text = json.dumps(head, indent=2, sort_keys=True)  # "{\n  ...\n}"
    lists = []
    for key in _ROWS:
        rows = ",\n".join(f"    {json.dumps(s)}" for s in baseline[key])
        lists.append(f'  "{key}": [\n{rows}\n  ]')
    return text[:-2] + ",\n" + ",\n".join(lists) + "\n}\n"


def read_baseline(path: Path) -> dict:
    """A baseline file, refused when it is not JSON, of another format, or when its content no longer has the
    SHA-256 it records (edited by hand): the error names the file, what no longer agrees, and the fix."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise HarnessError(f"cannot read baseline {path}: {e.strerror or e}", fix="run pytest --fsv-update-baselines to create it") from None
    except json.JSONDecodeError as e:
        raise HarnessError(f"baseline is not JSON ({e.msg}, line {e.lineno})", where=str(path), fix="restore it from version control (git checkout -- FILE), or rewrite it with pytest --fsv-update-baselines") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise HarnessError(f"baseline format is '{found}', expected '{FORMAT}' (per-episode predictions, replicates and a content checksum)",
                           where=str(path), fix="rewrite it with pytest --fsv-update-baselines, then review and commit the diff")
    recorded, actual = data.get("content_sha256"), content_sha256(data)
    if recorded != actual:
        found = _inconsistencies(data) + _git_changes(path)
        what = "; ".join(found[:8]) + (f"; and {len(found) - 8} more" if len(found) > 8 else "") if found else \
            "the edit left the file self-consistent, so which field changed cannot be told from it (compare it with the committed version: git diff -- FILE)"
        raise HarnessError(
            f"baseline was edited by hand: its content has SHA-256 {actual[:12]}..., but it records content_sha256 {str(recorded)[:12]}.... What changed: {what}",
            where=str(path),
            fix="never edit a baseline: restore it (git checkout -- FILE), or rewrite it with pytest --fsv-update-baselines and review the diff",
        )
    problems = _inconsistencies(data)
    if problems:  # the checksum agrees, so the writer got it wrong: say what
        raise HarnessError(f"baseline is damaged: {'; '.join(problems[:8])}", where=str(path), fix="rewrite it with pytest --fsv-update-baselines and review the diff")
    return data


def _inconsistencies(b: dict) -> list[str]:
    """What in a baseline no longer agrees with the rest of it, in words (empty: self-consistent)."""
    out = []
    try:
        n, q, labels = int(b["n_episodes"]), int(b["queries_per_episode"]), [int(x) for x in b["query_labels"]]
        preds, correct = list(b["predictions"]), list(b["correct"])
    except (KeyError, TypeError, ValueError) as e:
        return [f"a field is missing or of the wrong type ({e})"]
    if len(labels) != q:
        out.append(f"'query_labels' holds {len(labels)} labels, 'queries_per_episode' says {q}")
    for key, rows in (("predictions", preds), ("correct", correct)):
        if len(rows) != n:
            out.append(f"'{key}' holds {len(rows)} rows, 'n_episodes' says {n}")
    parsed_rows = []
    for e, (p, c) in enumerate(zip(preds, correct)):
        parsed = _parse_row(p, q) if isinstance(p, str) else None
        if parsed is None:
            out.append(f"episode {e}: 'predictions' row {p!r} is not {q} classes")
        if not isinstance(c, str) or len(c) != q or set(c) - {"0", "1"}:
            out.append(f"episode {e}: 'correct' row {c!r} is not {q} 0/1 characters")
            parsed_rows.append(None)
            continue
        if parsed is not None and len(labels) == q:
            implied = "".join("1" if pi == li else "0" for pi, li in zip(parsed, labels))
            if implied != c:
                out.append(f"episode {e}: 'correct' says {c}, but its predictions {p} (labels {_row(labels)}) give {implied}")
        parsed_rows.append((parsed, c))
    if out:
        return out
    predictions_hash = hashlib.sha256("".join(f"{e}:{','.join(map(str, _parse_row(p, q)))}\n" for e, p in enumerate(preds)).encode()).hexdigest()
    if b.get("predictions_sha256") != predictions_hash:
        out.append(f"'predictions_sha256' is {str(b.get('predictions_sha256'))[:12]}..., the 'predictions' rows give {predictions_hash[:12]}...")
    accuracy = 100 * sum(c.count("1") for c in correct) / max(1, n * q)
    if not isinstance(b.get("accuracy"), (int, float)) or abs(b["accuracy"] - accuracy) > 1e-4:
        out.append(f"'accuracy' is {b.get('accuracy')}, the 'correct' rows give {accuracy:.6g}")
    reps = b.get("replicates") or {}
    runs = reps.get("runs") or []
    try:
        accs = np.array([float(r["accuracy"]) for r in runs])
    except (KeyError, TypeError, ValueError):
        return out + ["'replicates.runs' must list objects with an 'accuracy'"]
    if runs and runs[0].get("predictions_sha256") != b.get("predictions_sha256"):
        out.append("the first replicate is not the baseline's own run (its 'predictions_sha256' differs)")
    if runs and abs(accs[0] - float(b.get("accuracy", math.nan))) > 1e-4:
        out.append(f"the first replicate's accuracy {accs[0]:g} is not the baseline's {b.get('accuracy')}")
    if runs and abs(accs.mean() - float(reps.get("mean", math.nan))) > 1e-4:
        out.append(f"'replicates.mean' is {reps.get('mean')}, its runs give {accs.mean():.6g}")
    if len(runs) > 1 and abs(accs.std(ddof=1) - float(reps.get("sd") or math.nan)) > 1e-4:
        out.append(f"'replicates.sd' is {reps.get('sd')}, its runs give {accs.std(ddof=1):.6g}")
    return out


def _git_changes(path: Path, limit: int = 6) -> list[str]:
    """The lines of `path` that differ from the committed version, when it lies in a git work tree."""
    try:
        done = subprocess.run(["git", "diff", "--no-color", "-U0", "--", path.name], cwd=path.parent, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return []
    if done.returncode != 0 or not done.stdout:
        return []
    hunks: list[tuple[int, list[str], list[str]]] = []
    for text in done.stdout.splitlines():
        header = re.match(r"^@@ -\d+(?:,\d+)? \+(\d+)", text)
        if header:
            hunks.append((int(header.group(1)), [], []))
        elif hunks and text.startswith("-") and not text.startswith("---"):
            hunks[-1][1].append(text[1:].strip().rstrip(","))
        elif hunks and text.startswith("+") and not text.startswith("+++"):
            hunks[-1][2].append(text[1:].strip().rstrip(","))
    changes = []
    for line, old, new in hunks:
        for i in range(max(len(old), len(new))):
            before, after = (old[i] if i < len(old) else "(nothing)"), (new[i] if i < len(new) else "(removed)")
            changes.append(f"line {line + min(i, max(len(new) - 1, 0))}: {before} -> {after}")
    if not changes:
        return []
    more = f" (and {len(changes) - limit} more)" if len(changes) > limit else ""
    return [f"against the committed version (git diff): {'; '.join(changes[:limit])}{more}"]


def _matrix(baseline: dict) -> tuple[np.ndarray, np.ndarray]:
    """(predictions [E, Q] int, correct [E, Q] float) of a read baseline."""
    q = baseline["queries_per_episode"]
    preds = np.array([_parse_row(p, q) for p in baseline["predictions"]], dtype=np.int64)
    correct = np.array([[c == "1" for c in r] for r in baseline["correct"]], dtype=np.float64)
    return preds, correct


# ------------------------------------------------------------------------------------------- the checks


def differences(baseline: dict, summary: dict) -> dict:
    """{label: (baseline's, run's)} of the recorded provenance that differs (labels both record)."""
    then, now = baseline.get("provenance") or {}, provenance(summary)
    return {k: (then[k], now[k]) for k, _, _ in PROVENANCE if k in then and k in now and then[k] != now[k]}


def _short(v) -> str:
    if isinstance(v, str) and re.fullmatch(r"[0-9a-f]{32,}", v):
        return v[:12] + "..."
    return json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else str(v)


def describe_differences(diff: dict, summary: dict) -> str:
    if not summary:
        return "The run carries no summary, so what else differs from the baseline's run is not known."
    if not diff:
        return ("Nothing the summaries record differs from the baseline's run (backbone weights, head code and settings, checkpoint, "
                "protocol, versions, device and threads are the same).")
    parts = [f"{k}: baseline {_short(a)}, run {_short(b)}" for k, (a, b) in diff.items()]
    kinds = {_KIND[k] for k in diff}
    tail = " (only the environment differs)" if kinds == {"environment"} else ""
    return f"What differs from the baseline's run{tail}: " + "; ".join(parts) + "."


def _refuse_other_episodes(baseline: dict, observed: list[Observed]) -> None:
    for obs in observed:
        es = records_episode_set_sha256(obs.records)
        if es != baseline["episode_set_sha256"]:
            raise HarnessError(
                f"baseline '{baseline.get('name', '?')}' was recorded on episode set {baseline['episode_set_sha256'][:12]}... ({baseline['n_episodes']} episodes), "
                f"the run {obs.label or ''} ({obs.source}) holds {es[:12]}... ({len(obs.records)} episodes): the runs must score the baseline's episodes, so it is refused",
                fix="evaluate the same protocol and number of episodes as the baseline, or record a new one with pytest --fsv-update-baselines",
            )


def _prediction_changes(baseline: dict, obs: Observed, show: int = 5) -> dict:
    """How the primary run's predictions differ from the baseline's, query by query."""
    before_pred, before_ok = _matrix(baseline)
    after_pred = np.array([r["predictions"] for r in obs.records], dtype=np.int64)
    labels = np.array([r["query_labels"] for r in obs.records], dtype=np.int64)
    after_ok = after_pred == labels
    changed = after_pred != before_pred
    right_wrong = int(np.sum(changed & (before_ok == 1) & ~after_ok))
    wrong_right = int(np.sum(changed & (before_ok == 0) & after_ok))
    examples = []
    for e, qi in zip(*np.nonzero(changed)):
        if len(examples) == show:
            break
        examples.append(f"episode {obs.records[e]['episode']} query {qi}: {before_pred[e, qi]} -> {after_pred[e, qi]} (label {labels[e, qi]})")
    return {"episodes": int(changed.any(axis=1).sum()), "queries": int(changed.sum()), "right_to_wrong": right_wrong, "wrong_to_right": wrong_right,
            "wrong_to_other_wrong": int(changed.sum()) - right_wrong - wrong_right, "examples": examples}


def _changes_text(ch: dict, n_episodes: int, n_queries: int) -> str:
    return (f"predictions differ in {ch['episodes']} of {n_episodes} episodes ({ch['queries']} of {n_queries} queries: {ch['right_to_wrong']} right->wrong, "
            f"{ch['wrong_to_right']} wrong->right, {ch['wrong_to_other_wrong']} wrong->other wrong)")


def tolerance_factor(k: int, m: int, alpha: float = 0.05, confidence: float = 0.9) -> float:
    """The one-sided normal tolerance factor c of a lower bound mean_K - c sd_K, from K replicates, for the mean
    of m future replicates: with probability `confidence` over the K, at most `alpha` of the means of m fall
    below it. c = t'(confidence; K - 1, z_(1-alpha) sqrt(K / m)) / sqrt(K), t' the noncentral t quantile
    (m = 1: the tabulated factors, e.g. 2.208 for K = 20, 95% of runs, 90% confidence)."""
    if k < 2 or m < 1:
        raise HarnessError(f"a tolerance bound needs at least 2 baseline replicates and 1 run (got {k} and {m})")
    return float(stats.scipy_stats().nct.ppf(confidence, k - 1, stats.scipy_stats().norm.ppf(1 - alpha) * math.sqrt(k / m)) / math.sqrt(k))


def tolerance_test(base, run, alpha: float = 0.05, confidence: float = 0.9, margin: float = 0.0) -> dict:
    """Is the mean of the run's m replicate accuracies below the level that 1 - alpha of unchanged runs' means
    reach (a lower tolerance bound, with `confidence` over the baseline's K replicates), less `margin`?"""
    base, run = np.asarray(base, dtype=np.float64), np.asarray(run, dtype=np.float64)
    c = tolerance_factor(len(base), len(run), alpha, confidence)
    sd = float(base.std(ddof=1))
    bound = float(base.mean()) - c * sd - margin
    return {"test": "one-sided normal tolerance bound", "mean": float(run.mean()), "baseline_mean": float(base.mean()), "baseline_sd": sd,
            "factor": c, "bound": bound, "below": bool(run.mean() < bound), "k": len(base), "m": len(run), "alpha": alpha, "confidence": confidence, "margin": margin}


def check_against_baseline(baseline: dict, run, mode: str = "exact", alpha: float = 0.05, margin: float | None = None, confidence: float = 0.9) -> dict:
    """Compare a run (or replicates of it, the first the primary) with a baseline; return what was found, or
    raise RegressionFailure. A run on another episode set than the baseline's is refused with a HarnessError.
    alpha: the false-alarm rate allowed (statistical, paired); confidence: statistical mode's confidence that
    the baseline's K replicates put the bound low enough for that rate."""
    if mode not in MODES:
        raise HarnessError(f"regression mode must be one of {', '.join(MODES)}, not '{mode}'")
    margin = MARGINS[mode] if margin is None else float(margin)
    observed = observe_all(run)
    _refuse_other_episodes(baseline, observed)
    name = baseline.get("name", "?")
    primary = observed[0]
    labels = _query_labels(primary.records, "the run's records")
    if labels != baseline["query_labels"]:
        raise HarnessError(f"the run lists its queries' labels as {labels}, baseline '{name}' as {baseline['query_labels']}", fix="record a new baseline with pytest --fsv-update-baselines")
    diff = differences(baseline, primary.summary)
    n_episodes, n_queries = baseline["n_episodes"], baseline["n_episodes"] * baseline["queries_per_episode"]
    acc_after, acc_before = _accuracy(primary.records), float(baseline["accuracy"])
    found = {"name": name, "mode": mode, "accuracy": acc_after, "baseline_accuracy": acc_before, "differences": diff, "notes": []}
    changes = _prediction_changes(baseline, primary)
    found["changes"] = changes

    if mode == "exact":
        digest = predictions_sha256(primary.records)
        found["predictions_sha256"] = digest
        if changes["queries"]:
            raise RegressionFailure(
                f"regression '{name}' (exact): {_changes_text(changes, n_episodes, n_queries)}; accuracy {acc_after:.2f}% vs baseline {acc_before:.2f}%. "
                f"First: {'; '.join(changes['examples'])}. {describe_differences(diff, primary.summary)} "
                + ("Exact mode holds for one environment; the statistical mode judges runs across environments. " if any(_KIND[k] == "environment" for k in diff) else "")
                + f"If the change is intended, {_FIX_UPDATE}.",
                found,
            )
        if diff:
            note = f"regression '{name}' (exact): every prediction is the baseline's. {describe_differences(diff, primary.summary)}"
            found["notes"].append(note)
            warnings.warn(RegressionNote(note), stacklevel=3)
        return found

    if mode == "paired":
        _, before = _matrix(baseline)
        after = stats.query_outcomes(primary.records)
        test = stats.paired_t_test(100 * after.mean(axis=1), 100 * before.mean(axis=1), alternative="less", null=-margin)
        mcnemar = stats.mcnemar_exact(after, before, alternative="less")
        found.update({"difference": acc_after - acc_before, "margin": margin, "alpha": alpha, "paired_t": test, "mcnemar": mcnemar})
        if test["p"] < alpha:
            raise RegressionFailure(
                f"regression '{name}' (paired): accuracy {acc_after:.2f}% is significantly lower than the baseline's {acc_before:.2f}% by more than the tolerated "
                f"{margin:g} points (drop {acc_before - acc_after:.2f} points; one-sided paired t-test p = {test['p']:.2g} < alpha {alpha:g}); "
                f"{_changes_text(changes, n_episodes, n_queries)}. {describe_differences(diff, primary.summary)} "
                f"Paired mode is for one environment: another backbone changes predictions everywhere. If the drop is intended, {_FIX_UPDATE}.",
                found,
            )
        return found

    # statistical: the run's replicates against the baseline's, with the spread they show
    reps = baseline.get("replicates") or {}
    base_runs = reps.get("runs") or []
    if len(base_runs) < MIN_REPLICATES:
        raise HarnessError(
            f"baseline '{name}' holds {len(base_runs)} replicate run(s); statistical mode needs the accuracies of at least {MIN_REPLICATES} (other pretraining seeds or "
            f"environments) to know how much a run moves between environments",
            fix="pass spread= (a callable returning runs on backbones pretrained from other seeds) to fsv_regression.check and rewrite the baseline with pytest --fsv-update-baselines",
        )
    entries = _replicate_entries(observed, baseline["episode_set_sha256"], "run")
    base = np.array([r["accuracy"] for r in base_runs], dtype=np.float64)
    now = np.array([r["accuracy"] for r in entries], dtype=np.float64)
    test = tolerance_test(base, now, alpha, confidence, margin)
    found.update({"replicates": entries, "mean": test["mean"], "baseline_mean": test["baseline_mean"], "difference": test["mean"] - test["baseline_mean"],
                  "bound": test["bound"], "margin": margin, "alpha": alpha, "confidence": confidence, "test": test})
    if len(now) < MIN_REPLICATES:
        found["notes"].append(f"{len(now)} run(s): the bound for a mean of fewer runs lies lower, so statistical mode misses more drops; give {MIN_REPLICATES} replicates")
    if test["below"]:
        shown = ", ".join(f"{r['label']} {r['accuracy']:.2f}" for r in entries)
        raise RegressionFailure(
            f"regression '{name}' (statistical): the mean accuracy of {len(now)} run(s) ({shown}; mean {test['mean']:.2f}%) is below {test['bound']:.2f}%, "
            f"the level that {100 * (1 - alpha):g}% of unchanged runs' means of {len(now)} reach (with {100 * confidence:g}% confidence, from the baseline's "
            f"{len(base)} replicates: mean {test['baseline_mean']:.2f}%, sd {test['baseline_sd']:.2f}; bound = mean - {test['factor']:.3f} sd"
            + (f" - the tolerated {margin:g} points" if margin else "") + f"): {test['baseline_mean'] - test['mean']:.2f} points below the baseline's mean. "
            f"First run against the baseline's own: {_changes_text(changes, n_episodes, n_queries)}. {describe_differences(diff, primary.summary)} "
            f"If the drop is intended, {_FIX_UPDATE}.",
            found,
        )
    return found


# ------------------------------------------------------------------------------------------- the plugin

_UPDATED = pytest.StashKey[list]()


class Regression:
    """The `fsv_regression` fixture: `check(name, run, mode=..., alpha=..., margin=..., spread=...)`."""

    def __init__(self, directory: Path, update: bool, updated: list):
        self.directory, self.updating, self._updated = Path(directory), update, updated

    def path(self, name: str) -> Path:
        if not _NAME.match(name):
            raise HarnessError(f"baseline name '{name}' must be letters, digits, '.', '_' or '-'", fix="e.g. synthetic-5w1s-protonet")
        return self.directory / f"{name}.json"

    def baseline(self, name: str) -> dict:
        path = self.path(name)
        if not path.is_file():
            raise HarnessError(f"there is no baseline '{name}' ({path})", fix="record it: pytest --fsv-update-baselines (then commit the file)")
        return read_baseline(path)

    def check(self, name: str, run, mode: str = "exact", alpha: float = 0.05, margin: float | None = None, spread=None, update: bool | None = None,
              confidence: float = 0.9) -> dict:
        """Check `run` (records, a run folder, episodes.jsonl or a summary; or a list or {label: run} dict of
        replicates, the first the primary) against baseline `name`; with --fsv-update-baselines (or
        update=True) write the baseline instead, with `spread` (runs, or a callable returning them) as more
        replicates. update=False never writes. Give every check of one baseline the same runs and spread: each
        writes the whole file."""
        if self.updating if update is None else update:
            path = self.path(name)
            atomic_write_text(path, baseline_json(make_baseline(name, run, spread)))
            if str(path) not in self._updated:
                self._updated.append(str(path))
            return {"name": name, "mode": mode, "updated": str(path)}
        return check_against_baseline(self.baseline(name), run, mode=mode, alpha=alpha, margin=margin, confidence=confidence)


def pytest_addoption(parser) -> None:
    group = parser.getgroup("fsv-bench", "accuracy regression baselines (harness.regression)")
    group.addoption("--fsv-baselines", metavar="DIR", default=None, help="folder of regression baselines (default: baselines/ beside each test file)")
    group.addoption("--fsv-update-baselines", action="store_true", default=False, help="write the baselines the tests check instead of checking them")


def pytest_configure(config) -> None:
    config.stash[_UPDATED] = []


@pytest.fixture
def fsv_regression(request) -> Regression:
    """Checks runs against stored accuracy baselines; see harness.regression."""
    config = request.config
    folder = config.getoption("fsv_baselines", default=None)
    if folder:
        directory = Path(config.invocation_params.dir) / folder
    else:
        directory = Path(request.path).parent / "baselines"
    if _UPDATED not in config.stash:  # registered after configure (pytest_plugins in a test module)
        config.stash[_UPDATED] = []
    return Regression(directory, bool(config.getoption("fsv_update_baselines", default=False)), config.stash[_UPDATED])


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    updated = config.stash.get(_UPDATED, [])
    if updated:
        terminalreporter.write_sep("-", f"fsv-bench: {len(updated)} regression baseline(s) written; review and commit them")
        for path in updated:
            terminalreporter.write_line(path)

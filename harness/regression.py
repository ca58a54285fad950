"""Regression tests on accuracy: a pytest plugin that checks a run against a stored baseline.

    def test_protonet_has_not_regressed(fsv_regression):
        summary = run_method(protocol, "protonet", settings)
        fsv_regression.check("synthetic-5w1s-protonet", summary, mode="statistical", alpha=0.05, margin=1.0)

    pytest --fsv-update-baselines        # write (or rewrite) every baseline the tests check, then review the diff

Two modes:
  exact        the SHA-256 of every episode's predictions is unchanged: any change of behaviour fails. For
               ONE environment: the tiny synthetic benchmark is deterministic on CPU for a given torch
               version, but another torch release, BLAS or CPU can move a few float ties and fail it.
  statistical  fails only when the accuracy is significantly LOWER than the baseline's: a one-sided paired
               t-test on per-episode accuracy of H0 "mean(run - baseline) >= -margin" at `alpha`, so a drop
               smaller than `margin` points is tolerated. For use across environments.
Both refuse a baseline of another episode set (its hash), because the test is paired episode by episode.
A run folder or summary is verified first (harness.verify: its records have the SHA-256 its summary names,
are well formed and give its figures) and refused otherwise; records given without a summary are checked
record by record.

A baseline is a small JSON file, `<dir>/<name>.json`, meant to be committed and reviewed: the hashes, the
accuracy, and one string of 0/1 per episode (one character per query) so a diff shows which episodes changed.
`<dir>` is --fsv-baselines, else `baselines/` beside the test file.

The plugin is registered by the package's `pytest11` entry point; in a checkout without it, add
`pytest_plugins = ["harness.regression"]` to the root conftest.py, or pass `-p harness.regression`.
(PYTEST_DONT_REWRITE: failures are raised as RegressionFailure, not by assert statements, so pytest need not
rewrite this module, and does not warn when a test module imported it first.)
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from harness import stats
from harness.compare import load_run
from harness.errors import HarnessError
from harness.files import atomic_write_text
from harness.verify import RECORDS, SUMMARY, check_records, parse_records, records_episode_set_sha256

FORMAT = "fsv-bench regression baseline 1"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class RegressionFailure(AssertionError):
    """The run differs from its baseline (exact mode) or is significantly worse (statistical mode)."""


@dataclass
class Observed:
    """What a check needs of a run: its records, and its summary when there is one."""

    records: list[dict]
    summary: dict = field(default_factory=dict)
    source: str = "records"


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


def _read_records(path: Path) -> list[dict]:
    """The checked records of an episodes.jsonl without a summary beside it (nothing to hash them against)."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise HarnessError(f"cannot read {path}: {e.strerror or e}", fix="pass the records of a finished run") from None
    records = parse_records(data, str(path))
    check_records(records, str(path))
    return records


def predictions_sha256(records: list[dict]) -> str:
    """SHA-256 over every episode's predictions, one line "episode:p,p,p" per episode, in order."""
    h = hashlib.sha256()
    for r in records:
        h.update(f"{r['episode']}:{','.join(map(str, r['predictions']))}\n".encode())
    return h.hexdigest()


def make_baseline(name: str, run) -> dict:
    """The baseline of a run: small, plain JSON, one 0/1 string per episode."""
    obs = observe(run)
    episode_set = records_episode_set_sha256(obs.records)
    summary = obs.summary  # verified: it names this episode set, when it names one
    correct = stats.query_outcomes(obs.records)
    backbone = summary.get("backbone") or {}
    return {
        "format": FORMAT,
        "name": name,
        "method": summary.get("method"),
        "protocol": summary.get("protocol"),
        "protocol_sha256": summary.get("protocol_sha256"),
        "episode_set_sha256": episode_set,
        "predictions_sha256": predictions_sha256(obs.records),
        "n_episodes": len(obs.records),
        "queries_per_episode": int(correct.shape[1]),
        "accuracy": round(float(100 * correct.mean()), 6),
        "backbone_weights_sha256": backbone.get("weights_sha256"),
        "checkpoint_sha256": summary.get("checkpoint_sha256"),
        "versions": summary.get("versions"),
        "correct": ["".join(str(int(c)) for c in row) for row in correct],
    }


def baseline_json(baseline: dict) -> str:
    # one episode per line: a reviewer's diff shows exactly which episodes changed
    head = {k: v for k, v in baseline.items() if k != "correct"}
    text = json.dumps(head, indent=2, sort_keys=True)  # "{\n  ...\n}"
    rows = ",\n".join(f"    {json.dumps(s)}" for s in baseline["correct"])
    return f'{text[:-2]},\n  "correct": [\n{rows}\n  ]\n}}\n'


def read_baseline(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise HarnessError(f"cannot read baseline {path}: {e.strerror or e}", fix="run pytest --fsv-update-baselines to create it") from None
    except json.JSONDecodeError as e:
        raise HarnessError(f"baseline is not JSON ({e.msg}, line {e.lineno})", where=str(path), fix="restore it from version control, or rewrite it with pytest --fsv-update-baselines") from None
    if data.get("format") != FORMAT:
        raise HarnessError(f"baseline format is '{data.get('format')}', expected '{FORMAT}'", where=str(path), fix="rewrite it with pytest --fsv-update-baselines")
    return data


def _correct_matrix(baseline: dict) -> np.ndarray:
    rows = baseline["correct"]
    if len(rows) != baseline["n_episodes"] or any(len(r) != baseline["queries_per_episode"] or set(r) - {"0", "1"} for r in rows):
        raise HarnessError(f"baseline '{baseline.get('name')}' is damaged: 'correct' must hold {baseline['n_episodes']} strings of {baseline['queries_per_episode']} 0/1 characters",
                           fix="restore it from version control, or rewrite it with pytest --fsv-update-baselines")
    return np.array([[c == "1" for c in r] for r in rows], dtype=np.float64)


def check_against_baseline(baseline: dict, run, mode: str = "exact", alpha: float = 0.05, margin: float = 1.0) -> dict:
    """Compare a run with a baseline; return what was found, or raise RegressionFailure.

    A baseline of another episode set is refused with a HarnessError: no paired comparison is possible."""
    if mode not in ("exact", "statistical"):
        raise HarnessError(f"regression mode must be 'exact' or 'statistical', not '{mode}'")
    obs = observe(run)
    name = baseline.get("name", "?")
    episode_set = records_episode_set_sha256(obs.records)
    if episode_set != baseline["episode_set_sha256"]:
        raise HarnessError(
            f"baseline '{name}' was recorded on episode set {baseline['episode_set_sha256'][:12]}... ({baseline['n_episodes']} episodes), "
            f"this run holds {episode_set[:12]}... ({len(obs.records)} episodes): the comparison is paired, so it is refused",
            fix="evaluate the same protocol and number of episodes as the baseline, or record a new one with pytest --fsv-update-baselines",
        )
    before = _correct_matrix(baseline)
    after = stats.query_outcomes(obs.records)
    acc_before, acc_after = 100 * before.mean(), 100 * after.mean()
    found = {"name": name, "mode": mode, "accuracy": float(acc_after), "baseline_accuracy": float(acc_before)}
    if mode == "exact":
        digest = predictions_sha256(obs.records)
        found["predictions_sha256"] = digest
        if digest != baseline["predictions_sha256"]:
            changed = [r["episode"] for r, row in zip(obs.records, baseline["correct"]) if "".join(str(int(c)) for c in r["correct"]) != row]
            env = ""
            versions = baseline.get("versions") or {}
            now = obs.summary.get("versions") or {}
            weights_then, weights_now = baseline.get("backbone_weights_sha256"), (obs.summary.get("backbone") or {}).get("weights_sha256")
            if versions.get("torch") and now.get("torch") and versions["torch"] != now["torch"]:
                env = f" The baseline was recorded with torch {versions['torch']}, this run used torch {now['torch']}: exact mode is for one environment."
            elif weights_then and weights_now and weights_then != weights_now:
                env = f" The backbone weights differ from the baseline's ({weights_now[:12]} vs {weights_then[:12]}): exact mode needs the same weights."
            raise RegressionFailure(
                f"regression '{name}' (exact): the predictions changed (SHA-256 {digest[:12]}... vs baseline {baseline['predictions_sha256'][:12]}...); "
                f"accuracy {acc_after:.2f}% vs {acc_before:.2f}%, {len(changed)} of {len(obs.records)} episodes changed in correctness"
                + (f" (first: {', '.join(map(str, changed[:8]))})" if changed else " (only wrong answers changed)")
                + f".{env} If the change is intended, run pytest --fsv-update-baselines and review the baseline's diff."
            )
        return found
    # statistical: H0 mean(after - before) >= -margin, one-sided, per-episode accuracy in points
    a, b = 100 * after.mean(axis=1), 100 * before.mean(axis=1)
    test = stats.paired_t_test(a, b, alternative="less", null=-margin)
    mcnemar = stats.mcnemar_exact(after, before, alternative="less")
    found.update({"difference": float(acc_after - acc_before), "margin": margin, "alpha": alpha, "paired_t": test, "mcnemar": mcnemar})
    if test["p"] < alpha:
        raise RegressionFailure(
            f"regression '{name}' (statistical): accuracy {acc_after:.2f}% is significantly lower than the baseline's {acc_before:.2f}% "
            f"by more than the tolerated {margin:g} points (drop {acc_before - acc_after:.2f} points; one-sided paired t-test p = {test['p']:.2g} < alpha {alpha:g}; "
            f"queries right only now / only before: {mcnemar['only_a_correct']} / {mcnemar['only_b_correct']}). "
            f"If the drop is intended, run pytest --fsv-update-baselines and review the baseline's diff."
        )
    return found


# ------------------------------------------------------------------------------------------- the plugin

_UPDATED = pytest.StashKey[list]()


class Regression:
    """The `fsv_regression` fixture: `check(name, run, mode=..., alpha=..., margin=...)`."""

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

    def check(self, name: str, run, mode: str = "exact", alpha: float = 0.05, margin: float = 1.0, update: bool | None = None) -> dict:
        """Check `run` (records, a run folder, episodes.jsonl or a summary) against baseline `name`; with
        --fsv-update-baselines (or update=True) write the baseline instead. update=False never writes."""
        if self.updating if update is None else update:
            path = self.path(name)
            atomic_write_text(path, baseline_json(make_baseline(name, run)))
            if str(path) not in self._updated:
                self._updated.append(str(path))
            return {"name": name, "mode": mode, "updated": str(path)}
        return check_against_baseline(self.baseline(name), run, mode=mode, alpha=alpha, margin=margin)


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

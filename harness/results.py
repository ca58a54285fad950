"""Results on disk: one JSON line per episode and a run summary, written atomically, resumable, never lost.

    <results>/<protocol>/<method>/runs/<fingerprint>/   every finished run: episodes.jsonl and summary.json
    <results>/<protocol>/<method>/episodes.jsonl        the latest finished run's records ...
    <results>/<protocol>/<method>/summary.json          ... and its summary: what leaderboard and compare read

The top-level pair is a second name (a hard link) of the latest run's own files: each record file is stored
once (a file system without hard links gets copies).
    <results>/<protocol>/<method>/.parts/<run>/         finished chunks of a run still going (or killed)
    <results>/<protocol>/<method>/.lock                 locked while the top-level pair or the chunks change

Records hold nothing that changes from run to run (no times, no absolute paths), so the same protocol,
method and weights give byte-identical episodes.jsonl.

Concurrent runs: runs of one protocol and method that differ (another --episodes, checkpoint, weights: another
fingerprint) each keep their own runs/<fingerprint>/; the top-level pair is replaced under an exclusive lock,
by whichever finishes (or is served from disk) last, and readers that take the shared lock never see one run's records beside another's
summary. Two identical runs write identical records. Chunk writes and their removal take the same lock.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from harness.console import warn
from harness.errors import HarnessError
from harness.files import atomic_link_files, atomic_write_bytes, atomic_write_files, json_bytes
from harness.locks import file_lock
from harness.names import check_name
from harness.verify import check_run

RUNS = "runs"
LOCK = ".lock"


def record_line(record: dict) -> str:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n"


class RunFolder:
    def __init__(self, results: Path, protocol: str, method: str, fingerprint: str):
        check_name(protocol, f"protocol name {protocol!r}")  # folders under `results`, never paths out of it
        check_name(method, f"method name {method!r}")
        self.dir = results / protocol / method
        self.fingerprint = fingerprint
        self.run_dir = self.dir / RUNS / fingerprint
        self.parts = self.dir / ".parts" / fingerprint

    @property
    def records_path(self) -> Path:
        """This run's own records (the top-level episodes.jsonl may become a later run's)."""
        return self.run_dir / "episodes.jsonl"

    def locked(self, shared: bool = False):
        """The folder's lock: exclusive to change the top-level pair or the chunks, shared to read the pair."""
        return file_lock(self.dir / LOCK, shared=shared, what=f"results of {self.dir.parent.name}/{self.dir.name}")

    def finished_chunks(self) -> dict[int, Path]:
        """Chunks of this very run (same fingerprint) that were written before it stopped."""
        if not self.parts.is_dir():
            return {}
        return {int(p.stem): p for p in self.parts.glob("*.jsonl")}

    def write_chunk(self, start: int, records: list[dict]) -> None:
        data = "".join(record_line(r) for r in records).encode()
        with self.locked():  # not while an identical run that finished removes the folder
            atomic_write_bytes(self.parts / f"{start:09d}.jsonl", data)

    def read_chunk(self, path: Path) -> list[dict]:
        """A chunk's records; [] when it is gone (an identical run finished and dropped the chunks) or
        unreadable, and then evaluation scores it again."""
        try:
            return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        except (OSError, ValueError):
            return []

    def finished_run(self, fingerprint: str | None = None) -> dict | None:
        """The summary of the finished run with this fingerprint, if its records are intact: its own copy in
        runs/<fingerprint>/, or a top-level pair written before runs/ existed (then copied there). A damaged
        copy of this run's records anywhere gives None: the run is scored again, never served damaged."""
        fingerprint = fingerprint or self.fingerprint
        run_dir = self.dir / RUNS / fingerprint
        with self.locked(shared=True):
            own = _finished(run_dir, fingerprint)
            # the top-level pair is usually another name of this run's own files: checked once
            same = own and _same_file(self.dir / "summary.json", run_dir / "summary.json") and _same_file(self.dir / "episodes.jsonl", run_dir / "episodes.jsonl")
            top = own if same else _finished(self.dir, fingerprint)
        if own is False or top is False:
            return None
        if own is not None:
            return own[0]
        if top is None:
            return None
        with self.locked():  # an older layout: keep this run in runs/ too, so that a later run cannot replace it
            top = _finished(self.dir, fingerprint)
            if not top:
                return None
            atomic_link_files({run_dir / "episodes.jsonl": self.dir / "episodes.jsonl", run_dir / "summary.json": self.dir / "summary.json"})
        return top[0]

    def finish(self, records: list[dict], summary: dict) -> str:
        """Write this run's episodes.jsonl and summary.json in runs/<fingerprint>/, then make them the top-level
        pair (the latest finished run), under the folder's lock; drop the chunks. Returns the records' SHA-256."""
        data = "".join(record_line(r) for r in records).encode()
        digest = hashlib.sha256(data).hexdigest()
        summary_data = json_bytes({**summary, "records_sha256": digest})
        with self.locked():
            # both or neither: a full disk while writing the summary must not leave new records beside an old summary
            atomic_write_files({self.records_path: data, self.run_dir / "summary.json": summary_data})
            self._link_latest()
            self._drop_chunks()
            # what was written is read back as any later command reads it: verified (and marked so) now
            check_run(json.loads(summary_data), data, self.run_dir)
        return digest

    def make_latest(self) -> None:
        """Make this finished run (its own pair in runs/<fingerprint>/ is complete) the top-level pair, as when it
        is asked for again and served from disk, and drop its chunks if a killed `finish` left them."""
        with self.locked():
            if not _same_file(self.dir / "summary.json", self.run_dir / "summary.json") or not _same_file(self.dir / "episodes.jsonl", self.records_path):
                self._link_latest()
            if self.parts.exists():
                self._drop_chunks()

    def _link_latest(self) -> None:
        """Make this run's own pair the top-level pair, both names together (call under the lock)."""
        atomic_link_files({self.dir / "episodes.jsonl": self.records_path, self.dir / "summary.json": self.run_dir / "summary.json"})

    def _drop_chunks(self) -> None:
        """Remove this run's chunks (call under the lock), and .parts/ itself when no other run writes there."""
        shutil.rmtree(self.parts, ignore_errors=True)
        try:
            self.parts.parent.rmdir()
        except OSError:
            pass


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return False


def _finished(folder: Path, fingerprint: str) -> tuple[dict, bytes, bytes] | bool | None:
    """(summary, records bytes, summary bytes) when `folder` holds the run `fingerprint` intact; False when it
    holds that run with damaged or missing records; None when it holds no such run."""
    try:
        summary_data = (folder / "summary.json").read_bytes()
        summary = json.loads(summary_data)
    except (OSError, ValueError):
        return None
    if not isinstance(summary, dict) or summary.get("run_fingerprint") != fingerprint:
        return None
    try:
        records = (folder / "episodes.jsonl").read_bytes()
    except OSError:
        return False
    try:  # the hash, every record, and the summary's figures recomputed from the records
        check_run(summary, records, folder)
    except HarnessError as e:  # damaged or edited: scored again, never served
        warn(f"{e.where or folder}: {e.what}; this run is scored again")
        return False
    return summary, records, summary_data


def read_summary(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))

"""Results on disk: one JSON line per episode and a run summary, written atomically, resumable.

    <results>/<protocol>/<method>/episodes.jsonl   one record per episode, in episode order
    <results>/<protocol>/<method>/summary.json     accuracy, intervals, provenance, timings
    <results>/<protocol>/<method>/.parts/<run>/    finished chunks of a run still going (or killed)

Records hold nothing that changes from run to run (no times, no absolute paths), so the same protocol,
method and weights give byte-identical episodes.jsonl.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from harness.files import atomic_write_bytes, atomic_write_json


def record_line(record: dict) -> str:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n"


class RunFolder:
    def __init__(self, results: Path, protocol: str, method: str, fingerprint: str):
        self.dir = results / protocol / method
        self.parts = self.dir / ".parts" / fingerprint

    def finished_chunks(self) -> dict[int, Path]:
        """Chunks of this very run (same fingerprint) that were written before it stopped."""
        if not self.parts.is_dir():
            return {}
        return {int(p.stem): p for p in self.parts.glob("*.jsonl")}

    def write_chunk(self, start: int, records: list[dict]) -> None:
        atomic_write_bytes(self.parts / f"{start:09d}.jsonl", "".join(record_line(r) for r in records).encode())

    def read_chunk(self, path: Path) -> list[dict]:
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]

    def finished_run(self, fingerprint: str) -> dict | None:
        """The summary of a finished run with this fingerprint, if its records are intact."""
        summary_path, records_path = self.dir / "summary.json", self.dir / "episodes.jsonl"
        if not (summary_path.is_file() and records_path.is_file()):
            return None
        try:
            summary = read_summary(summary_path)
        except (OSError, ValueError):
            return None
        if summary.get("run_fingerprint") != fingerprint:
            return None
        if hashlib.sha256(records_path.read_bytes()).hexdigest() != summary.get("records_sha256"):
            return None  # damaged or edited records: score again
        return summary

    def finish(self, records: list[dict], summary: dict) -> str:
        """Write episodes.jsonl and summary.json (records first); drop the chunks. Returns the records' SHA-256."""
        data = "".join(record_line(r) for r in records).encode()
        digest = hashlib.sha256(data).hexdigest()
        atomic_write_bytes(self.dir / "episodes.jsonl", data)
        atomic_write_json(self.dir / "summary.json", {**summary, "records_sha256": digest})
        shutil.rmtree(self.parts, ignore_errors=True)
        try:
            self.parts.parent.rmdir()  # only when no other run is writing chunks here
        except OSError:
            pass
        return digest


def read_summary(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))

"""Whether a stored run is what it says: the one place that decides it.

A run is a pair in one folder: episodes.jsonl (one record per episode) and summary.json. It is verified when

    1. summary.json is a JSON object and names the SHA-256 of its records (`records_sha256`), and the bytes of
       episodes.jsonl have that SHA-256;
    2. every line of episodes.jsonl is a JSON object of the record schema (`check_records`): episodes 0..n-1 in
       order, lists of the right lengths and types, labels and predictions in [0, way), `correct` 0/1 and equal
       to prediction == label, `accuracy` the mean of `correct`;
    3. the figures the summary states are the ones its records give (`figures`): n_episodes, accuracy, ci95 and
       t_interval95 (harness.stats.accuracy_summary of the per-episode accuracies), the three levels of
       `intervals` (harness.uncertainty.level_intervals, seeded; summaries of schema 3 on) and the episode set
       (`records_episode_set_sha256`) when the summary names one.

Anything else is a HarnessError naming the file, the line or episode, and the field. Result files are never
to be edited: a run that fails is scored again with --recompute.

    summary, records, data = load_verified(folder)      # read under the folder's shared lock, then verify
    records = verify_run(summary, data, folder)          # a pair already in memory
    check_records(records, "records given")              # records without a summary (nothing to hash)

Cost: linear in the records' size, one pass each for hashing, parsing and checking; decoding the JSON is most
of it. 10,000 episodes of 5-way 5-shot (16 MB) take about 0.35 s on one CPU core, and recomputing the three
interval levels as much again.

A pair that passed is marked in its folder (`.verified-<key>`, an empty file; the key is the SHA-256 of the
parsed summary, the records' SHA-256 and the verifier's own code and libraries, `verifier_sha256`). Checks 2 and
3 are a function of exactly those, so while the mark is there they are not repeated: the records are hashed
and compared with `records_sha256` (check 1) every time, and any change to the summary, the records or the
verifier's code makes another key, and a full verification. A folder that cannot be written is verified in
full every time.
"""
from __future__ import annotations

import contextlib
import functools
import gc
import hashlib
import importlib.metadata
import json
import math
import operator
import platform
from pathlib import Path

import numpy as np

from harness.errors import HarnessError
from harness.locks import file_lock
from harness.stats import accuracy_summary
from harness.uncertainty import LEVELS, level_intervals

SUMMARY, RECORDS, LOCK = "summary.json", "episodes.jsonl", ".lock"
#: the fields of every record, and the type of each
RECORD_FIELDS = {"episode": int, "classes": list, "support": list, "query": list, "query_labels": list, "predictions": list, "correct": list, "accuracy": float}
#: summary figures recomputed from the records; equal up to float printing
FIGURES = ("accuracy", "ci95", "t_interval95")
REL_TOL = 1e-9
_DECODER = json.JSONDecoder()


def _fix(summary: dict | None = None) -> str:
    summary = summary if isinstance(summary, dict) else {}
    protocol, method = summary.get("protocol") or "P", summary.get("method") or "M"
    return f"never edit result files; score the run again: fsv-bench run --protocol {protocol} --method {method} --recompute"


# ----------------------------------------------------------------------------------------------- records


@contextlib.contextmanager
def _collector_paused():
    """Pause the cyclic garbage collector: decoding and checking a run's records allocate hundreds of
    thousands of plain containers (no reference cycles), whose allocation would trigger collections costing
    about a third of the time. Reference counting still frees everything."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def parse_records(data: bytes, where: str) -> list[dict]:
    """The records of episodes.jsonl's bytes, one JSON object per line (a final newline ends the last line).
    A line that is not UTF-8, not JSON or not an object is named by its number."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise HarnessError(f"line {line} is not UTF-8 text", where=where, fix=_fix()) from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    records = []
    for n, line in enumerate(lines, 1):
        try:
            record = _DECODER.decode(line)
        except ValueError as e:
            raise HarnessError(f"line {n} is not JSON ({getattr(e, 'msg', e)})", where=where, fix=_fix()) from None
        if type(record) is not dict:
            raise HarnessError(f"line {n} is a JSON {type(record).__name__}, not an episode record (an object)", where=where, fix=_fix())
        records.append(record)
    return records


def _bad(i: int, field: str, what: str, where: str) -> HarnessError:
    return HarnessError(f"line {i + 1} (episode {i}): field '{field}' {what}", where=where, fix=_fix())


_FIELDS, _TYPES = tuple(RECORD_FIELDS), tuple(RECORD_FIELDS.values())
_LISTS = tuple(f for f, kind in RECORD_FIELDS.items() if kind is list)
_NAMES = ("classes", "support", "query")


def _check_fields(r, i: int, sizes: tuple, where: str) -> None:
    """Raise unless record `r` (line i + 1) has every field, of its type and length (`sizes`, in _LISTS order)."""
    if type(r) is not dict:
        raise HarnessError(f"line {i + 1} is not an episode record (a JSON object)", where=where, fix=_fix())
    for field, kind in RECORD_FIELDS.items():
        value = r.get(field)
        if type(value) is not kind and not (kind is float and type(value) is int):
            raise _bad(i, field, f"is {json.dumps(value)[:40] if field in r else 'missing'}, expected {'a number' if kind is float else 'an integer' if kind is int else 'a list'}", where)
    for field, size in zip(_LISTS, sizes):
        if len(r[field]) != size:
            raise _bad(i, field, f"holds {len(r[field])} values, expected {size} (episode 0 has {sizes[0]} classes, {sizes[1]} support and {sizes[2]} query videos)", where)


def _ints_in(values: list, low: int, high: int, types: set) -> bool:
    """Every value's type is in `types` (bool is no int here unless named) and its value in [low, high)."""
    return set(map(type, values)) <= types and min(values) >= low and max(values) < high


def _shape(first, where: str) -> tuple[int, ...]:
    """The list lengths (in _LISTS order) every record must have, from the first one."""
    if type(first) is not dict:
        raise HarnessError("line 1 is not an episode record (a JSON object)", where=where, fix=_fix())
    way = len(first["classes"]) if type(first.get("classes")) is list else 0
    if way < 1:
        raise _bad(0, "classes", "must be a non-empty list of class names", where)
    n_support, n_query = (len(first[k]) if type(first.get(k)) is list else 0 for k in ("support", "query"))
    for field, n in (("support", n_support), ("query", n_query)):
        if n < way or n % way:
            raise _bad(0, field, f"must hold a whole number (at least one) of videos per class: {way} classes, {n} {field} videos", where)
    return tuple({"classes": way, "support": n_support}.get(f, n_query) for f in _LISTS)


def check_records(records: list[dict], where: str) -> None:
    """Raise a HarnessError naming `where`, the line (episode) and the field, unless `records` are one run's
    episodes: numbered 0..n-1 in order; `classes` [way] distinct names; `support` [way*shot] and `query`
    [way*query] names, the same way, shot and query for every episode; `query_labels` and `predictions` ints
    in [0, way), one per query; `correct` 0/1 (int or bool), equal to prediction == label; `accuracy` the
    mean of `correct`. About 10 us per 5-way episode."""
    if not records:
        raise HarnessError("there are no episode records", where=where, fix=_fix())
    sizes = _shape(records[0], where)
    way, n_query = sizes[0], sizes[2]
    ints, bits = {int}, {int, bool}
    for i, r in enumerate(records):
        if type(r) is not dict or tuple(map(type, map(r.get, _FIELDS))) != _TYPES or tuple(map(len, map(r.get, _LISTS))) != sizes:
            _check_fields(r, i, sizes, where)
        if r["episode"] != i:
            raise _bad(i, "episode", f"is {r['episode']}, expected {i}: records are a run's episodes 0..n-1 in order", where)
        try:  # join refuses anything but strings, and is the cheapest check of it
            "".join(r["classes"]), "".join(r["support"]), "".join(r["query"])
        except TypeError:
            raise _bad(i, next(f for f in _NAMES if set(map(type, r[f])) != {str}), "must hold names (strings)", where) from None
        if len(set(r["classes"])) != way:
            raise _bad(i, "classes", "names a class twice", where)
        labels, predictions, correct = r["query_labels"], r["predictions"], r["correct"]
        if not _ints_in(labels + predictions, 0, way, ints):
            field = "query_labels" if not _ints_in(labels, 0, way, ints) else "predictions"
            raise _bad(i, field, f"must hold integers in [0, {way}), holds {json.dumps(r[field])[:80]}", where)
        # an int or bool equal to (prediction == label) is 0 or 1: one comparison checks both
        if not set(map(type, correct)) <= bits or correct != list(map(operator.eq, predictions, labels)):
            bad = next((c for c in correct if type(c) not in bits or c not in (0, 1)), None)
            if bad is not None:
                raise _bad(i, "correct", f"must hold 0 or 1 per query, holds {json.dumps(bad)}", where)
            q = next(q for q, (c, p, y) in enumerate(zip(correct, predictions, labels)) if c != (p == y))
            raise _bad(i, "correct", f"says query {q} is {'right' if correct[q] else 'wrong'}, but its prediction is {predictions[q]} and its label {labels[q]}", where)
        hits = sum(correct)
        if not abs(r["accuracy"] - hits / n_query) <= 1e-12:  # NaN fails too
            raise _bad(i, "accuracy", f"is {r['accuracy']!r}, but {hits} of {n_query} queries are correct ({hits / n_query!r})", where)


def records_episode_set_sha256(records: list[dict]) -> str:
    """The episode-set hash recomputed from records (the same formula as `EpisodeSet.sha256`), so records
    can prove which episodes they hold without their summary."""
    if not records:
        raise HarnessError("no episode records", fix="pass the records of a finished run")
    way = len(records[0]["classes"])
    shot, query = len(records[0]["support"]) // way, len(records[0]["query"]) // way
    h = hashlib.sha256(f"way={way} shot={shot} query={query} n={len(records)}\n".encode())
    for r in records:
        h.update(f"{r['episode']}:{'|'.join(r['support'] + r['query'])}\n".encode())
    return h.hexdigest()


def figures(records: list[dict]) -> dict:
    """The summary figures the records give: n_episodes, accuracy and ci95 (percent), t_interval95 [low, high]
    (percent), from the per-episode accuracies (checked records)."""
    per_episode = np.array([r["accuracy"] for r in records], dtype=np.float64)
    s = accuracy_summary(per_episode)
    return {"n_episodes": len(records), "accuracy": s["accuracy"], "ci95": s["ci95"], "t_interval95": s["t_interval95"]}


# -------------------------------------------------------------------------------------------------- runs


def _number(value) -> bool:
    return type(value) in (int, float)


def _same(stated, recomputed: float) -> bool:
    return _number(stated) and math.isclose(stated, recomputed, rel_tol=REL_TOL, abs_tol=1e-12)


def _show(value) -> str:
    if type(value) is int:
        return str(value)
    if _number(value):
        return f"{value:.2f}"
    if isinstance(value, list) and all(map(_number, value)):
        return "[" + ", ".join(f"{v:.2f}" for v in value) + "]"
    return json.dumps(value)[:40] if value is not None else "nothing"


def check_figures(summary: dict, records: list[dict], where: str) -> dict:
    """Raise a HarnessError (naming `where`, summary.json's path, and the field) unless the summary states the
    figures its records give; return those figures."""
    found = figures(records)
    if summary.get("n_episodes") != found["n_episodes"] or type(summary.get("n_episodes")) is not int:
        raise HarnessError(f"summary.json says n_episodes {_show(summary.get('n_episodes'))}, its records give {found['n_episodes']}", where=where, fix=_fix(summary))
    for field in FIGURES:
        stated, mine = summary.get(field), found[field]
        ok = _same(stated, mine) if field != "t_interval95" else isinstance(stated, list) and len(stated) == 2 and all(map(_same, stated, mine))
        if not ok:
            raise HarnessError(f"summary.json says {field} {_show(stated)}, its records give {_show(mine)}", where=where, fix=_fix(summary))
    stated = summary.get("episode_set_sha256")
    held = records_episode_set_sha256(records) if stated is not None else None
    if held != stated:
        raise HarnessError(f"summary.json says episode set {str(stated)[:12]}..., its records hold episode set {held[:12]}...", where=where, fix=_fix(summary))
    if "intervals" in summary or (_number(summary.get("schema_version")) and summary["schema_version"] >= 3):
        check_intervals(summary, records, where)
    return found


def check_intervals(summary: dict, records: list[dict], where: str) -> dict:
    """Raise unless summary["intervals"] holds, for every level, the interval its records give."""
    stated, found = summary.get("intervals"), level_intervals(records)
    if not isinstance(stated, dict):
        raise HarnessError(f"summary.json says intervals {_show(stated)}, its records give the {', '.join(LEVELS)} intervals", where=where, fix=_fix(summary))
    for level, mine in found.items():
        given = stated.get(level)
        for key in ("estimate", "low", "high"):
            value = given.get(key) if isinstance(given, dict) else None
            if not _same(value, mine[key]):
                raise HarnessError(f"summary.json says intervals.{level}.{key} {_show(value)}, its records give {_show(mine[key])}", where=where, fix=_fix(summary))
    return found


#: the prefix of the marks of verified pairs (see the module docstring)
VERIFIED_MARK = ".verified-"


@functools.lru_cache(maxsize=1)
def verifier_sha256() -> str:
    """SHA-256 of what decides a verification: the source of this module and every harness module it imports,
    and the versions of Python, numpy and scipy that compute the figures."""
    from harness.provenance import module_closure, sources_sha256

    libraries = f"python {platform.python_version()}; numpy {np.__version__}; scipy {importlib.metadata.version('scipy')}"
    return sources_sha256(module_closure([__name__], ("harness",)), [libraries.encode()])


def _mark_path(folder: Path, summary: dict, records_sha256: str) -> Path:
    from harness.protocol import canonical_json

    key = hashlib.sha256(f"{canonical_json(summary)}\0{records_sha256}\0{verifier_sha256()}".encode()).hexdigest()
    return folder / f"{VERIFIED_MARK}{key[:40]}"


def _mark_verified(mark: Path) -> None:
    """Leave the mark of a verified pair and drop the folder's older ones; a folder that cannot be written keeps none."""
    try:
        mark.touch()
        for old in mark.parent.glob(f"{VERIFIED_MARK}*"):
            if old.name != mark.name:
                old.unlink(missing_ok=True)
    except OSError:
        pass


def verify_run(summary: dict, records_bytes: bytes, where: str | Path) -> list[dict]:
    """The records of a stored run, after checking that they are the run its summary states (see the module
    docstring). `where` is the run's folder; errors name summary.json or episodes.jsonl in it."""
    return _verify(summary, records_bytes, Path(where), want_records=True)


def check_run(summary: dict, records_bytes: bytes, where: str | Path) -> None:
    """`verify_run` for a caller that needs no records back: a pair marked verified costs one hash."""
    _verify(summary, records_bytes, Path(where), want_records=False)


def _verify(summary: dict, records_bytes: bytes, folder: Path, want_records: bool) -> list[dict] | None:
    summary_where, records_where = str(folder / SUMMARY), str(folder / RECORDS)
    if not isinstance(summary, dict):
        raise HarnessError(f"summary.json holds a JSON {type(summary).__name__}, not an object", where=summary_where, fix=_fix())
    stated = summary.get("records_sha256")
    if not stated:
        raise HarnessError("records without records_sha256 cannot be verified (summary.json names no SHA-256 of episodes.jsonl)", where=summary_where, fix=_fix(summary))
    digest = hashlib.sha256(records_bytes).hexdigest()
    if stated != digest:
        raise HarnessError(f"episodes.jsonl has SHA-256 {digest[:12]}..., but summary.json was written for {str(stated)[:12]}...: the records changed after the run finished",
                           where=str(folder), fix=_fix(summary))
    mark = _mark_path(folder, summary, digest)
    verified = mark.is_file()  # these very bytes passed checks 2 and 3 under this very verifier
    if verified and not want_records:
        return None
    with _collector_paused():
        records = parse_records(records_bytes, records_where)
        if not verified:
            check_records(records, records_where)
            check_figures(summary, records, summary_where)
    if not verified:
        _mark_verified(mark)
    return records


def read_summary(path: Path) -> dict:
    """summary.json as a dict; a file that cannot be read, is not UTF-8, not JSON or not an object is named."""
    try:
        summary = json.loads(Path(path).read_bytes().decode("utf-8"))
    except OSError as e:
        raise HarnessError(f"cannot read summary.json: {e.strerror or e}", where=str(path), fix=_fix()) from None
    except UnicodeDecodeError:
        raise HarnessError("summary.json is not UTF-8 text", where=str(path), fix=_fix()) from None
    except ValueError as e:
        raise HarnessError(f"summary.json is not JSON ({getattr(e, 'msg', e)})", where=str(path), fix=_fix()) from None
    if not isinstance(summary, dict):
        raise HarnessError(f"summary.json holds a JSON {type(summary).__name__}, not an object", where=str(path), fix=_fix())
    return summary


def load_verified(folder: Path | str) -> tuple[dict, list[dict], bytes]:
    """(summary, records, records bytes) of the run in `folder`, read under the folder's shared lock (a run
    that finishes replaces the pair under its exclusive lock), then verified with `verify_run`."""
    folder = Path(folder)
    summary_path, records_path = folder / SUMMARY, folder / RECORDS
    if not summary_path.is_file() or not records_path.is_file():
        missing = summary_path if not summary_path.is_file() else records_path
        raise HarnessError(f"no finished run in {folder} ({missing.name} is missing)", fix="evaluate it first: fsv-bench run --protocol P --method M")
    with file_lock(folder / LOCK, shared=True):
        summary = read_summary(summary_path)
        try:
            data = records_path.read_bytes()
        except OSError as e:
            raise HarnessError(f"cannot read episodes.jsonl: {e.strerror or e}", where=str(records_path), fix=_fix(summary)) from None
    return summary, verify_run(summary, data, folder), data

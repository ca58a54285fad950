"""Manifests of the published few-shot splits, and `splits verify`: are a user's split files the published ones?

One YAML file per split in `splits/` records where the split comes from, the name, SHA-256, line count and
classes of each of its files, and format notes. The split files themselves are not shipped. To say *what*
differs when a user's file has another hash, each part carries one fingerprint per published line, in file
order (`fingerprints`, base64):

    4 bytes  SHA-256 of the line lower-cased, with every run of spaces, tabs and '_' made one '_'
    2 bytes  SHA-256 of the line exactly as published

The first finds the published line a user's line stands for even when its case or spacing was changed; the
second tells whether it is the same line to the byte. A line whose fingerprint matches none is an added
video, a published line that no user line matches is a missing one. Fingerprints are short, so a changed
line passes for a published one with a chance of about 1 in 65,000 at worst; that only hides it from the
list of differences, since the file's SHA-256 alone decides whether it is the published file.
"""
from __future__ import annotations

import base64
import functools
import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from harness.data.splits import read_split_file
from harness.errors import HarnessError
from harness.shipped import shipped_dir

SPLITS_DIR = shipped_dir("splits")  # the checkout's splits/, or the installed package's copy
PARTS = ("train", "val", "test")
FINGERPRINT_BYTES = 6
SHOWN = 5  # how many examples of each kind of difference a report lists
_MAX_CLASS_TRIES = 50_000  # bounds the search for videos filed under another class (one hash per try)

_SPACING = re.compile(r"[\s_]+")
_LINE_END = re.compile(r"\r\n|\r|\n")
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


# -------------------------------------------------------------------------------------------- fingerprints


def normalize_line(line: str) -> str:
    """The form two lines share when they differ only in case or spacing (`Air drumming` ~ `air_drumming`)."""
    return _SPACING.sub("_", line.strip().lower())


def fingerprint(line: str) -> bytes:
    loose = hashlib.sha256(normalize_line(line).encode("utf-8")).digest()[:4]
    exact = hashlib.sha256(line.encode("utf-8")).digest()[:2]
    return loose + exact


def fingerprints(lines: list[str]) -> bytes:
    """Fingerprints of a file's lines, concatenated in order (FINGERPRINT_BYTES each)."""
    return b"".join(fingerprint(line) for line in lines)


@functools.lru_cache(maxsize=8)
def _lookup(prints: bytes) -> dict[bytes, list[tuple[int, bytes]]]:
    """loose fingerprint -> [(index of the published line, exact fingerprint), ...]."""
    table: dict[bytes, list[tuple[int, bytes]]] = {}
    for i in range(len(prints) // FINGERPRINT_BYTES):
        entry = prints[i * FINGERPRINT_BYTES : (i + 1) * FINGERPRINT_BYTES]
        table.setdefault(entry[:4], []).append((i, entry[4:]))
    return table


# --------------------------------------------------------------------------------------------- manifests


@dataclass(frozen=True)
class PartSpec:
    """One file of a split. sha256, classes and fingerprints are empty where they depend on a seed."""

    part: str  # train / val / test
    file: str
    sha256: str | None
    lines: int
    n_classes: int
    n_videos: int
    classes: dict[str, int]  # class -> videos, in the manifest's order
    fingerprints: bytes = field(default=b"", repr=False)


@dataclass(frozen=True)
class Variant:
    """A file published elsewhere under the split's name that is NOT the same split."""

    file: str
    sha256: str
    what: str


@dataclass(frozen=True)
class Manifest:
    name: str
    dataset: str
    title: str
    source: dict[str, str | tuple[str, ...]]  # paper, repository, path, commit, ...; same_files: other copies
    line_format: str
    example: str
    notes: tuple[str, ...]
    parts: dict[str, PartSpec]
    trx_split: int | None = None
    variants: tuple[Variant, ...] = ()
    path: Path | None = None

    def part_with_hash(self, sha256: str) -> str | None:
        return next((p.part for p in self.parts.values() if p.sha256 == sha256), None)

    @property
    def published(self) -> bool:
        """True for a split with fixed files (hashes); False for one generated from a seed."""
        return all(p.sha256 for p in self.parts.values())


def _field(data: dict, key: str, kind, where: str, default=...):
    if key not in data:
        if default is ...:
            raise HarnessError(f"field '{key}' is missing", where=where, fix="every manifest has the fields of splits/hmdb_arn.yaml")
        return default
    value = data[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise HarnessError(f"field '{key}' should be {getattr(kind, '__name__', kind)}, got {value!r:.60}", where=where, fix="correct the manifest")
    return value


def _parse_part(part: str, data, path: Path) -> PartSpec:
    where = f"{path}, parts.{part}"
    if not isinstance(data, dict):
        raise HarnessError("a part must be a mapping of fields", where=where, fix="see splits/hmdb_arn.yaml")
    classes = _field(data, "classes", dict, where, {})
    prints = base64.b64decode("".join(_field(data, "fingerprints", str, where, "").split()))
    return PartSpec(
        part=part,
        file=_field(data, "file", str, where),
        sha256=_field(data, "sha256", (str, type(None)), where, None),
        lines=_field(data, "lines", int, where),
        n_classes=_field(data, "n_classes", int, where),
        n_videos=_field(data, "n_videos", int, where),
        classes={str(name): int(count) for name, count in classes.items()},
        fingerprints=prints,
    )


def read_manifest(path: Path) -> Manifest:
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)
    except (OSError, yaml.YAMLError) as e:
        raise HarnessError(f"cannot read split manifest {path}: {e}", fix="restore the file from the repository") from None
    where = str(path)
    if not isinstance(data, dict):
        raise HarnessError("a split manifest must be a mapping of fields", where=where, fix="see splits/hmdb_arn.yaml")
    parts = _field(data, "parts", dict, where)
    if sorted(parts) != sorted(PARTS):
        raise HarnessError(f"parts are {sorted(parts)}, expected train, val and test", where=f"{where}, parts", fix="a manifest describes the three files of a split")
    variants = [
        Variant(_field(v, "file", str, f"{where}, variants"), _field(v, "sha256", str, f"{where}, variants"), _field(v, "what", str, f"{where}, variants"))
        for v in _field(data, "variants", list, where, [])
    ]
    return Manifest(
        name=_field(data, "name", str, where),
        dataset=_field(data, "dataset", str, where),
        title=_field(data, "title", str, where),
        source={str(k): tuple(map(str, v)) if isinstance(v, list) else str(v) for k, v in _field(data, "source", dict, where).items()},
        line_format=_field(data, "line_format", str, where),
        example=_field(data, "example", str, where),
        notes=tuple(_field(data, "notes", list, where, [])),
        parts={part: _parse_part(part, parts[part], path) for part in PARTS},
        trx_split=_field(data, "trx_split", (int, type(None)), where, None),
        variants=tuple(variants),
        path=path,
    )


@functools.lru_cache(maxsize=4)
def _load(folder: Path) -> tuple[Manifest, ...]:
    return tuple(read_manifest(path) for path in sorted(folder.glob("*.yaml")))


def load_manifests(folder: Path | None = None) -> dict[str, Manifest]:
    """name -> Manifest for every `*.yaml` in `folder` (default: the shipped `splits/`)."""
    shipped = folder is None  # else a folder passed in
    folder = shipped_dir("splits") if shipped else Path(folder)
    manifests: dict[str, Manifest] = {}
    found = _load(folder.resolve())
    if not found:
        fix = "reinstall fsv-bench from its checkout (`pip install .`) or from its wheel: both carry splits/*.yaml" if shipped else "pass the folder of the split manifests"
        raise HarnessError(f"no split manifest (.yaml file) in {folder}", fix=fix)
    for m in found:
        if m.name in manifests:
            raise HarnessError(f"two manifests are named '{m.name}': {manifests[m.name].path} and {m.path}", fix="give each manifest its own name")
        manifests[m.name] = m
    return manifests


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def identify(files: list[Path]) -> Manifest | None:
    """The published split that every one of `files` belongs to, by SHA-256; None if there is none."""
    hashes = {_sha256(Path(f)) for f in files}
    if not hashes:
        return None
    for manifest in load_manifests().values():
        if manifest.published and all(manifest.part_with_hash(h) for h in hashes):
            return manifest
    return None


# ---------------------------------------------------------------------------------------- a user's file


@dataclass
class SplitText:
    """A user's split file as bytes and as lines, with what the published files never have."""

    path: Path
    sha256: str
    lines: list[str]  # line ends removed, nothing else
    line_ends: Counter  # "\n", "\r\n", "\r" -> count
    final_newline: bool
    bom: bool
    undecodable: str | None = None  # why the bytes are not UTF-8 text


def read_text(path: Path) -> SplitText:
    raw = path.read_bytes()
    bom = raw.startswith(b"\xef\xbb\xbf")
    undecodable = None
    try:
        text = raw[3:].decode("utf-8") if bom else raw.decode("utf-8")
    except UnicodeDecodeError as e:
        undecodable = f"byte {e.start} is not UTF-8"
        text = raw.decode("utf-8", errors="replace")
    lines = _LINE_END.split(text)
    final_newline = lines[-1] == ""
    if final_newline:
        lines.pop()
    return SplitText(path, hashlib.sha256(raw).hexdigest(), lines, Counter(_LINE_END.findall(text)), final_newline, bom, undecodable)


# ------------------------------------------------------------------------------------------- comparison


@dataclass
class PartCheck:
    """How one user file compares with one published file. Line numbers count from 1."""

    part: str
    spec: PartSpec
    text: SplitText | None  # None: no file found for this part
    chosen_by: str = ""  # how the file was picked: "name", "hash", "part name"
    added: list[tuple[int, str]] = field(default_factory=list)  # lines that are no published line
    missing: list[int] = field(default_factory=list)  # published line numbers no user line matches
    moved: list[tuple[int, str, str, int]] = field(default_factory=list)  # (line, text, published class, published line)
    case_or_spacing: list[tuple[int, str, int]] = field(default_factory=list)  # (line, text, published line)
    whitespace: list[int] = field(default_factory=list)  # lines with spaces or tabs at either end
    blank: list[int] = field(default_factory=list)
    duplicates: list[tuple[str, int]] = field(default_factory=list)  # (line, times)
    classes_added: list[tuple[str, int]] = field(default_factory=list)  # (class, videos)
    classes_missing: list[str] = field(default_factory=list)
    class_counts: list[tuple[str, int, int]] = field(default_factory=list)  # (class, videos, published videos)
    unreadable: str | None = None  # what read_split_file says about the file

    @property
    def matches(self) -> bool:
        return self.text is not None and self.text.sha256 == self.spec.sha256

    @property
    def same_lines(self) -> bool:
        """Every published line is there once, unchanged, and nothing else (line ends aside)."""
        return self.text is not None and not (
            self.added or self.missing or self.moved or self.case_or_spacing or self.whitespace or self.blank or self.duplicates
        )


def _unclaimed_exact(table: dict, claimed: bytearray, fp: bytes) -> int | None:
    """Index of a published line with fingerprint `fp` that no user line has matched yet."""
    return next((i for i, exact in table.get(fp[:4], ()) if exact == fp[4:] and not claimed[i]), None)


def compare(part: str, spec: PartSpec, text: SplitText | None, chosen_by: str = "") -> PartCheck:
    check = PartCheck(part, spec, text, chosen_by)
    if text is None or check.matches:
        return check
    table = _lookup(spec.fingerprints)
    claimed = bytearray(len(spec.fingerprints) // FINGERPRINT_BYTES)
    seen: Counter = Counter()
    for number, line in enumerate(text.lines, start=1):
        stripped = line.strip()
        if not stripped:
            check.blank.append(number)
            continue
        if stripped != line:
            check.whitespace.append(number)
        seen[stripped] += 1
        if seen[stripped] > 1:
            continue
        fp = fingerprint(stripped)
        candidates = table.get(fp[:4], [])
        exact = _unclaimed_exact(table, claimed, fp)
        if exact is not None:
            claimed[exact] = 1
        elif candidates:
            free = [i for i, _ in candidates if not claimed[i]]
            index = free[0] if free else candidates[0][0]
            claimed[index] = 1
            check.case_or_spacing.append((number, stripped, index + 1))
        else:
            check.added.append((number, stripped))
    check.duplicates = [(line, n) for line, n in seen.items() if n > 1]

    found: Counter = Counter()  # videos per class, duplicates counted as a loader counts them
    for line, n in seen.items():
        found[line.partition("/")[0]] += n
    check.classes_added = [(c, n) for c, n in found.items() if spec.classes and c not in spec.classes]
    check.classes_missing = [c for c in spec.classes if c not in found]
    check.class_counts = [(c, found[c], n) for c, n in spec.classes.items() if c in found and found[c] != n]

    # An added line may be a published video under another class name (a renamed class, a moved video):
    # look for its video under each class that lacks videos.
    short = check.classes_missing + [c for c, n, published in check.class_counts if n < published]
    if short and len(check.added) * len(short) <= _MAX_CLASS_TRIES:
        added = []
        for number, line in check.added:
            video = line.partition("/")[2]
            hit = next(((c, i) for c in short if (i := _unclaimed_exact(table, claimed, fingerprint(f"{c}/{video}"))) is not None), None)
            if hit is None:
                added.append((number, line))
            else:
                claimed[hit[1]] = 1
                check.moved.append((number, line, hit[0], hit[1] + 1))
        check.added = added
    check.missing = [i + 1 for i, hit in enumerate(claimed) if not hit]
    try:
        read_split_file(text.path)
    except HarnessError as e:
        check.unreadable = e.what
    return check


def shared_lines(spec: PartSpec, text: SplitText) -> int:
    """How many of the user's lines stand for a published line (exactly or up to case and spacing)."""
    table = _lookup(spec.fingerprints)
    return sum(fingerprint(line)[:4] in table for line in {line.strip() for line in text.lines} if line)


# ---------------------------------------------------------------------------------------------- verify


@dataclass
class VerifyReport:
    ok: bool
    manifest: Manifest | None  # None: no published split shares a line with the files
    folder: Path
    parts: dict[str, PartCheck]
    picked_by: str  # why this manifest: "hash", "name", "closest", "synthetic"
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        m = self.manifest
        if m is None:
            return [f"files in {self.folder}", *(f"  {note}" for note in self.notes),
                    "NOT OK: these are not the files of a known split."]
        out = [f"{m.name}: {m.title}", f"  files in {self.folder}, {_PICKED[self.picked_by]}"]
        out += [f"  {note}" for note in self.notes]
        for check in self.parts.values():
            out += _describe(check, m, "expected" if self.picked_by == "synthetic" else "published")
        if self.ok:
            out.append(f"OK: these are the {m.name} files, byte for byte.")
        elif all(c.same_lines for c in self.parts.values()):
            out.append(f"NOT OK: the lines are the {m.name} lines, but the bytes differ (see above).")
        else:
            out.append(f"NOT OK: these files differ from the {m.name} split (see above).")
        return out


_PICKED = {
    "hash": "picked by file hashes",
    "name": "compared with the split asked for",
    "closest": "the closest published split (no file matches one by SHA-256)",
    "synthetic": "expected files rebuilt from the folder's synthetic.json",
}


def _listed(items, limit: int = SHOWN) -> str:
    items = list(items)
    text = ", ".join(items[:limit])
    return text + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def _videos(n: int) -> str:
    return f"{n} video" if n == 1 else f"{n} videos"


def _describe(check: PartCheck, m: Manifest, published: str = "published") -> list[str]:
    spec, text = check.spec, check.text
    if text is None:
        return [f"  {check.part:5} {spec.file}: MISSING (no file of that name, and none with its hash or part name)"]
    name = text.path.name if text.path.name == spec.file else f"{text.path.name} (taken as {spec.file} by its {check.chosen_by})"
    head = f"  {check.part:5} {name}"
    n_classes = len({line.strip().partition("/")[0] for line in text.lines if line.strip()})
    counts = f"{len(text.lines)} lines, {n_classes} classes"
    if check.matches:
        return [f"{head}: {counts}, sha256 {text.sha256[:16]}... matches"]
    out = [f"{head}: {counts}; {published} {spec.lines} lines, {spec.n_classes} classes; "
           f"sha256 {text.sha256[:16]}... differs from {(spec.sha256 or '')[:16]}..."]

    def add(what: str, items: list | None = None, show=None) -> None:
        if items is None:
            out.append(f"      {what}")
        elif items:
            out.append(f"      {what} ({len(items)}): {_listed(map(show or repr, items))}")

    for variant in m.variants:
        if variant.sha256 == text.sha256:
            add(f"this file is {variant.file}: {variant.what}")
    if text.undecodable:
        add(f"not UTF-8 text: {text.undecodable}")
    if text.bom:
        add(f"starts with a UTF-8 byte-order mark; the {published} file has none")
    if text.line_ends["\r\n"] or text.line_ends["\r"]:
        ends = ", ".join(f"{n} {k!r}" for k, n in text.line_ends.items() if n)
        add(f"line ends: {ends}; the {published} file ends every line with '\\n' (LF) only")
    if text.lines and not text.final_newline:
        add(f"the last line has no newline at its end; the {published} file has one")
    add("classes missing", check.classes_missing)
    add("classes added", check.classes_added, lambda a: f"{a[0]!r} ({_videos(a[1])})")
    add("classes with another number of videos", check.class_counts, lambda c: f"{c[0]!r} {c[1]} ({published} {c[2]})")
    moves = Counter((line.partition("/")[0], before) for _, line, before, _ in check.moved)
    added_classes = dict(check.classes_added)
    renamed = {  # every video of the new class is a video of the missing one, and most of them are there
        (now, before) for (now, before), n in moves.items()
        if before in check.classes_missing and n == added_classes.get(now) and 2 * n >= spec.classes[before]
    }
    for now, before in renamed:
        add(f"class {before!r} seems renamed to {now!r}: {_videos(moves[now, before])} of {before!r} are under the new name")
    add(f"videos under another class than {published}", [v for v in check.moved if (v[1].partition("/")[0], v[2]) not in renamed],
        lambda v: f"line {v[0]} {v[1]!r} ({published} under {v[2]!r}, line {v[3]})")
    add(f"videos added, not in the {published} file", check.added, lambda a: f"line {a[0]} {a[1]!r}")
    add(f"{published} videos missing, by their line in the {published} {spec.file}", check.missing, lambda i: f"line {i}")
    add(f"lines that differ from a {published} line only in case or spacing", check.case_or_spacing,
        lambda c: f"line {c[0]} {c[1]!r} ({published} line {c[2]})")
    add("lines with spaces or tabs at the start or end", check.whitespace, lambda i: f"line {i}")
    add("blank lines", check.blank, lambda i: f"line {i}")
    add("duplicate lines", check.duplicates, lambda d: f"{d[0]!r} x{d[1]}")
    if check.unreadable:
        add(f"the harness cannot read this file: {check.unreadable}")
    if check.same_lines:
        add(f"every {published} line is there once and unchanged: only the bytes listed above differ")
    return out


def _candidates(folder: Path) -> dict[str, SplitText]:
    """The folder's .txt files, and .list files as the CMN authors name theirs."""
    try:
        paths = sorted(p for p in folder.iterdir() if p.suffix in (".txt", ".list") and p.is_file())
        return {p.name: read_text(p) for p in paths}
    except OSError as e:  # a folder or file that cannot be read (permissions, a vanished file)
        raise HarnessError(f"cannot read {e.filename or folder}: {e.strerror or e}", fix="pass a folder of split files you can read") from None


def _assign(manifest: Manifest, texts: dict[str, SplitText]) -> dict[str, tuple[SplitText | None, str]]:
    """part -> (the user's file for it, how it was chosen): by file name, else by hash, else by part name."""
    chosen: dict[str, tuple[SplitText | None, str]] = {}
    used: set[str] = set()
    for part, spec in manifest.parts.items():
        if spec.file in texts:
            chosen[part] = (texts[spec.file], "name")
            used.add(spec.file)
    for part, spec in manifest.parts.items():
        if part in chosen:
            continue
        by_hash = [n for n, t in texts.items() if n not in used and spec.sha256 and t.sha256 == spec.sha256]
        by_part = [n for n in texts if n not in used and part in n.lower()]
        if by_hash:
            chosen[part] = (texts[by_hash[0]], "hash")
        elif len(by_part) == 1:
            chosen[part] = (texts[by_part[0]], "part name")
        else:
            chosen[part] = (None, "")
            continue
        used.add(chosen[part][0].path.name)
    return chosen


def _synthetic_manifest(manifest: Manifest, folder: Path) -> tuple[Manifest, list[str]]:
    """The synthetic split's expected files, rebuilt from the spec recorded in the folder's synthetic.json."""
    from harness.data import synthetic

    record_path = folder / synthetic.METADATA_NAME
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
        spec = synthetic.SyntheticSpec(**record["spec"])
        split = synthetic.class_split(spec.seed, spec.n_train, spec.n_val, spec.n_test)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise HarnessError(
            f"cannot rebuild the synthetic split: {record_path} is missing or unreadable ({e})",
            fix="the synthetic split depends on its seed; verify a folder written by `fsv-bench synth --out DIR`",
        ) from None
    parts = {}
    for part, spec_part in manifest.parts.items():
        lines = sorted(
            f"{c}/{synthetic.video_name(c, i, spec.videos_per_class)}" for c in split[part] for i in range(spec.videos_per_class)
        )
        data = "".join(line + "\n" for line in lines).encode()
        parts[part] = replace(
            spec_part, sha256=hashlib.sha256(data).hexdigest(), lines=len(lines), n_classes=len(split[part]),
            n_videos=len(lines), classes={c: spec.videos_per_class for c in split[part]}, fingerprints=fingerprints(lines),
        )
    settings = ", ".join(f"{k}={v}" for k, v in record["spec"].items())
    return replace(manifest, parts=parts), [f"synthetic.json: {settings}"]


def verify(folder: Path, name: str | None = None) -> VerifyReport:
    """Compare the split files in `folder` with a published split (the one named, or the one they match)."""
    folder = Path(folder)
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise HarnessError(f"{folder} {what}", fix="pass the folder that holds the split files (e.g. trainlist03.txt)")
    manifests = load_manifests()
    if name is not None and name not in manifests:
        raise HarnessError(f"unknown split '{name}'", where="--split", fix=f"use one of: {', '.join(manifests)}")
    texts = _candidates(folder)
    if not texts:
        raise HarnessError(f"{folder} holds no .txt or .list file", fix="pass the folder that holds the split files (trainlist03.txt, vallist03.txt, testlist03.txt or their *07 forms)")

    owners = {t.sha256: (m, m.part_with_hash(t.sha256)) for m in manifests.values() for t in texts.values() if m.part_with_hash(t.sha256)}
    variants = {t.sha256: m for m in manifests.values() for v in m.variants for t in texts.values() if v.sha256 == t.sha256}
    notes: list[str] = []
    if name is None and not (owners or variants) and (folder / "synthetic.json").is_file() and "synthetic" in manifests:
        name = "synthetic"  # written by `bench.py synth`: its files follow from its seed, not from a hash
    if name is not None:
        manifest, picked_by = manifests[name], "name"
        if not manifest.published:
            manifest, notes = _synthetic_manifest(manifest, folder)
            picked_by = "synthetic"
    elif owners or variants:
        votes = Counter(m.name for m, _ in owners.values()) + Counter(m.name for m in variants.values())
        manifest, picked_by = manifests[votes.most_common(1)[0][0]], "hash"
    else:
        published = [m for m in manifests.values() if m.published]
        shared = {m.name: sum(shared_lines(m.parts[p], t) for p, (t, _) in _assign(m, texts).items() if t) for m in published}
        manifest = max(published, key=lambda m: shared[m.name], default=None)
        if manifest is None or not shared[manifest.name]:
            notes = [f"no file matches a published split by SHA-256, and no line of them is a line of one: "
                     f"{', '.join(texts)} compared with {', '.join(shared)}"]
            return VerifyReport(False, None, folder, {}, "closest", notes)
        picked_by = "closest"
        total = sum(p.lines for p in manifest.parts.values())
        others = ", ".join(f"{n} {k}" for n, k in shared.items() if n != manifest.name)
        notes.append(f"{shared[manifest.name]} of its {total} published lines are in these files (other splits: {others})")

    assigned = _assign(manifest, texts)
    parts = {part: compare(part, manifest.parts[part], text, how) for part, (text, how) in assigned.items()}
    for sha, (other, part) in owners.items():
        if other.name != manifest.name:
            file = next(t.path.name for t in texts.values() if t.sha256 == sha)
            notes.append(f"{file} is the published {part} file of {other.name}, not of {manifest.name}: "
                         "splits must not be mixed")
    used = {t.path.name for t, _ in assigned.values() if t is not None}
    unused = [n for n in texts if n not in used]
    if unused:
        notes.append(f"not compared: {_listed(unused)}")
    ok = all(check.matches for check in parts.values())
    return VerifyReport(ok, manifest, folder, parts, picked_by, notes)


def cmd_splits_verify(folder: str, name: str | None) -> int:
    """`fsv-bench splits verify DIR [--split NAME]`: print the report; 0 if the files are the published ones."""
    report = verify(Path(folder), name)
    print("\n".join(report.lines()))
    return 0 if report.ok else 1

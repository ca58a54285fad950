"""The video index: class -> videos of one split part, each found on disk and checked before any episode.

Classes and videos are sorted by name, so episodes depend on the set of videos a split lists, not on the
order of its lines. Videos that are missing, empty, shorter than the protocol needs, unreadable, truncated or
damaged are reported, each with its reason; the protocol says whether they stop the run (default) or are
excluded, and the exclusion is recorded. What is checked (`harness.data.sources` has the details):

    frame folder:  every frame file is a regular file holding bytes (one `os.stat` each; a FIFO, a device, a
                   folder named like a frame or a broken link is reported, never opened);
    zip:           every frame member is a regular file holding bytes (from the central directory), and the
                   first one's local header is sound;
    video file:    a regular file holding bytes, read through once and decoded (`probe_video_file`): not cut
                   short (header, packets and duration agree), and every frame decodes. Its frame count is the
                   decoded count. The outcome is kept by the file's SHA-256 (and the checks' and decoder's
                   versions) in `<home>/video-checks/`, so a file is decoded at indexing once;
                   later indexings hash it (about 1 ms a MB).

The data root is a folder of frame folders and/or video files, or a `.zip` of frame folders; see
`harness.data.sources` for the rule that tells them apart.

Finding a listed `<class>/<video>` on disk: the exact names first. If there is no exact match, these
fallbacks are tried in order, and every use of one is recorded in `VideoIndex.renamed` as
{"video": "class/video", "found_as": "class folder/video name as on disk", "rule": ...}:
    class folder:  the same name ignoring case; the name with spaces written as `_` (ignoring case too),
                   as Kinetics and SSv2 class folders often are on disk;
    video:         the same name ignoring case (UCF's HandstandPushups/HandStandPushups; TRX lower-cases);
                   for a Kinetics entry `<id>_<start>_<end>`, a folder or file named by the 11-character
                   YouTube id alone (as TRX expects), exactly or ignoring case.
Two candidates for one entry, or two entries found as one video, stop the index with an error naming both.

Symbolic links under a folder root are followed, as any program reading the folder would; a class folder or a
video (folder or file) that is a link to a place outside the root is recorded in `VideoIndex.linked` as
{"link": "class folder[/video]" as on disk, "target": the resolved path, "videos": how many listed videos are
found through it}, and the results list it (`linked_outside_root`), so a run says which of its data came from
elsewhere. The content of every video is fingerprinted whatever its path (see harness.data.fingerprint).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from harness.data.sources import (  # noqa: F401  (FRAME_SUFFIXES and list_frames are imported from here too)
    FILE,
    FRAME_SUFFIXES,
    FRAMES,
    VIDEO_CHECK,
    VIDEO_SUFFIXES,
    ZIP,
    SourceError,
    _av,
    check_frame_folder,
    file_problem,
    file_sha256,
    is_video_file_name,
    is_zip_root,
    list_frames,
    probe_video_file,
    zip_tree,
)
from harness.data.splits import read_split_file
from harness.errors import HarnessError
from harness.files import atomic_write_checksummed, read_checksummed

KINETICS_CLIP = re.compile(r"^(.{11})_\d{6}_\d{6}$")  # <YouTube id>_<start>_<end>, 6-digit seconds


@dataclass(frozen=True)
class Video:
    class_name: str
    video_id: str
    path: Path  # frame folder, video file, or (kind "zip") the zip file itself
    n_frames: int
    kind: str = FRAMES  # "frames", "zip" or "file"
    member: str = ""  # kind "zip": the video folder's prefix inside the zip, e.g. "hmdb/brush_hair/clip_0/"

    @property
    def key(self) -> str:
        """'class/video' as the split file writes it; the video's name everywhere in the harness."""
        return f"{self.class_name}/{self.video_id}"

    @property
    def identity(self) -> str:
        """Where the video is, unique per video: the resolved path, plus the member for a zip."""
        resolved = str(Path(self.path).resolve())
        return f"{resolved}\0{self.member}" if self.kind == ZIP else resolved


@dataclass
class VideoIndex:
    part: str
    classes: list[str]  # sorted
    videos: list[Video]  # sorted by (class, video)
    by_class: list[list[int]]  # class position -> positions in `videos`
    excluded: list[dict] = field(default_factory=list)  # {"video": "class/video", "reason": ...}
    renamed: list[dict] = field(default_factory=list)  # {"video", "found_as", "rule"}: a fallback name was used
    linked: list[dict] = field(default_factory=list)  # {"link", "target", "videos"}: a symbolic link out of the root

    @property
    def sha256(self) -> str:
        """Hash of the video set (names only)."""
        h = hashlib.sha256()
        for v in self.videos:
            h.update(v.key.encode() + b"\n")
        return h.hexdigest()

    def __len__(self) -> int:
        return len(self.videos)


# ------------------------------------------------------------------------------------------- catalogs


@dataclass(frozen=True)
class _Candidate:
    shown: str  # name under the class folder as on disk (with the extension for a file)
    kind: str
    path: Path
    member: str = ""


class _Listing(dict):
    """{video name: candidates} of one class folder, with {lower-cased name: candidates} as `.lower`."""

    def __init__(self, names: dict[str, list[_Candidate]]):
        super().__init__(names)
        self.lower: dict[str, list[_Candidate]] = {}
        for n, cands in names.items():
            self.lower.setdefault(n.lower(), []).extend(cands)


class _DirCatalog:
    """Class folders of a root folder and, per class folder, its videos by name (folder name or file stem)."""

    def __init__(self, root: Path):
        self.root = root
        self._videos: dict[str, _Listing] = {}
        self.class_folders = sorted(e.name for e in os.scandir(root) if e.is_dir())

    def videos(self, class_folder: str) -> _Listing:
        if class_folder not in self._videos:
            folder = self.root / class_folder
            found: dict[str, list[_Candidate]] = {}
            files: dict[str, list[_Candidate]] = {}
            for e in sorted(os.scandir(folder), key=lambda e: e.name):
                if e.is_dir():
                    found[e.name] = [_Candidate(e.name, FRAMES, folder / e.name)]
                elif is_video_file_name(e.name):
                    files.setdefault(e.name.rsplit(".", 1)[0], []).append(_Candidate(e.name, FILE, folder / e.name))
            for name, cands in files.items():
                found.setdefault(name, cands)  # a frame folder wins over a video file of the same name
            self._videos[class_folder] = _Listing(found)
        return self._videos[class_folder]


class _ZipCatalog:
    def __init__(self, root: Path):
        self.root = root
        self.tree = zip_tree(root)
        self.class_folders = sorted(self.tree.tree)
        self._videos: dict[str, _Listing] = {}

    def videos(self, class_folder: str) -> _Listing:
        if class_folder not in self._videos:
            self._videos[class_folder] = _Listing({
                name: [_Candidate(name, ZIP, self.root, prefix) for prefix in prefixes]
                for name, prefixes in self.tree.tree.get(class_folder, {}).items()
            })
        return self._videos[class_folder]


def _ambiguous(entry: str, what: str, names: list[str], where: str) -> HarnessError:
    return HarnessError(
        f"'{entry}' matches more than one {what}: " + " and ".join(f"'{n}'" for n in names),
        where=where,
        fix="rename or remove one of them so each listed video has one match",
    )


def _match_class(catalog, class_name: str, where: str) -> tuple[str | None, str | None]:
    """(class folder, fallback rule or None); (None, None) when there is none."""
    folders = catalog.class_folders
    if class_name in folders:
        return class_name, None
    lower, underscored = class_name.lower(), class_name.replace(" ", "_").lower()
    for rule, test in (("case-insensitive", lambda f: f.lower() == lower), ("spaces as _", lambda f: f.lower() == underscored)):
        hits = [f for f in folders if test(f)]
        if len(hits) > 1:
            raise _ambiguous(class_name, "class folder", hits, where)
        if hits:
            return hits[0], rule
    return None, None


def _match_video(videos: _Listing, video_id: str, entry: str, where: str) -> tuple[_Candidate | None, str | None]:
    def one(cands: list[_Candidate]) -> _Candidate:
        if len(cands) > 1:
            raise _ambiguous(entry, "video", [c.member or c.shown for c in cands], where)
        return cands[0]

    if video_id in videos:
        return one(videos[video_id]), None
    wanted = [("case-insensitive", video_id.lower())]
    kinetics = KINETICS_CLIP.match(video_id)
    if kinetics:
        wanted.append(("Kinetics YouTube id", kinetics.group(1).lower()))
    by_lower = videos.lower
    for rule, name in wanted:
        if rule == "Kinetics YouTube id" and kinetics.group(1) in videos:
            return one(videos[kinetics.group(1)]), rule
        hits = by_lower.get(name, [])
        if hits:
            return one(hits), rule
    return None, None


def _bad_frames(problems: list[str]) -> SourceError:
    """The per-video report of frame files that are not regular files holding bytes."""
    if len(problems) == 1:
        return SourceError(f"frame {problems[0]}")
    shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
    return SourceError(f"{len(problems)} frame files cannot be read: {shown}")


def _count(cand: _Candidate, catalog, decode_video_files: bool, checks: Path | None) -> int:
    """Frames of a candidate, after the checks of the module docstring; raises SourceError or OSError."""
    if cand.kind == FRAMES:
        n, problems = check_frame_folder(cand.path)
        if problems:
            raise _bad_frames(problems)
        return n
    if cand.kind == ZIP:
        names = catalog.tree.frames.get(cand.member, [])
        problems = [f"{n.rsplit('/', 1)[-1]} is {why}" for n in names if (why := catalog.tree.member_problem(n))]
        if problems:
            raise _bad_frames(problems)
        if names:
            catalog.tree.check_member(names[0])
        return len(names)
    return _checked_video_file(cand.path, decode_video_files, checks)


#: outcomes of `probe_video_file` in this process, by `_check_key`: {"frames": n} or {"kind": ..., "problem": ...}
_CHECKED: dict[str, dict] = {}


def _check_key(sha256: str, decode: bool) -> str:
    """What a video file's check depends on: its bytes, the checks and the decoder's versions."""
    av = _av()  # a missing PyAV is an error that says to install it
    versions = ",".join(f"{k} {'.'.join(map(str, v))}" for k, v in sorted(av.library_versions.items()))
    return hashlib.sha256(f"{VIDEO_CHECK}\0{decode}\0av {av.__version__}; {versions}\0{sha256}".encode()).hexdigest()


def _checked_video_file(path: Path, decode: bool, checks: Path | None) -> int:
    """`probe_video_file`, its outcome kept by the file's content: in this process, and in `checks/` (one small
    checksummed JSON per file, in the data home) when given, so a video file is decoded at indexing once."""
    why = file_problem(path)  # before anything opens it (a FIFO would hang the reader)
    if why is not None:
        raise SourceError(f"the file is {why}", kind="empty" if why.startswith("empty") else "unreadable")
    before = os.stat(path)
    _, sha256 = file_sha256(path)
    key = _check_key(sha256, decode)
    stored = checks / key[:2] / f"{key}.json" if checks is not None else None
    outcome = _CHECKED.get(key)
    if outcome is None and stored is not None:
        try:
            outcome = json.loads(bytes(read_checksummed(stored)))
        except (OSError, ValueError):  # none yet, or damaged (then made again): it is only a record of work done
            outcome = None
        if not (isinstance(outcome, dict) and (isinstance(outcome.get("frames"), int) or isinstance(outcome.get("problem"), str))):
            outcome = None
    if outcome is None:
        try:
            outcome = {"frames": probe_video_file(path, decode)}
        except SourceError as e:
            outcome = {"kind": e.kind, "problem": str(e)}
        after = os.stat(path)
        if (before.st_size, before.st_mtime_ns, before.st_ino) == (after.st_size, after.st_mtime_ns, after.st_ino):
            _CHECKED[key] = outcome  # kept only when the file did not change while it was checked
            if stored is not None:
                try:
                    atomic_write_checksummed(stored, lambda f: f.write(json.dumps(outcome, sort_keys=True).encode()))
                except (HarnessError, OSError):
                    pass  # a data home that cannot be written only means checking again next time
    if "problem" in outcome:
        raise SourceError(outcome["problem"], kind=str(outcome.get("kind", "unreadable")))
    return int(outcome["frames"])


# ---------------------------------------------------------------------------------------------- index


def build_index(
    root: Path,
    split_file: Path,
    part: str,
    min_frames: int,
    bad_videos: str = "error",
    *,
    decode_video_files: bool = True,
    video_checks: Path | None = None,
) -> VideoIndex:
    """Find every video of `split_file` under `root` and check it; see the module docstring for the rules.

    `decode_video_files=False` checks a video file by demuxing only (its header, packets and duration) and
    counts its packets: quicker, and blind to frames that do not decode. `video_checks`: a folder (in the data
    home) where the outcome of each video file's check is kept by the file's content, so that a file is
    decoded at indexing once.
    """
    root = Path(root)
    try:
        if is_zip_root(root):
            catalog = _ZipCatalog(root)
        elif root.is_dir():
            catalog = _DirCatalog(root)
        else:
            raise HarnessError(
                f"data root {root} is neither a folder nor a .zip file" if root.exists() else f"data root {root} does not exist",
                where="field 'dataset.root'",  # the command line adds the protocol file that set it
                fix="set dataset.root in the protocol (or --set dataset.root=PATH) to the folder holding <class>/<video>/<frames>.jpg or <class>/<video>.mp4, or to a .zip of frame folders",
            )
    except SourceError as e:
        raise HarnessError(str(e), where=f"data root {root}", fix="repack or re-download the zip") from None
    except OSError as e:
        raise HarnessError(f"data root {root} cannot be listed: {e.strerror}", fix="check the path and its permissions") from None

    entries = sorted(set(read_split_file(split_file)))
    where = f"data root {root}"
    linked: dict[str, dict] = {}
    found, problems, renamed = [], [], []
    claimed: dict[tuple, str] = {}
    for class_name, video_id in entries:
        entry = f"{class_name}/{video_id}"
        class_folder, class_rule = _match_class(catalog, class_name, where)
        if class_folder is None:
            problems.append({"video": entry, "reason": "missing"})
            continue
        try:
            videos = catalog.videos(class_folder)
        except OSError as e:
            problems.append({"video": entry, "reason": f"unreadable: {e.strerror}"})
            continue
        cand, video_rule = _match_video(videos, video_id, entry, where)
        if cand is None:
            problems.append({"video": entry, "reason": "missing"})
            continue
        spot = (cand.kind, str(cand.path), cand.member)
        if spot in claimed:
            raise HarnessError(
                f"'{claimed[spot]}' and '{entry}' are both found as '{class_folder}/{cand.shown}'",
                where=where,
                fix="give each listed video its own folder or file",
            )
        claimed[spot] = entry
        rules = [r for r in (class_rule and f"class folder {class_rule}", video_rule and f"video {video_rule}") if r]
        if rules:
            renamed.append({"video": entry, "found_as": f"{class_folder}/{cand.shown}", "rule": ", ".join(rules)})
        try:
            n = _count(cand, catalog, decode_video_files, video_checks)
        except SourceError as e:
            problems.append({"video": entry, "reason": f"{e.kind}: {e}"})
            continue
        except OSError as e:
            problems.append({"video": entry, "reason": f"unreadable: {e.strerror}"})
            continue
        if n == 0:
            problems.append({"video": entry, "reason": "empty"})
        elif n < min_frames:
            problems.append({"video": entry, "reason": f"too short: {n} frames, {min_frames} needed"})
        else:
            found.append(Video(class_name, video_id, cand.path, n, cand.kind, cand.member))
            if cand.kind != ZIP:
                _note_link(root, class_folder, cand, linked)
    if problems and bad_videos == "error":
        listing = "\n".join(f"    {p['video']}: {p['reason']}" for p in problems[:20])
        more = f"\n    ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        reasons = {p["reason"].split(":")[0] for p in problems}
        todo = "extract (again) the videos listed"
        if reasons <= {"truncated", "damaged"}:
            todo = "download again (or re-encode) the video files listed"
        elif reasons & {"truncated", "damaged"}:
            todo = "download again (or re-encode) the truncated or damaged video files and extract (again) the other videos listed"
        if "too short" in reasons:
            todo += f", or lower frames.count (now {min_frames}) if short videos are expected"
        raise HarnessError(
            f"{len(problems)} of {len(entries)} videos listed in {split_file} cannot be used:\n{listing}{more}",
            where=where,
            fix=f"{todo}, or set dataset.bad_videos: exclude to leave them out (the exclusion is recorded in the results)",
        )
    classes = sorted({v.class_name for v in found})
    position = {c: i for i, c in enumerate(classes)}
    by_class: list[list[int]] = [[] for _ in classes]
    for i, v in enumerate(found):
        by_class[position[v.class_name]].append(i)
    return VideoIndex(part, classes, found, by_class, problems, renamed, sorted(linked.values(), key=lambda d: d["link"]))


def _note_link(root: Path, class_folder: str, cand: _Candidate, linked: dict[str, dict]) -> None:
    """Count the video in `linked` when its class folder or itself is a symbolic link that leaves the root."""
    inside = root.resolve()
    for link, path in ((class_folder, root / class_folder), (f"{class_folder}/{cand.shown}", cand.path)):
        if path.is_symlink():
            target = path.resolve()
            if not target.is_relative_to(inside):
                linked.setdefault(link, {"link": link, "target": str(target), "videos": 0})["videos"] += 1
                return

"""Split files: one `<class>/<video>` per line (the published format of the few-shot splits)."""
from __future__ import annotations

from pathlib import Path

from harness.errors import HarnessError


def read_split_file(path: Path) -> list[tuple[str, str]]:
    """[(class, video), ...] in file order. Refuses entries that could point outside the data root."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise HarnessError(f"split file {path} does not exist", fix="check dataset.root / dataset.split_dir and dataset.splits in the protocol") from None
    except OSError as e:
        raise HarnessError(f"cannot read split file {path}: {e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise HarnessError(f"split file {path} is not UTF-8 text (byte {e.start})", fix="split files are plain text, one class/video per line") from None
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        where = f"{path}, line {number}"
        if "\x00" in line:
            raise HarnessError("a split entry contains a NUL byte", where=where, fix="remove the line or repair the file")
        if line.startswith("/") or "\\" in line:
            raise HarnessError(f"split entry '{line}' is an absolute or Windows path", where=where, fix="write entries as class/video, relative to the data root")
        class_name, sep, video = line.partition("/")
        if not sep or not class_name or not video:
            raise HarnessError(f"split entry '{line}' is not of the form class/video", where=where, fix="one class/video per line, as in the published split files")
        if ".." in (class_name, *video.split("/")) or class_name == ".":
            raise HarnessError(f"split entry '{line}' climbs out of the data root with '..'", where=where, fix="remove the line; entries name a class folder and a video folder inside the root")
        entries.append((class_name, video))
    if not entries:
        raise HarnessError(f"split file {path} lists no videos", fix="point dataset.splits at a file with one class/video per line")
    return entries

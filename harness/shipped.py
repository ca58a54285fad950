"""Where the shipped protocols (`protocols/*.yaml`) and split manifests (`splits/*.yaml`) are.

In a checkout (an editable install too) they are the top-level folders beside `harness/`. A wheel carries the
same files inside the package, as `harness/_shipped/protocols/` and `harness/_shipped/splits/` (pyproject.toml
maps the folders there), found through importlib.resources. Everything that reads a shipped file asks here.
"""
from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path

from harness.errors import HarnessError

KINDS = ("protocols", "splits")
#: the checkout's root when harness/ is imported from one; site-packages when installed
_ROOT = Path(__file__).resolve().parent.parent


def _in_checkout(kind: str) -> bool:
    return (_ROOT / "bench.py").is_file() and (_ROOT / "pyproject.toml").is_file() and (_ROOT / kind).is_dir()


@functools.cache
def shipped_dir(kind: str) -> Path:
    """The folder of the shipped `kind` ("protocols" or "splits"): the checkout's when the harness runs from a
    checkout, else the installed package's. It may be missing (an install without its data): `shipped_files`
    then says so."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    if _in_checkout(kind):
        return _ROOT / kind
    installed = resources.files("harness") / "_shipped" / kind
    # a wheel installs plain files, so this is a Path; a zipped package would give a path that does not exist
    return installed if isinstance(installed, Path) else Path(str(installed))


def shipped_files(kind: str) -> list[Path]:
    """The shipped `kind` files (*.yaml), sorted by name; an error naming the folder when there are none."""
    folder = shipped_dir(kind)
    files = sorted(folder.glob("*.yaml"))
    if not files:
        raise HarnessError(f"the shipped {kind} are missing: {folder} holds no .yaml file",
                           fix="reinstall fsv-bench from its checkout (`pip install .`) or from its wheel: both carry protocols/*.yaml and splits/*.yaml")
    return files

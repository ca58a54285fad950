"""Names that become parts of file names: protocol, method, backbone and dataset names.

A name is 1 to 100 characters: letters, digits, '.', '_' and '-', starting with a letter or a digit, and with
no '..' in it. So a name is always one plain folder or file name: never a path ('/', '\\'), never a way up
('..'), never hidden ('.x'), never an option ('-x'), never empty, and the same on every file system.
"""
from __future__ import annotations

import re

from harness.errors import HarnessError

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
NAME_RULE = "1 to 100 letters, digits, '.', '_' or '-', starting with a letter or digit, without '..'"


def name_problem(name) -> str | None:
    """Why `name` cannot be used as a file name by the harness, or None when it can."""
    if not isinstance(name, str):
        return f"a name must be text, got {name!r}"
    if not name:
        return "the name is empty"
    if "/" in name or "\\" in name:
        return f"'{_shown(name)}' holds a path separator"
    if ".." in name:
        return f"'{_shown(name)}' holds '..'"
    if not NAME_PATTERN.fullmatch(name):
        if len(name) > 100:
            return f"the name is {len(name)} characters long, more than 100"
        bad = sorted({c for c in name if not (c.isascii() and (c.isalnum() or c in "._-"))})
        if bad:
            return f"'{_shown(name)}' holds {', '.join(repr(c) for c in bad[:5])}"
        return f"'{_shown(name)}' starts with '{name[0]}'"
    return None


def check_name(name, what: str, where: str | None = None, fix: str | None = None) -> str:
    """`name` when it is a safe name, else a HarnessError naming `what` (e.g. "protocol name") and the rule."""
    problem = name_problem(name)
    if problem:
        raise HarnessError(f"{what} cannot be used as a folder name: {problem}", where=where, fix=fix or f"use {NAME_RULE}")
    return name


def _shown(name: str) -> str:
    return name if len(name) <= 60 else name[:57] + "..."

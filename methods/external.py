"""Methods from outside this folder: installed plug-ins, `--method package.module:Class`, a protocol's `imports:`.

Each way ends in `methods.registry.register`, so a method from outside is a method like the built-in ones:

    entry points    an installed distribution declares, in group `fsv_bench.methods`, `NAME = "pkg.module:Class"`
                    (a Head class, registered as NAME; a class that registers itself with @register must use
                    NAME) or `NAME = "pkg.module"` (a module whose import registers NAME). The entry point's name
                    is the method's name, so asking for NAME (`registry.get`) loads that entry point only;
                    `list_methods` loads them all. Each is loaded at most once per process; one that cannot be
                    loaded is an error naming its distribution, the entry point and the exception when its
                    method is asked for, and a line of `bench.py list`, never a failure of another method.
    module:Class    `--method pkg.module:Class` imports pkg.module and registers Class under the name it
                    registered itself with (@register), else under "pkg-module-Class"; asked for by that name
                    later (a protocol's `methods:`, `--method pkg-module-Class`), the class is found again.
    imports         a protocol's `imports: [pkg.a, pkg.b]` are imported before its methods are resolved.

`module:Class` and `imports:` find modules on sys.path, then in the current directory (appended last, so that
nothing importable before changes: the harness's own `harness` and `methods` stay its own, harness/packages.py).
"""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import inspect
import os
import re
import sys
import traceback
from collections.abc import Callable, Sequence

from harness.errors import HarnessError
from harness.names import NAME_RULE, name_problem
from harness.protocol import MODULE_NAME
import methods.registry as registry
from methods.base import Head

GROUP = "fsv_bench.methods"
#: `module:Class` (the class may be an attribute path, Outer.Inner)
SPEC = re.compile(rf"(?P<module>{MODULE_NAME.pattern}):(?P<attr>{MODULE_NAME.pattern})")

_entry_points: tuple | None = None  # found once per process
_outcomes: dict[tuple, str | None] = {}  # entry point -> None (loaded) or why it cannot be


# ---------------------------------------------------------------------------------------------- entry points


def entry_points() -> tuple:
    """The installed entry points of group `fsv_bench.methods`, by name (found once per process)."""
    global _entry_points
    if _entry_points is None:
        _entry_points = tuple(sorted(importlib.metadata.entry_points(group=GROUP), key=lambda ep: (ep.name, ep.value)))
    return _entry_points


def load(name: str) -> None:
    """Register `name` from the entry points named `name`; failing that, from all of them (a module plug-in may
    register other names); failing that, when `name` has the form `derived_name` gives, from the module and class
    it names. An entry point named `name` that cannot be loaded is a HarnessError."""
    for ep in (ep for ep in entry_points() if ep.name == name):
        problem = _load(ep)
        if problem is not None and name not in registry._REGISTRY:
            raise HarnessError(f"method '{name}' cannot be loaded: {problem}", where=describe(ep), fix=_fix(ep))
    if name not in registry._REGISTRY:
        load_all()
    if name not in registry._REGISTRY:
        _load_derived(name)


def load_all() -> list[tuple[str, str]]:
    """Load every entry point; (name, "where: what") of each that cannot be loaded."""
    return [(ep.name, f"{describe(ep)}: {problem}") for ep in entry_points() if (problem := _load(ep)) is not None]


def describe(ep) -> str:
    """Which entry point of which distribution, in words."""
    dist = getattr(ep, "dist", None)
    who = f"distribution '{dist.metadata['Name']} {dist.version}'" if dist is not None else "an unnamed distribution"
    return f"{who}, entry point '{ep.name} = {ep.value}' (group {GROUP})"


def _fix(ep) -> str:
    dist = getattr(ep, "dist", None)
    name = dist.metadata["Name"] if dist is not None else "the distribution"
    return f"correct the plug-in, reinstall it (pip install --force-reinstall {name}) or remove it (pip uninstall {name}); other methods are not affected"


def _load(ep) -> str | None:
    key = (ep.name, ep.value, getattr(getattr(ep, "dist", None), "name", None))
    if key not in _outcomes:
        _outcomes[key] = _register_entry_point(ep)
    return _outcomes[key]


def _register_entry_point(ep) -> str | None:
    problem = name_problem(ep.name)
    if problem:
        return f"its name cannot be a method name: {problem} (a method name is {NAME_RULE})"
    try:
        target = ep.load()
    except Exception as e:  # noqa: BLE001  (whatever a plug-in raises, it is reported, not shown as a traceback)
        return exception_text(e)
    if inspect.ismodule(target):
        if ep.name not in registry._REGISTRY:
            return f"importing {ep.value} registered no method '{ep.name}' (a module entry point must register the method it is named after)"
        return None
    try:
        _register_class(target, ep.name, f"'{ep.value}'", entry_point=True)
    except ValueError as e:
        return str(e)
    return None


# ---------------------------------------------------------------------------------------------- module:Class


def method_name(text: str, where: str = "--method") -> str:
    """The registered name of a `--method` value: `package.module:Class` is imported and registered (see the
    module docstring); anything else is taken as a name."""
    if ":" not in text:
        return text
    match = SPEC.fullmatch(text)
    if not match:
        raise HarnessError(f"'{text}' is neither a method name nor package.module:Class", where=where,
                           fix="write a registered method's name (bench.py list), or the module and the Head class, e.g. mypkg.heads:Cosine")
    module = import_module(match["module"], where)
    target = module
    for part in match["attr"].split("."):
        if not hasattr(target, part):
            raise HarnessError(f"module '{module.__name__}' ({module.__file__}) has no '{match['attr']}'", where=where, fix="check the class's name and the module it is defined in")
        target = getattr(target, part)
    try:
        return _register_class(target, derived_name(text), f"'{text}'")
    except ValueError as e:
        raise HarnessError(str(e), where=where, fix="register the class under a name of your own: @register(\"mymethod\") from methods.registry") from None


def derived_name(spec: str) -> str:
    """The name of a Head class given as `package.module:Class` that registered none of its own:
    "package-module-Class". Module and class names hold no '-', so the name leads back to the class; it holds no
    '.', which `--set methods.NAME.setting=...` and protocol field paths read as a separator."""
    return spec.replace(":", "-").replace(".", "-")


def _load_derived(name: str) -> None:
    """A `derived_name`, registered again from its module and class, so that the name works wherever a method
    name does (a protocol's `methods:`, `--method`, a later command). Nothing happens when no module found on
    sys.path or in the current directory holds such a Head class."""
    parts = name.split("-")
    if len(parts) < 2 or not all(MODULE_NAME.fullmatch(part) for part in parts):
        return
    _current_directory_importable()
    for cut in range(len(parts) - 1, 0, -1):  # the longest module first: package.module, then package
        module = ".".join(parts[:cut])
        try:
            found = importlib.util.find_spec(module) is not None
        except Exception:  # noqa: BLE001  (a parent that is no package: not this split)
            found = False
        if not found:
            continue
        target = import_module(module, f"method '{name}'")
        for part in parts[cut:]:
            target = getattr(target, part, None)
        if inspect.isclass(target) and issubclass(target, Head) and all(cls is not target for cls in registry._REGISTRY.values()):
            registry.register(name)(target)
        return


def _register_class(target, name: str, shown: str, entry_point: bool = False) -> str:
    """The registered name of the Head class `target`: the one it registered itself under (@register), else
    `name`, under which it is registered now. An entry point's class must carry the entry point's name. ValueError
    (a sentence naming `shown`, the text that named the class) when it cannot be."""
    if not (inspect.isclass(target) and issubclass(target, Head)):
        raise ValueError(f"{shown} is {target!r}, not a Head class (a subclass of methods.base.Head)")
    own = next((n for n, cls in registry._REGISTRY.items() if cls is target), None)
    if own is not None and entry_point and own != name:
        raise ValueError(f"{shown} registers itself as '{own}', not '{name}': an entry point's name is its method's name")
    if own is not None:
        return own
    problem = name_problem(name)
    if problem:
        raise ValueError(f"{shown} cannot be registered as '{name}': {problem}; a method name is {NAME_RULE}")
    registry.register(name)(target)
    return name


# ------------------------------------------------------------------------------------------------- imports


def import_module(name: str, where: str):
    """Import module `name` (from sys.path, then the current directory); a module that is missing or whose import
    fails is a HarnessError naming `where`, the module and the exception, without a traceback."""
    cwd = _current_directory_importable()
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name and (name == e.name or name.startswith(e.name + ".")):
            raise HarnessError(f"no module named '{name}' (searched sys.path and the current directory, {cwd})", where=where,
                               fix="install the distribution that holds it, run from the folder that holds it, or add its folder to PYTHONPATH") from None
        raise HarnessError(f"importing '{name}' failed: {exception_text(e)}", where=where, fix="install what the module needs, or correct it") from None
    except Exception as e:  # noqa: BLE001  (its own error, reported without a traceback)
        raise HarnessError(f"importing '{name}' failed: {exception_text(e)}", where=where, fix="correct the module") from None


def _current_directory_importable() -> str:
    """Append the current directory to sys.path (last: a module there never hides an installed one, nor the
    harness's own packages); return it."""
    cwd = os.getcwd()
    if cwd not in (os.path.abspath(p or os.curdir) for p in sys.path):
        sys.path.append(cwd)
        importlib.invalidate_caches()
    return cwd


def import_modules(names: Sequence[str], where: Callable[[str], str]) -> None:
    """A protocol's `imports:`, in order; `where(field)` names the file that listed each (`imports[0]`, ...)."""
    for i, name in enumerate(names):
        import_module(name, where(f"imports[{i}]"))


def exception_text(e: BaseException) -> str:
    """'Type: message (file, line N)': the exception and the last line of the plug-in's own code it passed."""
    skip = tuple(os.path.dirname(f) + os.sep for f in (importlib.__file__, __file__))  # importlib's and the harness's methods/
    frames = [f for f in traceback.extract_tb(e.__traceback__) if not f.filename.startswith("<") and not f.filename.startswith(skip)]
    at = f" ({frames[-1].filename}, line {frames[-1].lineno})" if frames and not isinstance(e, SyntaxError) else ""
    return f"{type(e).__name__}: {e}{at}"

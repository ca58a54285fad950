"""The harness's own packages, `harness` and `methods`, found where they lie rather than by their names.

Both names are common: a project that uses the harness may have a `methods/` or `harness/` folder of its own,
beside a script that calls `harness.cli.main`, in the working directory of `python -m`, or on PYTHONPATH, and
Python imports the first folder of that name on `sys.path` (an editable install is searched after all of them).
Then `methods.list_methods` would be looked up in the user's folder. Importing this module puts a finder first
on `sys.meta_path` that answers these two names with the folders beside this file, so every later
`import methods` or `from methods.registry import register` in this process (the harness's, or an external
method's) gets the harness's own package. A module of either name imported before the harness, from
elsewhere, is replaced (with a note naming its file, when it has one); the user's own package of that name
cannot be imported as that name in the same process.

The command line, and the harness modules that use the heads (pipeline, train, calibrate, ...), import this
module before `methods`. `harness/__init__.py` does not: the pytest plug-in `harness.regression` loads
`harness` into every pytest session of an environment where fsv-bench is installed, and other projects'
`methods` must stay theirs there.
"""
from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OWN = ("harness", "methods")


class _OwnPackages(importlib.abc.MetaPathFinder):
    """Finds `harness` and `methods` (the packages only; their modules follow from the package's __path__)."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in OWN:
            return None
        return importlib.util.spec_from_file_location(fullname, ROOT / fullname / "__init__.py", submodule_search_locations=[str(ROOT / fullname)])


FINDER = _OwnPackages()


def _is_own(module, name: str) -> bool:
    file = getattr(module, "__file__", None)
    return file is not None and Path(file).resolve() == ROOT / name / "__init__.py"


def _inside(module, name: str) -> bool:
    file = getattr(module, "__file__", None)
    return file is not None and Path(file).resolve().is_relative_to(ROOT / name)


def claim() -> None:
    """Make `harness` and `methods` the harness's own in this process (see the module docstring); idempotent."""
    if FINDER not in sys.meta_path:
        sys.meta_path.insert(0, FINDER)
    for name in OWN:
        module = sys.modules.get(name)
        if module is None or _is_own(module, name):
            continue
        if getattr(module, "__file__", None):  # code of the user's (a folder without __init__.py holds none to lose)
            print(f"note: '{name}' was imported from {module.__file__}; fsv-bench uses its own ({ROOT / name}) in this process "
                  f"(rename your '{name}' to import both in one process)", file=sys.stderr)
        ours = [k for k in sys.modules if k.startswith(name + ".") and _inside(sys.modules[k], name)]
        for key in [k for k in sys.modules if k.startswith(name + ".") and k not in ours]:
            del sys.modules[key]  # the foreign package's modules would stand in for ours of the same name
        del sys.modules[name]
        if name == "harness":  # this module and the others already running are ours: keep them, under our package
            package = importlib.import_module(name)
            for key in ours:
                parent, _, child = key.rpartition(".")
                if parent == name:
                    setattr(package, child, sys.modules[key])


claim()

"""What made a number: the code that computed it and the machine it ran on.

A result is reused only when the code that computes it is the code that computed it. Three hashes say which:

    head code       the source of the module defining the head class and of every module of its own package,
                    or of `methods`, that those import (transitively), plus harness/evaluate.py, which
                    gathers episodes and scores them;
    backbone code   the source of the module registering the backbone and the `harness.backbones` modules it
                    imports, the modules that turn frames into clips (harness.data.clips and .sources; not the
                    batching and worker processes around them, harness.data.loader, which compute no pixel),
                    the functions that run the backbone on a clip, and the torch and torchvision versions (their
                    kernels and layers decide the features' bits);
    git             the commit and whether the checkout has uncommitted changes, when the harness runs from a
                    git checkout: provenance for a reader. It is not part of any cache key: a key made of it
                    would re-score everything after a commit that touched only a README, and a dirty flag
                    cannot tell two different edits apart; the source hashes above can.

A head or backbone whose source cannot be read (defined at an interactive prompt) gets a hash that is new in
every process, so its results are never reused.
"""
from __future__ import annotations

import ast
import functools
import hashlib
import importlib
import importlib.util
import inspect
import os
import platform
import re
import subprocess
import sys
import uuid
from pathlib import Path

import torch

#: modules whose source is part of every head's code: the scoring loop
SCORING_MODULES = ("harness.evaluate",)
#: modules whose source is part of every backbone's code: frames to clips
CLIP_MODULES = ("harness.data.clips", "harness.data.sources")


def _module_source(name: str) -> bytes | None:
    """The bytes of a module's source file as it is on disk now (None when it has none)."""
    module = sys.modules.get(name) or importlib.import_module(name)
    path = getattr(module, "__file__", None)
    if not path or not path.endswith(".py"):
        return None
    try:
        return Path(path).read_bytes()
    except OSError:
        return None


def _imports(name: str, source: bytes) -> set[str]:
    """Absolute names of the modules `source` (the module `name`) imports, relative imports resolved."""
    return _parsed_imports(name, source, _is_package(name))


@functools.lru_cache(maxsize=1024)  # by the source's bytes: a file edited since gives a new entry
def _parsed_imports(name: str, source: bytes, is_package: bool) -> frozenset[str]:
    found: set[str] = set()
    package = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return frozenset(found)


def _is_package(name: str) -> bool:
    module = sys.modules.get(name)
    return module is not None and hasattr(module, "__path__")


def _exists(name: str) -> bool:
    if name in sys.modules:
        return True
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def module_closure(roots: list[str], packages: tuple[str, ...]) -> list[str]:
    """`roots` and every module they import, transitively, that lies inside one of `packages`; sorted."""
    inside = lambda n: any(n == p or n.startswith(p + ".") for p in packages)  # noqa: E731
    seen, todo = set(), list(roots)
    while todo:
        name = todo.pop()
        if name in seen or not _exists(name):
            continue
        seen.add(name)
        source = _module_source(name)
        if source is not None:
            todo.extend(n for n in _imports(name, source) if inside(n) and n not in seen)
    return sorted(seen)


def sources_sha256(modules: list[str], extra: list[bytes] = ()) -> str:
    """SHA-256 over the named modules' source (name, length and bytes of each) and `extra` byte strings.
    A module without readable source makes the hash new in this process (never matched again)."""
    h = hashlib.sha256()
    for name in modules:
        source = _module_source(name)
        if source is None:
            source = f"unreadable source {uuid.uuid4()}".encode()
        h.update(f"{name}\0{len(source)}\0".encode() + source)
    for blob in extra:
        h.update(f"extra\0{len(blob)}\0".encode() + blob)
    return h.hexdigest()


def head_code(head_class: type) -> dict:
    """{"head_sha256", "head_modules"} of a head class: see the module docstring."""
    own = [c.__module__ for c in head_class.__mro__ if c.__module__.split(".")[0] not in ("torch", "builtins", "abc")]
    packages = tuple(sorted({"methods", *(m.split(".")[0] for m in own if m != "__main__")}))
    modules = module_closure(list(dict.fromkeys(own)), packages)
    extra = []
    if "__main__" in own:  # a head defined in a script: its class source, when it can be read
        try:
            extra.append(inspect.getsource(head_class).encode())
        except (OSError, TypeError):
            extra.append(f"unreadable source {uuid.uuid4()}".encode())
        modules = [m for m in modules if m != "__main__"]
    return {"head_sha256": sources_sha256(sorted(set(modules) | set(SCORING_MODULES)), extra), "head_modules": modules}


def torchvision_version() -> str:
    """torchvision.__version__ (local part included, e.g. '0.29.1+cu130'), read from its version.py when
    torchvision is not imported yet: importing it takes 3 s, which a command serving stored results never needs."""
    module = sys.modules.get("torchvision")
    if module is None:
        try:
            spec = importlib.util.find_spec("torchvision")
            text = (Path(spec.submodule_search_locations[0]) / "version.py").read_text(encoding="utf-8")
            return re.search(r"^__version__ = ['\"]([^'\"]+)['\"]", text, re.M).group(1)
        except (AttributeError, IndexError, TypeError, OSError, UnicodeDecodeError):  # another layout: ask it
            import torchvision as module
    return module.__version__


@functools.lru_cache(maxsize=None)
def backbone_code_sha256(backbone: str) -> str:
    """SHA-256 of the code that turns a video's frames into its backbone map: see the module docstring."""
    from harness.backbones.registry import backbone_factory
    from harness.features import embed_clips, prepare_backbone

    factory = backbone_factory(backbone)
    modules = sorted(set(module_closure([factory.__module__], ("harness.backbones",))) | set(CLIP_MODULES))
    functions = [inspect.getsource(f).encode() for f in (embed_clips, prepare_backbone)]
    versions = f"torch {torch.__version__}; torchvision {torchvision_version()}".encode()
    return sources_sha256(modules, [*functions, versions])


@functools.lru_cache(maxsize=1)
def git_version() -> dict:
    """{"git_commit", "git_dirty"} of the checkout the harness runs from; None for both outside one."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return {"git_commit": None, "git_dirty": None}
    try:
        run = functools.partial(subprocess.run, cwd=root, capture_output=True, text=True, timeout=20, check=True)
        commit = run(["git", "rev-parse", "HEAD"]).stdout.strip()
        dirty = bool(run(["git", "status", "--porcelain", "--untracked-files=no"]).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": None, "git_dirty": None}
    return {"git_commit": commit, "git_dirty": dirty}


def code_record(head_class: type, backbone: str) -> dict:
    """The `code` field of a run summary."""
    import harness

    return {"harness_version": harness.__version__, **head_code(head_class), "backbone_code_sha256": backbone_code_sha256(backbone), **git_version()}


def _scoring_threads(device: torch.device) -> dict | None:
    """How the CPU scored and embedded (harness/threads.py): lanes of one intra-op thread; None on a GPU."""
    from harness.threads import policy

    return policy() if torch.device(device).type == "cpu" else None


def environment(device: torch.device) -> dict:
    """The `environment` field of a run summary: where the arithmetic ran and with which settings."""
    cuda = device.type == "cuda"
    return {
        "device_name": torch.cuda.get_device_name(device) if cuda else (platform.processor() or platform.machine()),
        "cpu_count": os.cpu_count(),
        "cuda": torch.version.cuda if cuda else None,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "torch_threads": torch.get_num_threads(),
        "scoring_threads": _scoring_threads(device),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
    }

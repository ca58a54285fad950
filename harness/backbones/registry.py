"""The backbone registry and safe weight loading."""
from __future__ import annotations

import fnmatch
import hashlib
import importlib
import re
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from harness.errors import HarnessError

_BACKBONES: dict[str, Callable[[], nn.Module]] = {}
#: backbones whose module is imported when one of them is first asked for: name -> module
_DEFERRED: dict[str, str] = {}


def defer_backbones(module: str, names: tuple[str, ...]) -> None:
    """Declare that importing `module` registers the backbones `names`, and import it only when one is asked
    for (the modules built on torchvision's model classes cost 3 s of start-up that most commands never need)."""
    for name in names:
        _DEFERRED[name] = module


def register_backbone(name: str):
    from harness.names import NAME_RULE, name_problem

    problem = name_problem(name)
    if problem:  # the name becomes part of feature-store folders and weight file names
        raise ValueError(f"backbone name {name!r} cannot be registered: {problem}; a backbone name is {NAME_RULE}")

    def add(factory: Callable[[], nn.Module]):
        _BACKBONES[name] = factory
        return factory

    return add


def list_backbones(pattern: str = "*") -> list[str]:
    return sorted(n for n in _BACKBONES.keys() | _DEFERRED.keys() if fnmatch.fnmatch(n, pattern))


def backbone_factory(name: str) -> Callable[[], nn.Module]:
    """The function registered as backbone `name` (its module is the backbone's code)."""
    if name not in _BACKBONES and name in _DEFERRED:
        importlib.import_module(_DEFERRED[name])
        if name not in _BACKBONES:
            raise RuntimeError(f"module {_DEFERRED[name]} did not register backbone '{name}', which it was declared to")
    if name not in _BACKBONES:
        raise HarnessError(f"unknown backbone '{name}'", where="field 'backbone.name'", fix=f"use one of: {', '.join(list_backbones())}")
    return _BACKBONES[name]


def create_backbone(name: str) -> nn.Module:
    return backbone_factory(name)()


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def safe_torch_load(path: Path, what: str, where: str | None, code_fix: str):
    """torch.load(weights_only=True), with the three ways it fails told apart: the file cannot be read, it
    carries code (refused without running it), or it is damaged / not a PyTorch file."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except OSError as e:
        raise HarnessError(f"{what} cannot be read: {e.strerror or e}", where=where, fix="check the path and its permissions") from None
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError or others for files it refuses
        text = str(e)
        code = re.search(r"GLOBAL ([\w.]+)", text)
        if code:  # torch's own advice (load it with weights_only=False) is exactly what must not be done
            raise HarnessError(f"{what} cannot be loaded safely: it asks for '{code.group(1)}', which could run code; it was refused without running anything", where=where, fix=code_fix) from None
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        detail = [line for line in lines if not line.lower().startswith(("weights only load failed", "check the documentation", "please file an issue"))]
        reason = (detail or lines or [type(e).__name__])[0].removeprefix("WeightsUnpickler error:").strip() or type(e).__name__
        if len(reason) > 100:  # miniz's explanation runs on for several sentences
            reason = reason.split(". ")[0]
        raise HarnessError(
            f"{what} cannot be loaded safely: it is damaged or not a PyTorch file ({reason})",
            where=where,
            fix="download or copy the file again (a partial download is the usual cause) and compare its sha256sum with the published one",
        ) from None


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a weight file, refusing anything that would run code on load (weights_only)."""
    where = "field 'backbone.weights'"
    if not path.is_file():
        what = f"weights file {path} is not a file" if path.exists() else f"weights file {path} does not exist"
        raise HarnessError(what, where=where, fix="set backbone.weights (or --set backbone.weights=FILE) to a weight file you downloaded; the harness never downloads weights")
    obj = safe_torch_load(path, f"weights file {path}", where, "pass a plain PyTorch state dict (torch.save(model.state_dict())); files that carry code are refused")
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise HarnessError(f"weights file {path} holds no state dict of tensors", where=where, fix="pass a file saved with torch.save(model.state_dict()), or a checkpoint whose 'state_dict' is one")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_weights(model: nn.Module, path: Path, name: str, ignore: tuple[str, ...] = ()) -> str:
    """Load a weight file into `model` strictly (keys starting with `ignore` are skipped); return its SHA-256."""
    state = {k: v for k, v in read_state_dict(path).items() if not k.startswith(ignore)}
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    if missing and all(k.endswith("num_batches_tracked") for k in missing):
        # files saved before PyTorch 0.4.1 lack BatchNorm's batch counters, which evaluation never reads
        state.update({k: own[k] for k in missing})
        missing = []
    unexpected = sorted(set(state) - set(own))
    wrong_shape = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong_shape:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} keys (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} keys (e.g. {', '.join(unexpected[:3])})")
        if wrong_shape:
            k = wrong_shape[0]
            parts.append(f"{len(wrong_shape)} keys of another shape (e.g. {k}: file {tuple(state[k].shape)}, model {tuple(own[k].shape)})")
        raise HarnessError(
            f"weights file {path} does not fit backbone '{name}': " + "; ".join(parts),
            where="field 'backbone.weights'",
            fix="check that backbone.name matches the architecture the file was saved from",
        )
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise HarnessError(f"weights file {path} holds NaN or Inf values in {', '.join(bad[:3])}", where="field 'backbone.weights'", fix="the file is damaged or came from a diverged training run; use another")
    model.load_state_dict(state, strict=True)
    return sha256_file(path)

"""Method checkpoints: a head's weights with what they were trained for, loaded without running code.

    <home>/checkpoints/<protocol>/<method>/best.pt          the model selected on val
    <home>/checkpoints/<protocol>/<method>/last.pt          the state to resume training from
    <home>/checkpoints/<protocol>/<method>/train_log.jsonl  step, loss, val accuracy
    <home>/checkpoints/<protocol>/<method>/summary.json      what was selected, on what

A checkpoint is a dict of tensors and plain values saved with torch.save and read with weights_only=True.
"""
from __future__ import annotations

import io
import sys
from pathlib import Path

import torch

from harness.backbones.registry import safe_torch_load
from harness.errors import HarnessError
from harness.files import atomic_write_bytes
from harness.names import check_name

FORMAT = "fsv-bench-checkpoint/1"


def checkpoint_dir(home: Path, protocol: str, method: str) -> Path:
    check_name(protocol, f"protocol name {protocol!r}")  # folders under <home>/checkpoints, never paths out of it
    check_name(method, f"method name {method!r}")
    return home / "checkpoints" / protocol / method


def save_checkpoint(path: Path, payload: dict) -> None:
    """Write a checkpoint atomically. Equal payloads give equal bytes (see `_canonical`)."""
    buffer = io.BytesIO()
    torch.save(_canonical({"format": FORMAT, **payload}), buffer)
    atomic_write_bytes(path, buffer.getvalue())


def _canonical(value):
    """The same values in fresh containers, every string interned. pickle writes an object it has written before
    as a reference to it, so the bytes depend on which values are the same object: an optimizer state loaded
    from last.pt holds other string objects than a fresh one. Here that depends on the values alone, and a
    resumed training writes the bytes of an uninterrupted one."""
    if type(value) is str:
        return sys.intern(value)
    if isinstance(value, dict):  # dict or OrderedDict (a state dict, whose _metadata holds module versions)
        out = type(value)((_canonical(k), _canonical(v)) for k, v in value.items())
        if hasattr(value, "_metadata"):
            out._metadata = _canonical(value._metadata)
        return out
    if type(value) in (list, tuple):
        return type(value)(_canonical(v) for v in value)
    return value


def load_checkpoint(path: Path) -> dict:
    if not path.is_file():
        what = f"checkpoint {path} is not a file" if path.exists() else f"checkpoint {path} does not exist"
        raise HarnessError(what, fix="pass --checkpoint a file written by `fsv-bench train` or `fsv-bench import-checkpoint`")
    data = safe_torch_load(
        path,
        f"checkpoint {path}",
        None,
        "checkpoints that carry code are refused; convert a reference checkpoint with `fsv-bench import-checkpoint`",
    )
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise HarnessError(f"{path} is not a checkpoint of this harness", fix="convert a reference checkpoint with `fsv-bench import-checkpoint --from trx|staf FILE`")
    for name in ("state_dict", "backbone_state"):
        state = data.get(name, {})
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise HarnessError(f"checkpoint {path} is damaged: its '{name}' is not a dict of tensors", fix="retrain, or pick another checkpoint")
        for key, value in state.items():
            if value.is_floating_point() and not torch.isfinite(value).all():
                raise HarnessError(f"checkpoint {path} holds NaN or Inf in '{key}'", fix="the training diverged or the file is damaged; retrain or pick another checkpoint")
    return data

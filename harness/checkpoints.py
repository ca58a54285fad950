"""Method checkpoints: a head's weights with what they were trained for, loaded without running code.

    <home>/checkpoints/<protocol>/<method>/best.pt          the model selected on val
    <home>/checkpoints/<protocol>/<method>/last.pt          the state to resume training from
    <home>/checkpoints/<protocol>/<method>/train_log.jsonl  step, loss, val accuracy
    <home>/checkpoints/<protocol>/<method>/summary.json      what was selected, on what

A checkpoint is a dict of tensors and plain values saved with torch.save and read with weights_only=True.
"""
from __future__ import annotations

import io
from pathlib import Path

import torch

from harness.errors import HarnessError
from harness.files import atomic_write_bytes

FORMAT = "fsv-bench-checkpoint/1"


def checkpoint_dir(home: Path, protocol: str, method: str) -> Path:
    return home / "checkpoints" / protocol / method


def save_checkpoint(path: Path, payload: dict) -> None:
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **payload}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: Path) -> dict:
    if not path.is_file():
        raise HarnessError(f"checkpoint {path} does not exist")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # refused pickles and damaged files alike
        raise HarnessError(
            f"checkpoint {path} cannot be loaded safely: {str(e).splitlines()[0]}",
            fix="checkpoints that carry code are refused; convert a reference checkpoint with `python bench.py import-checkpoint`",
        ) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise HarnessError(f"{path} is not a checkpoint of this harness", fix="convert a reference checkpoint with `python bench.py import-checkpoint --from trx|staf FILE`")
    for key, value in data.get("state_dict", {}).items():
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise HarnessError(f"checkpoint {path} holds NaN or Inf in '{key}'", fix="the training diverged or the file is damaged; retrain or pick another checkpoint")
    return data

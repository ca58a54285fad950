"""Converting checkpoints saved by the public reference implementations into this harness's format.

    fsv-bench import-checkpoint --from trx|staf FILE --protocol P

writes two files: the head as a harness checkpoint, and the backbone the reference fine-tuned
(`resnet.*` for TRX, `base.*` for STAF) as a plain weights file under the names the harness's backbone
uses. Evaluate with `--checkpoint HEAD --set backbone.weights=BACKBONE`: the published model then runs on
this harness's seeded episodes.
"""
from __future__ import annotations

import io
from pathlib import Path

import torch

import harness.packages  # noqa: F401  (the harness's own methods/, whatever sys.path holds)
import methods
from harness.backbones import sha256_file
from harness.backbones.registry import safe_torch_load
from harness.checkpoints import save_checkpoint
from harness.errors import HarnessError
from harness.files import atomic_write_bytes
from harness.pipeline import head_settings
from harness.protocol import Protocol

# TRX keeps torchvision's ResNet children in an nn.Sequential: position -> torchvision name
_TORCHVISION_RESNET_CHILDREN = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}
REFERENCES = {"trx": ("resnet.", "trx"), "staf": ("base.", "staf")}


def read_reference(path: Path) -> dict[str, torch.Tensor]:
    """The state dict in a reference checkpoint, read without running code, `module.` segments dropped."""
    if not path.is_file():
        raise HarnessError(f"checkpoint file {path} does not exist")
    data = safe_torch_load(path, f"checkpoint file {path}", None, "only checkpoints of tensors and plain values are read; a file that carries code is refused")
    for wrapper in ("model_state_dict", "state_dict"):
        if isinstance(data, dict) and isinstance(data.get(wrapper), dict):
            data = data[wrapper]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise HarnessError(f"{path} holds no state dict of tensors")
    return {".".join(p for p in k.split(".") if p != "module"): v for k, v in data.items()}


def backbone_state(state: dict[str, torch.Tensor], reference: str) -> dict[str, torch.Tensor]:
    prefix = REFERENCES[reference][0]
    out = {}
    for key, value in state.items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix) :]
        if reference == "trx":
            first, _, rest = name.partition(".")
            name = f"{_TORCHVISION_RESNET_CHILDREN.get(first, first)}.{rest}"
        out[name] = value
    return out


def import_checkpoint(reference: str, source: Path, p: Protocol, out: Path) -> tuple[Path, Path | None]:
    """Write `out` (the head) and, when the reference carries one, `out` + '.backbone.pt'."""
    if reference not in REFERENCES:
        raise HarnessError(f"unknown reference '{reference}'", fix=f"use one of: {', '.join(REFERENCES)}")
    method = REFERENCES[reference][1]
    state = read_reference(source)
    head_cls = methods.get(method)
    try:
        head_state = head_cls.from_reference(state)
    except ValueError as e:
        raise HarnessError(str(e), where=str(source), fix=f"pass a checkpoint saved by the {reference.upper()} reference code") from None

    backbone = backbone_state(state, reference)
    backbone_path, weights_sha = None, None
    if backbone:
        backbone_path = out.with_name(out.stem + ".backbone.pt")
        buffer = io.BytesIO()
        torch.save(backbone, buffer)
        atomic_write_bytes(backbone_path, buffer.getvalue())
        weights_sha = sha256_file(backbone_path)

    config = head_settings(p, method)  # every setting, defaults included: `run` rebuilds the head from them
    num_train_classes = int(head_state["classifier.weight"].shape[0]) if "classifier.weight" in head_state else 0
    save_checkpoint(
        out,
        {
            "method": method,
            "method_config": config,
            "protocol": p.name,
            "protocol_sha256": p.sha256,
            "backbone": {"name": p.backbone.name, "weights_sha256": weights_sha},
            "num_train_classes": num_train_classes,
            "state_dict": head_state,
            "imported_from": {"reference": reference, "file_sha256": sha256_file(source)},
        },
    )
    return out, backbone_path

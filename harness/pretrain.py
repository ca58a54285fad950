"""Pretraining a backbone that has no published weights (tiny3d) by plain classification on the train split.

The classifier sees the spatially pooled map with its time steps kept apart ([C * T'] -> classes), so the
features must say *when* each motion happens, not only which motions occur: the class is their order.
"""
from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from harness.data.loader import clip_loader
from harness.data.index import VideoIndex
from harness.files import atomic_write_bytes
from harness.protocol import FramesSpec, canonical_json, frames_key

PRETRAIN_DEFAULTS = {"epochs": 5, "batch_size": 32, "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4, "seed": 0}


def pretrained_path(home: Path, backbone: str, dataset: str, train_index: VideoIndex, frames: FramesSpec, settings: dict) -> Path:
    """Where the checkpoint for this backbone (and its code), training data (the videos' content), preprocessing,
    settings and pretraining code lives: other data or code, another file, never stale weights."""
    from harness.data.fingerprint import index_fingerprint
    from harness.provenance import backbone_code_sha256, sources_sha256

    code = {"backbone": backbone_code_sha256(backbone), "pretrain": sources_sha256(["harness.pretrain"])}
    ident = canonical_json({"videos": index_fingerprint(train_index, frames), "frames": frames_key(frames), "settings": settings, "code": code})
    return home / "backbones" / f"{backbone}-{dataset}-{hashlib.sha256(ident.encode()).hexdigest()[:12]}.pt"


class _Classifier(nn.Module):
    def __init__(self, backbone: nn.Module, feature_shape: tuple[int, ...], n_classes: int):
        super().__init__()
        c, t = feature_shape[0], feature_shape[1]
        self.backbone = backbone
        self.fc = nn.Linear(c * t, n_classes)

    def forward(self, clips):  # [B, 3, T, H, W] -> [B, classes]
        maps = self.backbone(clips)  # [B, C, T', H', W']
        return self.fc(maps.mean(dim=(3, 4)).flatten(1))


def pretrain(
    backbone: nn.Module,
    train_index: VideoIndex,
    frames: FramesSpec,
    out: Path,
    settings: dict = PRETRAIN_DEFAULTS,
    workers: int = 0,
    log: Callable[[str], None] = print,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    torch.manual_seed(settings["seed"])
    # every clip once into memory (half precision): the synthetic train split is small
    clips = torch.empty((len(train_index), 3, frames.count, frames.crop, frames.crop), dtype=torch.float16)
    for positions, batch in clip_loader(train_index.videos, frames, batch_size=64, workers=workers, reuse=True):
        clips[positions] = batch.half()
    position = {c: i for i, c in enumerate(train_index.classes)}
    labels = torch.tensor([position[v.class_name] for v in train_index.videos])

    with torch.no_grad():
        shape = backbone(clips[:1].float()).shape[1:]
    model = _Classifier(backbone, tuple(shape), len(train_index.classes))
    opt = torch.optim.SGD(model.parameters(), lr=settings["lr"], momentum=settings["momentum"], weight_decay=settings["weight_decay"])
    steps_per_epoch = (len(clips) + settings["batch_size"] - 1) // settings["batch_size"]
    total = settings["epochs"] * steps_per_epoch
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=settings["lr"], total_steps=total, pct_start=0.15)
    order_rng = torch.Generator().manual_seed(settings["seed"])
    model.train()
    step = 0
    for epoch in range(settings["epochs"]):
        order = torch.randperm(len(clips), generator=order_rng)
        seen, loss_sum, right = 0, 0.0, 0
        for start in range(0, len(order), settings["batch_size"]):
            idx = order[start : start + settings["batch_size"]]
            logits = model(clips[idx].float())
            loss = nn.functional.cross_entropy(logits, labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            schedule.step()
            step += 1
            seen += len(idx)
            loss_sum += loss.item() * len(idx)
            right += (logits.argmax(1) == labels[idx]).sum().item()
            if progress:
                progress(step, total)
        log(f"pretrain epoch {epoch + 1}/{settings['epochs']}: loss {loss_sum / seen:.3f}, train accuracy {100 * right / seen:.1f}%")

    buffer = io.BytesIO()
    torch.save(backbone.state_dict(), buffer)
    atomic_write_bytes(out, buffer.getvalue())
    return out

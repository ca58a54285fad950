"""Backbones: a clip [B, 3, T, H, W] -> a feature map [B, C, T', H', W'].

A backbone is a factory function registered by name; weights are files the user passes in (nothing is ever
downloaded), loaded without executing code, and their SHA-256 goes into every cache key and result.
"""
from harness.backbones.registry import create_backbone, defer_backbones, list_backbones, load_weights, register_backbone, sha256_file

from harness.backbones import tiny3d  # noqa: F401  (registers)
from harness.backbones import r3d  # noqa: F401  (registers)

# built on torchvision's model classes: imported (with torchvision) when one of them is asked for
defer_backbones("harness.backbones.resnet2d", ("resnet18", "resnet34", "resnet50"))
defer_backbones("harness.backbones.torchvision_video", ("r3d_18", "mc3_18", "r2plus1d_18"))

__all__ = ["create_backbone", "list_backbones", "load_weights", "register_backbone", "sha256_file"]

"""Backbones: a clip [B, 3, T, H, W] -> a feature map [B, C, T', H', W'].

A backbone is a factory function registered by name; weights are files the user passes in (nothing is ever
downloaded), loaded without executing code, and their SHA-256 goes into every cache key and result.
"""
from harness.backbones.registry import create_backbone, list_backbones, load_weights, register_backbone, sha256_file

from harness.backbones import tiny3d  # noqa: F401  (registers)
from harness.backbones import r3d  # noqa: F401  (registers)
from harness.backbones import resnet2d  # noqa: F401  (registers)
from harness.backbones import torchvision_video  # noqa: F401  (registers)

__all__ = ["create_backbone", "list_backbones", "load_weights", "register_backbone", "sha256_file"]

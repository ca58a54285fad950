"""A small 3D CNN for the embedded synthetic benchmark on a CPU.

It keeps a temporal axis, as the order-sensitive heads need: a 16 x 64 x 64 clip becomes a map
[128, 8, 2, 2] (8 time steps of 4 positions: 32 positions in all, so that attention over every position,
as STAF computes it, stays cheap on a CPU). It has no published weights: `fsv-bench pretrain`
trains it on the synthetic training classes.
"""
from __future__ import annotations

from torch import nn

from harness.backbones.registry import register_backbone


def conv_bn(c_in: int, c_out: int, kernel, stride, padding) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(c_in, c_out, kernel, stride, padding, bias=False), nn.BatchNorm3d(c_out), nn.ReLU(inplace=True))


class Tiny3D(nn.Module):
    out_channels = 128

    def __init__(self, widths=(16, 32, 64, 128)):
        super().__init__()
        w0, w1, w2, w3 = widths
        self.features = nn.Sequential(
            conv_bn(3, w0, (1, 4, 4), (1, 4, 4), 0),  # patchify: [w0, T, H/4, W/4]
            conv_bn(w0, w1, 3, (2, 2, 2), 1),  # [w1, T/2, H/8, W/8]
            conv_bn(w1, w2, 3, (1, 2, 2), 1),  # [w2, T/2, H/16, W/16]
            conv_bn(w2, w3, 3, (1, 2, 2), 1),  # [w3, T/2, H/32, W/32]
        )
        self.out_channels = w3

    def forward(self, clip):  # clip [B, 3, T, H, W] -> [B, C, T/2, H/32, W/32]
        return self.features(clip)


@register_backbone("tiny3d")
def tiny3d() -> nn.Module:
    return Tiny3D()

"""torchvision's video ResNets (Tran et al., "A Closer Look at Spatiotemporal Convolutions for Action
Recognition", CVPR 2018), returning the layer4 map instead of class scores.

The module is torchvision's `VideoResNet` less its `avgpool` and `fc`, so torchvision's own weight files
(`r3d_18-b3b3357e.pth`, `r2plus1d_18-91a641e6.pth`, `mc3_18-a90a0ba3.pth`: plain state dicts) load by their key
names once `ignore_weights` (the Kinetics-400 classifier) is passed to `load_weights(..., ignore=...)`.
The stem keeps time and halves space; each later stage halves both, except in MC3, whose stages 2-4 are 2D:
    r3d_18, r2plus1d_18: [B, 3, T, H, W] -> [B, 512, T/8, H/16, W/16]
    mc3_18:              [B, 3, T, H, W] -> [B, 512, T,   H/16, W/16]
torchvision's weights expect frames normalised with its Kinetics mean/std at 112 x 112.
"""
from __future__ import annotations

from torch import nn
from torchvision.models.video.resnet import BasicBlock, BasicStem, Conv2Plus1D, Conv3DNoTemporal, Conv3DSimple, R2Plus1dStem, VideoResNet

from harness.backbones.registry import register_backbone


class VideoResNetFeatures(VideoResNet):
    ignore_weights = ("fc.",)

    def __init__(self, conv_makers, stem):
        super().__init__(BasicBlock, conv_makers, [2, 2, 2, 2], stem, num_classes=1)  # 1-way fc, dropped below
        del self.avgpool, self.fc
        self.out_channels = 512

    def forward(self, clip):  # clip [B, 3, T, H, W]
        x = self.stem(clip)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))  # [B, 512, T', H/16, W/16]


@register_backbone("r3d_18")
def r3d_18() -> nn.Module:
    """R3D-18: 3D convs throughout (torchvision `r3d_18`)."""
    return VideoResNetFeatures([Conv3DSimple] * 4, BasicStem)


@register_backbone("mc3_18")
def mc3_18() -> nn.Module:
    """MC3-18: 3D convs in the first stage, 2D (1x3x3) convs after it (torchvision `mc3_18`)."""
    return VideoResNetFeatures([Conv3DSimple] + [Conv3DNoTemporal] * 3, BasicStem)


@register_backbone("r2plus1d_18")
def r2plus1d_18() -> nn.Module:
    """R(2+1)D-18: every 3D conv split into a spatial and a temporal one (torchvision `r2plus1d_18`)."""
    return VideoResNetFeatures([Conv2Plus1D] * 4, R2Plus1dStem)

"""2D ImageNet ResNets (He et al., CVPR 2016) applied to every frame of a clip, as TRX and OTAM use them.

The module is torchvision's `ResNet` less its `avgpool` and `fc`, so torchvision's ImageNet weight files
(`resnet50-0676ba61.pth`, `resnet50-11ad3fa6.pth`, ...: plain state dicts) load by their own key names once
`ignore_weights` (the classifier) is passed to `load_weights(..., ignore=...)`. The spatial map is kept:
[B, 3, T, H, W] -> [B, C, T, H/32, W/32]; the harness's "frames" view pools it.
"""
from __future__ import annotations

from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from harness.backbones.registry import register_backbone


class PerFrameResNet(ResNet):
    ignore_weights = ("fc.",)  # ImageNet's 1000-way classifier

    def __init__(self, block: type[BasicBlock | Bottleneck], layers: list[int]):
        super().__init__(block, layers, num_classes=1)  # a 1-way fc, dropped below, costs nothing to initialise
        del self.avgpool, self.fc
        self.out_channels = 512 * block.expansion

    def forward(self, clip):  # clip [B, 3, T, H, W]
        B, _, T, H, W = clip.shape
        x = clip.transpose(1, 2).reshape(B * T, 3, H, W)  # the frames of all clips form one batch
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # [B*T, C, H/32, W/32]
        return x.unflatten(0, (B, T)).transpose(1, 2)  # [B, C, T, H/32, W/32]


@register_backbone("resnet18")
def resnet18() -> nn.Module:
    """ResNet-18 per frame (torchvision layout): 512 channels."""
    return PerFrameResNet(BasicBlock, [2, 2, 2, 2])


@register_backbone("resnet34")
def resnet34() -> nn.Module:
    """ResNet-34 per frame (torchvision layout): 512 channels."""
    return PerFrameResNet(BasicBlock, [3, 4, 6, 3])


@register_backbone("resnet50")
def resnet50() -> nn.Module:
    """ResNet-50 per frame (torchvision layout), the backbone of TRX and OTAM: 2048 channels."""
    return PerFrameResNet(Bottleneck, [3, 4, 6, 3])

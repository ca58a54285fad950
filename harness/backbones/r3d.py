"""3D ResNets of Hara et al. ("Can Spatiotemporal 3D CNNs Retrace the History of 2D CNNs and ImageNet?",
CVPR 2018), laid out like the public repository `kenshohara/3D-ResNets-PyTorch` so its weight files load as they are.

METHODS.md §1: every kernel is 3D; the stem (7x7x7 conv, stride (1, 2, 2), then a 3x3x3 max-pool of stride 2)
halves time once, and layer2/3/4 halve time and space on their 3x3x3 conv. A 16 x 224 x 224 clip becomes
    time 16 -> 16 (stem conv) -> 8 (max-pool) -> 8 -> 4 -> 2 -> 1,  space 224 -> 112 -> 56 -> 56 -> 28 -> 14 -> 7,
i.e. a map [512 * expansion, 1, 7, 7] after layer4, which is what the backbone returns (no pooling).

The classifier `fc` is not built: its size depends on the data set a file was trained on (700 classes for
Kinetics-700, 1139 for `r3d50_KMS_200ep.pth`), and a feature extractor has no use for it. `ignore_weights`
names the key prefixes of a weight file to skip, for the caller to pass to `load_weights(..., ignore=...)`.
STAF feeds frames as plain [0, 1] tensors; Hara's own training normalised them (mean/std in METHODS.md §1).
"""
from __future__ import annotations

from torch import nn

from harness.backbones.registry import register_backbone

WIDTHS = (64, 128, 256, 512)


def conv3x3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv3d:
    return nn.Conv3d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1x1(c_in: int, c_out: int, stride: int = 1) -> nn.Conv3d:
    return nn.Conv3d(c_in, c_out, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3x3 convs; the first one carries the stride (depths 18 and 34)."""

    expansion = 1

    def __init__(self, c_in: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv3x3x3(c_in, planes, stride)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = conv3x3x3(planes, planes)
        self.bn2 = nn.BatchNorm3d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)


class Bottleneck(nn.Module):
    """1x1x1 reduce, 3x3x3 (carries the stride), 1x1x1 expand by 4 (depths 50 and 101)."""

    expansion = 4

    def __init__(self, c_in: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv1x1x1(c_in, planes)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = conv3x3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm3d(planes)
        self.conv3 = conv1x1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm3d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + shortcut)


class ResNet3D(nn.Module):
    """A 3D ResNet from its parts: the block type and the number of blocks per stage.

    clip [B, 3, T, H, W] -> layer4 map [B, 512 * block.expansion, ceil(T/16), ceil(H/32), ceil(W/32)]
    (for sizes that halve exactly; odd sizes round up, as the padded convs do).
    """

    ignore_weights = ("fc.",)  # the classifier of the file's training data set; not part of the features

    def __init__(self, block: type[BasicBlock | Bottleneck], layers: tuple[int, int, int, int]):
        super().__init__()
        self.conv1 = nn.Conv3d(3, WIDTHS[0], kernel_size=7, stride=(1, 2, 2), padding=3, bias=False)
        self.bn1 = nn.BatchNorm3d(WIDTHS[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d(kernel_size=3, stride=2, padding=1)
        c_in = WIDTHS[0]
        for i, (planes, blocks) in enumerate(zip(WIDTHS, layers)):
            stage, c_in = self._stage(block, c_in, planes, blocks, stride=1 if i == 0 else 2)
            setattr(self, f"layer{i + 1}", stage)
        self.out_channels = c_in
        for m in self.modules():  # Hara's initialisation, so that an untrained model matches the reference's
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @staticmethod
    def _stage(block, c_in: int, planes: int, blocks: int, stride: int) -> tuple[nn.Sequential, int]:
        c_out = planes * block.expansion
        downsample = None
        if stride != 1 or c_in != c_out:  # shortcut "B": a projection only where the shape changes
            downsample = nn.Sequential(conv1x1x1(c_in, c_out, stride), nn.BatchNorm3d(c_out))
        stage = [block(c_in, planes, stride, downsample)] + [block(c_out, planes) for _ in range(blocks - 1)]
        return nn.Sequential(*stage), c_out

    def forward(self, clip):  # clip [B, 3, T, H, W]
        x = self.maxpool(self.relu(self.bn1(self.conv1(clip))))  # [B, 64, T/2, H/4, W/4]
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)  # [B, C, T/16, H/32, W/32]


@register_backbone("r3d18")
def r3d18() -> nn.Module:
    """3D ResNet-18 (Hara et al.); weight files `r3d18_*.pth`."""
    return ResNet3D(BasicBlock, (2, 2, 2, 2))


@register_backbone("r3d34")
def r3d34() -> nn.Module:
    """3D ResNet-34 (Hara et al.); weight files `r3d34_*.pth`."""
    return ResNet3D(BasicBlock, (3, 4, 6, 3))


@register_backbone("r3d50")
def r3d50() -> nn.Module:
    """3D ResNet-50 (Hara et al.), STAF's backbone; weight files `r3d50_*.pth` (STAF: `r3d50_KMS_200ep.pth`)."""
    return ResNet3D(Bottleneck, (3, 4, 6, 3))


@register_backbone("r3d101")
def r3d101() -> nn.Module:
    """3D ResNet-101 (Hara et al.); weight files `r3d101_*.pth`."""
    return ResNet3D(Bottleneck, (3, 4, 23, 3))

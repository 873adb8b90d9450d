"""Building blocks shared by the networks (written here: torchvision is not a dependency)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BasicBlock(nn.Module):
    """The residual block of ResNet-18: two 3x3 convolutions and a shortcut.

    Args:
        cin, cout: channels in and out.
        stride: of the first convolution; the shortcut is a strided 1x1 convolution when the
            shape changes.
    """

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, cin, H, W] -> [B, cout, H / stride, W / stride]."""
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + self.shortcut(x))


def conv_bn_relu(cin: int, cout: int, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class UpConcat(nn.Module):
    """Upsamples the coarse map to the fine one's size, concatenates them, fuses with two convs."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Sequential(conv_bn_relu(cin, cout), conv_bn_relu(cout, cout))

    def forward(self, coarse: torch.Tensor, fine: torch.Tensor) -> torch.Tensor:
        """coarse [B, c1, h, w], fine [B, c2, H, W] (c1 + c2 = cin) -> [B, cout, H, W]."""
        up = F.interpolate(coarse, size=fine.shape[-2:], mode="bilinear", align_corners=True)
        return self.conv(torch.cat([fine, up], dim=1))

"""Upsampling decoder blocks: transposed conv x2, concatenate CLIP guidance, double conv with GroupNorm."""
from __future__ import annotations

import torch
from torch import nn


class DoubleConv(nn.Module):
    """(3x3 conv, no bias -> GroupNorm(channels // 16) -> ReLU) twice; official key layout `double_conv.N`."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        groups = max(out_channels // 16, 1)
        self.double_conv = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.GroupNorm(groups, out_channels),
            nn.ReLU(),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.GroupNorm(groups, out_channels),
            nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.double_conv(x)


class UpBlock(nn.Module):
    """Official `Up`: ConvTranspose2d(C -> C - g, k2 s2), cat [x, guidance], DoubleConv(C -> out)."""

    def __init__(self, in_channels: int, out_channels: int, guidance_channels: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, in_channels - guidance_channels, kernel_size=2, stride=2)
        self.conv = DoubleConv(in_channels, out_channels)

    def forward(self, x: torch.Tensor, guidance: torch.Tensor | None) -> torch.Tensor:
        """x: (B*T, C, h, w); guidance: (B, g, 2h, 2w), shared by the T classes of each image."""
        x = self.up(x)
        if guidance is not None:
            batch = guidance.shape[0]
            classes = x.shape[0] // batch
            guidance = guidance.unsqueeze(1).expand(batch, classes, *guidance.shape[1:]).reshape(
                batch * classes, *guidance.shape[1:])
            x = torch.cat([x, guidance], dim=1)
        return self.conv(x)

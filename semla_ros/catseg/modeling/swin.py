"""Spatial cost aggregation: a pair of Swin blocks (plain, then shifted windows) run per class.

WHY guidance: queries and keys see the cost embedding concatenated with CLIP appearance features, so spatial
smoothing of the cost volume follows image structure; values carry only the cost embedding.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * nW, window*window, C)."""
    batch, height, width, channels = x.shape
    x = x.reshape(batch, height // window, window, width // window, window, channels)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, channels)


def window_reverse(windows: torch.Tensor, window: int, height: int, width: int) -> torch.Tensor:
    """(B * nW, window*window, C) -> (B, H, W, C)."""
    channels = windows.shape[-1]
    x = windows.reshape(-1, height // window, width // window, window, window, channels)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, height, width, channels)


def shifted_window_mask(height: int, width: int, window: int, shift: int) -> torch.Tensor:
    """(nW, window^2, window^2) additive mask: 0 inside a region, -100 across the cyclic-shift seams."""
    regions = torch.zeros(1, height, width, 1)
    label = 0
    bounds = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    for rows in bounds:
        for cols in bounds:
            regions[:, rows, cols, :] = label
            label += 1
    labels = window_partition(regions, window).squeeze(-1)  # nW, window^2
    diff = labels.unsqueeze(1) - labels.unsqueeze(2)
    return torch.where(diff != 0, torch.tensor(-100.0), torch.tensor(0.0))


class WindowAttention(nn.Module):
    """Multi-head attention inside each window; q,k from [x, guidance], v from x. No relative position bias."""

    def __init__(self, dim: int, guidance_dim: int, heads: int) -> None:
        super().__init__()
        self.dim = dim
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.q = nn.Linear(dim + guidance_dim, dim)
        self.k = nn.Linear(dim + guidance_dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        windows, length, _ = x.shape

        def split_heads(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(windows, length, self.heads, -1).transpose(1, 2)

        q = split_heads(self.q(x)) * self.scale
        k = split_heads(self.k(x))
        v = split_heads(self.v(x[:, :, :self.dim]))
        attn = q @ k.transpose(-2, -1)
        if mask is not None:
            num_windows = mask.shape[0]
            attn = attn.reshape(-1, num_windows, self.heads, length, length) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.reshape(-1, self.heads, length, length)
        out = (F.softmax(attn, dim=-1) @ v).transpose(1, 2).reshape(windows, length, -1)
        return self.proj(out)


class SwinMlp(nn.Module):
    """fc1 -> exact (erf) GELU -> fc2."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwinBlock(nn.Module):
    """Pre-LN window attention with guidance, optional cyclic shift, then MLP. Tokens (B, H*W, C)."""

    attn_mask: torch.Tensor | None  # a persistent buffer when shifted, else a plain None attribute

    def __init__(self, dim: int, guidance_dim: int, resolution: tuple[int, int], heads: int, window: int,
                 shift: int, mlp_ratio: int = 4) -> None:
        super().__init__()
        height, width = resolution
        self.resolution: tuple[int, int] = (height, width)
        self.window = window
        self.shift = shift
        if min(self.resolution) <= window:  # official: no partition (and no shift) when one window covers it all
            self.window = min(self.resolution)
            self.shift = 0
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, guidance_dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = SwinMlp(dim, dim * mlp_ratio)
        if self.shift > 0:
            # persistent, as in the official module: the checkpoints carry it
            self.register_buffer("attn_mask", shifted_window_mask(height, width, self.window, self.shift))
        else:
            self.attn_mask = None

    def forward(self, x: torch.Tensor, guidance: torch.Tensor | None) -> torch.Tensor:
        height, width = self.resolution
        batch, length, channels = x.shape
        shortcut = x
        x = self.norm1(x).reshape(batch, height, width, channels)
        if guidance is not None:
            x = torch.cat([x, guidance.reshape(batch, height, width, -1)], dim=-1)
        if self.shift > 0:
            x = torch.roll(x, shifts=(-self.shift, -self.shift), dims=(1, 2))
        windows = self.attn(window_partition(x, self.window), mask=self.attn_mask)
        x = window_reverse(windows, self.window, height, width)
        if self.shift > 0:
            x = torch.roll(x, shifts=(self.shift, self.shift), dims=(1, 2))
        x = shortcut + x.reshape(batch, height * width, channels)
        return x + self.mlp(self.norm2(x))


class SpatialAggregation(nn.Module):
    """Official `swin_block`: block_1 (plain) and block_2 (shifted) on every class's cost map, shared guidance."""

    def __init__(self, dim: int, guidance_dim: int, resolution: tuple[int, int], heads: int, window: int,
                 mlp_ratio: int = 4) -> None:
        super().__init__()
        self.block_1 = SwinBlock(dim, guidance_dim, resolution, heads, window, 0, mlp_ratio)
        self.block_2 = SwinBlock(dim, guidance_dim, resolution, heads, window, window // 2, mlp_ratio)
        self.guidance_norm = nn.LayerNorm(guidance_dim) if guidance_dim > 0 else None

    def forward(self, x: torch.Tensor, guidance: torch.Tensor | None) -> torch.Tensor:
        """x: (B, C, T, H, W) cost embedding; guidance: (B, Cg, H, W) projected appearance features."""
        batch, channels, classes, height, width = x.shape
        x = x.permute(0, 2, 3, 4, 1).reshape(batch * classes, height * width, channels)
        if guidance is not None and self.guidance_norm is not None:
            # normalising before the per-class repeat gives the same values for T times less work
            g = self.guidance_norm(guidance.permute(0, 2, 3, 1).reshape(batch, 1, height * width, -1))
            guidance = g.expand(batch, classes, height * width, g.shape[-1]).reshape(batch * classes,
                                                                                     height * width, -1)
        else:
            guidance = None
        x = self.block_2(self.block_1(x, guidance), guidance)
        return x.reshape(batch, classes, height, width, channels).permute(0, 4, 1, 2, 3)

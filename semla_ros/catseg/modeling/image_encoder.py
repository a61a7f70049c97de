"""CLIP ViT image tower with CAT-Seg's dense output and the two guidance taps.

WHY: CAT-Seg needs, from one pass, (a) a dense patch embedding in CLIP's joint space (the last block runs in the
dense variant), and (b) the raw residual stream after two middle blocks to guide the decoder. Taps are collected
explicitly in the loop instead of by forward hooks, so they survive module wrapping and ONNX tracing.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .clip_block import ClipLayerNorm, ResidualAttentionBlock


class ClipTransformer(nn.Module):
    """A stack of residual attention blocks (`resblocks.N`)."""

    def __init__(self, width: int, layers: int, heads: int, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.width = width
        self.layers = layers
        self.resblocks = nn.Sequential(*[ResidualAttentionBlock(width, heads, mlp_ratio) for _ in range(layers)])

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x, attn_mask)
        return x


class DenseImageFeatures(NamedTuple):
    """Outputs of the dense pass, all (B, C, h, w) with the CLS token dropped."""

    dense: torch.Tensor  # after ln_post and proj (C = embed_dim), not normalised
    tap0: torch.Tensor  # raw residual stream after the first tap block (C = width)
    tap1: torch.Tensor  # raw residual stream after the second tap block


class ClipImageEncoder(nn.Module):
    """Official `visual` module: conv1 (no bias), class token, positional embedding, ln_pre, blocks, ln_post, proj."""

    def __init__(self, width: int, layers: int, heads: int, patch_size: int, pretrain_resolution: int,
                 output_dim: int, tap_blocks: tuple[int, ...] = (), mlp_ratio: int = 4) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.pretrain_grid = pretrain_resolution // patch_size
        self.tap_blocks = tuple(tap_blocks)
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        scale = width ** -0.5
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(self.pretrain_grid ** 2 + 1, width))
        self.ln_pre = ClipLayerNorm(width)
        self.transformer = ClipTransformer(width, layers, heads, mlp_ratio)
        self.ln_post = ClipLayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim))

    def positional_embedding_for(self, grid_h: int, grid_w: int) -> torch.Tensor:
        """Stored embedding, with its patch part resized bicubically when the grid differs (official, every call)."""
        if grid_h * grid_w + 1 == self.positional_embedding.shape[0]:
            return self.positional_embedding
        cls_pos = self.positional_embedding[:1]
        width = self.positional_embedding.shape[1]
        grid = self.positional_embedding[1:].reshape(1, self.pretrain_grid, self.pretrain_grid, width)
        grid = F.interpolate(grid.permute(0, 3, 1, 2), size=(grid_h, grid_w), mode="bicubic", align_corners=False)
        return torch.cat([cls_pos, grid.reshape(width, grid_h * grid_w).T], dim=0)

    def embed(self, images: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        """Patchify, prepend CLS, add positions, ln_pre. Returns tokens (B, 1+h*w, width) and the grid."""
        x = self.conv1(images.to(self.conv1.weight.dtype))
        batch, width, grid_h, grid_w = x.shape
        x = x.reshape(batch, width, grid_h * grid_w).permute(0, 2, 1)
        cls = self.class_embedding.to(x.dtype).reshape(1, 1, width).expand(batch, 1, width)
        x = torch.cat([cls, x], dim=1)
        x = x + self.positional_embedding_for(grid_h, grid_w).to(x.dtype)
        return self.ln_pre(x), grid_h, grid_w

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Standard CLIP image embedding: ln_post(CLS) @ proj, shape (B, output_dim). Not normalised."""
        x, _, _ = self.embed(images)
        x = self.transformer(x)
        return self.ln_post(x[:, 0]) @ self.proj

    def forward_dense(self, images: torch.Tensor) -> DenseImageFeatures:
        """CAT-Seg's pass: all blocks but the last as usual (taps recorded), the last one dense."""
        x, grid_h, grid_w = self.embed(images)
        taps = []
        blocks = list(self.transformer.resblocks)
        for index, block in enumerate(blocks[:-1]):
            x = block(x)
            if index in self.tap_blocks:
                taps.append(x)
        last = blocks[-1]
        if not isinstance(last, ResidualAttentionBlock):
            raise TypeError(f"the last visual block must be a ResidualAttentionBlock, got {type(last).__name__}")
        x = last.forward_dense(x)
        dense = self.ln_post(x) @ self.proj
        return DenseImageFeatures(
            dense=_tokens_to_map(dense, grid_h, grid_w),
            tap0=_tokens_to_map(taps[0], grid_h, grid_w),
            tap1=_tokens_to_map(taps[1], grid_h, grid_w),
        )


def _tokens_to_map(tokens: torch.Tensor, grid_h: int, grid_w: int) -> torch.Tensor:
    """(B, 1+h*w, C) -> (B, C, h, w), dropping CLS; row-major like the official rearrange."""
    batch, _, channels = tokens.shape
    return tokens[:, 1:].transpose(1, 2).reshape(batch, channels, grid_h, grid_w)

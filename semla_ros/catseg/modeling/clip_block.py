"""The CLIP residual attention block, including the "dense" variant CAT-Seg uses for its last visual block.

WHY the dense variant: CAT-Seg wants per-patch embeddings that live in CLIP's joint space. Its last block skips
attention mixing and keeps each token's value projection, with the block input's CLS token as the residual.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from .attention import SplitQKVAttention


class ClipLayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 (eps 1e-5) and cast back, as OpenAI CLIP does for half-precision weights."""

    def __init__(self, width: int) -> None:
        super().__init__(width, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32 and self.weight.dtype == torch.float32:
            return super().forward(x)
        return nn.functional.layer_norm(x.float(), self.normalized_shape, self.weight.float(), self.bias.float(),
                                        self.eps).to(x.dtype)


class QuickGELU(nn.Module):
    """x * sigmoid(1.702 x): the activation OpenAI CLIP was trained with."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    """Pre-LN transformer block: x + attn(ln_1(x)), then + mlp(ln_2(x)). Tokens are (B, L, D)."""

    def __init__(self, width: int, heads: int, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.attn = SplitQKVAttention(width, heads)
        self.ln_1 = ClipLayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(width, width * mlp_ratio)),
            ("gelu", QuickGELU()),
            ("c_proj", nn.Linear(width * mlp_ratio, width)),
        ]))
        self.ln_2 = ClipLayerNorm(width)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), attn_mask)
        return x + self.mlp(self.ln_2(x))

    def forward_dense(self, x: torch.Tensor) -> torch.Tensor:
        """Official dense variant: out_proj(v_proj(ln_1(x))) + CLS of the input, then the MLP sub-block.

        Only the value stream survives in the official code, so q and k are not computed here.
        """
        v = self.attn.out_proj(self.attn.project(self.ln_1(x), "v"))
        v = v + x[:, :1]
        return v + self.mlp(self.ln_2(v))

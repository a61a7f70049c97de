"""Class cost aggregation: attention over the class axis at every pixel, padded to a fixed class count.

WHY padding: the official model always attends over `pad_len` (256) class tokens, filling the unused slots with
learned padding tokens that take part in the attention; reproducing the numbers requires the same padding.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LinearAttention(nn.Module):
    """Linear attention with the elu+1 feature map; values scaled by 1/S and the output by S (official).

    `repeated` adds `count` copies of one extra (key, value) pair to the keys without materialising them: the
    class padding tokens are the same at every pixel, so their share of the key/value sums is computed once.
    """

    def __init__(self, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                repeated: tuple[torch.Tensor, torch.Tensor, int] | None = None) -> torch.Tensor:
        """q: (N, L, H, D), k/v: (N, S, H, D); repeated: (k (H, D), v (H, D), count) -> (N, L, H, D)."""
        q = F.elu(q) + 1
        k = F.elu(k) + 1
        length = v.shape[1] + (repeated[2] if repeated is not None else 0)
        v = v / length
        kv = torch.einsum("nshd,nshv->nhdv", k, v)
        k_sum = k.sum(dim=1)
        if repeated is not None:
            k_rep = F.elu(repeated[0]) + 1
            v_rep = repeated[1] / length
            kv = kv + repeated[2] * torch.einsum("hd,hv->hdv", k_rep, v_rep)
            k_sum = k_sum + repeated[2] * k_rep
        z = 1 / (torch.einsum("nlhd,nhd->nlh", q, k_sum) + self.eps)
        return torch.einsum("nlhd,nhdv,nlh->nlhv", q, kv, z) * length


class FullAttention(nn.Module):
    """Softmax attention, the official alternative to linear attention (padding is materialised for it)."""

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        scores = torch.einsum("nlhd,nshd->nlsh", q, k) * q.shape[3] ** -0.5
        return torch.einsum("nlsh,nshd->nlhd", torch.softmax(scores, dim=2), v)


class ClassAttentionCore(nn.Module):
    """Official `attention.attention`: q,k from [x, text guidance], v from x; no output projection."""

    def __init__(self, dim: int, guidance_dim: int, heads: int, attention_type: str = "linear") -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim + guidance_dim, dim)
        self.k = nn.Linear(dim + guidance_dim, dim)
        self.v = nn.Linear(dim, dim)
        self.attention = LinearAttention() if attention_type == "linear" else FullAttention()

    def forward(self, x: torch.Tensor, guidance: torch.Tensor | None,
                padding: tuple[torch.Tensor, torch.Tensor | None, int] | None = None) -> torch.Tensor:
        """x: (N, L, C) normalised tokens; padding: (normalised padding token (C,), its guidance, count),
        only for linear attention."""
        xg = torch.cat([x, guidance], dim=-1) if guidance is not None else x
        n, length, dim = x.shape
        q = self.q(xg).reshape(n, length, self.heads, -1)
        k = self.k(xg).reshape(n, length, self.heads, -1)
        v = self.v(x).reshape(n, length, self.heads, -1)
        if padding is None:
            return self.attention(q, k, v).reshape(n, length, dim)
        pad_x, pad_guidance, count = padding
        pad_xg = torch.cat([pad_x, pad_guidance], dim=-1) if pad_guidance is not None else pad_x
        repeated = (self.k(pad_xg).reshape(self.heads, -1), self.v(pad_x).reshape(self.heads, -1), count)
        return self.attention(q, k, v, repeated).reshape(n, length, dim)


class ClassAggregation(nn.Module):
    """Official `attention` of an aggregator layer: pool, pad classes, pre-LN attention + ReLU MLP, upsample."""

    def __init__(self, dim: int, guidance_dim: int, heads: int, attention_type: str = "linear",
                 pooling_size: tuple[int, int] = (1, 1), pad_len: int = 256, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.pooling_size = tuple(pooling_size)
        self.pad_len = pad_len
        self.attention = ClassAttentionCore(dim, guidance_dim, heads, attention_type)
        self.MLP = nn.Sequential(nn.Linear(dim, dim * mlp_ratio), nn.ReLU(), nn.Linear(dim * mlp_ratio, dim))
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.padding_tokens = nn.Parameter(torch.zeros(1, 1, dim)) if pad_len > 0 else None
        self.padding_guidance = (nn.Parameter(torch.zeros(1, 1, guidance_dim))
                                 if pad_len > 0 and guidance_dim > 0 else None)

    def forward(self, x: torch.Tensor, guidance: torch.Tensor | None) -> torch.Tensor:
        """x: (B, C, T, H, W) cost embedding; guidance: (B, T, Cg) projected text features."""
        batch, channels, classes, height, width = x.shape
        pooled = self._pool(x)
        ph, pw = pooled.shape[-2:]
        pad = self.pad_len - classes if self.padding_tokens is not None and classes < self.pad_len else 0
        seq = pooled.permute(0, 3, 4, 2, 1).reshape(batch * ph * pw, classes, channels)
        if guidance is not None:
            guidance = guidance.unsqueeze(1).expand(batch, ph * pw, *guidance.shape[1:])
            guidance = guidance.reshape(batch * ph * pw, *guidance.shape[2:])
        if pad and isinstance(self.attention.attention, LinearAttention):
            # Padding tokens only feed the key/value sums (their outputs are dropped) and are identical at every
            # pixel: add them analytically instead of running 256 - T extra tokens per pixel.
            pad_guidance = (_present(self.padding_guidance, "padding_guidance").reshape(-1)
                            if guidance is not None else None)
            padding = (self.norm1(_present(self.padding_tokens, "padding_tokens").reshape(-1)), pad_guidance, pad)
            seq = seq + self.attention(self.norm1(seq), guidance, padding)
        else:
            if pad:
                tokens = _present(self.padding_tokens, "padding_tokens")
                seq = torch.cat([seq, tokens.reshape(1, 1, channels).expand(seq.shape[0], pad, channels)], dim=1)
                if guidance is not None:
                    extra = _present(self.padding_guidance, "padding_guidance").reshape(1, 1, -1).expand(
                        seq.shape[0], pad, guidance.shape[-1])
                    guidance = torch.cat([guidance, extra], dim=1)
            seq = seq + self.attention(self.norm1(seq), guidance)
            seq = seq[:, :classes]
        seq = seq + self.MLP(self.norm2(seq))
        out = seq.reshape(batch, ph, pw, classes, channels).permute(0, 3, 4, 1, 2)
        if (ph, pw) != (height, width):
            out = F.interpolate(out.reshape(batch * classes, channels, ph, pw), size=(height, width),
                                mode="bilinear", align_corners=True)
            out = out.reshape(batch, classes, channels, height, width)
        out = out.permute(0, 2, 1, 3, 4)
        # official: `x + x_pool`, where x_pool already contains pool(x); the input is counted twice
        return x + out

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        if self.pooling_size == (1, 1):
            return x
        batch, channels, classes, height, width = x.shape
        pooled = F.avg_pool2d(x.permute(0, 2, 1, 3, 4).reshape(batch * classes, channels, height, width),
                              self.pooling_size)
        ph, pw = pooled.shape[-2:]
        return pooled.reshape(batch, classes, channels, ph, pw).permute(0, 2, 1, 3, 4)


def _present(parameter: nn.Parameter | None, what: str) -> nn.Parameter:
    """A padding parameter the forward pass needs; None only when the layer was built without padding."""
    if parameter is None:
        raise RuntimeError(f"class aggregation needs its {what}, but the layer was built without it "
                           "(pad_len 0 or no guidance dim)")
    return parameter

"""The CAT-Seg cost aggregator (`sem_seg_head.predictor.transformer`): cost volume -> per-class logits.

WHY: CAT-Seg segments by refining the image-text cosine-similarity volume (spatially, then across classes)
instead of the embeddings themselves, and decodes each class's refined cost map to 4x resolution.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import CatSegConfig
from .class_attention import ClassAggregation
from .decoder import UpBlock
from .swin import SpatialAggregation


class AggregatorLayer(nn.Module):
    """Spatial aggregation (`swin_block`) followed by class aggregation (`attention`)."""

    def __init__(self, hidden_dim: int, text_guidance_dim: int, appearance_guidance_dim: int, heads: int,
                 resolution: tuple[int, int], pooling_size: tuple[int, int], window: int, attention_type: str,
                 pad_len: int, swin_mlp_ratio: int = 4, class_mlp_ratio: int = 4) -> None:
        super().__init__()
        self.swin_block = SpatialAggregation(hidden_dim, appearance_guidance_dim, resolution, heads, window,
                                             swin_mlp_ratio)
        self.attention = ClassAggregation(hidden_dim, text_guidance_dim, heads, attention_type, pooling_size,
                                          pad_len, class_mlp_ratio)

    def forward(self, x: torch.Tensor, appearance_guidance: torch.Tensor | None,
                text_guidance: torch.Tensor | None) -> torch.Tensor:
        return self.attention(self.swin_block(x, appearance_guidance), text_guidance)


def cost_volume(image_features: torch.Tensor, text_embeddings: torch.Tensor) -> torch.Tensor:
    """Cosine similarity (B, P, T, h, w) between dense features (B, C, h, w) and text (B, T, P, C)."""
    image_features = F.normalize(image_features, dim=1)
    text_embeddings = F.normalize(text_embeddings, dim=-1)
    return torch.einsum("bchw,btpc->bpthw", image_features, text_embeddings)


class Aggregator(nn.Module):
    """Cost embedding, guidance projections, aggregation layers, and the two-stage upsampling decoder."""

    def __init__(self, config: CatSegConfig) -> None:
        super().__init__()
        agg = config.aggregator
        self.pad_len = agg.pad_len
        self.layers = nn.ModuleList([
            AggregatorLayer(agg.hidden_dim, agg.text_guidance_proj_dim, agg.appearance_guidance_proj_dim,
                            agg.num_heads, agg.feature_resolution, agg.pooling_size, agg.window_size,
                            agg.attention_type, agg.pad_len, agg.swin_mlp_ratio, agg.class_mlp_ratio)
            for _ in range(agg.num_layers)
        ])
        self.conv1 = nn.Conv2d(agg.prompt_channel, agg.hidden_dim, kernel_size=7, stride=1, padding=3)
        self.guidance_projection = nn.Sequential(
            nn.Conv2d(config.embed_dim, agg.appearance_guidance_proj_dim, kernel_size=3, stride=1, padding=1),
            nn.ReLU(),
        )
        self.text_guidance_projection = nn.Sequential(nn.Linear(config.embed_dim, agg.text_guidance_proj_dim),
                                                      nn.ReLU())
        self.decoder_guidance_projection = nn.ModuleList([
            nn.Sequential(nn.Conv2d(d, dp, kernel_size=3, stride=1, padding=1), nn.ReLU())
            for d, dp in zip(agg.decoder_guidance_dims, agg.decoder_guidance_proj_dims, strict=True)
        ])
        self.decoder1 = UpBlock(agg.hidden_dim, agg.decoder_dims[0], agg.decoder_guidance_proj_dims[0])
        self.decoder2 = UpBlock(agg.decoder_dims[0], agg.decoder_dims[1], agg.decoder_guidance_proj_dims[1])
        self.head = nn.Conv2d(agg.decoder_dims[1], 1, kernel_size=3, stride=1, padding=1)

    def forward(self, image_features: torch.Tensor, text_embeddings: torch.Tensor,
                decoder_guidance: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """image_features (B, C, h, w) dense CLIP features; text_embeddings (B, T, P, C);
        decoder_guidance: upsample1(tap0) (B, 256, 2h, 2w) and upsample2(tap1) (B, 128, 4h, 4w).
        Returns logits (B, T, 4h, 4w)."""
        batch, classes = text_embeddings.shape[:2]
        selected = None
        if self.pad_len > 0 and classes > self.pad_len:
            # official: keep the pad_len classes with the highest max cost, the others get logit -100
            best = cost_volume(image_features, text_embeddings).permute(0, 2, 1, 3, 4).flatten(-3).amax(dim=-1)
            selected = best.topk(self.pad_len, dim=-1, sorted=False)[1]
            text_embeddings = torch.gather(
                F.normalize(text_embeddings, dim=-1), 1,
                selected[..., None, None].expand(-1, -1, *text_embeddings.shape[2:]))
        corr = cost_volume(image_features, text_embeddings)
        embed = self.embed_cost(corr)
        appearance = self.guidance_projection(image_features)
        projected_guidance = [proj(g) for proj, g in
                              zip(self.decoder_guidance_projection, decoder_guidance, strict=True)]
        text = text_embeddings.mean(dim=-2)
        text = self.text_guidance_projection(text / text.norm(dim=-1, keepdim=True))
        for layer in self.layers:
            embed = layer(embed, appearance, text)
        logits = self.decode(embed, projected_guidance)
        if selected is not None:
            out = torch.full((batch, classes, *logits.shape[2:]), -100.0, dtype=logits.dtype, device=logits.device)
            logits = out.scatter(1, selected[..., None, None].expand(-1, -1, *logits.shape[2:]), logits)
        return logits

    def embed_cost(self, corr: torch.Tensor) -> torch.Tensor:
        """7x7 conv per class: (B, P, T, h, w) -> (B, hidden, T, h, w)."""
        batch, prompts, classes, height, width = corr.shape
        x = self.conv1(corr.permute(0, 2, 1, 3, 4).reshape(batch * classes, prompts, height, width))
        return x.reshape(batch, classes, -1, height, width).permute(0, 2, 1, 3, 4)

    def decode(self, x: torch.Tensor, guidance: list[torch.Tensor]) -> torch.Tensor:
        batch, channels, classes, height, width = x.shape
        x = x.permute(0, 2, 1, 3, 4).reshape(batch * classes, channels, height, width)
        x = self.decoder2(self.decoder1(x, guidance[0]), guidance[1])
        x = self.head(x)
        return x.reshape(batch, classes, *x.shape[-2:])

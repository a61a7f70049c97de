"""The CAT-Seg network with the official module tree: `sem_seg_head.predictor.{clip_model,transformer}`,
`upsample1`, `upsample2`. Pre/post-processing lives in `catseg.predictor`; this module maps a normalised,
CLIP-sized image batch and class text embeddings to logits, so it is what ONNX/TensorRT export.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import CatSegConfig
from .aggregator import Aggregator, cost_volume
from .clip import ClipModel
from .image_encoder import DenseImageFeatures


class CostAggregationPredictor(nn.Module):
    """Official `sem_seg_head.predictor`: the CLIP model and the aggregator (`transformer`)."""

    def __init__(self, config: CatSegConfig) -> None:
        super().__init__()
        self.clip_model = ClipModel(config)
        self.transformer = Aggregator(config)


class CatSegHead(nn.Module):
    """Official `sem_seg_head`: only a holder for the predictor (kept for the key names)."""

    def __init__(self, config: CatSegConfig) -> None:
        super().__init__()
        self.predictor = CostAggregationPredictor(config)


class CATSeg(nn.Module):
    def __init__(self, config: CatSegConfig) -> None:
        super().__init__()
        self.config = config
        width = config.vision.width
        guide1, guide2 = config.aggregator.decoder_guidance_dims
        self.sem_seg_head = CatSegHead(config)
        self.upsample1 = nn.ConvTranspose2d(width, guide1, kernel_size=2, stride=2)
        self.upsample2 = nn.ConvTranspose2d(width, guide2, kernel_size=4, stride=4)

    @property
    def clip_model(self) -> ClipModel:
        return self.sem_seg_head.predictor.clip_model

    @property
    def aggregator(self) -> Aggregator:
        return self.sem_seg_head.predictor.transformer

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """Class tokens (T, 77) -> L2-normalised text embeddings (T, E)."""
        return F.normalize(self.clip_model.encode_text(tokens), dim=-1)

    def image_features(self, clip_images: torch.Tensor) -> DenseImageFeatures:
        """Dense CLIP features and the two raw guidance taps for a normalised (B, 3, S, S) batch."""
        return self.clip_model.visual.forward_dense(clip_images)

    def cost_volume(self, dense: torch.Tensor, text_embeddings: torch.Tensor) -> torch.Tensor:
        """(B, 1, T, h, w) cosine-similarity volume, as the aggregator sees it."""
        return cost_volume(dense, _batched_text(text_embeddings, dense.shape[0]))

    def aggregate(self, features: DenseImageFeatures, text_embeddings: torch.Tensor) -> torch.Tensor:
        guidance = (self.upsample1(features.tap0), self.upsample2(features.tap1))
        return self.aggregator(features.dense, _batched_text(text_embeddings, features.dense.shape[0]), guidance)

    def forward(self, clip_images: torch.Tensor, text_embeddings: torch.Tensor) -> torch.Tensor:
        """clip_images (B, 3, S, S) normalised and resized; text_embeddings (T, E) -> logits (B, T, 4h, 4w)."""
        return self.aggregate(self.image_features(clip_images), text_embeddings)


def _batched_text(text_embeddings: torch.Tensor, batch: int) -> torch.Tensor:
    """(T, E) -> (B, T, 1, E): one prompt per class, the same classes for every image."""
    if text_embeddings.dim() != 2:
        raise ValueError(f"text embeddings must be (T, E), got shape {tuple(text_embeddings.shape)}")
    return text_embeddings.unsqueeze(0).unsqueeze(2).expand(batch, *text_embeddings.shape[:1], 1,
                                                             text_embeddings.shape[1])

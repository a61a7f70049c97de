"""Named CAT-Seg configurations (like segment-anything's build_sam registry) and `build_catseg`."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from .config import AggregatorConfig, CatSegConfig, InferenceConfig, TextConfig, VisionConfig
from .modeling.catseg import CATSeg


def vitb16_384() -> CatSegConfig:
    """CAT-Seg (B): CLIP ViT-B/16 at 384 px, taps [3, 7]; checkpoint model_base.pth."""
    return CatSegConfig(
        name="vitb16_384",
        embed_dim=512,
        vision=VisionConfig(width=768, layers=12, heads=12, patch_size=16, pretrain_resolution=224,
                            tap_blocks=(3, 7)),
        text=TextConfig(width=512, layers=12, heads=8),
        aggregator=AggregatorConfig(),
        inference=InferenceConfig(clip_resolution=384),
    )


def vitl14_336() -> CatSegConfig:
    """CAT-Seg (L), the SemLA model: CLIP ViT-L/14@336px, taps [7, 15]; checkpoint model_large.pth."""
    return CatSegConfig(
        name="vitl14_336",
        embed_dim=768,
        vision=VisionConfig(width=1024, layers=24, heads=16, patch_size=14, pretrain_resolution=336,
                            tap_blocks=(7, 15)),
        text=TextConfig(width=768, layers=12, heads=12),
        aggregator=AggregatorConfig(),
        inference=InferenceConfig(clip_resolution=336),
    )


def tiny() -> CatSegConfig:
    """Fixture-A dimensions: a 13 MB model for tests, same code path and same 24x24 grid as the real ones."""
    return CatSegConfig(
        name="tiny",
        embed_dim=48,
        vision=VisionConfig(width=64, layers=4, heads=2, patch_size=16, pretrain_resolution=224, tap_blocks=(0, 2)),
        text=TextConfig(width=16, layers=2, heads=2),
        aggregator=AggregatorConfig(hidden_dim=64, text_guidance_proj_dim=64, appearance_guidance_proj_dim=64),
        inference=InferenceConfig(clip_resolution=384),
    )


CONFIGS = {"vitb16_384": vitb16_384, "vitl14_336": vitl14_336, "tiny": tiny}


def get_config(name: str) -> CatSegConfig:
    """A registry name, or the path of a config JSON written by `CatSegConfig.to_dict`."""
    if name.endswith(".json"):
        path = Path(name)
        if not path.is_file():
            raise FileNotFoundError(f"CAT-Seg config file {path} not found")
        return CatSegConfig.from_dict(json.loads(path.read_text()))
    try:
        return CONFIGS[name]()
    except KeyError:
        raise ValueError(f"unknown CAT-Seg config {name!r}; known: {sorted(CONFIGS)} or a .json path") from None


def build_catseg(name_or_config: str | CatSegConfig, device: str | torch.device | None = None) -> CATSeg:
    """Build an eval-mode CATSeg with random weights (load a checkpoint afterwards).

    `device="meta"` builds the structure only (no memory), e.g. to check checkpoint keys.
    """
    config = get_config(name_or_config) if isinstance(name_or_config, str) else name_or_config
    if device is None:
        return CATSeg(config).eval()
    with torch.device(device):
        return CATSeg(config).eval()

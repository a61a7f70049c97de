"""Named CAT-Seg configurations (like segment-anything's build_sam registry), the one config resolver
and the one model loader.

Everything that turns a description into a CATSeg goes through here: `get_config` (registry name,
CatSegConfig JSON, or a reference fixture's config.json) and `load_catseg` (config + checkpoint, or
seeded random weights when explicitly allowed).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

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


def config_from_json(data: Mapping[str, Any], name: str | None = None) -> CatSegConfig:
    """A CatSegConfig from either JSON form: `CatSegConfig.to_dict` (what the demo writes next to
    its weights) or a reference fixture's config.json (shared/fixtures/*/config.json)."""
    if "vision" in data and "embed_dim" in data:
        return CatSegConfig.from_dict(data)
    if "clip" in data and "aggregator" in data:
        return CatSegConfig.from_fixture(data, name=name)
    raise ValueError("not a CAT-Seg config: expected CatSegConfig.to_dict() fields (name, embed_dim, vision, ...) "
                     "or a reference fixture config (clip, aggregator, decoder, ...)")


def get_config(spec: str | os.PathLike | CatSegConfig) -> CatSegConfig:
    """A CatSegConfig from a registry name, a config JSON path (either form), or a config itself."""
    if isinstance(spec, CatSegConfig):
        return spec
    text = str(spec)
    if text in CONFIGS:
        return CONFIGS[text]()
    path = Path(text).expanduser()
    if text.endswith(".json") or path.is_file():
        if not path.is_file():
            raise FileNotFoundError(f"CAT-Seg config file {path} not found")
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"CAT-Seg config file {path} is unreadable ({exc})") from None
        try:
            return config_from_json(data, name=path.parent.name or None)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"CAT-Seg config file {path}: {exc}") from None
    raise ValueError(f"unknown CAT-Seg config {text!r}; known: {sorted(CONFIGS)} or a .json path")


def build_catseg(spec: str | os.PathLike | CatSegConfig, device: str | torch.device | None = None) -> CATSeg:
    """Build an eval-mode CATSeg with random weights (load a checkpoint afterwards).

    `device="meta"` builds the structure only (no memory), e.g. to check checkpoint keys.
    """
    config = get_config(spec)
    if device is None:
        return CATSeg(config).eval()
    with torch.device(device):
        return CATSeg(config).eval()


def load_catseg(spec: str | os.PathLike | CatSegConfig, checkpoint: str | os.PathLike | None = None, *,
                allow_random_weights: bool = False, seed: int = 0, device: str | torch.device = "cpu") -> CATSeg:
    """The eval-mode model of `spec` with `checkpoint` loaded strictly; seeded random weights only
    when there is no checkpoint and `allow_random_weights` is set (tests, demos: masks mean nothing).

    Raises CheckpointNotFoundError (naming the file and where it comes from), CheckpointFormatError,
    FileNotFoundError / ValueError for the config.
    """
    from .checkpoint import CheckpointNotFoundError, load_catseg_weights

    if not checkpoint and not allow_random_weights:
        raise CheckpointNotFoundError(None)
    if checkpoint and not Path(checkpoint).expanduser().is_file():
        raise CheckpointNotFoundError(Path(checkpoint).expanduser())
    torch.manual_seed(int(seed))
    model = build_catseg(spec)
    if checkpoint:
        load_catseg_weights(model, Path(checkpoint).expanduser())
    return model.eval().to(device)

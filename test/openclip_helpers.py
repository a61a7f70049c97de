"""A tiny open_clip model config (random weights in milliseconds) registered with open_clip, for navigator tests."""
from __future__ import annotations

import json
from pathlib import Path

import open_clip


def register_tiny_openclip(directory: Path, name: str, layers: int = 1) -> str:
    """Register `name`: a 32 px ViT with `layers` blocks and 16-d embeddings; returns the name."""
    path = Path(directory) / f"{name}.json"
    path.write_text(json.dumps({
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": layers, "width": 32, "patch_size": 16, "head_width": 16},
        "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 1, "layers": 1}}))
    open_clip.add_model_config(path)
    return name

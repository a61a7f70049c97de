"""The CLIP model inside CAT-Seg (`clip_model`): the text tower's parameters at top level plus `visual`."""
from __future__ import annotations

import torch
from torch import nn

from ..config import CatSegConfig
from .image_encoder import ClipImageEncoder
from .text_encoder import ClipTextEncoder


class ClipModel(ClipTextEncoder):
    """Mirrors OpenAI CLIP's module tree so official and open_clip weights load by name.

    Subclassing the text encoder keeps the text parameters at the top level (`token_embedding`, `transformer`,
    ...) exactly as the official state dict has them; `forward(tokens)` is the text path.
    """

    def __init__(self, config: CatSegConfig) -> None:
        vision, text = config.vision, config.text
        super().__init__(text.width, text.layers, text.heads, config.embed_dim, text.context_length,
                         text.vocab_size, text.mlp_ratio)
        self.visual = ClipImageEncoder(vision.width, vision.layers, vision.heads, vision.patch_size,
                                       vision.pretrain_resolution, config.embed_dim, vision.tap_blocks,
                                       vision.mlp_ratio)
        self.logit_scale = nn.Parameter(torch.tensor(4.6052))

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Standard (non-dense) CLIP image embedding (B, embed_dim), not normalised."""
        return self.visual(images)


def text_tower_parameter_names(clip_model: nn.Module) -> list[str]:
    """Names (relative to clip_model) of every parameter the text embeddings depend on."""
    return [name for name, _ in clip_model.named_parameters()
            if not name.startswith("visual.") and name != "logit_scale"]

"""CLIP text tower: token + position embeddings, causal transformer, EOT token -> ln_final -> text_projection."""
from __future__ import annotations

import torch
from torch import nn

from .clip_block import ClipLayerNorm
from .image_encoder import ClipTransformer


class ClipTextEncoder(nn.Module):
    """Parameter names match the official `clip_model` top level (token_embedding, transformer, ln_final, ...).

    `forward(tokens)` returns the projected EOT embedding (T, embed_dim), not normalised, like `encode_text`.
    """

    def __init__(self, width: int, layers: int, heads: int, embed_dim: int, context_length: int = 77,
                 vocab_size: int = 49408, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.context_length = context_length
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, width).normal_(std=0.01))
        self.transformer = ClipTransformer(width, layers, heads, mlp_ratio)
        self.ln_final = ClipLayerNorm(width)
        self.text_projection = nn.Parameter(torch.empty(width, embed_dim).normal_(std=width ** -0.5))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.encode_text(tokens)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        eot_index = tokens.argmax(dim=-1)
        # Causal attention: the EOT output depends only on tokens up to it, so the zero padding after the
        # longest prompt's EOT is dropped (same result, ~7x less work for short class prompts).
        length = int(eot_index.max()) + 1
        tokens = tokens[:, :length]
        x = self.token_embedding(tokens) + self.positional_embedding[:length]
        # additive causal mask (-inf strictly above the diagonal); built per call, it is not a checkpoint entry
        mask = torch.full((length, length), float("-inf"), dtype=x.dtype, device=x.device).triu_(1)
        x = self.ln_final(self.transformer(x, mask))
        eot = x[torch.arange(x.shape[0], device=x.device), eot_index]
        return eot @ self.text_projection

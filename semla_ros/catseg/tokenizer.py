"""Class names -> CLIP BPE tokens with the official prompt rule.

WHY open_clip: its SimpleTokenizer is OpenAI's BPE (same vocabulary file, same ftfy/whitespace cleaning and
lower-casing, SOT 49406 / EOT 49407, zero padding to 77), so ids equal the official `clip.tokenize`.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .config import OFFICIAL_PROMPT_TEMPLATE


def first_synonym(class_name: str) -> str:
    """Official rule: a name like "road, street" is prompted with its first synonym only."""
    return class_name.split(", ")[0] if ", " in class_name else class_name


def class_prompts(class_names: Sequence[str], template: str = OFFICIAL_PROMPT_TEMPLATE) -> list[str]:
    if isinstance(class_names, str):
        raise TypeError("class_names must be a sequence of names, not a single string")
    prompts = []
    for name in class_names:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"class names must be non-empty strings, got {name!r}")
        prompts.append(template.format(first_synonym(name)))
    return prompts


def tokenize(texts: Sequence[str], context_length: int = 77) -> torch.Tensor:
    """(N, context_length) int64 token ids. Over-long prompts are truncated with EOT kept last (open_clip)."""
    from open_clip.tokenizer import tokenize as open_clip_tokenize

    return open_clip_tokenize(list(texts), context_length=context_length).to(torch.int64)


def tokenize_class_names(class_names: Sequence[str], template: str = OFFICIAL_PROMPT_TEMPLATE,
                         context_length: int = 77) -> torch.Tensor:
    return tokenize(class_prompts(class_names, template), context_length)

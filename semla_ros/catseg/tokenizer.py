"""Class names -> CLIP BPE tokens with the official prompt rule.

WHY open_clip: its SimpleTokenizer is OpenAI's BPE (same vocabulary file, same ftfy/whitespace cleaning and
lower-casing, SOT 49406 / EOT 49407, zero padding to 77), so ids equal the official `clip.tokenize`.
Its `tokenizer.py` is loaded on its own: the `open_clip` package's `__init__` imports CoCa and the Hugging Face
glue, seconds of a node's start-up (README, "Start-up"), for a file that imports none of them.
"""
from __future__ import annotations

import functools
import importlib.util
import sys
from pathlib import Path
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
    return _open_clip_tokenizer().tokenize(list(texts), context_length=context_length).to(torch.int64)


@functools.cache
def _open_clip_tokenizer():
    """open_clip's `tokenizer` module (the package's own when already imported, else its file alone)."""
    if "open_clip" in sys.modules:
        import open_clip.tokenizer

        return open_clip.tokenizer
    spec = importlib.util.find_spec("open_clip")   # finds the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("open_clip is not installed (its BPE tokenizer makes the class prompts' token ids)")
    path = Path(spec.submodule_search_locations[0]) / "tokenizer.py"
    module_spec = importlib.util.spec_from_file_location(f"{__name__}._open_clip_tokenizer", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def tokenize_class_names(class_names: Sequence[str], template: str = OFFICIAL_PROMPT_TEMPLATE,
                         context_length: int = 77) -> torch.Tensor:
    return tokenize(class_prompts(class_names, template), context_length)

"""ONNX export of the CAT-Seg network core: (normalised CLIP-size views, class text embeddings) -> logits.

WHY this boundary: text embeddings change only with the vocabulary or an adapter swap, so they are an input
(computed by PyTorch, cached) and the exported graph is the per-frame image path, `CATSeg.forward` itself.
The model is exported directly (not through a wrapper module) so ONNX initializers keep the parameter names that
weight refit after an adapter fusion looks up. Dynamic axes: views (1 whole image, 5 sliding window) and classes
(up to the model's pad_len; above it the official top-k class selection is data-dependent and not exported).
"""
from __future__ import annotations

import copy
import os

import torch
from torch import nn

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16}
INPUT_NAMES = ("image", "text_embeddings")
OUTPUT_NAME = "logits"


def export_onnx(model: nn.Module, path: str | os.PathLike, precision: str = "fp32", num_classes: int = 19,
                num_views: int = 1, opset: int = 17) -> None:
    """Write `model`'s forward as ONNX: image (V, 3, S, S) + text_embeddings (T, E) -> logits (V, T, 4h, 4w).

    `precision="fp16"` exports a half-precision copy (inputs and weights fp16; `model` is not modified). Export
    runs the model once on its own device with example inputs of `num_views` views and `num_classes` classes.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    config = model.config
    if not 1 <= num_classes <= config.aggregator.pad_len:
        raise ValueError(f"num_classes must be in [1, {config.aggregator.pad_len}] for export, got {num_classes}")
    dtype = PRECISIONS[precision]
    device = next(model.parameters()).device
    exported = model if next(model.parameters()).dtype == dtype else copy.deepcopy(model).to(dtype)
    size = config.inference.clip_resolution
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(num_views, 3, size, size, generator=generator).to(device, dtype)
    text = nn.functional.normalize(torch.randn(num_classes, config.embed_dim, generator=generator), dim=-1)
    was_training = exported.training
    exported.eval()
    try:
        with torch.no_grad():
            torch.onnx.export(
                exported, (image, text.to(device, dtype)), str(path), dynamo=False, opset_version=opset,
                input_names=list(INPUT_NAMES), output_names=[OUTPUT_NAME],
                dynamic_axes={"image": {0: "views"}, "text_embeddings": {0: "classes"},
                              OUTPUT_NAME: {0: "views", 1: "classes"}},
            )
    finally:
        exported.train(was_training)

"""ONNX export of the CAT-Seg network core: (normalised CLIP-size views, class text embeddings) -> logits.

WHY this boundary: text embeddings change only with the vocabulary or an adapter swap, so they are an input
(computed by PyTorch, cached) and the exported graph is the per-frame image path, `CATSeg.forward` itself.
The model is exported directly (not through a wrapper module) so ONNX initializers keep the parameter names that
weight refit after an adapter fusion looks up. Dynamic axes: views (1 whole image, 5 sliding window) and classes
(up to the model's pad_len, see `export_class_limit`).
"""
from __future__ import annotations

import copy
import hashlib
import os
from pathlib import Path

import torch
from torch import nn

from ..modeling.catseg import CATSeg

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16}
INPUT_NAMES = ("image", "text_embeddings")
OUTPUT_NAME = "logits"
OPSET = 17
# The TorchScript exporter: the dynamo exporter (onnxscript 0.7.2) was tried and gives the same anonymous,
# transposed Linear initializers at 7x the export time (tiny: 38 s vs 5 s), so it buys nothing here yet.
EXPORTER = "torchscript"
_GRAPH_SOURCES = ("catseg/modeling", "catseg/config.py", "catseg/utils/onnx.py")


def export_code_digest() -> str:
    """Hash of the source files that shape the exported graph (the network code, its config, this exporter):
    part of every cache key of an exported file, so a code change never reuses a stale export."""
    root = Path(__file__).resolve().parents[2]
    digest = hashlib.sha256()
    for source in _GRAPH_SOURCES:
        path = root / source
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            digest.update(file.relative_to(root).as_posix().encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def export_class_limit(config) -> int | None:
    """Most classes the exported graph represents: pad_len (above it CAT-Seg keeps the pad_len best classes per
    image, a data-dependent selection that is not exported); None when the model pads nothing (no limit)."""
    pad_len = config.aggregator.pad_len
    return pad_len if pad_len > 0 else None


def export_onnx(model: CATSeg, path: str | os.PathLike, precision: str = "fp32", num_classes: int | None = None,
                num_views: int = 1, opset: int = OPSET) -> None:
    """Write `model`'s forward as ONNX: image (V, 3, S, S) + text_embeddings (T, E) -> logits (V, T, 4h, 4w).

    `precision="fp16"` exports a half-precision copy (inputs and weights fp16; `model` is not modified). Export
    runs the model once on its own device with example inputs of `num_views` views and `num_classes` classes.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    config = model.config
    limit = export_class_limit(config)
    if num_classes is None:   # fewer than pad_len: traced with T == pad_len, the padding would be left out
        num_classes = 19 if limit is None else max(1, min(19, limit - 1))
    if num_classes < 1 or (limit is not None and num_classes > limit):
        raise ValueError(f"num_classes must be in [1, {limit}] for export, got {num_classes}")
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

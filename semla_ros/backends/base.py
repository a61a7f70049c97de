"""The Backend interface: HOW the CAT-Seg network runs (PyTorch, TensorRT, ...).

The segmenter decides WHAT runs (which fused weights, which text embeddings); a backend only
executes it. Pre- and post-processing stay in the CatSegPredictor so every backend produces
the same masks; a backend replaces the network call (`forward`) and knows how to take new
weights (`update_weights`: a copy for PyTorch, a refit for TensorRT).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Mapping

import numpy as np
import torch

PRECISIONS = ("fp32", "fp16")


class Backend(ABC):
    name: str = "backend"

    def __init__(self, predictor):
        self.predictor = predictor

    @abstractmethod
    def forward(self, clip_images: torch.Tensor, text_embeddings: torch.Tensor) -> torch.Tensor:
        """(V,3,S,S) normalised CLIP-size views + (T,E) text embeddings -> (V,T,h,w) float32 logits."""

    @abstractmethod
    def update_weights(self, fused: Mapping[str, torch.Tensor]) -> None:
        """Make these full weights (module name -> W, as in model.get_submodule(name).weight) active.

        Called between two frames on the inference thread; afterwards forward() must use them.
        """

    def run(self, image_rgb: np.ndarray, text_embeddings: torch.Tensor) -> torch.Tensor:
        """Raw logits of one image on the predictor's path: (1,T,h,w) whole image, (5,T,h,w) sliding."""
        views, _, _ = self._views(image_rgb)
        return self.forward(views, text_embeddings)

    def segment(self, image_rgb: np.ndarray, text_embeddings: torch.Tensor) -> tuple[np.ndarray, torch.Tensor]:
        """(class ids (H,W) int64 at the input size, probabilities (T,H,W))."""
        views, size, padded = self._views(image_rgb)
        logits = self.forward(views, text_embeddings).float()
        p = self.predictor
        with torch.no_grad():
            probs = p.sliding_postprocess(logits, size) if p.sliding_window else p.postprocess(logits, size, padded)
        return probs.argmax(dim=0).cpu().numpy().astype(np.int64), probs

    def _views(self, image_rgb: np.ndarray):
        p = self.predictor
        image = np.asarray(image_rgb)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
            raise ValueError(f"expected an HxWx3 uint8 RGB image, got dtype {image.dtype} shape {image.shape}")
        size = (int(image.shape[0]), int(image.shape[1]))
        with torch.no_grad():
            if p.sliding_window:
                return p.sliding_views(image), size, None
            views, padded = p.preprocess(image)
        return views, size, padded

    def close(self) -> None:
        """Release engines/buffers (nothing for PyTorch)."""

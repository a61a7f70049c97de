"""The Backend interface: HOW the CAT-Seg network runs (PyTorch, TensorRT, ...).

The segmenter decides WHAT runs (which fused weights, which text embeddings) and the
CatSegPredictor owns everything around the network call (pre/post-processing, the text tower,
the PyTorch model's weights), so every backend makes masks the same way. A backend only
replaces the network call (`forward`, plugged into `CatSegPredictor.predict`) and learns new
weights in its own form (`update_weights`: nothing for PyTorch, which runs the predictor's own
model; for compiled engines see `engine_lifecycle`).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Mapping

import torch

from .names import PRECISIONS, PrecisionName  # noqa: F401  (their old home)


@dataclass(frozen=True)
class WeightUpdate:
    """What a compiled engine did with new weights (`Backend.update_weights`; PyTorch has nothing to report)."""
    updated: int                   # fused weights the engine now holds through an in-place update
    seconds: float
    rebuild_started: bool          # a rebuild is running or queued (PyTorch serves meanwhile)
    unreached: tuple[str, ...]     # fused weights baked into the engine with another value


class Backend(ABC):
    name: str = "backend"
    # Most views one `forward` takes (several frames of one size go through it as one batch); None: any number.
    max_batch: int | None = None

    def __init__(self, predictor):
        self.predictor = predictor

    @abstractmethod
    def forward(self, clip_images: torch.Tensor, text_embeddings: torch.Tensor) -> torch.Tensor:
        """(V,3,S,S) normalised CLIP-size views + (T,E) text embeddings -> (V,T,h,w) float32 logits; the views
        are one frame's (whole image: V=1; sliding window: its 5 views) or several frames' (one batched forward)."""

    @abstractmethod
    def update_weights(self, fused: Mapping[str, torch.Tensor]) -> WeightUpdate | None:
        """Make these full weights (module name -> W, as in model.get_submodule(name).weight) active.

        Called between two frames on the inference thread, after the predictor's PyTorch model
        holds them (`CatSegPredictor.load_weights`); afterwards forward() must use them. Returns what
        a compiled engine did (None where there is nothing to report).
        """

    def status(self) -> tuple[str, str] | None:
        """(level, message) about how frames run now, for diagnostics; None: nothing to say (PyTorch)."""
        return None

    def close(self) -> None:  # noqa: B027  an optional hook: PyTorch holds nothing to release, engines override it
        """Release engines/buffers (nothing for PyTorch)."""

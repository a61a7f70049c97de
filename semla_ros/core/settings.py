"""The segmenter's live settings: the one source of their defaults and of their validation.

The node's parameter table, the evaluation protocol, the CLIs' options, the debouncer and
retrieval all take their values from a `SegmenterSettings`, so a default is written once.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

METRICS = ("euclidean", "cosine")
THRESHOLD_MODES = ("absolute", "relative")


@dataclass(frozen=True)
class SegmenterSettings:
    """Retrieval, shift debouncing and the adapter cache; all live-updatable through
    SemlaSegmenter.update_settings()."""

    top_k: int = 5                     # adapters fused per swap (paper default 5; best 7)
    temperature: float = 0.05          # softmax temperature over 1/distance (paper default 0.05; best 0.01)
    metric: str = "euclidean"          # distance between embedding and centroids
    ema_alpha: float = 0.1             # EMA weight of the newest embedding
    switch_threshold: float = 0.5      # ||EMA - reference|| that counts as a shift
    threshold_mode: str = "relative"   # "relative": times the library's median centroid spacing; "absolute"
    min_consecutive: int = 3           # embedded frames in a row over the threshold before a swap
    cooldown_s: float = 5.0            # minimum seconds between two swaps (and before a retry)
    embed_every_n: int = 1             # embed every Nth processed frame
    warmup_frames: int = 1             # embedded frames averaged before the startup fusion
    adapter_cache_mb: float = 256.0    # LRU cache of adapter factors read from disk (ViT-B: 8.3 MB per adapter)

    def replace(self, **changes) -> "SegmenterSettings":
        """A validated copy with `changes`; unknown names and bad values raise ValueError."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"unknown settings: {sorted(unknown)}")
        return dataclasses.replace(self, **changes).validated()

    def validated(self) -> "SegmenterSettings":
        """Self, or ValueError naming the first bad value."""
        def integer(name, low):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {v!r}")

        def positive(name, allow_zero=False, upper=None):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)) or not math.isfinite(v) \
                    or (v < 0 if allow_zero else v <= 0) or (upper is not None and v > upper):
                bound = ">= 0" if allow_zero else "> 0"
                raise ValueError(f"{name} must be a finite number {bound}"
                                 f"{'' if upper is None else f' and <= {upper}'}, got {v!r}")

        integer("top_k", 1)
        positive("temperature")
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {self.metric!r}")
        positive("ema_alpha", upper=1.0)
        positive("switch_threshold")
        if self.threshold_mode not in THRESHOLD_MODES:
            raise ValueError(f"threshold_mode must be one of {THRESHOLD_MODES}, got {self.threshold_mode!r}")
        integer("min_consecutive", 1)
        positive("cooldown_s", allow_zero=True)
        integer("embed_every_n", 1)
        integer("warmup_frames", 1)
        positive("adapter_cache_mb", allow_zero=True)
        return self


DEFAULTS = SegmenterSettings()

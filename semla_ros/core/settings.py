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
# What confirms a domain shift (core/trigger.py): the fusion retrieval would build for the EMA differs
# materially from the active one; the EMA moved far from the active reference (the mission's rule);
# every embedded frame (per-image SemLA, the official way).
TRIGGERS = ("retrieval", "distance", "frame")


@dataclass(frozen=True)
class SegmenterSettings:
    """Retrieval, shift debouncing and the adapter cache; all live-updatable through
    SemlaSegmenter.update_settings().

    The debouncing defaults are the best measured on the shift scenarios (`semla-bench shifts`,
    docs/shifts.md); the mission's rule is `trigger="distance"` (with ema_alpha 0.1, cooldown_s 5,
    dwell_s 0 and warmup_frames 1 it is the node's rule before the scenarios existed)."""

    top_k: int = 5                     # adapters fused per swap (paper default 5; best 7)
    temperature: float = 0.05          # softmax temperature over 1/distance (paper default 0.05; best 0.01)
    metric: str = "euclidean"          # distance between embedding and centroids
    ema_alpha: float = 0.2             # EMA weight of the newest embedding
    switch_threshold: float = 0.5      # ||EMA - reference|| that counts as a shift
    threshold_mode: str = "relative"   # "relative": times the library's median centroid spacing; "absolute"
    min_consecutive: int = 3           # embedded frames in a row over the threshold before a swap
    cooldown_s: float = 2.0            # minimum seconds between two swaps (and before a retry)
    trigger: str = "retrieval"         # what confirms a shift: one of TRIGGERS
    dwell_s: float = 1.5               # a shift must hold this long (frame stamps) before a swap
    switch_margin: float = 0.05        # retrieval: the new top-1 is closer than the active top-1 by this much
    #                                    (times the median centroid spacing when threshold_mode=relative)
    weight_change: float = 0.5         # retrieval, same top-1: total-variation distance of the fusion weights
    embed_every_n: int = 1             # embed every Nth processed frame
    warmup_frames: int = 5             # embedded frames averaged before the startup fusion
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
        if self.trigger not in TRIGGERS:
            raise ValueError(f"trigger must be one of {TRIGGERS}, got {self.trigger!r}")
        positive("dwell_s", allow_zero=True)
        positive("switch_margin", allow_zero=True)
        positive("weight_change", upper=1.0)
        integer("embed_every_n", 1)
        integer("warmup_frames", 1)
        positive("adapter_cache_mb", allow_zero=True)
        return self


DEFAULTS = SegmenterSettings()

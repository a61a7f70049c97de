"""The segmenter's live settings: the one source of their defaults and of their validation.

The node's parameter table, the evaluation protocol, the CLIs' options, the debouncer and
retrieval all take their values from a `SegmenterSettings`, so a default is written once.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from . import fields
from .fields import setting

Metric = Literal["euclidean", "cosine"]
ThresholdMode = Literal["absolute", "relative"]
# What confirms a domain shift (core/trigger.py): the fusion retrieval would build for the EMA differs
# materially from the active one; the EMA moved far from the active reference (the mission's rule);
# every embedded frame (per-image SemLA, the official way).
Trigger = Literal["retrieval", "distance", "frame"]
METRICS: tuple[str, ...] = get_args(Metric)
THRESHOLD_MODES: tuple[str, ...] = get_args(ThresholdMode)
TRIGGERS: tuple[str, ...] = get_args(Trigger)


@dataclass(frozen=True)
class SegmenterSettings:
    """Retrieval, shift debouncing and the adapter cache; all live-updatable through
    SemlaSegmenter.update_settings().

    The debouncing defaults are the best measured on the shift scenarios (`semla-bench shifts`,
    docs/shifts.md); the mission's rule is `trigger="distance"` (with ema_alpha 0.1, cooldown_s 5,
    dwell_s 0 and warmup_frames 1 it is the node's rule before the scenarios existed)."""

    top_k: int = setting(5, low=1, high=64, help="Adapters fused per swap (paper default 5; best 7)",
                         doc="Adapters fused per swap (SemLA default 5; best in the paper 7).")
    temperature: float = setting(
        0.05, low=1e-6, high=100.0, help="Softmax temperature over 1/distance (paper default 0.05; best 0.01)",
        doc="Softmax temperature over 1/distance (SemLA default 0.05; best in the paper 0.01).")
    metric: Metric = setting("euclidean", help="Distance between embedding and adapter centroids",
                             doc="Distance between embedding and adapter centroids: euclidean (SemLA) | cosine.")
    ema_alpha: float = setting(0.2, low=1e-6, high=1.0, help="EMA weight of the newest embedding",
                               doc="EMA of the navigator embedding: ema <- (1 - ema_alpha) * ema + ema_alpha * e_t.")
    switch_threshold: float = setting(
        0.5, low=1e-9, high=1e9,
        help="Distance trigger: swap when ||EMA - reference|| exceeds this (absolute units, or a fraction of the "
             "library's median inter-centroid distance when threshold_mode=relative)",
        doc="Distance trigger: the threshold. threshold_mode \"relative\": threshold = switch_threshold * the "
            "library's median inter-centroid distance; \"absolute\": as given.")
    threshold_mode: ThresholdMode = setting("relative", help="How switch_threshold and switch_margin are read",
                                            doc="relative | absolute: how switch_threshold and switch_margin are read.")
    min_consecutive: int = setting(3, low=1, high=10000,
                                   help="Embedded frames in a row over the threshold before a swap")
    cooldown_s: float = setting(2.0, low=0.0, high=86400.0,
                                help="Minimum seconds between two swaps (and before retrying a failed fusion)")
    trigger: Trigger = setting(
        "retrieval",
        help="What confirms a shift: retrieval (the fusion retrieval would build for the EMA differs materially "
             "from the active one), distance (||EMA - reference|| > switch_threshold), frame (re-fuse on every "
             "embedded frame: per-image SemLA)",
        doc="What makes the EMA \"over\" (a shift candidate):\n"
            "  retrieval: the fusion retrieval would build for the EMA differs materially from the active one: "
            "its top-1 adapter changed (by switch_margin, see below) or, same top-1, the weights moved by more "
            "than weight_change. Knows the library: it swaps between near domains and never between two points "
            "that retrieve the same fusion.\n"
            "  distance: ||ema - reference|| > switch_threshold (the mission's rule; the reference is the query "
            "of the active fusion). Before the scenarios its settings were ema_alpha 0.1, cooldown_s 5, dwell_s 0, "
            "warmup_frames 1.\n"
            "  frame: re-fuse on every embedded frame for that frame alone (per-image SemLA, the official way; a "
            "fusion per frame).\n"
            "A swap needs \"over\" for min_consecutive embedded frames in a row AND dwell_s seconds, and "
            "cooldown_s seconds since the last swap.")
    dwell_s: float = setting(
        1.5, low=0.0, high=3600.0, help="Seconds (frame stamps) a shift must hold before a swap",
        doc="Seconds (frame stamps) a shift must hold, towards the same adapter, before a swap. Flicker faster "
            "than this does not swap; a change is followed about dwell_s + 0.4 s later at 10 Hz (the EMA needs a "
            "few frames to cross over).")
    switch_margin: float = setting(
        0.05, low=0.0, high=1e9,
        help="Retrieval trigger: the new top-1 adapter must be closer to the EMA than the active top-1 by this "
             "much (read like switch_threshold)",
        doc="Retrieval trigger, hysteresis: a new top-1 adapter counts only when the EMA is closer to its centroid "
            "than to the active top-1's by this much (read like switch_threshold), so noise around the midpoint "
            "of two centroids cannot flip it back and forth.")
    weight_change: float = setting(
        0.5, low=1e-6, high=1.0,
        help="Retrieval trigger, same top-1: total-variation distance of the fusion weights that counts as a "
             "different fusion",
        doc="Retrieval trigger, same top-1 adapter: total-variation distance between the active fusion's weights "
            "and retrieval's for the EMA (half the L1 distance over both fusions' adapters) that counts as a "
            "different fusion.")
    embed_every_n: int = setting(1, low=1, high=10000, help="Embed every Nth processed frame with the navigator",
                                 doc="Embed (and update the EMA) on every Nth processed frame only; segmentation "
                                     "runs on all.")
    warmup_frames: int = setting(5, low=1, high=10000, help="Embedded frames averaged before the startup fusion",
                                 doc="Embedded frames averaged before the startup fusion (the startup reference "
                                     "is an average, not one noisy frame).")
    adapter_cache_mb: float = setting(
        256.0, low=0.0, high=1048576.0,
        help="Memory (MB) for adapter factors read from the library (LRU); an adapter is read from disk when a "
             "fusion first needs it",
        doc="Memory (MB) for adapter factors read from the library, least recently used dropped first. Opening a "
            "library reads no factors; a fusion reads the K adapters it needs (ViT-B/16: 8.3 MB each, ViT-L/14: "
            "~14 MB) and keeps them here; while a domain shift is being confirmed the likely ones are read ahead. "
            "0 keeps nothing (every fusion reads its adapters from disk).")

    def __post_init__(self):
        fields.validate(self)

    def replace(self, **changes) -> "SegmenterSettings":
        """A validated copy with `changes`; unknown names and bad values raise ValueError."""
        return fields.replace(self, **changes)


DEFAULTS = SegmenterSettings()

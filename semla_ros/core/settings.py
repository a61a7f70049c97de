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
# What confirms a domain shift: enough accumulated per-frame evidence for another adapter (core/evidence.py);
# the fusion retrieval would build for the EMA differs materially from the active one (core/trigger.py); the
# EMA moved far from the active reference (the mission's rule); every embedded frame (per-image SemLA).
Trigger = Literal["evidence", "retrieval", "distance", "frame"]
METRICS: tuple[str, ...] = get_args(Metric)
THRESHOLD_MODES: tuple[str, ...] = get_args(ThresholdMode)
TRIGGERS: tuple[str, ...] = get_args(Trigger)


@dataclass(frozen=True)
class SegmenterSettings:
    """Retrieval, shift debouncing and the adapter cache; all live-updatable through
    SemlaSegmenter.update_settings().

    The shift defaults are the best measured on the shift scenarios (`semla-bench shifts`, docs/shifts.md);
    the mission's rule is `trigger="distance"` (with ema_alpha 0.1, cooldown_s 5, dwell_s 0 and
    warmup_frames 1 it is the node's rule before the scenarios existed)."""

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
    cooldown_s: float = setting(0.5, low=0.0, high=86400.0,
                                help="Minimum seconds between two fusion attempts (and before retrying a failed one)")
    trigger: Trigger = setting(
        "evidence",
        help="What confirms a shift: evidence (enough accumulated per-frame evidence for another adapter), "
             "retrieval (the fusion retrieval would build for the EMA differs materially from the active one), "
             "distance (||EMA - reference|| > switch_threshold), frame (re-fuse on every embedded frame: "
             "per-image SemLA)",
        doc="What confirms a domain shift:\n"
            "  evidence: every embedded frame adds, for each other adapter it retrieves, how much closer it is to "
            "that adapter's centroid than to the active top-1's (in units of the two centroids' spacing); a "
            "candidate whose sum reaches evidence_threshold (sums never go below 0, so noise does not build up) "
            "is swapped to, fused for the mean of the frames behind it. A clear change swaps within a few "
            "frames, weak evidence waits, noise never swaps. Flapping between near domains is damped "
            "(flap_*). ema_alpha, min_consecutive, dwell_s, switch_margin and weight_change do not apply.\n"
            "  retrieval: the fusion retrieval would build for the EMA differs materially from the active one: "
            "its top-1 adapter changed (by switch_margin, see below) or, same top-1, the weights moved by more "
            "than weight_change. A swap needs \"over\" for min_consecutive embedded frames in a row AND dwell_s "
            "seconds.\n"
            "  distance: ||ema - reference|| > switch_threshold (the mission's rule; the reference is the query "
            "of the active fusion), with min_consecutive and dwell_s like retrieval. Before the scenarios its "
            "settings were ema_alpha 0.1, cooldown_s 5, dwell_s 0, warmup_frames 1.\n"
            "  frame: re-fuse on every embedded frame for that frame alone (per-image SemLA, the official way; a "
            "fusion per frame).\n"
            "Every trigger waits cooldown_s seconds after a fusion attempt before the next.")
    evidence_threshold: float = setting(
        2.0, low=1e-3, high=1e6,
        help="Evidence trigger: accumulated evidence for another adapter that confirms a shift (a frame of its "
             "domain adds about 0.4 on the demo world)",
        doc="Evidence trigger: the accumulated evidence that confirms a shift. A frame adds "
            "(d_active - d_candidate) / spacing(active, candidate), about +0.4 for a frame of the candidate's "
            "domain and -0.4 for one of the active domain on the demo world: 2.0 is about 5 frames of clear "
            "evidence; higher waits longer and swaps less on noise.")
    flap_window_s: float = setting(
        2.0, low=0.0, high=3600.0,
        help="Evidence trigger: a swap back to the adapter left less than this many seconds ago is a flap",
        doc="Evidence trigger, flap damping: a swap back to the adapter left less than this many seconds ago "
            "is a flap and adds flap_penalty to a penalty that halves every flap_half_life_s. A shift then needs "
            "evidence_threshold + penalty * (median spacing / spacing of the two centroids)^4: flicker between "
            "near domains stops being followed, flicker between far domains still is. 0 turns damping off.")
    flap_penalty: float = setting(0.5, low=0.0, high=1e6, help="Evidence trigger: penalty added per flap")
    flap_half_life_s: float = setting(30.0, low=1e-3, high=86400.0,
                                      help="Evidence trigger: seconds for the flap penalty to halve")
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
    fusion_recall: int = setting(
        8, low=0, high=1000,
        help="Recent fusions (one per top-1 adapter) whose text embeddings are kept: returning to a domain "
             "re-stages that fusion instead of making a new one (0: off)",
        doc="Recent fusions kept for recall, one per top-1 adapter: when retrieval asks for a fusion with the "
            "same top-1 adapter and weights within weight_change (total variation) of one made recently, that "
            "fusion is staged again from the cached adapters and its text embeddings are reused (a swap costs "
            "the staging only). Keeps names, weights and text embeddings, no weights. 0 turns recall off; "
            "trigger frame (per-image SemLA) never recalls.")
    embed_every_n: int = setting(1, low=1, high=10000, help="Embed every Nth processed frame with the navigator",
                                 doc="Embed (and update the EMA) on every Nth processed frame only; segmentation "
                                     "runs on all.")
    embed_rest_every_n: int = setting(
        4, low=1, high=10000,
        help="While the decision is still, embed less often: the interval doubles from embed_every_n after each "
             "still embedding, up to this many frames (<= embed_every_n: a fixed cadence)",
        doc="Embedding cadence while the decision is still (no candidate holding evidence, no EMA over its "
            "threshold, no warm-up, request or fresh shift): after each still embedding the interval doubles "
            "from embed_every_n, up to this many processed frames; the first embedding that moves the decision "
            "brings it back to embed_every_n. A change is seen at most this many frames late; the navigator's "
            "cost at rest is 1/this of a frame's. <= embed_every_n keeps a fixed cadence of embed_every_n.")
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

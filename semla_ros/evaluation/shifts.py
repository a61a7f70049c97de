"""Shift-detection scoring: replay a stream through the node's segmenter under a policy and measure its swaps.

A policy is a `SegmenterSettings` (its `trigger` and debouncing). `replay` runs the node's own
`SemlaSegmenter` with an inline executor on frames timed by their stamps, so it is deterministic and
exactly what the node decides. `score` turns the per-frame record into the metrics below.

Definitions (per stream; `rate` is frames per second):
- segment: a maximal run of frames whose true domain is the same. Its *expected adapter* is the one
  per-frame retrieval ranks first on most of its frames (what per-image SemLA would mostly run).
- detectable change: a segment whose expected adapter differs from the previous segment's and is
  per-frame top-1 on at least `detect_s` seconds of it. It is *missed* when the policy never runs a
  fusion whose top-1 adapter is the expected one during the segment; otherwise its *reaction* is the
  time from the change to the first frame served by such a fusion (0 if one was already active).
- swap: the active fusion changed (adapters or weights) between two frames; the startup fusion is
  not a swap. *Stationary* frames are those at least `settle_s` after their segment began (the
  stream's start for the first) and not blended; a swap on one is an extra swap.
- wrong fusion time: share of frames served by a fusion whose top-1 adapter differs from per-frame
  retrieval's top-1 for that frame; off-domain time: ... differs from the frame's own domain's adapter
  (when the library has one).
- fusions per minute: fusions made (startup included), per minute of stream; a recent fusion made
  again (core/recall.py: staged again, its text embeddings reused) is a recall, counted apart.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from ..core.segmenter import InlineExecutor, SemlaSegmenter
from ..core.settings import SegmenterSettings
from .metrics import ConfusionAccumulator, mean_iou


@dataclass(frozen=True)
class StreamFrame:
    """One frame of a stream: its time, its true domain and what a renderer needs to draw it."""

    index: int
    time_s: float
    domain: str
    source: tuple = ()    # renderer's description (e.g. the two domains and the blend of a drifting frame)
    seed: int = 0

    @property
    def blended(self) -> bool:
        return len(self.source) == 3 and 0.0 < self.source[2] < 1.0 and self.source[0] != self.source[1]


@dataclass(frozen=True)
class Policy:
    name: str
    settings: SegmenterSettings


@dataclass
class FrameLog:
    """What the segmenter did on one frame."""

    top1: str                       # the frame's own retrieval top-1 (see own_top1)
    active: tuple[str, ...]         # the fusion that segmented the frame (most similar first)
    weights: tuple[float, ...]
    fusion: bool                    # a new fusion became active right before this frame
    reason: str = ""
    support: float = math.nan
    scale_free_support: float = math.nan
    active_support: float = math.nan
    active_scale_free_support: float = math.nan
    miou: float = math.nan          # of this frame's mask
    embedded: bool = True           # the frame's embedding reached the decision (its support numbers are its own)
    recalled: bool = False          # a recalled fusion (core/recall.py) became active right before this frame


@dataclass
class ScenarioScore:
    policy: str
    scenario: str
    frames: int
    duration_s: float
    detectable: int
    missed: int
    reactions_s: list[float]
    swaps: int
    extra_swaps: int
    stationary_min: float
    wrong_share: float
    off_domain_share: float
    miou: float
    fusions: int
    swap_times_s: list[float] = field(default_factory=list)
    changes: list[tuple[str, str, float]] = field(default_factory=list)  # detectable: (from, to, reaction; nan missed)
    recalls: int = 0

    @property
    def fusions_per_min(self) -> float:
        return 60.0 * self.fusions / self.duration_s if self.duration_s else math.nan


def replay(predictor, library, navigator, settings: SegmenterSettings, frames: Sequence[StreamFrame],
           images: Sequence[np.ndarray], labels: Sequence[np.ndarray] | None = None
           ) -> tuple[list[FrameLog], np.ndarray | None]:
    """Each frame through a fresh `SemlaSegmenter` (inline executor, frame stamps as its time): the
    per-frame record and, with labels, the stream's confusion matrix.

    The segmenter takes the model's current weights as its base; they are restored at the end."""
    seg = SemlaSegmenter(predictor, library, navigator, settings, executor=InlineExecutor())
    acc = ConfusionAccumulator(len(predictor.class_names)) if labels is not None else None
    log = []
    try:
        for k, (frame, image) in enumerate(zip(frames, images, strict=True)):
            out = seg.process(image, stamp=frame.index, time_s=frame.time_s)
            active = seg.active
            fused = out.fusion is not None and out.fusion.ok
            recalled = fused and out.fusion.recalled
            miou = math.nan if acc is None else mean_iou(acc.add(out.class_ids, labels[k]))
            s = out.supports
            log.append(FrameLog(top1=s.top_adapter if out.embedded else own_top1(navigator, library, image, settings),
                                active=tuple(active.adapters) if active else (),
                                weights=tuple(round(w, 6) for w in active.weights) if active else (),
                                fusion=fused and not recalled, reason=out.fusion.reason if fused else "",
                                support=s.library, scale_free_support=s.scale_free, active_support=s.active,
                                active_scale_free_support=s.active_scale_free, miou=miou, recalled=recalled,
                                embedded=out.embedded))
    finally:
        seg.fuse_now([], [])
        seg.close()
    return log, (None if acc is None else acc.matrix)


def own_top1(navigator, library, image, settings: SegmenterSettings) -> str:
    """The top-1 adapter of the frame's own retrieval: the yardstick every policy is scored against, also on
    the frames a policy's embedding cadence skips (with the bench's caching navigator, one embedding per image
    for all policies)."""
    rows, _ = library.index.nearest(np.asarray(navigator.embed([image])[0], dtype=np.float64), 1, settings.metric)
    return library.names[int(rows[0])] if len(rows) else ""


def segments(frames: Sequence[StreamFrame]) -> list[tuple[int, int]]:
    """[start, end) frame ranges of constant true domain."""
    out, start = [], 0
    for i in range(1, len(frames) + 1):
        if i == len(frames) or frames[i].domain != frames[start].domain:
            out.append((start, i))
            start = i
    return out


def score(policy: str, scenario: str, frames: Sequence[StreamFrame], log: Sequence[FrameLog], rate_hz: float,
          adapter_for: Callable[[str], str | None] = lambda d: None, detect_s: float = 3.0, settle_s: float = 5.0,
          confusion: np.ndarray | None = None) -> ScenarioScore:
    """The metrics of one replay (see the module docstring); `confusion` gives the stream mIoU."""
    if len(frames) != len(log) or not frames:
        raise ValueError(f"{len(frames)} frames but {len(log)} log entries")
    top = [e.active[0] if e.active else "" for e in log]
    segs = segments(frames)
    expected = [Counter(log[i].top1 for i in range(a, b)).most_common(1)[0][0] for a, b in segs]
    detectable = missed = 0
    reactions, changes = [], []
    for k in range(1, len(segs)):
        a, b = segs[k]
        if expected[k] == expected[k - 1] or not expected[k]:
            continue
        if sum(log[i].top1 == expected[k] for i in range(a, b)) < detect_s * rate_hz - 1e-9:
            continue
        detectable += 1
        hit = next((i for i in range(a, b) if top[i] == expected[k]), None)
        reaction = math.nan if hit is None else frames[hit].time_s - frames[a].time_s
        changes.append((frames[segs[k - 1][0]].domain, frames[a].domain, reaction))
        if hit is None:
            missed += 1
        else:
            reactions.append(reaction)
    key = [(e.active, e.weights) for e in log]
    swap_at = [i for i in range(1, len(log)) if key[i] != key[i - 1] and key[i - 1][0]]
    seg_start = {i: frames[a].time_s for a, b in segs for i in range(a, b)}
    stationary = [frames[i].time_s - seg_start[i] >= settle_s and not frames[i].blended for i in range(len(frames))]
    served = [i for i in range(len(log)) if top[i]]
    wrong = sum(top[i] != log[i].top1 for i in served)
    own = [(i, adapter_for(frames[i].domain)) for i in served]
    own = [(i, name) for i, name in own if name is not None]
    off = sum(top[i] != name for i, name in own)
    duration = len(frames) / rate_hz
    return ScenarioScore(
        policy=policy, scenario=scenario, frames=len(frames), duration_s=duration, detectable=detectable,
        missed=missed, reactions_s=reactions, swaps=len(swap_at), extra_swaps=sum(stationary[i] for i in swap_at),
        stationary_min=sum(stationary) / rate_hz / 60.0, wrong_share=wrong / len(served) if served else math.nan,
        off_domain_share=off / len(own) if own else math.nan,
        miou=math.nan if confusion is None else mean_iou(confusion), fusions=sum(e.fusion for e in log),
        swap_times_s=[frames[i].time_s for i in swap_at], changes=changes, recalls=sum(e.recalled for e in log))


@dataclass
class PolicySummary:
    """One policy over a whole suite."""

    policy: str
    detectable: int
    missed: int
    reaction_p50_s: float
    reaction_p95_s: float
    extra_swaps_per_stationary_min: float
    wrong_share: float
    off_domain_share: float
    miou: float          # mean of the streams' mIoU
    fusions_per_min: float
    recalls_per_min: float = math.nan

    @classmethod
    def of(cls, policy: str, scores: Sequence[ScenarioScore]) -> "PolicySummary":
        reactions = [r for s in scores for r in s.reactions_s]
        frames = sum(s.frames for s in scores)
        minutes = sum(s.duration_s for s in scores) / 60.0
        stationary = sum(s.stationary_min for s in scores)
        return cls(policy=policy, detectable=sum(s.detectable for s in scores), missed=sum(s.missed for s in scores),
                   reaction_p50_s=_percentile(reactions, 50), reaction_p95_s=_percentile(reactions, 95),
                   extra_swaps_per_stationary_min=sum(s.extra_swaps for s in scores) / stationary if stationary
                   else math.nan,
                   wrong_share=_weighted(scores, "wrong_share", frames),
                   off_domain_share=_weighted(scores, "off_domain_share", frames),
                   miou=_mean([s.miou for s in scores]),
                   fusions_per_min=sum(s.fusions for s in scores) / minutes if minutes else math.nan,
                   recalls_per_min=sum(s.recalls for s in scores) / minutes if minutes else math.nan)


def _mean(values) -> float:
    values = [v for v in values if not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


def _percentile(values, q) -> float:
    return float(np.percentile(values, q)) if values else math.nan


def _weighted(scores, name, frames) -> float:
    pairs = [(getattr(s, name), s.frames) for s in scores if not math.isnan(getattr(s, name))]
    return sum(v * n for v, n in pairs) / sum(n for _, n in pairs) if pairs else math.nan

"""What `semla-demo` makes of one recorded pass: per-frame and per-domain mIoU of the node's published masks next
to the same base model without adaptation, the swaps against the camera's domain changes, the printed summary
and the JSON numbers. Plain Python: the recording is filled by semla_ros.ros.demo_recorder.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..evaluation.metrics import confusion_matrix as confusion
from ..evaluation.metrics import mean_iou as miou
from . import world
from .build_assets import Assets, load_demo_model
from .sequence import DomainSequence


@dataclass
class Recording:
    """Everything heard on the topics, keyed by header stamp (sec, nanosec)."""

    images: dict = field(default_factory=dict)
    truths: dict = field(default_factory=dict)
    masks: dict = field(default_factory=dict)
    support: dict = field(default_factory=dict)   # stamp -> (support, ema, threshold, consecutive, active,
    #                                                 scale-free support, active fusion's scale-free, active is top-1)
    fusions: list = field(default_factory=list)  # (stamp, names, weights, distances, support, reason, ms, count)


@dataclass
class DomainRow:
    domain: str
    frames: int
    masks: int
    support: float
    adapted_miou: float
    unadapted_miou: float


def seconds(stamp: tuple[int, int]) -> float:
    return stamp[0] + stamp[1] * 1e-9


def first_frame_time(rec: Recording, frames: list[dict]) -> float:
    """Header time of the camera's first frame (from its frame log, else the first ground truth heard)."""
    if frames:
        first = min(frames, key=lambda f: f["index"])
        return seconds((first["sec"], first["nanosec"]))
    return seconds(min(rec.truths))


def analyse(rec: Recording, frames: list[dict], assets: Assets, sequence: DomainSequence):
    """Per-frame and per-domain scores of the published masks and the unadapted base model."""
    from ..catseg.predictor import CatSegPredictor

    by_stamp = {(f["sec"], f["nanosec"]): f for f in frames}
    stamps = sorted(s for s in rec.masks if s in rec.truths and s in by_stamp and s in rec.images)
    predictor = CatSegPredictor(load_demo_model(assets), list(world.CLASS_NAMES))
    n = len(world.CLASS_NAMES)
    per_frame = []
    conf_a, conf_u = {}, {}
    for s in stamps:
        truth = rec.truths[s]
        base = predictor.predict(rec.images[s]).class_ids.astype(np.uint8)
        d = by_stamp[s]["domain"]
        ca, cu = confusion(rec.masks[s], truth, n), confusion(base, truth, n)
        conf_a[d] = conf_a.get(d, 0) + ca
        conf_u[d] = conf_u.get(d, 0) + cu
        per_frame.append({"stamp": s, "index": by_stamp[s]["index"], "domain": d, "adapted": miou(ca),
                          "unadapted": miou(cu), "base_mask": base})
    rows = []
    order = list(dict.fromkeys(seg.domain for seg in sequence.segments))
    for d in order:
        dom_frames = [f for f in frames if f["domain"] == d]
        sup = [rec.support[(f["sec"], f["nanosec"])][0] for f in dom_frames
               if (f["sec"], f["nanosec"]) in rec.support]
        sup = [v for v in sup if np.isfinite(v)]
        rows.append(DomainRow(d, len(dom_frames), sum(1 for p in per_frame if p["domain"] == d),
                              float(np.mean(sup)) if sup else float("nan"),
                              miou(conf_a[d]) if d in conf_a else float("nan"),
                              miou(conf_u[d]) if d in conf_u else float("nan")))
    return per_frame, rows


def swap_rows(rec: Recording, frames: list[dict], t0: float, sequence: DomainSequence) -> list[dict]:
    """One row per fusion: time since the first frame, adapters, reason, and how long after the domain change."""
    by_stamp = {(f["sec"], f["nanosec"]): f for f in frames}
    starts = np.cumsum([0] + sequence.frames_per_segment())[:-1]
    out = []
    for stamp, names, weights, _dists, support, reason, ms, count in rec.fusions:
        f = by_stamp.get(stamp)
        index = f["index"] if f else None
        since = None
        if index is not None:
            seg = sequence.segment_index(index)
            since = (index - starts[seg]) / sequence.rate_hz
        out.append({"t": seconds(stamp) - t0, "adapters": names, "weights": weights, "reason": reason,
                    "fusion_ms": ms, "support": support, "domain": f["domain"] if f else "?",
                    "since_change_s": since, "swap_count": count})
    return out


def print_summary(swaps, rows, build_info, timings, out_png, report) -> None:
    print("\n=== SemLA demo summary ===")
    print(f"assets: {build_info}")
    print(f"held-out retrieval top-1 (build check): {report['retrieval_top1_accuracy']:.1%}")
    print("\nswaps (t = seconds since the first frame; 'after change' = time since the camera's domain changed):")
    for s in swaps:
        fused = ", ".join(f"{n}:{w:.2f}" for n, w in zip(s["adapters"], s["weights"], strict=True))
        since = "" if s["since_change_s"] is None else f", {s['since_change_s']:.1f} s after change to {s['domain']}"
        print(f"  t={s['t']:6.1f}s  {s['reason']:8s} [{fused}]  fusion {s['fusion_ms']:.0f} ms{since}")
    if not swaps:
        print("  (none)")
    print("\nper domain (published masks of the adapted node vs the same base model without adaptation):")
    print(f"  {'domain':8s} {'frames':>6s} {'masks':>6s} {'support':>8s} {'mIoU adapted':>13s} {'unadapted':>10s} "
          f"{'gain':>7s}")
    for r in rows:
        print(f"  {r.domain:8s} {r.frames:6d} {r.masks:6d} {r.support:8.3f} {r.adapted_miou:13.3f} "
              f"{r.unadapted_miou:10.3f} {r.adapted_miou - r.unadapted_miou:+7.3f}")
    print("\ntimings: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))
    print(f"picture: {out_png}")

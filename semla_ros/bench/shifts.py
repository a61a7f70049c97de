"""`semla-bench shifts`: when the node swaps adapters, scored on the demo world's shift scenarios.

Default: every scenario of `semla_ros.demo.scenarios.suite` (abrupt changes between every ordered
pair of domains, gradual drift, flicker, short transients, returns, stationary stretches) replayed
through the node's own `SemlaSegmenter` (inline executor, frame stamps as time) under each policy,
side by side in one run: per-image SemLA (`trigger=frame`, the official way), the EMA-distance rule
with the node's settings before the scenarios existed, and the node's defaults. Prints the summary
table, the per-scenario and per-pair tables, and how the support scores go with per-frame mIoU.
`--doc docs/shifts.md` writes the tables with how to read them; `--support-doc docs/evaluation.md`
puts the support section into that file (between markers, the rest is left alone).

`--overhead`: the steady-state frame time of the segmenter stream vs the plain model, CAT-Seg
ViT-B/16-384 + an open_clip ViT-L/14 navigator, random weights, CPU, 640x480, the node's embedding cadence
(embed_every_n 1, backing off to embed_rest_every_n at rest): the navigator on the inference thread (the old
way) and on its own thread (the node's way).
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..core.progress import progress_bar
from ..core.settings import SegmenterSettings
from ..evaluation.replay import per_image
from ..evaluation.report import kept_sections, replace_section
from ..evaluation.shifts import Policy, PolicySummary, ScenarioScore, replay, score

SUPPORT_SECTION = "semla-bench shifts --support-doc"   # section names in the docs (evaluation.report)
OVERHEAD_SECTION = "semla-bench shifts --overhead"
SUPPORTS = (("support_score (eq. 15)", "support"), ("scale_free_support", "scale_free_support"),
            ("active_support", "active_support"), ("active_scale_free_support", "active_scale_free_support"))


def policies(names=("semla", "distance", "default")) -> list[Policy]:
    """The policies compared: names from POLICY_SETTINGS."""
    return [Policy(n, POLICY_SETTINGS[n]) for n in names]


_DEFAULT = SegmenterSettings()
POLICY_SETTINGS = {
    "semla": per_image(_DEFAULT),                                                    # per-image SemLA
    "distance": _DEFAULT.replace(trigger="distance", ema_alpha=0.1, cooldown_s=5.0,  # the rule before
                                 dwell_s=0.0, warmup_frames=1, fusion_recall=0),
    "distance-demo": _DEFAULT.replace(trigger="distance", top_k=3, ema_alpha=0.3,    # make demo's, before
                                      min_consecutive=4, cooldown_s=3.0, dwell_s=0.0, warmup_frames=5,
                                      fusion_recall=0),
    "retrieval": _DEFAULT.replace(trigger="retrieval", cooldown_s=2.0, fusion_recall=0),  # the default before
    "default": _DEFAULT,                                                             # the node now
}
POLICY_TEXT = {
    "semla": "per-image SemLA (`trigger: frame`, no recall): a fusion for every frame",
    "distance": "EMA distance (`trigger: distance`, α 0.1, threshold 0.5 × median spacing, 3 hits, cooldown 5 s): "
                "the node's rule and defaults before this benchmark, with today's embedding cadence",
    "distance-demo": "EMA distance with `make demo`'s former settings (top-3, α 0.3, 4 hits, cooldown 3 s, "
                     "5 warm-up frames)",
    "retrieval": f"the node's defaults before the evidence trigger (`trigger: retrieval`, α {_DEFAULT.ema_alpha:g}, "
                 f"margin {_DEFAULT.switch_margin:g} × median spacing, dwell {_DEFAULT.dwell_s:g} s, "
                 f"{_DEFAULT.min_consecutive} hits, cooldown 2 s, {_DEFAULT.warmup_frames} warm-up frames, "
                 "no recall), with today's embedding cadence",
    "default": f"the node's defaults now (`trigger: {_DEFAULT.trigger}`, evidence threshold "
               f"{_DEFAULT.evidence_threshold:g}, flap damping {_DEFAULT.flap_penalty:g} per flap within "
               f"{_DEFAULT.flap_window_s:g} s, half-life {_DEFAULT.flap_half_life_s:g} s, cooldown "
               f"{_DEFAULT.cooldown_s:g} s, {_DEFAULT.warmup_frames} warm-up frames, recall of the "
               f"{_DEFAULT.fusion_recall} most recent fusions, the navigator embedding every frame while the decision "
               f"moves and backing off to one frame in {_DEFAULT.embed_rest_every_n} while it is still)",
}


# ---------------------------------------------------------------------------------- the scenarios
def run_suite(assets, scenario_list, policy_list, log=print):
    """Replay every scenario under every policy; returns (scores, frame records for the support analysis)."""
    from ..catseg.predictor import CatSegPredictor
    from ..core.library import AdapterLibrary
    from ..core.navigator import TowerNavigator
    from ..demo import world
    from ..demo.build_assets import adapter_name, load_demo_model
    from ..evaluation.protocol import CachedNavigator

    model = load_demo_model(assets)
    navigator = CachedNavigator(TowerNavigator(model))   # every policy sees the same embeddings, computed once
    library = AdapterLibrary.open(assets.library, navigator_dim=navigator.dim, navigator_id=navigator.id, model=model)
    predictor = CatSegPredictor(model, list(world.CLASS_NAMES))
    scores: list[ScenarioScore] = []
    records: dict[str, list] = {p.name: [] for p in policy_list}
    bar = progress_bar(total=sum(len(sc.frames) for sc in scenario_list) * len(policy_list), desc="shifts",
                       unit="frame")
    for scenario in scenario_list:
        t0 = time.monotonic()
        bar.set_description(f"shifts {scenario.name}")
        frames = scenario.frames
        drawn = [scenario.render(f) for f in frames]
        images, labels = [d[0] for d in drawn], [d[1] for d in drawn]
        for policy in policy_list:
            frame_log, confusion = replay(predictor, library, navigator, policy.settings, frames, images, labels)
            s = score(policy.name, scenario.name, frames, frame_log, scenario.rate_hz, adapter_for=adapter_name,
                      confusion=confusion)
            scores.append(s)
            records[policy.name] += [(f.domain, f.blended, e) for f, e in zip(frames, frame_log, strict=True)]
            bar.update(len(frames))
        navigator._cache.clear()
        log(f"  {scenario.name}: {len(frames)} frames x {len(policy_list)} policies in {time.monotonic() - t0:.0f} s")
    bar.close()
    return scores, records, library


def _fmt(v, digits=2, pct=False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{100 * v:.0f}%" if pct else f"{v:.{digits}f}"


def summary_table(scores, policy_list) -> str:
    rows = ["| policy | missed changes | extra swaps / stationary min | reaction p50 / p95 (s) | wrong fusion time "
            "| off-domain time | stream mIoU | fusions / min | recalls / min |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for p in policy_list:
        s = PolicySummary.of(p.name, [x for x in scores if x.policy == p.name])
        rows.append(f"| {p.name} | {s.missed} / {s.detectable} | {_fmt(s.extra_swaps_per_stationary_min)} | "
                    f"{_fmt(s.reaction_p50_s, 1)} / {_fmt(s.reaction_p95_s, 1)} | {_fmt(s.wrong_share, pct=True)} | "
                    f"{_fmt(s.off_domain_share, pct=True)} | {_fmt(100 * s.miou, 1)} | {_fmt(s.fusions_per_min, 1)} | "
                    f"{_fmt(s.recalls_per_min, 1)} |")
    return "\n".join(rows)


def scenario_table(scores, policy_list) -> str:
    names = list(dict.fromkeys(s.scenario for s in scores))
    head = "| scenario | s | " + " | ".join(f"{p.name}: swaps, missed, p95 s, mIoU" for p in policy_list) + " |"
    rows = [head, "|---|---:|" + "---|" * len(policy_list)]
    for n in names:
        cells = []
        for p in policy_list:
            s = next((x for x in scores if x.scenario == n and x.policy == p.name), None)
            if s is None:
                cells.append("–")
                continue
            p95 = np.percentile(s.reactions_s, 95) if s.reactions_s else math.nan
            cells.append(f"{s.swaps}, {s.missed}/{s.detectable}, {_fmt(p95, 1)}, {_fmt(100 * s.miou, 1)}")
        duration = next(x.duration_s for x in scores if x.scenario == n)
        rows.append(f"| {n} | {duration:.0f} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def pair_table(scores, policy_list, library, scenario="every pair") -> str:
    """Reaction per ordered pair of the tour, nearest pairs first (centroid spacing / median)."""
    from ..demo.build_assets import adapter_name

    names = list(library.names)
    c = library.centroids
    median = library.median_inter_centroid_distance

    def spacing(a, b) -> float:
        i, j = names.index(adapter_name(a)), names.index(adapter_name(b))
        return float(np.linalg.norm(c[i] - c[j]) / median)

    per = {p.name: next((x for x in scores if x.scenario == scenario and x.policy == p.name), None)
           for p in policy_list}
    pairs = []
    for s in per.values():
        if s is not None:
            pairs += [(a, b) for a, b, _ in s.changes]
    pairs = sorted(dict.fromkeys(pairs), key=lambda ab: spacing(*ab))
    rows = ["| change | spacing | " + " | ".join(p.name for p in policy_list) + " |",
            "|---|---:|" + "---:|" * len(policy_list)]
    for a, b in pairs:
        cells = []
        for p in policy_list:
            s = per[p.name]
            got = [r for x, y, r in s.changes if (x, y) == (a, b)] if s else []
            cells.append(", ".join("missed" if math.isnan(r) else f"{r:.1f} s" for r in got) or "–")
        rows.append(f"| {a} → {b} | {spacing(a, b):.2f} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def flicker_lines(scores, dwell_s: float | None) -> list[str]:
    """Swaps per flicker stream; with `dwell_s` (a trigger that has a dwell), the bound one per dwell gives."""
    out = []
    for s in scores:
        if s.scenario.startswith("flicker"):
            line = f"{s.policy:14s} {s.scenario:26s} swaps {s.swaps:3d}, fusions {s.fusions:3d}, recalls {s.recalls:3d}"
            if dwell_s is not None:
                allowed = int(s.duration_s // dwell_s) + 1 if dwell_s > 0 else math.inf
                line = (f"{s.policy:14s} {s.scenario:26s} swaps {s.swaps:3d} (at most one per {dwell_s:g} s dwell: "
                        f"{allowed})")
            out.append(line)
    return out


# ---------------------------------------------------------------------------------- the support scores
def support_rows(records) -> list[dict]:
    """Spearman of each support score vs per-frame mIoU: pooled, and within each true domain."""
    from ..evaluation.figures import spearman

    out = []
    for policy, recs in records.items():
        recs = [(d, e) for d, blended, e in recs if not blended and e.embedded and not math.isnan(e.miou)]
        for label, field in SUPPORTS:
            pts = [(d, getattr(e, field), e.miou) for d, e in recs if math.isfinite(getattr(e, field))]
            if len(pts) < 3:
                continue
            domains = list(dict.fromkeys(p[0] for p in pts))
            within = {d: spearman([s for dd, s, _ in pts if dd == d], [m for dd, _, m in pts if dd == d])
                      for d in domains}
            out.append(dict(policy=policy, score=label, frames=len(pts),
                            pooled=spearman([p[1] for p in pts], [p[2] for p in pts]),
                            within={d: v for d, v in within.items() if not math.isnan(v)},
                            means={d: float(np.mean([s for dd, s, _ in pts if dd == d])) for d in domains}))
    return out


def wrong_fusion_rows(records) -> list[dict]:
    """Per policy: the active fusion's scale-free support and mIoU on frames where its top-1 is per-frame
    retrieval's top-1 and where it is not (what the robot sees while it runs the wrong fusion)."""
    out = []
    for policy, recs in records.items():
        groups = {True: [], False: []}
        for _d, blended, e in recs:
            if e.active and e.top1 and math.isfinite(e.active_scale_free_support) and not blended and e.embedded:
                groups[e.active[0] == e.top1].append((e.active_scale_free_support, e.scale_free_support, e.miou))
        row = dict(policy=policy)
        for key, vals in groups.items():
            a = np.array(vals) if vals else np.full((0, 3), math.nan)
            row["top" if key else "not_top"] = dict(frames=len(vals), active_scale_free=float(np.nanmean(a[:, 0]))
                                                    if len(a) else math.nan,
                                                    scale_free=float(np.nanmean(a[:, 1])) if len(a) else math.nan,
                                                    miou=float(np.nanmean(a[:, 2])) if len(a) else math.nan)
        out.append(row)
    return out


def support_markdown(rows, wrong, command: str) -> str:
    lines = ["### Support scores vs per-frame mIoU (shift scenarios)", "",
             f"Reproduce: `{command}` (the support part of `semla-bench shifts`). Frames: every unblended frame of "
             "the shift scenarios (docs/shifts.md) that the policy named embedded (its support numbers are its "
             "own; at rest the node embeds one frame in embed_rest_every_n), segmented by that policy, with the "
             "**full** demo library (no leave-one-out, unlike the table above). Spearman ρ between each score and "
             "the frame's own mIoU, over all frames (pooled) and within each true domain.", "",
             "| policy | score | frames | pooled ρ | within-domain ρ (min … median … max) | mean per domain |",
             "|---|---|---:|---:|---|---|"]
    for r in rows:
        w = list(r["within"].values())
        within = f"{min(w):.2f} … {float(np.median(w)):.2f} … {max(w):.2f}" if w else "–"
        means = ", ".join(f"{d} {v:.2f}" for d, v in r["means"].items())
        lines.append(f"| {r['policy']} | {r['score']} | {r['frames']} | {r['pooled']:.2f} | {within} | {means} |")
    lines += ["", "Frames served by a fusion whose top-1 adapter is / is not per-frame retrieval's top-1 "
              "(`active_is_top`): mean active and library scale-free support, and mean mIoU.", "",
              "| policy | frames top / not | active_scale_free_support top / not | scale_free_support top / not "
              "| mIoU top / not |", "|---|---:|---:|---:|---:|"]
    for r in wrong:
        t, n = r["top"], r["not_top"]
        lines.append(f"| {r['policy']} | {t['frames']} / {n['frames']} | {_fmt(t['active_scale_free'])} / "
                     f"{_fmt(n['active_scale_free'])} | {_fmt(t['scale_free'])} / {_fmt(n['scale_free'])} | "
                     f"{_fmt(100 * t['miou'], 1)} / {_fmt(100 * n['miou'], 1)} |")
    lines += ["", "What the numbers say (computed):", ""] + [f"- {line}" for line in support_facts(rows, wrong)]
    return "\n".join(lines)


def support_facts(rows, wrong) -> list[str]:
    """Plain statements from the support rows; nothing here is written by hand."""
    out = []
    by = {(r["policy"], r["score"]): r for r in rows}
    median = lambda r: float(np.median(list(r["within"].values()))) if r and r["within"] else math.nan  # noqa: E731
    for policy in dict.fromkeys(r["policy"] for r in rows):
        lib, act = by.get((policy, "scale_free_support")), by.get((policy, "active_scale_free_support"))
        eq15 = by.get((policy, "support_score (eq. 15)"))
        if lib and eq15:
            same = abs(lib["pooled"] - eq15["pooled"]) < 1e-9 and abs(median(lib) - median(eq15)) < 1e-9
            out.append(f"{policy}: the scale-free support ranks frames exactly like eq. 15 (one library, one scale)"
                       if same else f"{policy}: scale-free and eq. 15 support rank frames differently")
        if lib and act:
            out.append(f"{policy}: library support vs mIoU: pooled ρ {lib['pooled']:.2f}, median within-domain ρ "
                       f"{median(lib):.2f}; the active fusion's support: pooled ρ {act['pooled']:.2f}, median "
                       f"within-domain ρ {median(act):.2f}.")
    for r in wrong:
        t, n = r["top"], r["not_top"]
        if n["frames"] and t["frames"]:
            out.append(f"{r['policy']}: while the active fusion's top-1 is not per-frame retrieval's, its scale-free "
                       f"support averages {_fmt(n['active_scale_free'])} (vs {_fmt(t['active_scale_free'])} when it "
                       f"is) while the library's stays at {_fmt(n['scale_free'])} (vs {_fmt(t['scale_free'])}); mIoU "
                       f"{_fmt(100 * n['miou'], 1)} vs {_fmt(100 * t['miou'], 1)}.")
    return out


def write_doc(path: Path, tables: dict, scores, policy_list, command: str, seconds: float,
              dwell_s: float | None) -> None:
    """docs/shifts.md: what was replayed, the tables and how to read them; the overhead section is kept."""
    from ..demo.scenarios import RATE_HZ

    summaries = {p.name: PolicySummary.of(p.name, [x for x in scores if x.policy == p.name]) for p in policy_list}
    names = list(dict.fromkeys(s.scenario for s in scores))
    durations = {n: next(x.duration_s for x in scores if x.scenario == n) for n in names}
    facts = []
    for name, s in summaries.items():
        stationary = [x for x in scores if x.policy == name and x.scenario.startswith("stationary")]
        flicker = [x for x in scores if x.policy == name and x.scenario.startswith("flicker")]
        facts.append(f"**{name}**: missed {s.missed} of {s.detectable} detectable changes; "
                     f"{sum(x.extra_swaps for x in scores if x.policy == name)} extra swaps in "
                     f"{sum(x.stationary_min for x in scores if x.policy == name):.1f} stationary minutes; "
                     f"swaps in the stationary streams: {', '.join(str(x.swaps) for x in stationary) or '–'}; "
                     f"swaps under flicker (0.5 … 3 s): {', '.join(str(x.swaps) for x in flicker) or '–'}; "
                     f"reaction p50 {_fmt(s.reaction_p50_s, 1)} s, p95 {_fmt(s.reaction_p95_s, 1)} s; "
                     f"{_fmt(s.fusions_per_min, 1)} fusions and {_fmt(s.recalls_per_min, 1)} recalls per minute.")
    old = path.read_text() if path.is_file() else ""
    lines = [
        "# Shift detection: when the node swaps adapters", "",
        f"Reproduce: `{command}` ({seconds / 60:.0f} min on 2 CPU cores shared with other jobs; demo assets cached). "
        "Every number below comes from that one run; `--json FILE` keeps every score.", "",
        "## What is replayed", "",
        f"Streams of demo-world frames at {RATE_HZ:g} Hz (`semla_ros/demo/scenarios.py`), each frame a new street, "
        "timed by its stamp (no wall clock), with the true domain of every frame. Each stream is replayed through the "
        "node's own `SemlaSegmenter` (inline executor: the embedding and the fusion it starts count for the frame "
        "itself) with the demo build's model, navigator (its frozen image tower) and full 7-adapter library, once "
        "per policy:", ""]
    lines += [f"- **{p.name}**: {POLICY_TEXT.get(p.name, p.name)}." for p in policy_list]
    lines += ["", "Scenarios: " + "; ".join(f"{n} ({durations[n]:.0f} s)" for n in names) + ". "
              "*every pair* walks through all 42 ordered pairs of the 7 domains once (abrupt changes, near and far); "
              "*drift* blends the same street's light linearly (the true domain is the nearer one); *flicker* "
              "alternates clear and night every 0.5, 1, 2, 3 s after a settled start; *transient* puts 1, 2 and 3 s of "
              "tunnel into clear; *return* goes clear → fog → clear → snow → clear; *stationary* is one domain "
              "throughout (clear and snow are the noisiest for the navigator, fog the next).", "",
              "## Summary", "", tables["summary"], "",
              "## How to read it", "",
              "- A *segment* is a run of frames with one true domain. Its *expected adapter* is the one per-frame "
              "retrieval (each frame's own embedding, whether or not the policy embedded it) ranks first on most of "
              "its frames (what per-image SemLA mostly runs there). A change is "
              "*detectable* when the expected adapter differs from the previous segment's and is per-frame top-1 for "
              "at least 3 s of the new segment; it is *missed* when the policy never serves a frame with a fusion "
              "whose top-1 is the expected adapter during the segment.",
              "- *Reaction*: from the change to the first frame served by such a fusion (0 when one was already "
              "active). For the drift the change is the blend's midpoint, so its reaction says little.",
              "- *Extra swaps / stationary min*: swaps (the active fusion's adapters or weights changed; startup not "
              "counted) on frames at least 5 s into their segment and not blended, per minute of such frames.",
              "- *Wrong fusion time*: share of frames whose fusion's top-1 is not per-frame retrieval's top-1 for that "
              "frame. Per-image SemLA is 0 by construction; for every debounced policy it has a floor: the demo "
              "navigator ranks another adapter first on about a third of the clear and snow frames (noise around near "
              "centroids), which no stable policy follows. *Off-domain time*: the same against the adapter trained "
              "on the frame's own (true) domain.",
              "- *Stream mIoU*: mIoU of the stream's masks (one confusion matrix per stream), averaged over streams.",
              "- *Fusions / min*: fusions made (startup included) per minute of stream: the compute a policy spends on "
              "adaptation (each fusion re-stages the weights and re-encodes the text). *Recalls / min*: swaps back to "
              "a recent fusion (same top-1 adapter, weights within `weight_change`), which re-stage its weights and "
              "reuse its text embeddings (core/recall.py).", "",
              "What the run shows (computed):", ""]
    lines += [f"- {f}" for f in facts]
    if "default" in summaries:
        d = summaries["default"]
        for name, s in summaries.items():
            if name != "default":
                lines.append(f"- default vs {name}: stream mIoU {100 * (d.miou - s.miou):+.1f} points, "
                             f"{_fmt(d.fusions_per_min, 1)} vs {_fmt(s.fusions_per_min, 1)} fusions per minute, "
                             f"missed {d.missed} vs {s.missed}, reaction p50 {_fmt(d.reaction_p50_s, 1)} vs "
                             f"{_fmt(s.reaction_p50_s, 1)} s.")
        if POLICY_SETTINGS["default"].trigger == "evidence":
            lines.append("- The evidence trigger swaps as soon as a candidate adapter's accumulated evidence reaches "
                         f"{POLICY_SETTINGS['default'].evidence_threshold:g} (a few frames of a clear change, longer "
                         "for a near pair), so it follows changes about as fast as per-image SemLA while staying on "
                         "its fusion in stationary noise, where a fusion for the mean of many frames beats a fusion "
                         "for each noisy frame. Flicker between far domains is followed with recalls, not fusions; "
                         "flicker between near ones is damped after a flap or two.")
        rest = POLICY_SETTINGS["default"].embed_rest_every_n
        if rest > POLICY_SETTINGS["default"].embed_every_n:
            lines.append(f"- The default embeds one frame in {rest} while the decision is still (no candidate holding "
                         "evidence, no warm-up, request or fresh shift) and every frame once one embedding moves it "
                         "(core/embedding_cadence.py): a change is seen up to "
                         f"{(rest - 1) / RATE_HZ:.1f} s later than with every frame embedded, which is in its "
                         f"reaction above, and at rest the navigator costs 1/{rest} of what embedding every frame "
                         "costs.")
    if dwell_s is not None:
        lines.append(f"- Flicker bound for the default: at most one swap per dwell period ({dwell_s:g} s), i.e. "
                     "duration / dwell + 1 swaps per stream.")
    lines += ["",
              "## Per scenario", "", "Cells: swaps, missed / detectable, reaction p95 (s), stream mIoU (%).", "",
              tables["scenarios"], "",
              "## Every ordered pair", "",
              "Reaction to each change of *every pair*, nearest pairs first (spacing: distance between the two "
              "domains' centroids / the library's median centroid spacing; the distance rule's threshold is 0.5).",
              "", "<details><summary>42 changes</summary>", "", tables["pairs"], "", "</details>", ""]
    kept = kept_sections(old)
    if kept:
        lines += [kept, ""]
    path.write_text("\n".join(lines))


# ---------------------------------------------------------------------------------- the navigator overhead
def run_overhead(args, argv_text: str | None = None) -> int:
    """Plain model vs the segmenter stream with the navigator inline and on its own thread, side by side."""
    import tempfile

    import torch

    from ..catseg.build import build_catseg
    from ..catseg.predictor import CatSegPredictor
    from ..core.library import AdapterLibrary, write_entry
    from ..core.navigator import OpenClipNavigator
    from ..core.segmenter import InlineExecutor, SemlaSegmenter
    from ..core.targets import semla_target_modules
    from ..demo import world

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_catseg(args.config).eval()
    classes = ["road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
               "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle",
               "bicycle"]
    predictor = CatSegPredictor(model, classes)
    navigator = OpenClipNavigator(args.navigator, pretrained=None)
    height, width = args.height, args.width
    images = [world.render(d, 7_000_000 + i, (height, width)).image for i, d in enumerate(("clear", "fog", "night"))]
    g = torch.Generator().manual_seed(0)
    # The library's folder lives as long as the run: a fusion reads its adapters when it is made.
    library_dir = tempfile.TemporaryDirectory(prefix="semla-overhead-")
    tmp = library_dir.name
    for k in range(2):
        factors = {}
        for name in semla_target_modules(model):
            linear = model.get_submodule(name)
            factors[name] = (torch.randn(8, linear.in_features, generator=g) * 0.01,
                             torch.randn(linear.out_features, 8, generator=g) * 0.01)
        write_entry(tmp, f"random-{k}", factors, np.random.default_rng(k).normal(size=navigator.dim),
                    lora_alpha=16, metadata={"navigator": navigator.id, "embedding_dim": navigator.dim})
    library = AdapterLibrary.open(tmp, navigator_dim=navigator.dim, model=model)
    # No shift after the startup fusion: the steady state is what is timed.
    settings = SegmenterSettings(trigger="distance", switch_threshold=1e9, threshold_mode="absolute",
                                 embed_every_n=args.embed_every_n, embed_rest_every_n=args.embed_rest_every_n,
                                 warmup_frames=1)
    cadence = f"embed_every_n {args.embed_every_n}, embed_rest_every_n {args.embed_rest_every_n}"

    def plain(i):
        predictor.predict(images[i % len(images)])

    segmenters = {"inline": SemlaSegmenter(predictor, library, navigator, settings, executor=InlineExecutor()),
                  "thread": SemlaSegmenter(predictor, library, navigator, settings)}
    embedded = {name: 0 for name in segmenters}

    def stream(name):
        seg = segmenters[name]

        def step(i):
            out = seg.process(images[i % len(images)], stamp=i, time_s=i / 10.0)
            embedded[name] += out.embedded
        return step

    runs = {"plain": plain, "inline": stream("inline"), "thread": stream("thread")}
    print(f"{args.config} + {args.navigator} (random weights), {height}x{width}, CPU, torch threads "
          f"{torch.get_num_threads()}, {cadence}; {args.reps} rounds of {args.frames} frames "
          "per mode, modes interleaved", flush=True)
    for fn in runs.values():   # warm-up: first calls, the startup fusion, thread start
        for i in range(args.warmup):
            fn(i)
    for name, seg in segmenters.items():   # the steady state is a fusion being active, not a failing one
        seg.wait_embedding()
        if seg.active is None:
            raise RuntimeError(f"the {name} segmenter has no active fusion after the warm-up ({seg.failed_fusions} "
                               "failed fusions): raise --warmup")
    embedded.update({name: 0 for name in segmenters})   # embeddings of the timed frames only
    times = {name: [] for name in runs}
    rounds = []   # per round: each mode's mean / plain's mean (the load drifts between rounds, less within one)
    counter = args.warmup   # frame times go on from the warm-up's (time running back would restart the decision)
    for rnd in range(args.reps):
        for name, fn in runs.items():
            for _ in range(args.frames):
                start = time.perf_counter()
                fn(counter)
                times[name].append((time.perf_counter() - start) * 1e3)
                counter += 1
        means = {n: statistics.mean(t[-args.frames:]) for n, t in times.items()}
        print(f"  round {rnd + 1}: " + ", ".join(f"{n} {m:.0f} ms" for n, m in means.items()), flush=True)
        rounds.append({n: m / means["plain"] for n, m in means.items()})
    for seg in segmenters.values():
        seg.close()
    library_dir.cleanup()
    base = statistics.mean(times["plain"])
    rows = ["| mode | mean ms | median | p95 | max | × plain (means) | × plain (median of rounds) | embeddings used |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, t in times.items():
        paired = statistics.median(r[name] for r in rounds)
        rows.append(f"| {name} | {statistics.mean(t):.0f} | {statistics.median(t):.0f} | {np.percentile(t, 95):.0f} | "
                    f"{max(t):.0f} | {statistics.mean(t) / base:.3f} | {paired:.3f} | {embedded.get(name, '–')} |")
    table = "\n".join(rows)
    print(table)
    if args.doc:
        command = argv_text or "semla-bench shifts --overhead"
        replace_section(args.doc, OVERHEAD_SECTION, "\n".join([
            "## Navigator overhead", "",
            f"Reproduce: `{command}`. {args.config} + open_clip {args.navigator}, random weights, "
            f"{height}x{width} frames, CPU, torch threads {torch.get_num_threads()}, "
            f"{cadence} (no shift after the startup fusion: at rest the navigator embeds one frame in "
            f"{max(args.embed_every_n, args.embed_rest_every_n)}); "
            f"{args.reps} rounds of {args.frames} frames per mode, the modes interleaved in one process (machine "
            "shared with other jobs: compare rows, not absolute times). *plain*: the model alone; *inline*: the "
            "segmenter with the navigator on the inference thread (the node before); *thread*: the navigator on "
            "its own worker (the node now). *embeddings used*: embeddings that reached the debouncer during the "
            f"timed frames (of {args.reps * args.frames}). The navigator's worker can only run beside the model "
            "where a core (or a GPU) is left to it: with one torch thread per stream it takes the second core; "
            "with torch spreading the model over every core (its default), the two compete and the stream pays "
            "the navigator's share of the CPU.", "", table]))
    return 0


# ---------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="semla-bench shifts", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache-dir", type=Path, default=None, help="demo asset cache (default: SEMLA_DEMO_CACHE "
                        "or ~/.cache/semla_ros/demo)")
    parser.add_argument("--policies", default="semla,distance,retrieval,default",
                        help=f"comma-separated, from {', '.join(POLICY_SETTINGS)}")
    parser.add_argument("--scenarios", default="", help="only scenarios whose name contains one of these "
                        "comma-separated words")
    parser.add_argument("--segment-s", type=float, default=6.0, help="seconds per domain in abrupt scenarios")
    parser.add_argument("--stationary-s", type=float, default=45.0)
    parser.add_argument("--flicker-s", type=float, default=30.0)
    parser.add_argument("--drift-s", type=float, default=20.0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument("--doc", type=Path, default=None, help="write the tables and how to read them here")
    parser.add_argument("--support-doc", type=Path, default=None, help="put the support section into this file")
    parser.add_argument("--json", type=Path, default=None, help="write every score here")
    parser.add_argument("--from-json", type=Path, default=None, help="re-render the tables and docs from a --json "
                        "file of an earlier run instead of replaying")
    parser.add_argument("--overhead", action="store_true", help="run the navigator overhead benchmark instead")
    parser.add_argument("--config", default="vitb16_384", help="--overhead: CAT-Seg config")
    parser.add_argument("--navigator", default="ViT-L-14", help="--overhead: open_clip model (random weights)")
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--embed-every-n", type=int, default=_DEFAULT.embed_every_n,
                        help="--overhead: the dense cadence (default: the node's)")
    parser.add_argument("--embed-rest-every-n", type=int, default=_DEFAULT.embed_rest_every_n,
                        help="--overhead: the cadence at rest (default: the node's)")
    parser.add_argument("--frames", type=int, default=10, help="--overhead: frames per mode per round")
    parser.add_argument("--reps", type=int, default=2, help="--overhead: rounds")
    parser.add_argument("--warmup", type=int, default=3, help="--overhead: untimed frames per mode")
    args = parser.parse_args(argv)
    if args.overhead:
        return run_overhead(args, "semla-bench shifts " + " ".join(argv if argv is not None else sys.argv[1:]))

    import torch

    from ..demo.build_assets import ensure_assets
    from ..demo.scenarios import suite

    if args.threads:
        torch.set_num_threads(args.threads)
    unknown = [p for p in args.policies.split(",") if p not in POLICY_SETTINGS]
    if unknown:
        parser.error(f"unknown policies {unknown}; choose from {', '.join(POLICY_SETTINGS)}")
    policy_list = policies(tuple(args.policies.split(",")))
    scenario_list = suite(segment_s=args.segment_s, stationary_s=args.stationary_s, flicker_s=args.flicker_s,
                          drift_s=args.drift_s)
    if args.scenarios:
        words = [w.strip() for w in args.scenarios.split(",") if w.strip()]
        scenario_list = [s for s in scenario_list if any(w in s.name for w in words)]
    t0 = time.monotonic()
    assets, built = ensure_assets(args.cache_dir)
    command = "semla-bench shifts " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.from_json:
        from ..core.library import AdapterLibrary

        saved = json.loads(args.from_json.read_text())
        scores = [ScenarioScore(**{k: v for k, v in d.items()}) for d in saved["scores"]]
        for sc in scores:
            sc.changes = [tuple(c) for c in sc.changes]
        policy_list = policies(tuple(dict.fromkeys(sc.policy for sc in scores)))
        support, wrong, seconds = saved["support"], saved["wrong"], saved["seconds"]
        command = saved.get("command", command)
        library = AdapterLibrary.open(assets.library)
    else:
        print(f"demo assets {assets.root} ({'built now' if built else 'cached'}); "
              f"{sum(len(s.frames) for s in scenario_list)} frames in {len(scenario_list)} scenarios", flush=True)
        scores, records, library = run_suite(assets, scenario_list, policy_list, log=lambda m: print(m, flush=True))
        seconds = time.monotonic() - t0
        support, wrong = support_rows(records), wrong_fusion_rows(records)
    default = POLICY_SETTINGS["default"]
    dwell = default.dwell_s if default.trigger in ("retrieval", "distance") else None
    tables = {"summary": summary_table(scores, policy_list), "scenarios": scenario_table(scores, policy_list),
              "pairs": pair_table(scores, policy_list, library)}
    print("\n" + tables["summary"] + "\n\n" + tables["scenarios"] + "\n\n" + tables["pairs"] + "\n")
    print("\n".join(flicker_lines(scores, dwell)))
    section = support_markdown(support, wrong, command)
    print("\n" + section)
    print(f"\n{seconds:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"scores": [asdict(s) for s in scores], "support": support, "wrong": wrong,
                                         "seconds": seconds, "command": command}, indent=1, default=float))
    if args.support_doc:
        replace_section(args.support_doc, SUPPORT_SECTION, section)
    if args.doc:
        write_doc(args.doc, tables, scores, policy_list, command, seconds, dwell)
    return 0


if __name__ == "__main__":
    sys.exit(main())

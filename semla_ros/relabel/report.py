"""The job's report: report.json (everything, for tools) and report.md (for people).

Clusters with their fusions and support, frames per cluster, skipped frames and why, what a rerun
reused, time per step, and the comparison of per-image SemLA, per-cluster fusion and the node's
debounced policy on the same frames. Seconds are compute seconds of each step summed over batches
(on Ray: over workers), so a resumed job still reports the whole job; `wall_s` is this run's.
"""
from __future__ import annotations

import collections
import math
from pathlib import Path

from .state import write_atomic, write_json


def _share(cluster, recording: str) -> float:
    return len(cluster.members.get(recording, ())) / cluster.size if cluster.size else 0.0


def build_report(job, tables, clusters, segment_info, outputs, comparison) -> dict:
    library = job.build.library
    recordings = {}
    for rec in job.recordings:
        table = tables[rec.name]
        kinds = collections.Counter(reason.split(":")[0] for _, reason in table.skipped)
        recordings[rec.name] = {
            **rec.describe(), "frames": len(table), "skipped": len(table.skipped), "skipped_by_kind": dict(kinds),
            "skipped_examples": table.skipped[:10], "embed_s": table.embed_seconds, "output": outputs[rec.name],
            "clusters": [c.id for c in clusters if rec.name in c.members]}
    rows = []
    for c in clusters:
        info = segment_info.get(c.id, {})
        rows.append({"id": c.id, "frames": c.size, "frames_per_recording": {n: len(v) for n, v in c.members.items()},
                     "mean_distance_to_centroid": c.mean_distance, **c.fusion.to_json(),
                     "segment_s": info.get("seconds", math.nan), "fusion_ms": info.get("fusion_ms", math.nan),
                     "skipped": len(info.get("skipped", []))})
    embed_s = sum(t.embed_seconds for t in tables.values())
    segment_s = sum(r["segment_s"] for r in rows)
    fusion_s = sum(r["fusion_ms"] for r in rows) / 1e3
    report = {
        "out": str(job.folder.root), "engine": job.manifest["engine"], "retrieval": job.manifest["retrieval"],
        "library": {"entries": list(library.names), "median_inter_centroid_distance":
                    library.median_inter_centroid_distance},
        "settings": job.settings.state_json() | {"output": job.settings.output, "namespace": job.settings.namespace,
                                                 "storage": job.settings.storage},
        "recordings": recordings, "clusters": rows, "resumed": dict(job.resumed),
        "timings": {"embed_s": embed_s, "segment_s": segment_s, "fusion_s": fusion_s, **job.timings},
    }
    if comparison is not None:
        for name, result in comparison.items():
            own = [c for c in clusters if name in c.members]
            frames_share = len(tables[name]) / max(1, sum(len(t) for t in tables.values()))
            per_cluster = (tables[name].embed_seconds + job.timings.get("cluster_s", 0.0) * frames_share
                           + sum((segment_info[c.id]["seconds"] + segment_info[c.id]["fusion_ms"] / 1e3)
                                 * _share(c, name) for c in own))
            result["fusions"]["per-cluster"] = len(own)
            result["seconds"]["per-cluster"] = per_cluster
        report["comparison"] = comparison
    return report


def _f(value, fmt="{:.3f}") -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else fmt.format(value)


def markdown(report: dict) -> str:
    cluster = report["settings"]["cluster"]
    lines = ["# Relabelling report", "",
             f"Library: {len(report['library']['entries'])} adapters, median centroid spacing "
             f"{_f(report['library']['median_inter_centroid_distance'], '{:.4g}')}; navigator "
             f"`{report['engine']['navigator']}`; clustering {report['settings']['scope']}, scale "
             f"{cluster['scale']} x spacing, minimum size {cluster['min_size']}.",
             "", "## Recordings", "", "| recording | kind | frames | skipped | clusters | output |",
             "|---|---|---:|---:|---:|---|"]
    for name, r in report["recordings"].items():
        out = r["output"]
        lines.append(f"| {name} | {r['kind']} | {r['frames']} | {r['skipped']} | {len(r['clusters'])} | "
                     f"{out.get('bag') or out['masks']} |")
    skipped = [(n, r) for n, r in report["recordings"].items() if r["skipped"]]
    for name, r in skipped:
        lines.append(f"\n{name}: skipped {r['skipped']} frame(s): " + ", ".join(f"{k} x{v}" for k, v in
                                                                             r["skipped_by_kind"].items())
                     + "; e.g. " + "; ".join(f"#{i}: {reason}" for i, reason in r["skipped_examples"][:3]))
    lines += ["", "## Clusters and their fusions", "",
              "| cluster | frames | adapters (weight) | support | scale-free support | mean distance to centroid | s |",
              "|---|---:|---|---:|---:|---:|---:|"]
    for c in report["clusters"]:
        fused = ", ".join(f"{a} ({w:.2f})" for a, w in zip(c["adapters"], c["weights"], strict=True))
        lines.append(f"| {c['id']} | {c['frames']} | {fused} | {_f(c['support'])} | {_f(c['scale_free_support'])} | "
                     f"{_f(c['mean_distance_to_centroid'], '{:.4g}')} | {_f(c['segment_s'], '{:.1f}')} |")
    t = report["timings"]
    lines += ["", f"Compute: embedding {t['embed_s']:.1f} s, clustering {t.get('cluster_s', 0):.2f} s, "
                  f"fusions {t['fusion_s']:.2f} s, segmentation {t['segment_s']:.1f} s; this run's wall time "
                  f"{t.get('wall_s', 0):.1f} s. Reused from an earlier run: "
                  + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in report["resumed"].items()) + "."]
    if "comparison" in report:
        lines += ["", "## Per-image SemLA vs per-cluster fusion vs the node's debounced policy", "",
                  "Same frames. Agreement: share of pixels with the same class as per-image SemLA. mIoU: where the "
                  "recording has ground truth. Seconds: compute from frames to masks, embedding included.", "",
                  "| recording | method | fusions | agreement | mIoU | s |", "|---|---|---:|---:|---:|---:|"]
        for name, c in report["comparison"].items():
            for m in ("per-image", "per-cluster", "debounced"):
                lines.append(f"| {name} | {m} | {c['fusions'].get(m, '–')} | "
                             f"{_f(c['agreement_with_per_image'].get(m))} | {_f(c['miou'].get(m))} | "
                             f"{_f(c['seconds'].get(m), '{:.1f}')} |")
    return "\n".join(lines) + "\n"


def write_report(root: Path, report: dict) -> None:
    write_json(Path(root) / "report.json", report)
    write_atomic(Path(root) / "report.md", markdown(report).encode())

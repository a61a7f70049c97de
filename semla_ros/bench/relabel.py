"""`semla-bench relabel`: relabelling throughput, one fusion per cluster vs one fusion per image, same frames.

The demo assets (model, library, navigator) and a demo drive (`--sequence`, rendered once and held in
memory, so both methods read nothing). Measured in one run, the methods alternating `--reps` times so a
shared machine's drift hits all of them alike:
  per-image    official SemLA: per frame embed, retrieve, fuse (node's path: stage, text with the fused
               text tower, swap), segment
  per-cluster  semla-relabel's way: embed all frames in batches, cluster, per cluster retrieve for the
               centroid + one fusion, segment its frames in batches
  debounced    the node's policy replayed (SemlaSegmenter, InlineExecutor, 10 Hz clock)
Printed: frames/s of each, the per-cluster / per-image ratio, fusions made, mask agreement with
per-image and mIoU against the world's exact labels; then one end-to-end `semla-relabel` job on the
same drive written as a bag (reading, writing masks and the output bag included).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from ..core.progress import progress_bar


def per_image(build, images, rate_hz=10.0):
    from semla_ros.evaluation.replay import per_image as per_image_settings
    from semla_ros.relabel.compare import replay_on

    with replay_on(build, per_image_settings(build.spec.settings)) as method:
        return [method.process(image, i / rate_hz).class_ids for i, image in enumerate(images)], method.fusions


def per_cluster(build, images, batch_size, cluster_settings):
    from semla_ros.relabel.cluster import cluster_embeddings
    from semla_ros.relabel.work import activate_fusion, cluster_fusion, predict_masks

    lib = build.library
    emb = np.concatenate([build.navigator.embed(images[i:i + batch_size])
                          for i in range(0, len(images), batch_size)]).astype(np.float64)
    labels = cluster_embeddings(emb, lib.median_inter_centroid_distance, cluster_settings)
    masks: list = [None] * len(images)
    for k in range(int(labels.max()) + 1):
        rows = np.flatnonzero(labels == k)
        activate_fusion(build.segmenter, lib, cluster_fusion(lib, emb[rows].mean(axis=0), build.spec.settings))
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            chunk_masks = predict_masks(build.predictor, build.backend, [images[i] for i in chunk])
            for i, m in zip(chunk, chunk_masks, strict=True):
                masks[i] = m
    build.segmenter.fuse_now([], [])
    return masks, int(labels.max()) + 1


def debounced(build, images, rate_hz=10.0):
    from semla_ros.relabel.compare import replay_on

    with replay_on(build, build.spec.settings) as replay:
        return [replay.process(image, i / rate_hz).class_ids for i, image in enumerate(images)], replay.fusions


def main(argv: list[str] | None = None) -> int:
    from semla_ros.core.fields import add_options
    from semla_ros.relabel.job import RelabelSettings

    parser = argparse.ArgumentParser(prog="semla-bench relabel", description=__doc__.splitlines()[0])
    parser.add_argument("--sequence", default="clear:6,fog:6,night:6,tunnel:6,rain:6",
                        help="demo drive, domain:seconds at 10 Hz")
    parser.add_argument("--reps", type=int, default=2, help="alternating repetitions of the three methods")
    add_options(parser, RelabelSettings, only=("batch_size",))
    parser.add_argument("--cache-dir", type=Path, default=None, help="demo asset cache (default SEMLA_DEMO_CACHE)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steady on a busy CPU)")
    parser.add_argument("--no-job", action="store_true", help="skip the end-to-end semla-relabel job")
    args = parser.parse_args(argv)

    import torch

    from semla_ros.demo import world
    from semla_ros.demo.build_assets import ensure_assets
    from semla_ros.demo.drive_bag import drive_frames, write_drive_bag
    from semla_ros.demo.sequence import DomainSequence
    from semla_ros.demo.settings import DEMO_NODE_SETTINGS
    from semla_ros.engine import EngineSpec, build_engine
    from semla_ros.evaluation.metrics import ConfusionAccumulator
    from semla_ros.relabel.cluster import ClusterSettings

    torch.set_num_threads(max(1, args.threads))
    assets, _ = ensure_assets(args.cache_dir)
    spec = EngineSpec(model_config=str(assets.config_path), checkpoint=str(assets.checkpoint),
                      library_path=str(assets.library), navigator="tower", device="cpu", backend="torch",
                      classes=tuple(world.CLASS_NAMES)).replace(**DEMO_NODE_SETTINGS)
    build = build_engine(spec).raise_for_errors()
    sequence = DomainSequence.parse(args.sequence)
    rendered = [f for _, _, _, f in drive_frames(sequence)]
    images, labels = [f.image for f in rendered], [f.labels for f in rendered]
    print(f"{len(images)} frames ({args.sequence}) of {images[0].shape[1]}x{images[0].shape[0]}, demo model, "
          f"{len(build.library)} adapters, top-K {spec.settings.top_k}, {torch.get_num_threads()} torch thread(s)")

    methods = {"per-image": lambda: per_image(build, images),
               "per-cluster": lambda: per_cluster(build, images, args.batch_size, ClusterSettings()),
               "debounced": lambda: debounced(build, images)}
    per_cluster(build, images[:args.batch_size], args.batch_size, ClusterSettings())   # warm-up (imports, caches)
    times: dict[str, list[float]] = {m: [] for m in methods}
    results = {}
    with progress_bar(total=args.reps * len(methods), desc="relabel methods", unit="run") as bar:
        for _ in range(args.reps):
            for name, run in methods.items():
                start = time.perf_counter()
                results[name] = run()
                times[name].append(time.perf_counter() - start)
                bar.update(1)
    reference = results["per-image"][0]
    print(f"\n{'method':12s} {'frames/s':>9s} {'s (median)':>11s} {'fusions':>8s} {'agree':>7s} {'mIoU':>6s}")
    for name, (masks, fusions) in results.items():
        acc = ConfusionAccumulator(len(world.CLASS_NAMES))
        for m, y in zip(masks, labels, strict=True):
            acc.add(m, y)
        agree = float(np.mean([(m == r).mean() for m, r in zip(masks, reference, strict=True)]))
        t = statistics.median(times[name])
        print(f"{name:12s} {len(images) / t:9.1f} {t:11.2f} {fusions:8d} {agree:7.3f} {acc.miou:6.3f}")
    ratio = statistics.median(times["per-image"]) / statistics.median(times["per-cluster"])
    print(f"\nthroughput per-cluster / per-image: {ratio:.2f}x (medians of {args.reps} alternating runs; "
          "a shared machine: compare ratios, not absolute times)")

    if not args.no_job:
        from semla_ros.relabel.job import RelabelJob, RelabelSettings
        from semla_ros.relabel.recording import open_recording

        with tempfile.TemporaryDirectory(prefix="semla-bench-relabel-") as tmp:
            write_drive_bag(Path(tmp) / "drive", sequence)
            rec = open_recording(Path(tmp) / "drive", "/demo/image")
            start = time.perf_counter()
            report = RelabelJob(build, [rec], Path(tmp) / "out", RelabelSettings(batch_size=args.batch_size,
                                                                                 compare=False),
                                progress=False, log=lambda _: None).run()
            wall = time.perf_counter() - start
        t = report["timings"]
        print(f"semla-relabel job on the same drive as a bag: {wall:.2f} s ({len(images) / wall:.1f} frames/s) "
              f"= embed {t['embed_wall_s']:.2f} + cluster {t['cluster_s']:.2f} + fuse & segment "
              f"{t['segment_wall_s']:.2f} + write masks/bag {t['write_s']:.2f} s + job bookkeeping")
    return 0

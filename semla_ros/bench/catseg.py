"""`semla-bench catseg`: CAT-Seg forward time per frame and peak memory, whole-image and sliding-window paths.

Random weights (the architecture, not the values, sets the cost), batch 1, a synthetic camera frame. Prints
the median over `--runs` timed frames after `--warmup` frames; text embeddings are computed once up front (cached
in steady state) and timed separately.
"""
from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time

import numpy as np
import torch

CITYSCAPES_19 = ["road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
                 "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle",
                 "bicycle"]


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_frames(run, device: torch.device, warmup: int, runs: int) -> list[float]:
    for _ in range(warmup):
        run()
    _sync(device)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        _sync(device)
        times.append((time.perf_counter() - start) * 1000.0)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="semla-bench catseg", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="vitb16_384", help="named CAT-Seg config (vitb16_384, vitl14_336, tiny)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--classes", type=int, default=19, help="vocabulary size (default: the 19 Cityscapes names)")
    parser.add_argument("--size", default="480x640", help="input frame HxW")
    parser.add_argument("--mode", choices=("whole", "sliding", "both"), default="both")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave the default)")
    args = parser.parse_args(argv)

    from semla_ros.catseg import CatSegPredictor, build_catseg

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    height, width = (int(v) for v in args.size.lower().split("x"))
    device = torch.device(args.device)
    names = (CITYSCAPES_19 * (args.classes // len(CITYSCAPES_19) + 1))[:args.classes]
    names = [f"{n} {i // len(CITYSCAPES_19)}" if i >= len(CITYSCAPES_19) else n for i, n in enumerate(names)]

    rss_start = _peak_rss_mib()
    start = time.perf_counter()
    torch.manual_seed(0)
    model = build_catseg(args.config)
    build_s = time.perf_counter() - start
    params = sum(p.numel() for p in model.parameters())
    predictor = CatSegPredictor(model, names, device=device)
    image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)

    start = time.perf_counter()
    predictor.text_embeddings()
    _sync(device)
    text_ms = (time.perf_counter() - start) * 1000.0
    rss_model = _peak_rss_mib()

    print(f"CAT-Seg {args.config}: {params / 1e6:.1f}M parameters (random weights), device {device}, "
          f"torch threads {torch.get_num_threads()}, batch 1, frame {height}x{width}, {len(names)} classes")
    print(f"  build {build_s:.1f} s; text embeddings {text_ms:.0f} ms (once per vocabulary/adapter swap); "
          f"peak RSS after load {rss_model:.0f} MiB (process start {rss_start:.0f} MiB)")

    modes = ["whole", "sliding"] if args.mode == "both" else [args.mode]
    for mode in modes:
        predictor.sliding_window = mode == "sliding"
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        times = _time_frames(lambda: predictor.predict(image), device, args.warmup, args.runs)
        views = 1 if mode == "whole" else len(predictor._crop_origins()) + 1
        line = (f"  {mode:8s} ({views} view{'s' if views > 1 else ''}): median {statistics.median(times):8.1f} "
                f"ms/frame  (min {min(times):.1f}, max {max(times):.1f}, n={len(times)}); "
                f"peak RSS so far {_peak_rss_mib():.0f} MiB")
        if device.type == "cuda":
            line += f"; peak CUDA allocated {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())

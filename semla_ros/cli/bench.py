"""`semla-bench NAME [args]`: one benchmark per part, each printing its own figures.

Benchmarks live in `semla_ros/bench/<name>.py`, each a plain script with its own arguments
that prints its figures; this dispatcher only finds them.
"""
from __future__ import annotations

import importlib
import sys

BENCHMARKS = {
    "cameras": "N cameras in one node (image_topics) vs N single-camera nodes: total RSS and masks per second",
    "catseg": "CAT-Seg forward on CPU/GPU: ms per frame and peak memory",
    "fusion": "adapter swap and steady-state frame time vs PEFT",
    "large_images": "full-size rgb8 frames across processes, best effort: shipped Fast DDS profile vs LARGE_DATA",
    "library": "adapter libraries of 40 to 10,000 entries: open time, RSS, retrieval, cold and warm swaps",
    "node": "ROS node overhead, mask publish time, soak against a slow model; --startup: start to first mask",
    "onnx": "exported network in ONNX Runtime (CPU) vs PyTorch: parity and frame time",
    "int8": "ONNX Runtime dynamic int8 vs fp32: frame time, fixture logit error, demo mIoU per domain",
    "relabel": "offline relabelling throughput: one fusion per cluster vs per image, same frames",
    "tensorrt": "TensorRT engine build, refit and latency vs PyTorch (needs a GPU)",
    "stream": "camera stream fps: official SemLA per-image pipeline (PEFT) vs the node's segmenter vs plain",
    "shifts": "when adapters are swapped: shift scenarios per policy, support scores, navigator overhead",
}


def main(argv: list[str] | None = None) -> int:
    from .ending import run_command

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in BENCHMARKS:
        print("usage: semla-bench {%s} [options]" % ",".join(BENCHMARKS))
        for name, what in BENCHMARKS.items():
            print(f"  {name:12s} {what}")
        if argv and argv[0] in ("-h", "--help"):
            return 0
        wrong = f"no benchmark {argv[0]!r}" if argv else "no benchmark named"
        print(f"semla-bench: {wrong}; choose one of {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"semla_ros.bench.{argv[0]}")
    return run_command(f"semla-bench {argv[0]}", module.main, argv[1:])

if __name__ == "__main__":
    sys.exit(main())

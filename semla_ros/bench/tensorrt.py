"""`semla-bench tensorrt`: TensorRT vs PyTorch for the ViT-B/16-384 CAT-Seg, on a GPU.

Builds the engine (fp32 and fp16) through the shared engine lifecycle, checks parity with PyTorch
eager, times the build, a refit after a K-adapter fusion (random LoRA factors on the official target
list) and the per-frame latency, and prints one table (`--json`: the same figures as JSON). Random
weights: the figures are about speed and agreement, not accuracy. Needs a CUDA GPU and the `tensorrt`
package; elsewhere it says why and exits 1.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from ..core.fields import add_options
from ..core.settings import SegmenterSettings

TOLERANCES = {"fp32": 1e-3, "fp16": 5e-2}   # max |logit difference| vs PyTorch fp32 (TF32 off for fp32 engines)


def _time_cuda(fn, repeats: int) -> float:
    """Median milliseconds of fn() with the GPU synchronised around each call."""
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def random_adapters(model, targets, k: int, rank: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    adapters = []
    for i in range(k):
        factors = {}
        for name in targets:
            w = model.get_submodule(name).weight
            factors[name] = (torch.randn(rank, w.shape[1], generator=gen) * 0.02,
                             torch.randn(w.shape[0], rank, generator=gen) * 0.02)
        adapters.append(SimpleNamespace(name=f"random{i}", factors=factors, scaling=2.0))
    return adapters


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="semla-bench tensorrt", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="vitb16_384")
    parser.add_argument("--classes", type=int, default=19)
    add_options(parser, SegmenterSettings, only=("top_k",))   # the node's default K
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--precisions", default="fp32,fp16")
    parser.add_argument("--cache-dir", default=None,
                        help="engine cache (default: a fresh temp dir, so builds are timed)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)

    from ..backends.tensorrt_backend import TensorRTRuntime, tensorrt_unavailable_reason

    reason = tensorrt_unavailable_reason()
    if reason:
        print(f"semla-bench tensorrt: cannot run here: {reason}")
        if args.json is not None:
            args.json.write_text(json.dumps({"ran": False, "reason": reason}, indent=2))
        return 1
    import tensorrt as trt

    from ..backends.engine_lifecycle import EngineBackend
    from ..backends.torch_backend import TorchBackend
    from ..catseg.build import build_catseg
    from ..catseg.predictor import CatSegPredictor
    from ..core.fusion import WeightStager
    from ..core.segmenter import InlineExecutor
    from ..core.targets import semla_target_modules

    torch.manual_seed(0)
    model = build_catseg(args.config).eval().cuda()
    names = [f"class {i}" for i in range(args.classes)]
    predictor = CatSegPredictor(model, names, device="cuda")
    image = (np.random.default_rng(0).random((480, 640, 3)) * 255).astype(np.uint8)
    views, _ = predictor.preprocess(image)
    text = predictor.text_embeddings()
    targets = semla_target_modules(model)
    adapters = random_adapters(model, targets, args.top_k, 8, seed=1)
    weights = np.full(args.top_k, 1.0 / args.top_k)

    torch_fp32 = TorchBackend(predictor, "fp32")
    rows = []
    with torch.no_grad():
        reference = torch_fp32.forward(views, text)
        rows.append(dict(backend="torch eager fp32",
                         ms=_time_cuda(lambda: torch_fp32.forward(views, text), args.repeats), max_abs_diff=0.0))
        torch_fp16 = TorchBackend(predictor, "fp16")
        rows.append(dict(backend="torch autocast fp16",
                         ms=_time_cuda(lambda: torch_fp16.forward(views, text), args.repeats),
                         max_abs_diff=(torch_fp16.forward(views, text) - reference).abs().max().item()))

    cache_dir = args.cache_dir or tempfile.mkdtemp(prefix="semla-trt-bench-")
    stager = WeightStager(model, targets)
    fused = stager.stage_fusion(adapters, weights)
    for precision in args.precisions.split(","):
        start = time.perf_counter()
        runtime = TensorRTRuntime(predictor, precision, cache_dir=cache_dir)
        backend = EngineBackend(predictor, runtime, cache_dir=cache_dir, executor=InlineExecutor())
        built = backend.wait_ready()
        setup_s = time.perf_counter() - start
        with torch.no_grad():
            diff = (backend.forward(views, text) - reference).abs().max().item()
            ms = _time_cuda(lambda backend=backend: backend.forward(views, text), args.repeats)
            # Refit after a fusion, then compare with PyTorch running the same fused weights.
            predictor.load_weights(fused.weights)
            torch.cuda.synchronize()
            start = time.perf_counter()
            report = backend.update_weights(fused.weights)
            torch.cuda.synchronize()
            refit_ms = (time.perf_counter() - start) * 1000
            fused_ref = torch_fp32.forward(views, text)
            refit_diff = (backend.forward(views, text) - fused_ref).abs().max().item()
            served = backend.serving
            base = stager.base_weights().weights
            predictor.load_weights(base)
            backend.update_weights(base)
        rows.append(dict(backend=f"tensorrt {precision}", ms=ms, max_abs_diff=diff, setup_s=setup_s,
                         build_s=runtime.build_seconds, from_cache=built.from_cache, refit_ms=refit_ms,
                         refitted=report.updated, reachable=len(built.reachable), rebuild=report.rebuild_started,
                         unreached=list(report.unreached), refit_max_abs_diff=refit_diff, served_after_refit=served,
                         tolerance=TOLERANCES[precision]))
        backend.close()

    print(f"semla-bench tensorrt: {args.config}, {args.classes} classes, K={args.top_k}, "
          f"GPU {torch.cuda.get_device_name()}, TensorRT {trt.__version__}, torch {torch.__version__}")
    print(f"{'backend':22s} {'ms/frame':>9s} {'max|Δ| vs fp32':>15s} {'build s':>8s}  refit")
    base_ms = rows[0]["ms"]
    for row in rows:
        build = f"{row['build_s']:.1f}" if "build_s" in row else "-"
        refit = (f"{row['refit_ms']:.0f} ms ({row['refitted']}/{row['reachable']} w, rebuild={row['rebuild']})"
                 if "refit_ms" in row else "-")
        print(f"{row['backend']:22s} {row['ms']:9.2f} {row['max_abs_diff']:15.2e} {build:>8s}  {refit}   "
              f"(x{base_ms / row['ms']:.2f} vs eager fp32)")
    checks = [row for row in rows if "refit_max_abs_diff" in row]
    for row in checks:
        print(f"after refit ({row['backend']}): max|Δ| vs PyTorch with the same fused weights = "
              f"{row['refit_max_abs_diff']:.2e} (tolerance {row['tolerance']:g}), "
              f"served by {row['served_after_refit']}")
    ok = all(r["refit_max_abs_diff"] <= r["tolerance"] and r["max_abs_diff"] <= r["tolerance"]
             and r["served_after_refit"] == "engine" and not r["rebuild"] for r in checks)
    if args.json is not None:
        args.json.write_text(json.dumps({"ran": True, "ok": ok, "config": args.config, "classes": args.classes,
                                         "top_k": args.top_k, "gpu": torch.cuda.get_device_name(),
                                         "tensorrt": trt.__version__, "torch": torch.__version__, "rows": rows},
                                        indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""`semla-bench tensorrt`: TensorRT vs PyTorch for the ViT-B/16-384 CAT-Seg, on a GPU.

Builds the engine (fp32 and fp16), checks parity with PyTorch eager, times the build, a refit
after a K-adapter fusion (random LoRA factors on the official target list) and the per-frame
latency, and prints one table. Random weights: the figures are about speed and agreement,
not accuracy. Needs a CUDA GPU and the `tensorrt` package; elsewhere it says why and exits 1.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from types import SimpleNamespace

import numpy as np
import torch


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
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--precisions", default="fp32,fp16")
    parser.add_argument("--cache-dir", default=None, help="engine cache (default: a fresh temp dir, so builds are timed)")
    args = parser.parse_args(argv)

    from ..backends.tensorrt_backend import TensorRTBackend, tensorrt_unavailable_reason

    reason = tensorrt_unavailable_reason()
    if reason:
        print(f"semla-bench tensorrt: cannot run here: {reason}")
        return 1
    import tensorrt as trt

    from ..catseg.checkpoint import state_dict_digest
    from ..backends.torch_backend import TorchBackend
    from ..catseg.build import build_catseg
    from ..core.targets import semla_target_modules
    from ..catseg.predictor import CatSegPredictor
    from ..catseg.utils.onnx import export_onnx
    from ..core.fusion import WeightStager

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
        rows.append(("torch eager fp32", _time_cuda(lambda: torch_fp32.forward(views, text), args.repeats),
                     0.0, "-", "-"))
        torch_fp16 = TorchBackend(predictor, "fp16")
        diff16 = (torch_fp16.forward(views, text) - reference).abs().max().item()
        rows.append(("torch autocast fp16", _time_cuda(lambda: torch_fp16.forward(views, text), args.repeats),
                     diff16, "-", "-"))

    cache_dir = args.cache_dir or tempfile.mkdtemp(prefix="semla-trt-bench-")
    applier = WeightStager(model, targets)
    fused = applier.stage_fusion(adapters, weights)
    refit_parity = {}
    for precision in args.precisions.split(","):
        def export(path, prec):
            export_onnx(model, path, precision=prec)

        start = time.perf_counter()
        backend = TensorRTBackend(predictor, export, model_digest=state_dict_digest(model), precision=precision,
                                  max_classes=max(64, args.classes), device="cuda:0", cache_dir=cache_dir)
        setup_s = time.perf_counter() - start
        with torch.no_grad():
            diff = (backend.forward(views, text) - reference).abs().max().item()
            ms = _time_cuda(lambda: backend.forward(views, text), args.repeats)
            # Refit after a fusion, then compare with PyTorch running the same fused weights.
            predictor.load_weights(fused.weights)
            report = backend.update_weights(fused.weights)
            fused_ref = torch_fp32.forward(views, text)
            refit_parity[precision] = (backend.forward(views, text) - fused_ref).abs().max().item()
            base = applier.base_weights().weights
            predictor.load_weights(base)
            backend.update_weights(base)
        rows.append((f"tensorrt {precision}", ms, diff, f"{backend.build_seconds or setup_s:.1f}",
                     f"{report.seconds * 1000:.0f} ({report.refitted} w, rebuild={report.rebuild_started})"))

    print(f"semla-bench tensorrt: {args.config}, {args.classes} classes, K={args.top_k}, "
          f"GPU {torch.cuda.get_device_name()}, TensorRT {trt.__version__}, torch {torch.__version__}")
    print(f"{'backend':22s} {'ms/frame':>9s} {'max|Δ| vs fp32':>15s} {'build s':>8s}  refit ms")
    base_ms = rows[0][1]
    for name, ms, diff, build, refit in rows:
        print(f"{name:22s} {ms:9.2f} {diff:15.2e} {build:>8s}  {refit}   (x{base_ms / ms:.2f} vs eager fp32)")
    for precision, diff in refit_parity.items():
        print(f"after refit ({precision}): max|Δ| vs PyTorch with the same fused weights = {diff:.2e}")
    print("tolerances: fp32 1e-3, fp16 5e-2 (logits)")
    ok = all(d <= (1e-3 if p == "fp32" else 5e-2) for p, d in refit_parity.items())
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

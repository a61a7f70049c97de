"""`semla-bench onnx`: the ONNX Runtime backend (CPU) against PyTorch eager, side by side in one run.

What a CPU robot gets from `backend:=onnxruntime`: full frames (pre/post-processing included) through
the engine backend and through PyTorch, interleaved so both see the same machine load; a K-adapter
fusion swapped in (PyTorch: the weights copied into the model; ONNX Runtime: that plus the backend's
`update_weights`), the frame after it, and whether masks and logits agree. Default ViT-B/16-384 with
random weights: the figures are about speed and agreement, not accuracy.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ..core.fields import add_options
from ..core.settings import SegmenterSettings


def _ms(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return (time.perf_counter() - start) * 1e3, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="semla-bench onnx", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="vitb16_384")
    parser.add_argument("--classes", type=int, default=19)
    parser.add_argument("--repeats", type=int, default=3, help="frames per backend, interleaved")
    add_options(parser, SegmenterSettings, only=("top_k",))   # adapters in the fusion that is swapped in
    parser.add_argument("--tolerance", type=float, default=1e-4, help="max |logit difference| allowed")
    parser.add_argument("--cache-dir", default=None,
                        help="ONNX cache (default: a fresh temp dir, so the export is timed)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)

    import onnxruntime as ort

    from ..backends.engine_lifecycle import EngineBackend
    from ..backends.factory import auto_backend
    from ..backends.onnxruntime_backend import OnnxRuntime
    from ..catseg.build import build_catseg
    from ..catseg.predictor import CatSegPredictor
    from ..core.fusion import WeightStager
    from ..core.segmenter import InlineExecutor
    from ..core.targets import semla_target_modules
    from .tensorrt import random_adapters

    torch.manual_seed(0)
    model = build_catseg(args.config).eval()
    predictor = CatSegPredictor(model, [f"class {i}" for i in range(args.classes)])
    image = (np.random.default_rng(0).random((480, 640, 3)) * 255).astype(np.uint8)
    views, _ = predictor.preprocess(image)
    cache_dir = args.cache_dir or tempfile.mkdtemp(prefix="semla-onnx-bench-")

    setup_ms, backend = _ms(lambda: EngineBackend(predictor, OnnxRuntime(predictor), cache_dir=cache_dir,
                                                  executor=InlineExecutor()))
    backend.wait_ready()

    def frames(label):
        """Interleaved full frames; returns medians and the last masks/logits of each."""
        ort_ms, torch_ms = [], []
        for _ in range(args.repeats):
            t, ort_pred = _ms(lambda: predictor.predict(image, forward=backend.forward))
            ort_ms.append(t)
            t, torch_pred = _ms(lambda: predictor.predict(image))
            torch_ms.append(t)
        text = predictor.text_embeddings()
        diff = (backend.forward(views, text) - predictor.forward(views, text)).abs().max().item()
        agree = float((ort_pred.class_ids == torch_pred.class_ids).mean())
        return {"label": label, "onnxruntime_ms": statistics.median(ort_ms), "pytorch_ms": statistics.median(torch_ms),
                "max_abs_logit_diff": diff, "mask_agreement": agree, "served_by": backend.serving}

    rows = [frames("base model")]
    targets = semla_target_modules(model)
    fused = WeightStager(model, targets).stage_fusion(random_adapters(model, targets, args.top_k, 8, seed=1),
                                                      np.full(args.top_k, 1.0 / args.top_k))
    load_ms, _ = _ms(lambda: predictor.load_weights(fused.weights))
    update_ms, report = _ms(lambda: backend.update_weights(fused.weights))
    rows.append(frames(f"after a K={args.top_k} fusion"))

    print(f"semla-bench onnx: {args.config}, {args.classes} classes, 640x480 frames, onnxruntime {ort.__version__} "
          f"CPU, torch {torch.__version__} ({torch.get_num_threads()} threads); one run, side by side")
    print(f"  {auto_backend('cpu')}")
    print(f"  engine setup (export + session): {setup_ms / 1e3:.1f} s")
    for row in rows:
        print(f"  {row['label']:22s} frame: onnxruntime {row['onnxruntime_ms']:.0f} ms, "
              f"PyTorch {row['pytorch_ms']:.0f} ms "
              f"(x{row['pytorch_ms'] / row['onnxruntime_ms']:.2f} faster; median of {args.repeats}); "
              f"max |onnxruntime - PyTorch| = {row['max_abs_logit_diff']:.3e} (tolerance {args.tolerance:g}); "
              f"masks agree on {row['mask_agreement']:.2%} of pixels; served by {row['served_by']}")
    print(f"  swap: PyTorch load_weights {load_ms:.0f} ms; onnxruntime update_weights {update_ms:.1f} ms on top "
          f"({report.updated} weights updated, rebuild={report.rebuild_started})")
    if args.json is not None:
        args.json.write_text(json.dumps({"config": args.config, "classes": args.classes, "repeats": args.repeats,
                                         "setup_s": setup_ms / 1e3, "frames": rows, "swap_load_weights_ms": load_ms,
                                         "swap_update_weights_ms": update_ms, "updated": report.updated,
                                         "rebuild_started": report.rebuild_started}, indent=2))
    backend.close()
    ok = all(r["max_abs_logit_diff"] <= args.tolerance and r["served_by"] == "engine" for r in rows)
    return 0 if ok and not report.rebuild_started else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""`semla-bench onnx`: the exported network core in ONNX Runtime (CPU) against PyTorch.

The ONNX graph is what TensorRT builds from, so its parity is the first thing to know on a
machine without a GPU. Prints the export time, the max abs logit difference and both
frame times for one config (default ViT-B/16-384, random weights).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="semla-bench onnx", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="vitb16_384")
    parser.add_argument("--classes", type=int, default=19)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tolerance", type=float, default=1e-4)
    args = parser.parse_args(argv)

    import onnxruntime as ort

    from ..catseg.build import build_catseg
    from ..catseg.predictor import CatSegPredictor
    from ..catseg.utils.onnx import export_onnx

    torch.manual_seed(0)
    model = build_catseg(args.config).eval()
    predictor = CatSegPredictor(model, [f"class {i}" for i in range(args.classes)])
    image = (np.random.default_rng(0).random((480, 640, 3)) * 255).astype(np.uint8)
    views, _ = predictor.preprocess(image)
    text = predictor.text_embeddings()

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{args.config}.onnx"
        start = time.perf_counter()
        export_onnx(model, path)
        export_s = time.perf_counter() - start
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        feeds = {"image": views.numpy(), "text_embeddings": text.numpy()}
        ort_times, torch_times = [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            (ort_logits,) = session.run(None, feeds)
            ort_times.append((time.perf_counter() - start) * 1e3)
            start = time.perf_counter()
            with torch.no_grad():
                ref = model(views, text).numpy()
            torch_times.append((time.perf_counter() - start) * 1e3)
    diff = float(np.abs(ort_logits - ref).max())
    print(f"semla-bench onnx: {args.config}, {args.classes} classes, onnxruntime {ort.__version__} CPU, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads)")
    print(f"  export {export_s:.1f} s; logits {tuple(ref.shape)}; max |onnxruntime - PyTorch| = {diff:.3e} "
          f"(tolerance {args.tolerance:g})")
    print(f"  frame: onnxruntime {statistics.median(ort_times):.0f} ms, PyTorch {statistics.median(torch_times):.0f} ms "
          f"(median of {args.repeats})")
    return 0 if diff <= args.tolerance else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""`semla-bench int8`: ONNX Runtime dynamic int8 quantization of the exported network vs its fp32 export.

Whether `precision: int8` on `backend: onnxruntime` is worth offering (issue 25): frame time (fp32 and int8
sessions interleaved, same frames), logit error on the reference fixture (CAT-Seg official A), and the demo
mIoU per domain with that domain's own adapter fused (the model the node runs there), fp32 vs int8, on the
demo's held-out frames. The rule: int8 ships only if the demo mIoU stays within 1 point of fp32 in every
domain. Dynamic quantization quantizes constant weights, so an int8 engine bakes the fused weights in: every
adapter swap would re-export and re-quantize (the fp32 engine binds them live and swaps in 0.3 ms).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ..catseg.utils.onnx import INPUT_NAMES, OUTPUT_NAME, export_onnx

MIOU_POINTS = 1.0   # the shipping rule: |int8 - fp32| demo mIoU at most 1 point in every domain


def sessions(model, folder: Path) -> dict[str, object]:
    """fp32 and int8 (dynamic, weights int8, activations quantized per call) ONNX Runtime sessions of `model`."""
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    folder.mkdir(parents=True, exist_ok=True)
    fp32, int8 = folder / "fp32.onnx", folder / "int8.onnx"
    export_onnx(model, fp32)
    quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return {name: ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            for name, path in (("fp32", fp32), ("int8", int8))}


def forward_of(session):
    """The predictor's network call (views, text) -> logits, run by `session`."""
    def forward(views: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        feeds = {INPUT_NAMES[0]: views.float().cpu().numpy(), INPUT_NAMES[1]: text.float().cpu().numpy()}
        return torch.from_numpy(session.run([OUTPUT_NAME], feeds)[0])
    return forward


def fixture_errors(fixture_dir: Path, folder: Path) -> dict:
    """Logit error of int8 and fp32 against PyTorch on the reference fixture's image and vocabulary."""
    from ..catseg.build import load_catseg
    from ..catseg.predictor import CatSegPredictor
    from ..verify.catseg_fixture import read_rgb

    config = json.loads((fixture_dir / "config.json").read_text())
    model = load_catseg(fixture_dir / "config.json", fixture_dir / "model.safetensors")
    predictor = CatSegPredictor(model, list(config["text"]["class_names"]))
    views, _ = predictor.preprocess(read_rgb(fixture_dir / config.get("input", {}).get("file", "input.png")))
    text = predictor.text_embeddings()
    with torch.no_grad():
        reference = model(views, text)
    found = {"logit_range": float(reference.max() - reference.min())}
    for name, session in sessions(model, folder).items():
        logits = forward_of(session)(views, text)
        found[f"{name}_max_abs_logit_error"] = float((logits - reference).abs().max())
        found[f"{name}_argmax_agreement"] = float((logits.argmax(1) == reference.argmax(1)).float().mean())
    return found


def demo_miou(cache_dir: Path | None, folder: Path, frames: int, repeats: int) -> dict:
    """Per domain: that domain's adapter fused (oracle), mIoU of fp32 and int8 on held-out frames; frame times."""
    from ..catseg.predictor import CatSegPredictor
    from ..core.fusion import WeightStager
    from ..core.library import AdapterLibrary
    from ..demo import world
    from ..demo.build_assets import HELDOUT_SEED0, BuildParams, adapter_name, ensure_assets, load_demo_model
    from ..evaluation.metrics import confusion_matrix, mean_iou

    assets, _ = ensure_assets(cache_dir)
    params = BuildParams()
    model = load_demo_model(assets)
    predictor = CatSegPredictor(model, list(world.CLASS_NAMES))
    library = AdapterLibrary.open(assets.library, model=model)
    stager = WeightStager(model, library.target_modules)
    rows, times = {}, {"fp32": [], "int8": []}
    for i, domain in enumerate(params.domains):
        predictor.load_weights(stager.stage_fusion([library[adapter_name(domain)]], [1.0]).weights)
        runs = sessions(model, folder / domain)
        start = HELDOUT_SEED0 + i * 10_000
        images, labels = world.dataset(domain, range(start, start + frames), params.size)
        found = {}
        for name, session in runs.items():
            forward = forward_of(session)
            masks = [predictor.predict(image, forward=forward).class_ids for image in images]
            cm = sum(confusion_matrix(m, y, len(world.CLASS_NAMES)) for m, y in zip(masks, labels, strict=True))
            found[name] = 100.0 * mean_iou(cm)
        for _ in range(repeats):   # interleaved, same frame: both see the same machine load
            for name, session in runs.items():
                t = time.perf_counter()
                predictor.predict(images[0], forward=forward_of(session))
                times[name].append((time.perf_counter() - t) * 1e3)
        rows[domain] = found
    return {"domains": rows, "frame_ms": {k: statistics.median(v) for k, v in times.items()}}


def frame_times(config: str, classes: int, repeats: int, folder: Path) -> dict:
    """Median full-frame time (640x480) of fp32 and int8 sessions, interleaved, random weights of `config`."""
    from ..catseg.build import build_catseg
    from ..catseg.predictor import CatSegPredictor

    torch.manual_seed(0)
    model = build_catseg(config).eval()
    predictor = CatSegPredictor(model, [f"class {i}" for i in range(classes)])
    image = (np.random.default_rng(0).random((480, 640, 3)) * 255).astype(np.uint8)
    runs = sessions(model, folder)
    times = {name: [] for name in runs}
    masks = {}
    for _ in range(repeats):
        for name, session in runs.items():
            t = time.perf_counter()
            masks[name] = predictor.predict(image, forward=forward_of(session)).class_ids
            times[name].append((time.perf_counter() - t) * 1e3)
    return {"config": config, "frame_ms": {k: statistics.median(v) for k, v in times.items()},
            "mask_agreement": float((masks["fp32"] == masks["int8"]).mean())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="semla-bench int8", description=__doc__.splitlines()[0])
    parser.add_argument("--fixture", type=Path, default=None,
                        help="CAT-Seg reference fixture folder (default: catseg_official_A in SEMLA_FIXTURES_DIR "
                             "or ../shared/fixtures)")
    parser.add_argument("--demo-cache", type=Path, default=None, help="demo asset cache root")
    parser.add_argument("--frames", type=int, default=24, help="held-out demo frames per domain")
    parser.add_argument("--repeats", type=int, default=3, help="timed frames per precision, interleaved")
    parser.add_argument("--config", default="vitb16_384", help="model timed on 640x480 frames ('' to skip)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    import onnxruntime as ort

    fixtures = os.environ.get("SEMLA_FIXTURES_DIR") or Path(__file__).resolve().parents[2].parent / "shared/fixtures"
    fixture = args.fixture or Path(fixtures) / "catseg_official_A"
    with tempfile.TemporaryDirectory(prefix="semla-int8-") as tmp:
        tmp = Path(tmp)
        result = {"onnxruntime": ort.__version__, "fixture": fixture_errors(fixture, tmp / "fixture"),
                  "demo": demo_miou(args.demo_cache, tmp / "demo", args.frames, args.repeats)}
        if args.config:
            result["timing"] = frame_times(args.config, 19, args.repeats, tmp / "timing")
    print(f"semla-bench int8: onnxruntime {ort.__version__} CPU, dynamic quantization (QInt8 weights) vs fp32 "
          "export; one run, side by side")
    f = result["fixture"]
    print(f"  reference fixture: max |logit error| vs PyTorch fp32 {f['fp32_max_abs_logit_error']:.2e}, "
          f"int8 {f['int8_max_abs_logit_error']:.2e} (logit range {f['logit_range']:.2f}); argmax agreement "
          f"fp32 {f['fp32_argmax_agreement']:.2%}, int8 {f['int8_argmax_agreement']:.2%}")
    demo = result["demo"]
    worst = max(abs(r["int8"] - r["fp32"]) for r in demo["domains"].values())
    print(f"  demo mIoU per domain, own adapter fused, {args.frames} held-out frames (fp32 / int8):")
    for domain, r in demo["domains"].items():
        print(f"    {domain:7s} {r['fp32']:6.2f} / {r['int8']:6.2f}  ({r['int8'] - r['fp32']:+.2f} points)")
    print(f"  demo frame: fp32 {demo['frame_ms']['fp32']:.1f} ms, int8 {demo['frame_ms']['int8']:.1f} ms "
          f"(x{demo['frame_ms']['fp32'] / demo['frame_ms']['int8']:.2f}; median of {args.repeats * 7})")
    if "timing" in result:
        t = result["timing"]
        print(f"  {t['config']} 640x480 frame: fp32 {t['frame_ms']['fp32']:.0f} ms, "
              f"int8 {t['frame_ms']['int8']:.0f} ms "
              f"(x{t['frame_ms']['fp32'] / t['frame_ms']['int8']:.2f}; median of {args.repeats}); masks agree on "
              f"{t['mask_agreement']:.2%} of pixels")
    ships = worst <= MIOU_POINTS
    result["worst_miou_points"], result["ships"] = worst, ships
    print(f"int8: worst demo mIoU change {worst:.2f} points (rule: <= {MIOU_POINTS:g}): "
          f"{'within the rule' if ships else 'outside the rule, not offered'}")
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""`semla-bench stream`: frames per second of a camera stream, the official SemLA per-image pipeline vs ours.

The same frames, the three modes interleaved frame by frame (so a shared machine's load hits them alike):
  official  what SemLA's code does for every image: navigator embedding (PyTorch), retrieval of the top-K,
            PEFT `add_weighted_adapter(..., combination_type="cat")` + `set_adapter`, the forward with that
            LoRA active (unmerged), `delete_adapter`
  ours      the node's segmenter (`SemlaSegmenter`, its own navigator thread and default settings: a swap only
            when the domain changes, the navigator backing off to one frame in embed_rest_every_n while the
            decision is still) on the backend, the navigator on that backend's engine where it has one; each
            frame is charged with the navigator work it started (waited for before the next mode's frame)
  plain     the model alone on the backend (no navigator, no adapters)
on each backend asked for (default: torch and what `backend: auto` picks here); frames per second are frames
over seconds (not a median frame: ours embeds on some frames only). Random weights: the figures are about
speed. The last line: `stream: ours/official N.NNx, ours/plain N.NNx (backend NAME)` for the default one.
"""
from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch


def _library(model, navigator, root: str, count: int, rank: int, seed: int):
    """`count` random r=`rank` adapters on the SemLA targets, centroids spread around the navigator's space."""
    from ..core.library import AdapterLibrary, write_entry
    from ..core.targets import semla_target_modules

    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    for k in range(count):
        factors = {}
        for name in semla_target_modules(model):
            linear = model.get_submodule(name)
            factors[name] = (torch.randn(rank, linear.in_features, generator=g) * 0.01,
                             torch.randn(linear.out_features, rank, generator=g) * 0.01)
        write_entry(root, f"random-{k}", factors, rng.normal(size=navigator.dim), lora_alpha=2 * rank,
                    metadata={"navigator": navigator.id, "embedding_dim": navigator.dim})
    return AdapterLibrary.open(root, navigator_dim=navigator.dim, model=model)


class OfficialPipeline:
    """SemLA's per-image loop on a PEFT copy of the model holding every library adapter (as SemLA loads them)."""

    def __init__(self, predictor, library, navigator, top_k: int, temperature: float):
        from peft import LoraConfig

        from .peft_reference import peft_copy

        self.predictor, self.library, self.navigator = predictor, library, navigator
        self.top_k, self.temperature = top_k, temperature
        peft_model = peft_copy(predictor.model, [
            (entry.name, LoraConfig(r=entry.rank, lora_alpha=entry.scaling * entry.rank,
                                    target_modules=list(entry.factors), lora_dropout=0.0), entry.factors)
            for entry in library.entries])
        self.peft_model = peft_model
        self.network = peft_model.base_model.model

    @torch.no_grad()
    def process(self, image: np.ndarray):
        from ..core.retrieval import retrieve

        query = self.navigator.embed([image])[0]
        found = retrieve(query, self.library.index, self.top_k, self.temperature)
        names = [self.library.names[i] for i in found.indices]
        self.peft_model.add_weighted_adapter(names, list(found.weights), "merged", combination_type="cat")
        self.peft_model.set_adapter("merged")
        # CAT-Seg's forward embeds the vocabulary with the (adapted) text tower every time
        text = self.network.encode_text(self.predictor.tokens)
        prediction = self.predictor.predict(image, text, forward=self.network)
        self.peft_model.set_adapter(names[0])   # PEFT refuses to delete the active adapter
        self.peft_model.delete_adapter("merged")
        return prediction


def _charged(segmenter, image, time_s):
    """One frame of ours, charged with the navigator work it started: the navigator's worker would otherwise
    run during the next mode's frame (a frame of ours embeds while the decision moves, one in
    embed_rest_every_n at rest, so frames per second are frames / seconds, not a median frame)."""
    out = segmenter.process(image, time_s=time_s)
    segmenter.wait_embedding()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="semla-bench stream", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="vitb16_384",
                        help="CAT-Seg config (random weights); 'demo': the demo's small model")
    parser.add_argument("--navigator", default="ViT-L-14",
                        help="open_clip model of the navigator (random weights), or 'tower' (the model's own)")
    parser.add_argument("--backends", default="", help="comma-separated; default: torch and what auto picks")
    parser.add_argument("--adapters", type=int, default=10, help="library size")
    parser.add_argument("--frames", type=int, default=6, help="timed frames per mode and backend")
    parser.add_argument("--warmup", type=int, default=2, help="untimed frames per mode (startup fusion, threads)")
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    args = parser.parse_args(argv)

    from ..backends.factory import auto_backend, make_backend
    from ..catseg.build import build_catseg
    from ..catseg.predictor import CatSegPredictor
    from ..core.navigator import OpenClipNavigator, TowerNavigator
    from ..core.segmenter import SemlaSegmenter
    from ..core.settings import SegmenterSettings
    from ..demo import world
    from ..demo.build_assets import demo_config
    from ..engine.build import navigator_on_engine
    from ..engine.spec import CITYSCAPES_CLASSES

    choice = auto_backend("cpu")
    backends = [b for b in args.backends.split(",") if b] or list(dict.fromkeys(["torch", choice.kind]))
    torch.manual_seed(0)
    model = build_catseg(demo_config() if args.config == "demo" else args.config).eval()
    predictor = CatSegPredictor(model, list(CITYSCAPES_CLASSES))
    navigator = TowerNavigator(model) if args.navigator == "tower" else OpenClipNavigator(args.navigator,
                                                                                          pretrained=None)
    settings = SegmenterSettings()
    domains = ("clear", "fog", "night")
    images = [world.render(domains[i % 3], 7_000_000 + i, (args.height, args.width)).image
              for i in range(args.warmup + args.frames)]
    print(f"semla-bench stream: {args.config} + navigator {args.navigator} (random weights), {args.height}x"
          f"{args.width}, {len(CITYSCAPES_CLASSES)} classes, {args.adapters} adapters, top-{settings.top_k}, CPU, "
          f"torch threads {torch.get_num_threads()}; {args.frames} frames per mode, modes interleaved per frame",
          flush=True)
    print(f"  {choice}", flush=True)
    results = {}
    with tempfile.TemporaryDirectory(prefix="semla-stream-") as tmp:
        library = _library(model, navigator, tmp + "/library", args.adapters, 8, seed=0)
        official = OfficialPipeline(predictor, library, navigator, settings.top_k, settings.temperature)
        for kind in backends:
            backend, note = make_backend(kind, predictor, cache_dir=tmp + "/cache")
            nav, _ = navigator_on_engine(navigator, tmp + "/cache") if backend.name == "onnxruntime" \
                else (navigator, "")
            if hasattr(backend, "wait_ready"):   # timed frames run on the engine, not on PyTorch while it builds
                backend.wait_ready()
            if hasattr(nav, "wait_ready"):
                nav.wait_ready()
            segmenter = SemlaSegmenter(predictor, library, nav, settings, backend=backend)
            modes = {"official": lambda image, t: official.process(image),
                     "ours": lambda image, t, seg=segmenter: _charged(seg, image, t),
                     "plain": lambda image, t, b=backend: predictor.predict(image, forward=b.forward)}
            times = {name: [] for name in modes}
            for i, image in enumerate(images):   # 10 Hz frame stamps: the segmenter's dwell in frame time
                if i == args.warmup and hasattr(backend, "wait_ready"):
                    backend.wait_ready()   # a rebuild the startup fusion needed (baked weights) is timed out
                for name, run in modes.items():
                    start = time.perf_counter()
                    run(image, i / 10.0)
                    if i >= args.warmup:
                        times[name].append(time.perf_counter() - start)
            status = backend.status()   # how the last frame ran, and why (None: PyTorch by choice)
            segmenter.close()
            for closable in (backend, nav):
                if hasattr(closable, "close") and closable is not navigator:
                    closable.close()
            fps = {name: len(t) / sum(t) for name, t in times.items()}
            results[kind] = fps
            print(f"  backend {kind}{' (' + note + ')' if note else ''}: frames per second (frames / seconds) "
                  f"official {fps['official']:.3f}, ours {fps['ours']:.3f}, plain {fps['plain']:.3f}; "
                  f"ours/official {fps['ours'] / fps['official']:.2f}x, ours/plain {fps['ours'] / fps['plain']:.2f}x; "
                  f"network: {status[1] if status else 'PyTorch'}", flush=True)
    default = choice.kind if choice.kind in results else backends[0]
    fps = results[default]
    print(f"stream: ours/official {fps['ours'] / fps['official']:.2f}x, ours/plain {fps['ours'] / fps['plain']:.2f}x "
          f"(backend {default})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

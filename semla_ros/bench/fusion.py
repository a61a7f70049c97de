"""`semla-bench fusion`: adapter swap and steady-state frame time, ours vs PEFT (SemLA's way).

CAT-Seg ViT-B/16@384 with random weights, the official SemLA target list (154 modules) and K
random r=8 adapters. Measured in one run:
  swap   ours: W_base + B_cat A_cat into staging buffers (one matmul per module) + copy into the model
         PEFT: add_weighted_adapter(cat) + set_adapter (what SemLA does per image)
  frame  ours: the plain model holding the fused weights
         PEFT: the same model with the merged adapter active, unmerged
  bound  copying every target weight once (what any swap into live weights must pay)
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from ..core.fields import add_options
from ..core.settings import SegmenterSettings


def _timed(fn, reps: int, sync, warmup: int = 0) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def _fmt(times: list[float]) -> str:
    return f"{statistics.median(times):10.2f} ms (min {min(times):.2f}, n={len(times)})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="semla-bench fusion", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="vitb16_384")
    add_options(parser, SegmenterSettings, only=("top_k",))   # the node's default K
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--classes", type=int, default=8, help="vocabulary size T of the frame benchmark")
    parser.add_argument("--swap-reps", type=int, default=5)
    parser.add_argument("--frame-reps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls before each measurement")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch intra-op threads (0: torch's default); 1 avoids thread-pool stalls on a busy CPU")
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    from peft import LoraConfig

    from semla_ros.catseg.build import build_catseg
    from semla_ros.catseg.predictor import CatSegPredictor
    from semla_ros.core.fusion import WeightStager
    from semla_ros.core.library import AdapterEntry
    from semla_ros.core.targets import semla_target_modules

    from .peft_reference import peft_copy

    device = torch.device(args.device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    torch.manual_seed(args.seed)
    model = build_catseg(args.config).to(device).eval()
    targets = semla_target_modules(model)
    g = torch.Generator().manual_seed(args.seed)
    entries = []
    for i in range(args.top_k):
        factors = {}
        for name in targets:
            w = model.get_submodule(name).weight
            factors[name] = (torch.randn(args.rank, w.shape[1], generator=g) * 0.02,
                             torch.randn(w.shape[0], args.rank, generator=g) * 0.02)
        entries.append(AdapterEntry(f"domain{i}", factors, 2.0, np.zeros(1, np.float32), {}, False, args.rank))
    raw = np.random.default_rng(args.seed).random(args.top_k) + 0.1
    weights = list(raw / raw.sum())
    n_params = sum(model.get_submodule(t).weight.numel() for t in targets)
    print(f"config {args.config}, device {device}, torch threads {torch.get_num_threads()}, "
          f"{len(targets)} target modules ({n_params / 1e6:.1f}M weights), K={args.top_k}, r={args.rank}, "
          f"T={args.classes}")

    # PEFT copy of the same model, the K adapters loaded the way SemLA loads them.
    peft_model = peft_copy(model, [
        (e.name, LoraConfig(r=args.rank, lora_alpha=2 * args.rank, target_modules=targets, lora_dropout=0.0), e.factors)
        for e in entries])
    names = [e.name for e in entries]

    # --- swap
    applier = WeightStager(model, targets)
    device_entries = [AdapterEntry(e.name, {m: (a.to(device), b.to(device)) for m, (a, b) in e.factors.items()},
                                   e.scaling, e.centroid, {}, False, e.rank) for e in entries]

    def ours_stage():
        return applier.stage_fusion(device_entries, weights)

    staged = ours_stage()

    classes = [f"class {i}" for i in range(args.classes)]
    predictor = CatSegPredictor(model, classes, device=device)

    def ours_swap():
        predictor.load_weights(ours_stage().weights)

    def copy_once():
        predictor.load_weights(staged.weights)

    counter = iter(range(10 ** 6))
    previous: list[str] = []

    def peft_swap():
        name = f"merged{next(counter)}"
        peft_model.add_weighted_adapter(names, weights, name, combination_type="cat")
        peft_model.set_adapter(name)
        previous.append(name)

    def peft_cleanup():
        while len(previous) > 1:
            peft_model.delete_adapter(previous.pop(0))

    with torch.no_grad():
        t_stage = _timed(ours_stage, args.swap_reps, sync, args.warmup)
        t_ours = _timed(ours_swap, args.swap_reps, sync, args.warmup)
        t_copy = _timed(copy_once, args.swap_reps, sync, args.warmup)
    t_peft = []
    for _ in range(args.warmup):
        peft_swap()
        peft_cleanup()
    for _ in range(args.swap_reps):
        peft_cleanup()
        t_peft += _timed(peft_swap, 1, sync)
    peft_cleanup()

    # --- steady-state frame (same input, same text embeddings, merged adapter active in PEFT)
    predictor.load_weights(staged.weights)
    text = predictor.text_embeddings()
    image = np.random.default_rng(args.seed).integers(0, 256, size=(480, 640, 3), dtype=np.uint8)
    x, _ = predictor.preprocess(image)
    inner = peft_model.base_model.model
    with torch.no_grad():
        ours_logits = model(x, text)       # also the warm-up of both
        peft_logits = inner(x, text)
        f_ours, f_peft = [], []
        for _ in range(args.frame_reps):     # interleaved, so drifts of a shared machine hit both alike
            f_ours += _timed(lambda: model(x, text), 1, sync)
            f_peft += _timed(lambda: inner(x, text), 1, sync)
        overrides = staged.parameter_overrides()
        t_text = _timed(lambda: predictor.text_embeddings(overrides=overrides), args.swap_reps, sync, args.warmup)
    diff = (ours_logits - peft_logits).abs().max().item()

    m = statistics.median
    print()
    print(f"{'measure':48s} {'median':>13s}")
    print(f"{'swap   ours: fuse+stage (worker thread)':48s} {_fmt(t_stage)}")
    print(f"{'swap   ours: fuse+stage+copy into model':48s} {_fmt(t_ours)}")
    print(f"{'swap   ours: copy into model (inference thread)':48s} {_fmt(t_copy)}")
    print(f"{'swap   PEFT: add_weighted_adapter(cat)+set_adapter':48s} {_fmt(t_peft)}")
    print(f"{'bound  copy every target weight once':48s} {_fmt(t_copy)}")
    print(f"{'(ours also: text embeddings, fused text tower)':48s} {_fmt(t_text)}")
    print(f"{'frame  ours: plain model, fused weights':48s} {_fmt(f_ours)}")
    print(f"{'frame  PEFT: merged adapter active, unmerged':48s} {_fmt(f_peft)}")
    print()
    print(f"swap speed-up, PEFT / ours (full swap)          {m(t_peft) / m(t_ours):8.2f}x")
    print(f"inference-thread stall, PEFT / ours (copy only) {m(t_peft) / m(t_copy):8.2f}x")
    print(f"ours full swap / copy bound                     {m(t_ours) / m(t_copy):8.2f}x")
    print(f"frame time, PEFT / ours                         {m(f_peft) / m(f_ours):8.3f}x")
    print(f"max |logits ours - logits PEFT|                 {diff:.3e}")
    return 0

"""What the demo-world evaluations start from (`semla-eval demo` and its `--compare-training`): the demo assets,
the demo world exported as held-out test / adapter-training datasets, the frozen base model and its navigator,
and per-domain adapter libraries trained on the exported frames (kept when already trained the same way).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class DemoSetup:
    """What every demo-world evaluation starts from: assets, exported datasets, base model, navigator."""

    params: object              # BuildParams
    assets: object              # build_assets.Assets
    work: Path
    domains: tuple[str, ...]
    test_root: Path
    train_root: Path
    model: object               # the demo CATSeg, frozen
    navigator: object           # CachedNavigator around the tower navigator
    budget: dict                # LoopSettings fields of the adapters trained here


def prepare_demo(args, log) -> DemoSetup:
    """Demo assets (built if missing), held-out test / adapter-training exports, model and navigator."""
    import torch

    from ..core.navigator import build_navigator
    from ..evaluation.protocol import CachedNavigator
    from .build_assets import ADAPTER_SEED0, TEST_PARAMS, BuildParams, ensure_assets, load_demo_model
    from .export import HELD_OUT_SEED_BASE, export_demo_world

    params = TEST_PARAMS if args.test_budget else BuildParams()
    assets, built = ensure_assets(args.cache_dir, params, log=log)
    log(f"demo assets: {assets.root} ({'built now' if built else 'cached'})")
    work = args.work or (assets.root / "eval")
    work.mkdir(parents=True, exist_ok=True)
    domains = tuple(params.domains)
    test_root, train_root = work / f"test_{args.images_per_domain}", work / "train"
    if not (test_root / "classes.txt").is_file():
        export_demo_world(test_root, domains, args.images_per_domain, HELD_OUT_SEED_BASE, tuple(params.size))
    n_train = args.train_images or params.adapter_images
    if not args.no_train and not (train_root / "classes.txt").is_file():
        export_demo_world(train_root, domains, n_train, ADAPTER_SEED0, tuple(params.size))
    torch.manual_seed(0)
    model = load_demo_model(assets)
    for p in model.parameters():
        p.requires_grad_(False)
    navigator = CachedNavigator(build_navigator("tower", model))
    steps = args.steps or params.adapter_steps
    budget = dict(steps=steps, lr=args.lr or params.adapter_lr, batch_size=args.batch_size or params.batch,
                  seed=args.seed, warmup_steps=max(1, steps // 10), loss=args.loss)
    return DemoSetup(params, assets, work, domains, test_root, train_root, model, navigator, budget)


def train_library(model, navigator, train_root: Path, library: Path, settings, log) -> dict[str, dict]:
    """One adapter per training domain into `library` (kept when its metadata says it was trained with
    these settings on this base model). Returns {entry: its metadata + "trained_now"}."""
    from ..evaluation.dataset import open_dataset
    from ..training.entries import train_entry
    from ..training.lora import base_model_id

    fingerprint = base_model_id(model)
    done = {}
    for name, folder in open_dataset(train_root).items():
        meta_path = library / name / "metadata.json"
        if meta_path.is_file():
            meta = json.loads(meta_path.read_text())
            same = meta.get("training") == json.loads(json.dumps(asdict(settings)))
            if same and meta.get("base_model") == fingerprint:
                done[name] = {**meta, "trained_now": False}
                continue
        made = train_entry(folder.path, library, settings, lambda: (model, navigator), name=name, overwrite=True,
                           show_progress=False)
        done[name] = {**json.loads((made.path / "metadata.json").read_text()), "trained_now": True}
        losses = made.trained.losses
        log(f"  {library.name}/{name}: loss {losses[0]:.4f} -> {losses[-1]:.4f} ({made.trained.seconds:.0f} s)")
    return done

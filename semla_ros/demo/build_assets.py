"""Build the demo's assets on CPU: a small CAT-Seg trained on the source mix, one PEFT LoRA per
domain, domain centroids from the demo navigator, written as an official-layout SemLA library.

Why it is built rather than downloaded: the demo must run on a fresh clone with no pretrained
weights and no network. Everything is seeded, so the same parameters and code give the same files;
the result is cached under a directory keyed by the parameters and a hash of the code that
produced it (world, this file, the CAT-Seg model code), and reused afterwards.

Layout of an asset directory:
    model_config.json           dataclasses.asdict(CatSegConfig) of the demo model
    model.safetensors           the base model's state_dict
    loradb/demo-<domain>/adapter_config.json, adapter_model.safetensors, demo-<domain>_statistics.npz,
           metadata.json        (ours: navigator id, embedding dim, domain, training data)
    build.json                  parameters, timings and the held-out check (mIoU, retrieval)

Regenerate: python -m semla_ros.demo.build_assets [--force] [--cache-dir DIR]
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..catseg.build import build_catseg, load_catseg
from ..catseg.config import AggregatorConfig, CatSegConfig, InferenceConfig, TextConfig, VisionConfig
from ..catseg.predictor import CatSegPredictor
from ..core.library import AdapterLibrary
from ..core.navigator import TowerNavigator
from ..core.progress import progress_bar
from ..evaluation.metrics import confusion_matrix, mean_iou
from ..training.loop import LoopSettings, fit
from ..training.lora import TrainSettings, domain_centroid, save_entry, train_adapter
from . import world

ASSET_FORMAT = 1
CONFIG_FILE = "model_config.json"
WEIGHTS_FILE = "model.safetensors"
LIBRARY_DIR = "loradb"
REPORT_FILE = "build.json"

def demo_config() -> CatSegConfig:
    """A CAT-Seg small enough to train on 2 CPU cores in about a minute.

    Same module tree and code as ViT-B/L; only the dimensions shrink: 96 px CLIP input with 8 px
    patches (12x12 grid, one 12x12 Swin window), 4 visual blocks, 1 text block, 1 aggregator layer,
    no class padding (8 classes).
    """
    return CatSegConfig(
        name="demo",
        embed_dim=32,
        vision=VisionConfig(width=64, layers=4, heads=2, patch_size=8, pretrain_resolution=96,
                            tap_blocks=(0, 1), mlp_ratio=2),
        text=TextConfig(width=32, layers=1, heads=2, mlp_ratio=2),
        aggregator=AggregatorConfig(hidden_dim=32, num_heads=2, num_layers=1, window_size=12,
                                    feature_resolution=(12, 12), pad_len=0, text_guidance_proj_dim=16,
                                    appearance_guidance_proj_dim=16, decoder_dims=(8, 4),
                                    decoder_guidance_dims=(16, 8), decoder_guidance_proj_dims=(8, 4)),
        inference=InferenceConfig(clip_resolution=96),
    )


@dataclass(frozen=True)
class BuildParams:
    """Everything that decides the assets (part of the cache key)."""

    seed: int = 0
    size: tuple[int, int] = world.DEFAULT_SIZE
    domains: tuple[str, ...] = world.DOMAINS
    source_domains: tuple[str, ...] = world.SOURCE_DOMAINS
    base_images: int = 384          # per source domain
    base_steps: int = 300
    base_lr: float = 2e-3
    adapter_images: int = 96        # per domain; also the centroid's images (SemLA: the training set)
    adapter_steps: int = 40
    adapter_lr: float = 4e-3
    batch: int = 8
    heldout_images: int = 24        # per domain, never trained on
    lora_rank: int = 8
    lora_alpha: int = 16

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


# Tests: about a quarter of the demo's budget (~25 s per 4 domains on one thread).
TEST_PARAMS = BuildParams(base_images=96, base_steps=120, adapter_images=48, adapter_steps=30,
                          heldout_images=8, batch=8)

# Seed ranges of the rendered frames: training, adapters and held-out never share a street.
BASE_SEED0, ADAPTER_SEED0, HELDOUT_SEED0 = 0, 100_000, 1_000_000


@dataclass(frozen=True)
class Assets:
    """Paths of a built asset directory."""

    root: Path

    @property
    def config_path(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def checkpoint(self) -> Path:
        return self.root / WEIGHTS_FILE

    @property
    def library(self) -> Path:
        return self.root / LIBRARY_DIR

    @property
    def report(self) -> dict:
        return json.loads((self.root / REPORT_FILE).read_text())

    def exists(self) -> bool:
        return all(p.exists() for p in (self.config_path, self.checkpoint, self.library, self.root / REPORT_FILE))


def code_version() -> str:
    """Hash of the code whose change would change the assets."""
    here = Path(__file__).resolve().parent
    package = here.parent
    files = [here / "world.py", here / "build_assets.py"]
    files += [package / "core" / name for name in ("library.py", "navigator.py", "targets.py")]
    for sub in ("catseg", "training"):
        files += sorted((package / sub).rglob("*.py"))
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


def cache_key(params: BuildParams) -> str:
    blob = json.dumps({"format": ASSET_FORMAT, "params": params.to_json(),
                       "config": demo_config().to_dict(), "code": code_version()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def default_cache_root() -> Path:
    env = os.environ.get("SEMLA_DEMO_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "semla_ros" / "demo"


def load_demo_model(assets: Assets):
    """The base model of an asset directory (eval mode, float32, CPU)."""
    return load_catseg(assets.config_path, assets.checkpoint)


def adapter_name(domain: str) -> str:
    """Library entry name of a domain's adapter, SemLA style ("acdc-fog"). A bare "clear" cannot be
    a PEFT adapter name: it collides with ModuleDict.clear."""
    return f"demo-{domain}"


def _loop(params: BuildParams, steps: int, lr: float, seed: int) -> LoopSettings:
    """The demo's training recipe: cross-entropy, one-cycle schedule, clipping at 1 (trained from
    scratch, not fine-tuned, so SemLA's 0.01 clip and warm-up + cosine would barely move it)."""
    return LoopSettings(steps=steps, batch_size=params.batch, lr=lr, weight_decay=1e-4, schedule="one_cycle",
                        grad_clip=1.0, loss="ce", seed=seed)


def _clip_inputs(predictor: CatSegPredictor, images: np.ndarray) -> torch.Tensor:
    """(N,H,W,3) uint8 -> (N,3,S,S) exactly as the predictor preprocesses one image."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        return predictor.preprocess_batch(x)[0]


def _logger(log: Callable[[str], None], what: str, steps: int, bar=None):
    """Training progress: a log line every fifth of `steps`, and one step on `bar` (the build's ETA)."""
    t0 = time.monotonic()

    def progress(step: int, loss: float) -> None:
        if bar is not None:
            bar.update(1)
        if step % max(1, steps // 5) == 0 or step == steps - 1:
            log(f"  {what} step {step + 1}/{steps} loss {loss:.3f} ({time.monotonic() - t0:.0f} s)")
    return progress


# ---------------------------------------------------------------------------------- the build


def build(out_dir: Path, params: BuildParams = BuildParams(), log: Callable[[str], None] = print,
          threads: int = 1) -> Assets:
    """Trains and writes everything into `out_dir` (created, must not exist yet).

    Runs on `threads` torch threads (restored afterwards). One thread by default: these small
    kernels gain little from a second one, a busy machine makes multi-threaded OpenMP spin-wait
    (measured 20x slower here), and one thread gives the same bits on every machine.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, int(threads)))
    try:
        return _build(out_dir, params, log)
    finally:
        torch.set_num_threads(previous)


def _build(out_dir: Path, params: BuildParams, log: Callable[[str], None]) -> Assets:
    """The build with a bar over all training steps (the ETA; no bar when stderr is not a terminal)."""
    with progress_bar(total=params.base_steps + len(params.domains) * params.adapter_steps,
                      desc="demo assets", unit="step") as bar:
        return _build_steps(out_dir, params, log, bar)


def _build_steps(out_dir: Path, params: BuildParams, log: Callable[[str], None], bar) -> Assets:
    from safetensors.torch import save_file

    t_start, cpu_start = time.monotonic(), time.process_time()
    timings: dict[str, float] = {}
    torch.manual_seed(params.seed)
    out_dir.mkdir(parents=True)
    classes = list(world.CLASS_NAMES)
    config = demo_config()
    model = build_catseg(config)
    predictor = CatSegPredictor(model, classes)
    n_cls = len(classes)

    # Data: every frame rendered from its own seed; the three sets never share a street.
    t = time.monotonic()
    base_seeds = range(BASE_SEED0, BASE_SEED0 + params.base_images)
    src_imgs, src_labels = zip(*(world.dataset(d, base_seeds, params.size) for d in params.source_domains),
                               strict=True)
    base_x = _clip_inputs(predictor, np.concatenate(src_imgs))
    base_y = torch.from_numpy(np.concatenate(src_labels)).long()
    adapt, held = {}, {}
    for i, d in enumerate(params.domains):
        adapt[d] = world.dataset(d, range(ADAPTER_SEED0 + i * 10_000,
                                          ADAPTER_SEED0 + i * 10_000 + params.adapter_images), params.size)
        held[d] = world.dataset(d, range(HELDOUT_SEED0 + i * 10_000,
                                         HELDOUT_SEED0 + i * 10_000 + params.heldout_images), params.size)
    timings["render_s"] = time.monotonic() - t
    log(f"rendered {len(base_x)} source + {len(params.domains)}x({params.adapter_images}+{params.heldout_images}) "
        f"frames in {timings['render_s']:.1f} s")

    # 1. Base model on the source mix (all parameters: there is no pretrained CLIP here).
    t = time.monotonic()
    log(f"training the base CAT-Seg on {'+'.join(params.source_domains)} ({params.base_steps} steps)")
    losses = fit(model, base_x, base_y, predictor.tokens, n_cls, _loop(params, params.base_steps, params.base_lr,
                                                                       params.seed),
                 progress=_logger(log, "base", params.base_steps, bar))
    predictor.invalidate_text_cache()   # the text tower was trained outside the predictor
    timings["base_train_s"] = time.monotonic() - t
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out_dir / WEIGHTS_FILE))
    (out_dir / CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2))

    # 2. Navigator: a frozen copy of the trained image tower, taken before any adapter exists.
    navigator = TowerNavigator(model)

    # 3. One LoRA per domain (PEFT, on a private copy of the base model), written as library entries.
    # SemLA's official target list restricted to the modules the small model has (42 of 214).
    library = out_dir / LIBRARY_DIR
    t = time.monotonic()
    held_report = {}
    for i, d in enumerate(params.domains):
        imgs, labs = adapt[d]
        name = adapter_name(d)
        settings = TrainSettings(rank=params.lora_rank, alpha=params.lora_alpha,
                                 loop=_loop(params, params.adapter_steps, params.adapter_lr, params.seed + 1 + i))
        log(f"training adapter {d!r} ({params.adapter_steps} steps)")
        trained = train_adapter(model, classes, list(imgs), list(labs), name, settings,
                                progress=_logger(log, d, params.adapter_steps, bar))
        save_entry(trained, library, domain_centroid(navigator, list(imgs)), {
            "domain": d, "navigator": navigator.id, "source": "semla_ros demo world", "classes": classes})
        # Held-out check of this adapter (active through PEFT) against the base model.
        hx, hy = held[d]
        adapted = CatSegPredictor(trained.model, classes).predict_batch(hx)
        held_report[d] = {"adapted_miou": mean_iou(confusion_matrix(adapted, hy, n_cls))}
        del trained
    timings["adapters_s"] = time.monotonic() - t

    # 4. Held-out report: base mIoU and navigator retrieval (top-1 = the domain's own adapter).
    t = time.monotonic()
    lib = AdapterLibrary.open(library, navigator_dim=navigator.dim, navigator_id=navigator.id, model=model)
    if lib.skipped or len(lib) != len(params.domains):
        raise RuntimeError(f"the demo library does not load completely: skipped {lib.skipped}")
    centroids = np.stack([lib[adapter_name(d)].centroid for d in params.domains]).astype(np.float64)
    correct = total = 0
    for d in params.domains:
        imgs, hy = held[d]
        base_pred = predictor.predict_batch(imgs)
        held_report[d]["base_miou"] = mean_iou(confusion_matrix(base_pred, hy, n_cls))
        emb = navigator.embed(list(imgs)).astype(np.float64)
        top1 = np.linalg.norm(emb[:, None] - centroids[None], axis=-1).argmin(axis=1)
        hits = int((top1 == params.domains.index(d)).sum())
        held_report[d]["retrieval_top1"] = hits / len(imgs)
        correct, total = correct + hits, total + len(imgs)
    timings["heldout_eval_s"] = time.monotonic() - t
    timings["total_s"] = time.monotonic() - t_start
    timings["cpu_s"] = time.process_time() - cpu_start  # wall minus what other processes took from us
    report = {"format": ASSET_FORMAT, "params": params.to_json(), "code_version": code_version(),
              "navigator": navigator.id, "lora_targets": list(lib.target_modules), "base_final_loss": losses[-1],
              "heldout": held_report, "retrieval_top1_accuracy": correct / total, "timings": timings,
              "torch": torch.__version__}
    (out_dir / REPORT_FILE).write_text(json.dumps(report, indent=2))
    log(f"assets built in {timings['total_s']:.0f} s -> {out_dir}")
    return Assets(out_dir)


def ensure_assets(cache_root: Path | None = None, params: BuildParams = BuildParams(), force: bool = False,
                  log: Callable[[str], None] = print) -> tuple[Assets, bool]:
    """The cached assets for `params`, building them first when missing. Returns (assets, built_now).

    Built into a temporary sibling directory and renamed at the end, so an interrupted build never
    leaves a half-written cache entry behind. When another process finished the same build first, its
    assets are used (and left alone: a command may be reading them) unless `force`.
    """
    root = Path(cache_root) if cache_root is not None else default_cache_root()
    target = Assets(root / cache_key(params))
    if target.exists() and not force:
        return target, False
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=root))
    try:
        build(tmp / "assets", params, log)
        if target.exists() and not force:
            log(f"assets {target.root} were built meanwhile by another process; using those")
            return target, True
        if target.root.exists():
            shutil.rmtree(target.root)
        os.replace(tmp / "assets", target.root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target, True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m semla_ros.demo.build_assets", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache-dir", type=Path, default=None, help=f"default {default_cache_root()}")
    parser.add_argument("--force", action="store_true", help="rebuild even if cached")
    parser.add_argument("--test-budget", action="store_true", help="the tiny budget the tests use")
    args = parser.parse_args(argv)
    params = TEST_PARAMS if args.test_budget else BuildParams()
    assets, built = ensure_assets(args.cache_dir, params, force=args.force)
    report = assets.report
    print(f"{'built' if built else 'cached'}: {assets.root}")
    for d, r in report["heldout"].items():
        print(f"  {d:7s} base mIoU {r['base_miou']:.3f}  adapted {r['adapted_miou']:.3f}  "
              f"retrieval top-1 {r['retrieval_top1']:.2f}")
    print(f"  retrieval top-1 accuracy {report['retrieval_top1_accuracy']:.3f}; "
          f"build {report['timings']['total_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

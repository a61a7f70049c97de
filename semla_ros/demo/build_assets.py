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
import copy
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
import torch.nn.functional as F

from ..catseg.build import build_catseg
from ..catseg.config import AggregatorConfig, CatSegConfig, InferenceConfig, TextConfig, VisionConfig  # noqa: F401
from ..catseg.predictor import CatSegPredictor
from ..core.targets import semla_target_modules
from ..evaluation.metrics import confusion_matrix, mean_iou
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
    files = [here / "world.py", here / "build_assets.py"]
    files += sorted((here.parent / "catseg").rglob("*.py"))
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
    from safetensors.torch import load_file

    model = build_catseg(str(assets.config_path))
    model.load_state_dict(load_file(str(assets.checkpoint)), strict=True)
    return model.eval()


def adapter_name(domain: str) -> str:
    """Library entry name of a domain's adapter, SemLA style ("acdc-fog"). A bare "clear" cannot be
    a PEFT adapter name: it collides with ModuleDict.clear."""
    return f"demo-{domain}"


# ---------------------------------------------------------------------------------- training


def _batches(n: int, batch: int, steps: int, generator: torch.Generator):
    for _ in range(steps):
        yield torch.randint(0, n, (batch,), generator=generator)


def _train(model, predictor: CatSegPredictor, images: torch.Tensor, labels: torch.Tensor, params,
           steps: int, lr: float, seed: int, log: Callable[[str], None], what: str) -> float:
    """Cross-entropy on the class logits, upsampled to the label size (argmax is what we publish)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    loss_value = float("nan")
    t0 = time.monotonic()
    for step, idx in enumerate(_batches(len(images), params.batch, steps, gen)):
        x = images[idx]
        flip = torch.rand(len(idx), generator=gen) < 0.5   # mirror half the batch: free variety
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        y = torch.where(flip[:, None, None], labels[idx].flip(-1), labels[idx])
        text = F.normalize(model.encode_text(predictor.tokens), dim=-1)
        logits = model(x, text)
        logits = F.interpolate(logits, size=y.shape[-2:], mode="bilinear", align_corners=False)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        sched.step()
        loss_value = float(loss.detach())
        if step % max(1, steps // 5) == 0 or step == steps - 1:
            log(f"  {what} step {step + 1}/{steps} loss {loss_value:.3f} ({time.monotonic() - t0:.0f} s)")
    model.eval()
    return loss_value


def _clip_inputs(predictor: CatSegPredictor, images: np.ndarray) -> torch.Tensor:
    """(N,H,W,3) uint8 -> (N,3,S,S) exactly as the predictor preprocesses one image."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    preprocess = predictor.preprocess_batch
    with torch.no_grad():
        return preprocess(x)[0]


def predict_batch(model, predictor: CatSegPredictor, clip_inputs: torch.Tensor, size) -> np.ndarray:
    """Class ids (N,H,W) for preprocessed inputs, with the model's current weights."""
    with torch.no_grad():
        text = F.normalize(model.encode_text(predictor.tokens), dim=-1)
        out = []
        for chunk in clip_inputs.split(32):
            logits = F.interpolate(model(chunk, text), size=size, mode="bilinear", align_corners=False)
            out.append(logits.argmax(1).numpy().astype(np.uint8))
    return np.concatenate(out)


# ---------------------------------------------------------------------------------- the build


def _navigator(model):
    from ..core.navigator import TowerNavigator

    return TowerNavigator(model)


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
    from peft import LoraConfig, get_peft_model
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
    src_imgs, src_labels = zip(*(world.dataset(d, base_seeds, params.size) for d in params.source_domains))
    base_x = _clip_inputs(predictor, np.concatenate(src_imgs))
    base_y = torch.from_numpy(np.concatenate(src_labels)).long()
    adapt, held = {}, {}
    for i, d in enumerate(params.domains):
        imgs, labs = world.dataset(d, range(ADAPTER_SEED0 + i * 10_000, ADAPTER_SEED0 + i * 10_000 + params.adapter_images),
                                   params.size)
        adapt[d] = (imgs, _clip_inputs(predictor, imgs), torch.from_numpy(labs).long())
        imgs, labs = world.dataset(d, range(HELDOUT_SEED0 + i * 10_000, HELDOUT_SEED0 + i * 10_000 + params.heldout_images),
                                   params.size)
        held[d] = (imgs, _clip_inputs(predictor, imgs), labs)
    timings["render_s"] = time.monotonic() - t
    log(f"rendered {len(base_x)} source + {len(params.domains)}x({params.adapter_images}+{params.heldout_images}) "
        f"frames in {timings['render_s']:.1f} s")

    # 1. Base model on the source mix (all parameters: there is no pretrained CLIP here).
    t = time.monotonic()
    log(f"training the base CAT-Seg on {'+'.join(params.source_domains)} ({params.base_steps} steps)")
    base_loss = _train(model, predictor, base_x, base_y, params, params.base_steps, params.base_lr,
                       params.seed, log, "base")
    timings["base_train_s"] = time.monotonic() - t
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out_dir / WEIGHTS_FILE))
    (out_dir / CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2))

    # 2. Navigator: a frozen copy of the trained image tower, taken before any adapter exists.
    navigator = _navigator(model)

    # 3. One LoRA per domain, trained with PEFT on a copy of the base model; saved in SemLA's layout.
    # SemLA's official target list restricted to the modules the small model has (42 of 214),
    # as PEFT skips the other names for ViT-B.
    targets = semla_target_modules(model)
    library = out_dir / LIBRARY_DIR
    library.mkdir()
    base_state = {k: v.clone() for k, v in model.state_dict().items()}
    t = time.monotonic()
    held_report = {}
    for i, d in enumerate(params.domains):
        imgs, x, y = adapt[d]
        name = adapter_name(d)
        peft_model = get_peft_model(
            copy.deepcopy(model),
            LoraConfig(r=params.lora_rank, lora_alpha=params.lora_alpha, lora_dropout=0.0, bias="none",
                       target_modules=targets, init_lora_weights=True),
            adapter_name=name)
        inner = peft_model.base_model.model
        torch.manual_seed(params.seed + 1000 + i)
        log(f"training adapter {d!r} ({params.adapter_steps} steps, {len(targets)} target modules)")
        _train(inner, predictor, x, y, params, params.adapter_steps, params.adapter_lr, params.seed + 1 + i,
               log, d)
        peft_model.save_pretrained(str(library), selected_adapters=[name])
        # PEFT >= 0.14 shortens long target lists to suffixes ("MLP.0"); SemLA's files (PEFT
        # 0.10) list the full module names, and so do ours.
        config_path = library / name / "adapter_config.json"
        adapter_config = json.loads(config_path.read_text())
        adapter_config["target_modules"] = sorted(targets)
        config_path.write_text(json.dumps(adapter_config, indent=2, sort_keys=True))
        centroid = navigator.embed(list(imgs)).mean(axis=0, keepdims=True).astype(np.float32)
        np.savez(library / name / f"{name}_statistics.npz", train_average_embedding=centroid)
        (library / name / "metadata.json").write_text(json.dumps({
            "domain": d, "navigator": navigator.id, "embedding_dim": int(centroid.shape[1]),
            "training_images": params.adapter_images, "training_steps": params.adapter_steps,
            "source": "semla_ros demo world", "classes": classes}, indent=2))
        # Held-out check of this adapter (active through PEFT) against the base model.
        _, hx, hy = held[d]
        adapted = predict_batch(inner, predictor, hx, params.size)
        held_report[d] = {"adapted_miou": mean_iou(confusion_matrix(adapted, hy, n_cls))}
        del peft_model, inner
    (library / "README.md").unlink(missing_ok=True)  # PEFT's auto-generated model card
    timings["adapters_s"] = time.monotonic() - t
    for k, v in model.state_dict().items():  # PEFT must not have touched the base model
        if not torch.equal(v, base_state[k]):
            raise RuntimeError(f"base weight {k} changed while training adapters")

    # 4. Held-out report: base mIoU and navigator retrieval (top-1 = the domain's own adapter).
    t = time.monotonic()
    centroids = np.stack([np.load(library / adapter_name(d) / f"{adapter_name(d)}_statistics.npz")
                          ["train_average_embedding"][0] for d in params.domains]).astype(np.float64)
    correct = total = 0
    for d in params.domains:
        imgs, hx, hy = held[d]
        base_pred = predict_batch(model, predictor, hx, params.size)
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
              "navigator": navigator.id, "lora_targets": targets, "base_final_loss": base_loss,
              "heldout": held_report, "retrieval_top1_accuracy": correct / total, "timings": timings,
              "torch": torch.__version__}
    (out_dir / REPORT_FILE).write_text(json.dumps(report, indent=2))
    log(f"assets built in {timings['total_s']:.0f} s -> {out_dir}")
    return Assets(out_dir)


def ensure_assets(cache_root: Path | None = None, params: BuildParams = BuildParams(), force: bool = False,
                  log: Callable[[str], None] = print) -> tuple[Assets, bool]:
    """The cached assets for `params`, building them first when missing. Returns (assets, built_now).

    Built into a temporary sibling directory and renamed at the end, so an interrupted build never
    leaves a half-written cache entry behind.
    """
    root = Path(cache_root) if cache_root is not None else default_cache_root()
    target = Assets(root / cache_key(params))
    if target.exists() and not force:
        return target, False
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=root))
    try:
        build(tmp / "assets", params, log)
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

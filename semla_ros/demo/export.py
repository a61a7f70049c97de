"""Writes the built-in demo world in the folder dataset format, so `semla-eval` runs on it.

Seeds: the demo asset build trains its adapters on seeds 100000 + 10000 * domain_index + i and
keeps 1000000 + 10000 * domain_index + i as held-out views; the exporter uses the same scheme,
so the default (held-out) export never shows a street an adapter was trained on.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..evaluation.dataset import CLASSES_FILE, IMAGE_DIR, LABEL_DIR, write_classes
from . import world

HELD_OUT_SEED_BASE = 1_000_000   # == demo.build_assets.HELDOUT_SEED0
DOMAIN_STRIDE = 10_000


def export_domain(out_dir, domain: str, seeds, size=world.DEFAULT_SIZE) -> Path:
    from PIL import Image

    out_dir = Path(out_dir) / domain
    (out_dir / IMAGE_DIR).mkdir(parents=True, exist_ok=True)
    (out_dir / LABEL_DIR).mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        frame = world.render(domain, int(seed), size)
        stem = f"{domain}_{int(seed):08d}"
        Image.fromarray(frame.image).save(out_dir / IMAGE_DIR / f"{stem}.png")
        Image.fromarray(frame.labels.astype(np.uint8)).save(out_dir / LABEL_DIR / f"{stem}.png")
    return out_dir


def domain_seeds(domain: str, count: int, seed_base: int = HELD_OUT_SEED_BASE, stride: int = DOMAIN_STRIDE):
    """Seeds of a domain's frames: `seed_base + index(domain) * stride + 0..count-1`.

    The same scheme as the demo asset build, so `seed_base=ADAPTER_SEED0` gives exactly the frames
    its adapters were trained on and `HELD_OUT_SEED0` its held-out frames."""
    if count > stride:
        raise ValueError(f"at most {stride} images per domain, got {count}")
    start = seed_base + world.DOMAINS.index(domain) * stride
    return range(start, start + int(count))


def export_demo_world(out_root, domains=world.DOMAINS, images_per_domain: int = 20,
                      seed_base: int = HELD_OUT_SEED_BASE, size=world.DEFAULT_SIZE) -> Path:
    """`<out_root>/classes.txt` + `<out_root>/<domain>/{images,labels}/` for each domain."""
    out_root = Path(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    write_classes(out_root / CLASSES_FILE, world.CLASS_NAMES)
    for domain in domains:
        export_domain(out_root, domain, domain_seeds(domain, images_per_domain, seed_base), size)
    return out_root

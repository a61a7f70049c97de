"""A cheap but real engine on the demo world for the shift tests: no training at all.

The demo's small CAT-Seg with seeded random weights, its frozen image tower as the navigator (as
`make demo` uses), and one adapter per domain whose centroid is the tower's mean embedding of that
domain's frames (SemLA's recipe) and whose LoRA factors are small random ones. The masks mean nothing;
the embedding geometry is the demo world's (random-tower features separate light and weather like the
trained tower: near pairs, noisy clear/snow frames), which is what the swap decisions depend on.

Not a test module (no test_ prefix); imported by the shift tests.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from semla_ros.catseg.build import build_catseg
from semla_ros.catseg.predictor import CatSegPredictor
from semla_ros.core.library import AdapterLibrary, write_entry
from semla_ros.core.navigator import TowerNavigator
from semla_ros.core.targets import semla_target_modules
from semla_ros.demo import world
from semla_ros.demo.build_assets import ADAPTER_SEED0, adapter_name, demo_config
from semla_ros.training.lora import domain_centroid


def random_demo_engine(root: Path, domains=world.DOMAINS, images_per_domain: int = 48, seed: int = 0):
    """(predictor, library, navigator) for `domains`; the library is written under `root`."""
    torch.manual_seed(seed)
    model = build_catseg(demo_config()).eval()
    navigator = TowerNavigator(model)
    g = torch.Generator().manual_seed(seed)
    targets = semla_target_modules(model)
    for i, d in enumerate(domains):
        seeds = range(ADAPTER_SEED0 + i * 10_000, ADAPTER_SEED0 + i * 10_000 + images_per_domain)
        centroid = domain_centroid(navigator, [world.render(d, s).image for s in seeds])
        factors = {}
        for name in targets:
            linear = model.get_submodule(name)
            factors[name] = (torch.randn(4, linear.in_features, generator=g) * 0.02,
                             torch.randn(linear.out_features, 4, generator=g) * 0.02)
        write_entry(root, adapter_name(d), factors, centroid, lora_alpha=8,
                    metadata={"navigator": navigator.id, "embedding_dim": navigator.dim, "domain": d})
    library = AdapterLibrary.open(root, navigator_dim=navigator.dim, navigator_id=navigator.id, model=model)
    assert library.skipped == [] and len(library) == len(domains)
    return CatSegPredictor(model, list(world.CLASS_NAMES)), library, navigator


def frames_of(parts, rate_hz: float = 10.0, seed0: int = 9_000_000):
    """[(image, domain)] for parts [(domain, seconds)], a new street per frame."""
    out = []
    for domain, seconds in parts:
        for _ in range(int(round(seconds * rate_hz))):
            out.append((world.render(domain, seed0 + len(out)).image, domain))
    return out


def centroid_spacing(library, a: str, b: str) -> float:
    """Distance between two domains' centroids in units of the library's median spacing."""
    names = list(library.names)
    c = library.centroids
    return float(np.linalg.norm(c[names.index(adapter_name(a))] - c[names.index(adapter_name(b))])
                 / library.median_inter_centroid_distance)

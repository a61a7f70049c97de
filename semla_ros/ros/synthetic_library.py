"""An adapter library for the synthetic camera's domains, built in seconds without training.

Why: the node's tests and `semla-bench node --soak` need adapters whose centroids are real navigator
embeddings of what the synthetic camera shows, so a domain change is a real shift the node must
follow. The tiny CAT-Seg is built exactly as the node builds it with random weights
(torch.manual_seed(random_seed), then build_catseg("tiny")), so the tower, its id and its embeddings
are the node's (`navigator:=tower`). The factors are random: the masks mean nothing, the swaps do.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from semla_ros.ros.synthetic_camera import FrameSource


def build_synthetic_library(root: Path, size: tuple[int, int], random_seed: int = 0, per_domain: int = 2,
                            rank: int = 4, domains=("day", "night")) -> dict:
    """Write `per_domain` entries per domain under `root`; `size` is the camera's (height, width).

    Each centroid is the domain's embedding plus an offset of 0.03 d (d: the distance between the first
    two domains); random LoRA factors on every SemLA target. Returns the domain embeddings and d.
    """
    import torch

    from semla_ros.catseg.build import build_catseg
    from semla_ros.core.library import write_entry
    from semla_ros.core.navigator import TowerNavigator
    from semla_ros.core.targets import semla_target_modules

    torch.manual_seed(random_seed)
    model = build_catseg("tiny").eval()
    navigator = TowerNavigator(model)
    source = FrameSource(*size, noise=0)
    embeddings = {d: navigator.embed([source.frame(d, 0)])[0].astype(np.float64) for d in domains}
    distance = float(np.linalg.norm(embeddings[domains[0]] - embeddings[domains[1]]))
    generator = torch.Generator().manual_seed(1234)
    rng = np.random.default_rng(1234)
    targets = semla_target_modules(model)
    for domain in domains:
        for i in range(per_domain):
            factors = {}
            for name in targets:
                linear = model.get_submodule(name)
                a = torch.randn(rank, linear.in_features, generator=generator) * 0.02
                b = torch.randn(linear.out_features, rank, generator=generator) * 0.02
                factors[name] = (a, b)
            offset = rng.normal(size=embeddings[domain].shape)
            centroid = embeddings[domain] + 0.03 * distance * offset / np.linalg.norm(offset)
            write_entry(root, f"{domain}-{i}", factors, centroid, lora_alpha=2 * rank,
                        metadata={"navigator": navigator.id, "embedding_dim": navigator.dim,
                                  "description": f"synthetic {domain} test adapter"})
    return {"embeddings": embeddings, "distance": distance, "navigator_id": navigator.id}

"""A tiny evaluation world for the eval tests: the demo's small CAT-Seg (random weights), its tower
navigator, a few exported demo-world images per domain and a library with one entry per domain."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from semla_ros.catseg.build import build_catseg
from semla_ros.core.library import write_entry
from semla_ros.core.targets import semla_target_modules
from semla_ros.demo.build_assets import demo_config

DOMAINS = ("clear", "fog", "night")


def small_model(seed: int = 0):
    torch.manual_seed(seed)
    model = build_catseg(demo_config())
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def save_model(model, directory: Path) -> tuple[Path, Path]:
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    config, weights = directory / "model_config.json", directory / "model.safetensors"
    config.write_text(json.dumps(model.config.to_dict()))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    return config, weights


def random_library(model, navigator, dataset, root: Path, std: float = 0.3, seed: int = 1) -> Path:
    """One entry per domain with random LoRA factors and the domain's real centroid (navigator mean)."""
    from semla_ros.training.lora import domain_centroid

    g = torch.Generator().manual_seed(seed)
    for name, folder in dataset.items():
        factors = {}
        for t in semla_target_modules(model):
            out_f, in_f = model.get_submodule(t).weight.shape
            factors[t] = (torch.randn(8, in_f, generator=g) * std / np.sqrt(in_f),
                          torch.randn(out_f, 8, generator=g) * std)
        write_entry(root, name, factors, domain_centroid(navigator, list(folder.images())), lora_alpha=16,
                    metadata={"navigator": navigator.id, "embedding_dim": navigator.dim})
    return root

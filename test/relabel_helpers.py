"""Helpers for the relabelling tests: the demo-sized CAT-Seg with seeded random weights (96 px, fast on
a CPU), an adapter library whose centroids are real navigator embeddings of demo-world domains, and
drives of the demo camera recorded as bags. Not a test module (no test_ prefix).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from semla_ros.demo import world

CLASSES = tuple(world.CLASS_NAMES)


def demo_model_config(root: Path) -> Path:
    """The demo CAT-Seg's config JSON (random weights are seeded by the engine's random_seed)."""
    from semla_ros.demo.build_assets import demo_config

    path = Path(root) / "model_config.json"
    path.write_text(json.dumps(demo_config().to_dict()))
    return path


def build_domain_library(root: Path, config: Path, domains=("clear", "night", "tunnel"), frames: int = 4,
                         rank: int = 2) -> dict:
    """One adapter per domain: centroid = mean TowerNavigator embedding of `frames` rendered frames (the
    engine's own navigator: same config, same seed), random LoRA factors on every SemLA target."""
    import torch

    from semla_ros.catseg.build import load_catseg
    from semla_ros.core.library import write_entry
    from semla_ros.core.navigator import TowerNavigator
    from semla_ros.core.targets import semla_target_modules

    model = load_catseg(config, None, allow_random_weights=True, seed=0)
    navigator = TowerNavigator(model)
    generator = torch.Generator().manual_seed(7)
    centroids = {}
    for i, domain in enumerate(domains):
        images = [world.render(domain, 50_000 + 100 * i + k).image for k in range(frames)]
        centroids[domain] = navigator.embed(images).astype(np.float64).mean(axis=0)
        factors = {}
        for name in semla_target_modules(model):
            linear = model.get_submodule(name)
            factors[name] = (torch.randn(rank, linear.in_features, generator=generator) * 0.05,
                             torch.randn(linear.out_features, rank, generator=generator) * 0.05)
        write_entry(root, f"demo-{domain}", factors, centroids[domain], lora_alpha=2 * rank,
                    metadata={"navigator": navigator.id, "embedding_dim": navigator.dim, "domain": domain})
    return {"navigator_id": navigator.id, "centroids": centroids}


def engine(config: Path, library: Path, **settings):
    from semla_ros.engine import EngineSpec, build_engine

    spec = EngineSpec(model_config=str(config), allow_random_weights=True, library_path=str(library),
                      navigator="tower", device="cpu", backend="torch", classes=CLASSES).replace(**settings)
    return build_engine(spec).raise_for_errors()


def write_drive(path: Path, sequence: str, storage: str = "mcap", corrupt_after=(), rate_hz: float = 10.0) -> dict:
    """The demo camera's drive as a bag (/demo/image + /demo/ground_truth); `corrupt_after` inserts an
    undecodable image message right after those frames. Returns {index in the image topic: (domain, seed)}."""
    from semla_ros.demo.drive_bag import write_drive_bag
    from semla_ros.demo.sequence import DomainSequence

    path = Path(path)
    truth = write_drive_bag(path if not corrupt_after else path.with_name(path.name + "-clean"),
                            DomainSequence.parse(sequence, rate_hz), storage=storage)
    if not corrupt_after:
        return truth
    return corrupt_copy(path.with_name(path.name + "-clean"), path, "/demo/image", set(corrupt_after), truth)


def corrupt_copy(src: Path, dst: Path, topic: str, after: set, truth: dict) -> dict:
    """Copy a bag, inserting a garbage message on `topic` after the frames in `after`; returns the truth
    re-indexed by position in the new bag's `topic`."""
    from rosbags.rosbag2 import Reader, StoragePlugin, Writer

    out, k, position = {}, 0, 0
    with Reader(src) as reader, Writer(dst, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conns = {c.id: writer.add_connection(c.topic, c.msgtype, msgdef=c.msgdef.data, rihs01=c.digest)
                 for c in reader.connections}
        for c, ns, raw in reader.messages():
            writer.write(conns[c.id], ns, raw)
            if c.topic != topic:
                continue
            out[position] = truth[k]
            position += 1
            if k in after:
                writer.write(conns[c.id], ns + 1, b"\x00\x01\x00\x00 not an image")
                position += 1
            k += 1
    return out

"""Loading the base model and the navigator for the evaluation tools (no ROS)."""
from __future__ import annotations

import json
from pathlib import Path


def model_config(value: str):
    """A registry name ("tiny", "vitb16_384", ...) or a CatSegConfig JSON file.

    JSON files may be `dataclasses.asdict(CatSegConfig)` (what the demo writes next to its
    weights) or a reference fixture's config.json.
    """
    path = Path(value)
    if not (value.endswith(".json") or path.is_file()):
        return value
    if not path.is_file():
        raise FileNotFoundError(f"model config file {path} not found")
    data = json.loads(path.read_text())
    from ..catseg.config import CatSegConfig

    if "vision" in data and "embed_dim" in data:
        return CatSegConfig.from_dict(data)
    return CatSegConfig.from_fixture(data)


def load_model(config: str, checkpoint: str | None, device: str = "cpu", allow_random: bool = False):
    """Eval-mode CATSeg with the checkpoint loaded (random weights only when asked for)."""
    from ..catseg.build import build_catseg

    if not checkpoint and not allow_random:
        raise ValueError("no --checkpoint given: pass CAT-Seg weights (.pth/.safetensors), "
                         "or --allow-random-weights for smoke tests")
    model = build_catseg(model_config(config))
    if checkpoint:
        from ..catseg.checkpoint import load_catseg_weights

        load_catseg_weights(model, checkpoint)
    return model.eval().to(device)


def make_navigator(spec: str, model, device: str = "cpu"):
    """'tower' (frozen copy of the model's image tower) or 'openclip:MODEL/PRETRAINED'."""
    if spec == "tower":
        from ..core.navigator import TowerNavigator

        return TowerNavigator(model)
    if spec.startswith("openclip:"):
        from ..core.navigator import OpenClipNavigator

        name, _, pretrained = spec[len("openclip:"):].partition("/")
        return OpenClipNavigator(model_name=name or "ViT-L-14", pretrained=pretrained or "openai", device=device)
    raise ValueError(f"navigator must be 'tower' or 'openclip:MODEL/PRETRAINED', got {spec!r}")


class CachedNavigator:
    """Remembers embeddings by image content, so methods that embed the same image share one call."""

    def __init__(self, navigator):
        self.inner = navigator
        self.dim = navigator.dim
        self.id = navigator.id
        self._cache: dict[bytes, object] = {}

    def embed(self, images):
        import hashlib

        import numpy as np

        keys = [hashlib.sha1(np.ascontiguousarray(im).tobytes() + bytes(str(im.shape), "ascii")).digest()
                for im in images]
        missing = [i for i, k in enumerate(keys) if k not in self._cache]
        if missing:
            new = self.inner.embed([images[i] for i in missing])
            for i, e in zip(missing, new):
                self._cache[keys[i]] = np.asarray(e, np.float32)
        return np.stack([self._cache[k] for k in keys])


"""Where compiled engines live, keyed by everything that would make them invalid.

An engine is only reused when the ONNX graph (and its weights), the TensorRT version, the
GPU, the precision and the input shapes all match; any change gives a new key and so a
rebuild, never a silently stale engine. Caches never live in /tmp (they would vanish on
reboot and rebuilds take minutes).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path


def default_cache_dir() -> Path:
    base = os.environ.get("SEMLA_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache"), "semla_ros")
    return Path(base)


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class EngineKey:
    onnx_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    precision: str          # "fp32" | "fp16"
    image_size: int         # the network's square input side
    min_classes: int
    opt_classes: int
    max_classes: int
    refit: bool = True

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:24]


class EngineCache:
    """A folder per key holding `engine.plan` and `key.json` (for people reading the cache)."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root else default_cache_dir() / "engines"

    def path(self, key: EngineKey) -> Path:
        return self.root / key.digest() / "engine.plan"

    def load(self, key: EngineKey) -> bytes | None:
        path = self.path(key)
        meta = path.with_name("key.json")
        if not path.is_file() or not meta.is_file():
            return None
        try:
            if json.loads(meta.read_text()) != asdict(key):
                return None
        except (OSError, ValueError):
            return None
        return path.read_bytes()

    def store(self, key: EngineKey, plan: bytes) -> Path:
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".partial")
        tmp.write_bytes(plan)
        os.replace(tmp, path)  # readers never see half an engine
        path.with_name("key.json").write_text(json.dumps(asdict(key), indent=2, sort_keys=True))
        return path

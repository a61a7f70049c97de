"""Where exported ONNX files and compiled engines live, keyed by everything that would make them invalid.

An artifact is only reused under an identical key: for an ONNX export the weights, the graph code, the
exporter, torch and the opset; for an engine also the TensorRT version, the GPU, the precision, the class
profile and the build options. Any change gives a new key and so a new build, never a silently stale file.
Each entry is a folder `<root>/<key digest>/` with the artifact and `key.json` (what the key was, for
people reading the cache; its modification time is the entry's last use). Caches never live in /tmp (they
would vanish on reboot and builds take minutes), and they are bounded: entries unused for `max_age_days`
go, then the least recently used until the folder fits `max_bytes`.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import Field, asdict, dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable

log = logging.getLogger(__name__)

KEY_FILE = "key.json"
DEFAULT_MAX_BYTES = 8 << 30       # per cache folder (onnx/, engines/)
DEFAULT_MAX_AGE_DAYS = 30.0
_PARTIAL_GRACE_S = 24 * 3600.0    # a folder without key.json younger than this may be a build in progress


def default_cache_dir() -> Path:
    base = os.environ.get("SEMLA_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache"), "semla_ros")
    return Path(base)


class CacheKey:
    """Mixin for frozen dataclass keys: the digest of every field names the entry's folder."""

    # Every subclass is a dataclass; declared so the type checker knows asdict() accepts a CacheKey.
    __dataclass_fields__: ClassVar[dict[str, Field[Any]]]

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:24]


@dataclass(frozen=True)
class OnnxKey(CacheKey):
    model_digest: str       # the exported weights (state_dict_digest of the exported model)
    precision: str          # "fp32" | "fp16"
    opset: int
    exporter: str           # "torchscript"
    export_code: str        # export_code_digest(): network code, config, exporter
    torch_version: str


@dataclass(frozen=True)
class EngineKey(CacheKey):
    onnx: str               # OnnxKey.digest() of the graph the engine was built from (so its weights)
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    precision: str          # "fp32" | "fp16"
    image_size: int         # the network's square input side
    min_classes: int
    opt_classes: int
    max_classes: int
    torch_version: str      # also inside `onnx`; spelled out for people reading key.json
    opset: int
    build_code: str         # hash of the code that configures the build (flags, profile, refittable weights)
    refittable: str         # hash of the weight names marked refittable
    tf32: bool = False


class ArtifactCache:
    """One folder of keyed artifacts with size/age eviction."""

    def __init__(self, root: str | os.PathLike, max_bytes: int = DEFAULT_MAX_BYTES,
                 max_age_days: float = DEFAULT_MAX_AGE_DAYS):
        self.root = Path(root)
        self.max_bytes = int(max_bytes)
        self.max_age_s = float(max_age_days) * 86400.0

    def path(self, key: CacheKey, name: str) -> Path:
        return self.root / key.digest() / name

    def find(self, key: CacheKey, name: str) -> Path | None:
        """The artifact stored under exactly this key (and mark it used), or None."""
        path = self.path(key, name)
        meta = path.with_name(KEY_FILE)
        try:
            if not path.is_file() or json.loads(meta.read_text()) != asdict(key):
                return None
            os.utime(meta)
        except (OSError, ValueError):
            return None
        return path

    def store(self, key: CacheKey, name: str, write: Callable[[Path], object]) -> Path:
        """Write the artifact with `write(partial_path)`, publish it atomically, then evict old entries."""
        path = self.path(key, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{name}.{os.getpid()}.partial")
        try:
            write(partial)
            os.replace(partial, path)           # readers never see half a file
        finally:
            partial.unlink(missing_ok=True)
        meta = path.with_name(f".{KEY_FILE}.{os.getpid()}.partial")
        meta.write_text(json.dumps(asdict(key), indent=2, sort_keys=True))
        os.replace(meta, path.with_name(KEY_FILE))
        self.evict(keep=[path.parent])
        return path

    def entries(self) -> list[tuple[Path, float, int]]:
        """(folder, last use, bytes) of every entry, oldest first; folders without key.json count as used
        when they were last modified (a build in progress, or one that died)."""
        found: list[tuple[Path, float, int]] = []
        if not self.root.is_dir():
            return found
        for folder in self.root.iterdir():
            if not folder.is_dir():
                continue
            try:
                meta = folder / KEY_FILE
                used = (meta if meta.is_file() else folder).stat().st_mtime
                size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
            except OSError:
                continue
            found.append((folder, used, size))
        return sorted(found, key=lambda entry: entry[1])

    def evict(self, keep: Iterable[Path] = (), now: float | None = None) -> list[Path]:
        """Remove entries unused for max_age, then the least recently used until the folder fits max_bytes.
        Folders in `keep` (in use) stay; a folder without key.json stays for a day (a build in progress)."""
        now = time.time() if now is None else now
        keep = {Path(k).resolve() for k in keep}
        entries = self.entries()
        total = sum(size for _, _, size in entries)
        removed = []
        for folder, used, size in entries:
            if folder.resolve() in keep:
                continue
            complete = (folder / KEY_FILE).is_file()
            too_old = now - used > (self.max_age_s if complete else max(self.max_age_s, _PARTIAL_GRACE_S))
            too_big = total > self.max_bytes and (complete or now - used > _PARTIAL_GRACE_S)
            if too_old or too_big:
                shutil.rmtree(folder, ignore_errors=True)
                total -= size
                removed.append(folder)
                log.info("evicted %s from the cache (%s, %.0f MB)", folder.name,
                         "unused for %.0f days" % ((now - used) / 86400) if too_old else "over the size limit",
                         size / 1e6)
        return removed


class EngineCache(ArtifactCache):
    """Serialized engines: `<root>/<key digest>/engine.plan`."""

    PLAN = "engine.plan"

    def __init__(self, root: str | os.PathLike | None = None, **limits):
        super().__init__(root if root else default_cache_dir() / "engines", **limits)

    def load(self, key: EngineKey) -> bytes | None:
        path = self.find(key, self.PLAN)
        return None if path is None else path.read_bytes()

    def store_plan(self, key: EngineKey, plan: bytes) -> Path:
        return self.store(key, self.PLAN, lambda partial: partial.write_bytes(plan))

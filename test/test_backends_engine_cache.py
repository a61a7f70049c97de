"""Artifacts are reused only under an identical key, never half-written, and the cache stays bounded."""
from __future__ import annotations

import dataclasses
import os

from semla_ros.backends.engine_cache import ArtifactCache, EngineCache, EngineKey, default_cache_dir

KEY = EngineKey(onnx="ab" * 12, tensorrt_version="10.9.0", gpu_name="NVIDIA H100", compute_capability="9.0",
                precision="fp16", image_size=384, min_classes=1, opt_classes=19, max_classes=64,
                torch_version="2.14.1", opset=17, build_code="c0de", refittable="f00d")


def test_every_field_changes_the_key():
    seen = {KEY.digest()}
    changes = dict(onnx="cd" * 12, tensorrt_version="10.9.1", gpu_name="NVIDIA L4", compute_capability="8.9",
                   precision="fp32", image_size=336, min_classes=2, opt_classes=20, max_classes=128,
                   torch_version="2.15.0", opset=18, build_code="c0df", refittable="f00e", tf32=True)
    assert set(changes) == {f.name for f in dataclasses.fields(EngineKey)}
    for field, value in changes.items():
        digest = dataclasses.replace(KEY, **{field: value}).digest()
        assert digest not in seen, field
        seen.add(digest)


def test_store_then_load_and_mismatch(tmp_path):
    cache = EngineCache(tmp_path)
    assert cache.load(KEY) is None
    path = cache.store_plan(KEY, b"plan-bytes")
    assert path.is_file() and not list(tmp_path.rglob("*.partial"))
    assert cache.load(KEY) == b"plan-bytes"
    # A key file that does not match (e.g. edited or from another version) is not trusted.
    path.with_name("key.json").write_text("{}")
    assert cache.load(KEY) is None


def test_a_failed_write_leaves_nothing_behind(tmp_path):
    cache = EngineCache(tmp_path)

    def broken(partial):
        partial.write_bytes(b"half")
        raise OSError("disk full")

    try:
        cache.store(KEY, "engine.plan", broken)
    except OSError:
        pass
    assert cache.load(KEY) is None and not list(tmp_path.rglob("*.partial")) and not list(tmp_path.rglob("*half*"))


def test_eviction_by_age_then_size_keeps_what_is_in_use(tmp_path):
    unbounded = ArtifactCache(tmp_path, max_bytes=1 << 40, max_age_days=1e6)
    keys = [dataclasses.replace(KEY, max_classes=64 + i) for i in range(4)]
    now = 1_000_000_000.0

    def store(key, days_unused):
        path = unbounded.store(key, "engine.plan", lambda p: p.write_bytes(b"x" * 1000))
        os.utime(path.with_name("key.json"), (now - 86400 * days_unused,) * 2)
        return path.parent

    folders = [store(key, 20 - i) for i, key in enumerate(keys)]           # unused for 20, 19, 18, 17 days
    # All four are over 10 days unused; the one in use stays.
    assert ArtifactCache(tmp_path, max_age_days=10).evict(keep=[folders[0]], now=now) == folders[1:]
    assert unbounded.find(keys[0], "engine.plan") is not None               # found, and marked used now

    for i, key in enumerate(keys[1:], start=1):
        store(key, 5 - i)                                                  # unused for 4, 3, 2 days
    entry = unbounded.entries()[0][2]
    removed = ArtifactCache(tmp_path, max_bytes=2 * entry + 10, max_age_days=30).evict(now=now)
    assert removed == folders[1:3]                                         # least recently used go first
    assert {folder for folder, _, _ in unbounded.entries()} == {folders[0], folders[3]}


def test_default_cache_dir_is_persistent(monkeypatch, tmp_path):
    monkeypatch.delenv("SEMLA_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "semla_ros"
    monkeypatch.setenv("SEMLA_CACHE_DIR", str(tmp_path / "x"))
    assert default_cache_dir() == tmp_path / "x"

"""Engines are reused only under an identical key, and never half-written."""
from __future__ import annotations

import dataclasses

from semla_ros.backends.engine_cache import EngineCache, EngineKey, default_cache_dir, file_sha256

KEY = EngineKey(onnx_sha256="ab" * 32, tensorrt_version="10.9.0", gpu_name="NVIDIA H100",
                compute_capability="9.0", precision="fp16", image_size=384, min_classes=1,
                opt_classes=19, max_classes=64)


def test_every_field_changes_the_key():
    seen = {KEY.digest()}
    changes = dict(onnx_sha256="cd" * 32, tensorrt_version="10.9.1", gpu_name="NVIDIA L4",
                   compute_capability="8.9", precision="fp32", image_size=336, min_classes=2,
                   opt_classes=20, max_classes=128, refit=False)
    for field, value in changes.items():
        digest = dataclasses.replace(KEY, **{field: value}).digest()
        assert digest not in seen, field
        seen.add(digest)


def test_store_then_load_and_mismatch(tmp_path):
    cache = EngineCache(tmp_path)
    assert cache.load(KEY) is None
    path = cache.store(KEY, b"plan-bytes")
    assert path.is_file() and not list(tmp_path.rglob("*.partial"))
    assert cache.load(KEY) == b"plan-bytes"
    # A key file that does not match (e.g. edited or from another version) is not trusted.
    path.with_name("key.json").write_text("{}")
    assert cache.load(KEY) is None


def test_default_cache_dir_is_persistent(monkeypatch, tmp_path):
    monkeypatch.delenv("SEMLA_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "semla_ros"
    monkeypatch.setenv("SEMLA_CACHE_DIR", str(tmp_path / "x"))
    assert default_cache_dir() == tmp_path / "x"


def test_file_hash(tmp_path):
    p = tmp_path / "m.onnx"
    p.write_bytes(b"abc")
    assert file_sha256(p) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"

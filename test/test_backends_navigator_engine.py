"""The navigator's tower in ONNX Runtime: embeddings within 1e-5 of PyTorch's, PyTorch while the session
builds, the export cached like the segmentation's, a failed build said once, and `build_engine` putting the
navigator on the engine exactly when the segmentation runs on ONNX Runtime on the CPU."""
from __future__ import annotations

import json
from concurrent.futures import Executor, Future

import numpy as np
import pytest
import torch
from engine_helpers import HeldExport
from openclip_helpers import register_tiny_openclip

from semla_ros.backends import navigator_engine
from semla_ros.backends.navigator_engine import NAVIGATOR_ONNX_FILE, EngineNavigator
from semla_ros.core.navigator import OpenClipNavigator, TowerNavigator
from semla_ros.core.segmenter import InlineExecutor

TINY = "SemlaTinyNavEngine"


class HeldExecutor(Executor):
    """Runs the submitted build only when the test says so: 'still building' is a state, not a race."""

    def __init__(self):
        self.calls = []

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future: Future = Future()
        self.calls.append((future, fn, args, kwargs))
        return future

    def run_all(self) -> None:
        for future, fn, args, kwargs in self.calls:
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:
                future.set_exception(exc)
        self.calls.clear()


@pytest.fixture(scope="module")
def openclip_navigator(tmp_path_factory):
    name = register_tiny_openclip(tmp_path_factory.mktemp("oc"), TINY, layers=2)
    torch.manual_seed(0)
    return OpenClipNavigator(name, pretrained=None, image_size=32, batch_size=2)


@pytest.fixture(scope="module")
def tower_navigator(tmp_path_factory):
    from semla_ros.catseg.build import build_catseg
    from semla_ros.demo.build_assets import demo_config

    path = tmp_path_factory.mktemp("demo") / "small.json"   # the demo's small CAT-Seg
    path.write_text(json.dumps(demo_config().to_dict()))
    torch.manual_seed(0)
    return TowerNavigator(build_catseg(str(path)).eval(), normalize=True, device="cpu")


def images(n, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=(60 + 7 * i, 80 + 3 * i, 3), dtype=np.uint8) for i in range(n)]


@pytest.mark.parametrize("which", ["openclip_navigator", "tower_navigator"])
def test_engine_embeddings_match_pytorch(which, request, tmp_path):
    navigator = request.getfixturevalue(which)
    engine = EngineNavigator(navigator, cache_dir=tmp_path, executor=InlineExecutor())
    engine.wait_ready()
    assert engine.serving == "engine" and engine.status()[0] == "ok"
    assert (engine.id, engine.dim) == (navigator.id, navigator.dim)   # same space: the library's centroids match
    imgs = images(5)   # 5 images in batches of the navigator's batch size (2 for open_clip)
    ours, reference = engine.embed(imgs), navigator.embed(imgs)
    assert ours.shape == reference.shape and ours.dtype == np.float32
    assert np.abs(ours - reference).max() <= 1e-5
    assert np.abs(reference[0] - reference[1]).max() > 1e-3   # a comparison that could fail
    engine.close()


def test_pytorch_embeds_until_the_session_is_built_then_the_export_is_cached(openclip_navigator, tmp_path):
    held = HeldExecutor()
    engine = EngineNavigator(openclip_navigator, cache_dir=tmp_path, executor=held)
    assert engine.serving == "pytorch" and "being built" in engine.status()[1]
    imgs = images(3)
    np.testing.assert_array_equal(engine.embed(imgs), openclip_navigator.embed(imgs))   # PyTorch, exactly
    held.run_all()
    assert engine.serving == "engine"
    exported = engine.cache.find(engine.onnx_key(), NAVIGATOR_ONNX_FILE)
    assert exported is not None and exported.parent.parent == tmp_path / "onnx"
    written = exported.stat().st_mtime_ns

    again = EngineNavigator(openclip_navigator, cache_dir=tmp_path, executor=InlineExecutor())
    again.wait_ready()   # from the cache: the same file, not exported again
    assert again.cache.find(again.onnx_key(), NAVIGATOR_ONNX_FILE) == exported
    assert exported.stat().st_mtime_ns == written and len(list((tmp_path / "onnx").iterdir())) == 1
    np.testing.assert_array_equal(again.embed(imgs), engine.embed(imgs))


def test_close_waits_for_the_export_in_flight(openclip_navigator, tmp_path, monkeypatch):
    """close() while the engine's own build thread exports the tower: close() returns once the export and
    its thread have ended, and the build stopped before building a session."""
    held = HeldExport(navigator_engine.export_tower)
    monkeypatch.setattr(navigator_engine, "export_tower", held)
    engine = EngineNavigator(openclip_navigator, cache_dir=tmp_path)   # its own build thread
    held.close_during(engine)
    assert held.ended
    assert engine.serving == "pytorch" and engine.cache.find(engine.onnx_key(), NAVIGATOR_ONNX_FILE) is not None


def test_a_failed_build_is_said_once_and_pytorch_keeps_embedding(openclip_navigator, tmp_path):
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the cache folder should be")
    said = []
    engine = EngineNavigator(openclip_navigator, cache_dir=blocked, executor=InlineExecutor(), say=said.append)
    imgs = images(2)
    for _ in range(3):
        np.testing.assert_array_equal(engine.embed(imgs), openclip_navigator.embed(imgs))
    assert engine.serving == "pytorch" and engine.status()[0] == "warn"
    assert len(said) == 1 and "navigator's ONNX Runtime engine failed" in said[0] and "PyTorch" in said[0]
    with pytest.raises(RuntimeError, match="failed"):
        engine.wait_ready()


def test_only_a_cpu_navigator_runs_on_the_engine(openclip_navigator):
    class OnCuda:
        device = torch.device("cuda")

    with pytest.raises(ValueError, match="runs on the CPU"):
        EngineNavigator(OnCuda())


@pytest.mark.parametrize("backend,on_engine", [("auto", True), ("onnxruntime", True), ("torch", False)])
def test_build_engine_puts_the_navigator_on_the_engine_with_onnxruntime(backend, on_engine, tmp_path):
    from semla_ros.demo.build_assets import demo_config
    from semla_ros.engine import EngineSpec, build_engine

    config = tmp_path / "small.json"
    config.write_text(json.dumps(demo_config().to_dict()))
    build = build_engine(EngineSpec(model_config=str(config), allow_random_weights=True, navigator="tower",
                                    device="cpu", backend=backend, classes=("road", "sky"),
                                    engine_cache_dir=str(tmp_path / "cache")))
    try:
        assert not build.errors
        assert isinstance(build.navigator, EngineNavigator) == on_engine
        assert ("ONNX Runtime" in build.health["navigator"][1]) == on_engine
        if on_engine:
            build.navigator.wait_ready()
            assert (tmp_path / "cache" / "onnx").is_dir()
    finally:
        build.segmenter.close()
        build.backend.close()
        if on_engine:
            build.navigator.close()

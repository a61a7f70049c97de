"""Building the engine from an EngineSpec: every configuration problem becomes one sentence naming the
file or value, filed under the part it concerns, and the engine degrades (base model, CPU, PyTorch)
instead of raising where it can. No ROS involved."""
from __future__ import annotations

import numpy as np
import pytest

from semla_ros.engine import EngineConfigError, EngineSpec, build_engine

BASE = EngineSpec(model_config="tiny", device="cpu", backend="torch", classes=("road", "sky"))


def spec(**changes):
    return BASE.replace(**changes)


def test_empty_checkpoint_needs_explicit_random_weights():
    build = build_engine(spec(checkpoint=""))
    assert build.segmenter is None and build.health["model"][0] == "error"
    assert len(build.errors) == 1
    assert "checkpoint" in build.errors[0] and "allow_random_weights" in build.errors[0]
    with pytest.raises(EngineConfigError, match="checkpoint"):
        build.raise_for_errors()


def test_missing_checkpoint_names_the_file_and_its_source(tmp_path):
    missing = tmp_path / "model_large.pth"
    build = build_engine(spec(checkpoint=str(missing)))
    assert build.segmenter is None
    assert str(missing) in build.errors[0] and "CAT-Seg" in build.errors[0] and "huggingface" in build.errors[0]


def test_corrupt_checkpoint_names_the_file(tmp_path):
    for name, data in (("zero.safetensors", b""), ("random.safetensors", b"\xff" * 64)):
        path = tmp_path / name
        path.write_bytes(data)
        build = build_engine(spec(checkpoint=str(path)))
        assert build.segmenter is None and str(path) in build.errors[0] and "CAT-Seg" in build.errors[0]


def test_unknown_model_config_and_fixture_json(fixture_dir):
    assert "vit_huge" in build_engine(spec(model_config="vit_huge", allow_random_weights=True)).errors[0]
    missing_json = build_engine(spec(model_config="/nowhere/model_config.json", allow_random_weights=True))
    assert "/nowhere/model_config.json" in missing_json.errors[0]
    # a reference fixture's config.json is a model config too (the one resolver accepts it)
    fixture = build_engine(spec(model_config=str(fixture_dir / "config.json"),
                                checkpoint=str(fixture_dir / "model.safetensors"), navigator="tower"))
    assert fixture.segmenter is not None and not fixture.errors


def test_tensorrt_without_gpu_runs_torch_with_one_warning():
    from semla_ros.backends.tensorrt_backend import tensorrt_unavailable_reason

    reason = tensorrt_unavailable_reason()
    if reason is None:
        pytest.skip("TensorRT and a GPU are available here; the fallback path does not apply")
    build = build_engine(spec(backend="tensorrt", allow_random_weights=True, navigator="tower"))
    assert build.segmenter is not None and build.info["backend"] == "TorchBackend"
    assert build.health["backend"][0] == "warn" and "TensorRT" in build.health["backend"][1] and not build.errors


def test_cuda_without_a_gpu_runs_on_the_cpu_with_one_warning():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is usable here; the CPU fallback does not apply")
    build = build_engine(spec(device="cuda", allow_random_weights=True, navigator="tower"))
    assert build.segmenter is not None and build.device == "cpu"
    assert build.health["model"][0] == "warn" and "cuda" in build.health["model"][1] and not build.errors


def test_fp16_on_cpu_is_a_clear_error():
    build = build_engine(spec(precision="fp16", allow_random_weights=True, navigator="tower"))
    assert build.segmenter is None and "fp16" in build.errors[0] and build.health["backend"][0] == "error"


def test_missing_library_and_navigator_fall_back_to_the_base_model(tmp_path):
    build = build_engine(spec(allow_random_weights=True, navigator="tower", library_path=str(tmp_path / "lib")))
    assert build.segmenter is not None and build.segmenter.library is None
    assert len(build.errors) == 1 and str(tmp_path / "lib") in build.errors[0] and "reloaded" in build.errors[0]
    assert build.health["library"][0] == "error" and build.health["navigator"][0] == "ok"

    # The default navigator's weights are not in this machine's cache: base model, one clear error.
    build = build_engine(spec(allow_random_weights=True, library_path=str(tmp_path / "lib")))
    assert build.segmenter is not None
    assert len(build.errors) == 1 and "navigator" in build.errors[0] and build.health["navigator"][0] == "error"


def test_spec_takes_segmenter_settings_by_name_and_validates_them():
    s = spec(top_k=3, cooldown_s=1.0)
    assert s.settings.top_k == 3 and s.settings.cooldown_s == 1.0 and s.model_config == "tiny"
    with pytest.raises(ValueError, match="top_k"):
        spec(top_k=0)


def test_onnxruntime_backend_builds_in_the_background_and_says_so(tmp_path):
    import json

    from semla_ros.demo.build_assets import demo_config

    config = tmp_path / "small.json"   # the demo's small CAT-Seg: an export of seconds
    config.write_text(json.dumps(demo_config().to_dict()))
    small = spec(model_config=str(config), allow_random_weights=True, navigator="tower", backend="onnxruntime",
                 engine_cache_dir=str(tmp_path / "cache"))
    build = build_engine(small)
    assert build.segmenter is not None and build.info["backend"] == "EngineBackend" and not build.errors
    backend = build.backend
    assert backend.status() == ("warn", "onnxruntime engine is being built; PyTorch serves meanwhile")
    backend.wait_ready()
    build.segmenter.process((np.random.default_rng(0).random((48, 64, 3)) * 255).astype(np.uint8))
    assert backend.serving == "engine" and backend.status()[0] == "ok"
    build.segmenter.close()
    backend.close()

    fp16 = build_engine(small.replace(precision="fp16"))   # ONNX Runtime runs fp32: one clear error
    assert fp16.segmenter is None and "fp32" in fp16.health["backend"][1] and fp16.health["backend"][0] == "error"

"""Building the segmenter from parameter values: every configuration problem becomes one sentence
naming the file or value, and the node degrades (base model) instead of raising where it can."""
from __future__ import annotations

import pytest

pytest.importorskip("rclpy", reason="ROS 2 Python packages (rclpy) not installed")

from semla_ros.ros.engine_factory import build_engine  # noqa: E402
from semla_ros.ros.parameters import SPECS  # noqa: E402


def _params(**changes):
    params = {spec.name: spec.default for spec in SPECS}
    params.update(model_config="tiny", device="cpu", classes=["road", "sky"])
    params.update(changes)
    return params


def test_empty_checkpoint_needs_explicit_random_weights():
    build = build_engine(_params(checkpoint=""))
    assert build.segmenter is None
    assert len(build.errors) == 1
    assert "checkpoint" in build.errors[0] and "allow_random_weights" in build.errors[0]


def test_missing_checkpoint_names_the_file_and_its_source(tmp_path):
    missing = tmp_path / "model_large.pth"
    build = build_engine(_params(checkpoint=str(missing)))
    assert build.segmenter is None
    assert str(missing) in build.errors[0] and "CAT-Seg" in build.errors[0]


def test_unknown_model_config_and_unavailable_backend():
    assert "model_config" in build_engine(_params(model_config="vit_huge", allow_random_weights=True)).errors[0]
    missing_json = build_engine(_params(model_config="/nowhere/model_config.json", allow_random_weights=True))
    assert "/nowhere/model_config.json" in missing_json.errors[0]


def test_tensorrt_without_gpu_runs_torch_with_one_warning():
    from semla_ros.backends.tensorrt_backend import tensorrt_unavailable_reason

    reason = tensorrt_unavailable_reason()
    if reason is None:
        pytest.skip("TensorRT and a GPU are available here; the fallback path does not apply")
    build = build_engine(_params(backend="tensorrt", allow_random_weights=True, navigator="tower"))
    assert build.segmenter is not None and build.info["backend"] == "TorchBackend"
    assert [w for w in build.warnings if "TensorRT" in w] and not build.errors


def test_fp16_on_cpu_is_a_clear_error():
    build = build_engine(_params(precision="fp16", allow_random_weights=True, navigator="tower"))
    assert build.segmenter is None and "fp16" in build.errors[0]


def test_missing_library_and_navigator_fall_back_to_the_base_model(tmp_path):
    build = build_engine(_params(allow_random_weights=True, navigator="tower", library_path=str(tmp_path / "lib")))
    assert build.segmenter is not None and build.segmenter.library is None
    assert len(build.errors) == 1 and str(tmp_path / "lib") in build.errors[0]
    assert "reload_library" in build.errors[0]

    # The default navigator's weights are not in this machine's cache: base model, one clear error.
    build = build_engine(_params(allow_random_weights=True, library_path=str(tmp_path / "lib")))
    assert build.segmenter is not None
    assert len(build.errors) == 1 and "navigator" in build.errors[0]

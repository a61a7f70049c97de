"""The parameter table: descriptors, the one validation function, and config/semla.yaml agreeing with it."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

pytest.importorskip("rclpy", reason="ROS 2 Python packages (rclpy) not installed")

from semla_ros.ros import parameters  # noqa: E402
from semla_ros.ros.parameters import SPEC_BY_NAME, SPECS, validate  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESTART_NEEDED = {"model_config", "checkpoint", "allow_random_weights", "random_seed", "library_path", "navigator",
                  "navigator_normalize", "backend", "device", "precision", "engine_cache_dir", "sliding_window",
                  "image_topics", "input_transport", "input_qos", "input_qos_depth", "output_qos", "output_qos_depth",
                  "inference_workers", "diagnostics_period_s", "coverage_capture_dir"}
LIVE = {"classes", "top_k", "temperature", "distance", "ema_alpha", "switch_threshold", "threshold_mode",
        "min_consecutive", "cooldown_s", "embed_every_n", "embed_rest_every_n", "warmup_frames", "evidence_threshold",
        "flap_window_s",
        "flap_penalty", "flap_half_life_s", "fusion_recall", "max_input_pixels", "overlay_alpha",
        "coverage_max_relative_distance", "coverage_min_scale_free_support", "coverage_window",
        "coverage_suspect_fraction", "coverage_gap_fraction", "coverage_capture_period_s",
        "coverage_capture_max_frames",
        "adapter_cache_mb",
        "trigger", "dwell_s", "switch_margin", "weight_change", "frame_time"}


def test_every_parameter_is_documented_in_config_with_its_default():
    text = (REPO / "config" / "semla.yaml").read_text()
    documented = yaml.safe_load(text)["/**"]["ros__parameters"]
    assert set(documented) == {spec.name for spec in SPECS}
    for spec in SPECS:
        assert documented[spec.name] == spec.default, spec.name
        # a comment line precedes every parameter
        lines = text.splitlines()
        index = next(i for i, line in enumerate(lines) if line.strip().startswith(f"{spec.name}:"))
        assert lines[index - 1].strip().startswith("#"), f"{spec.name} has no comment"


def test_read_only_exactly_where_a_restart_is_needed():
    assert {s.name for s in SPECS if s.read_only} == RESTART_NEEDED
    assert {s.name for s in SPECS if not s.read_only} == LIVE
    for spec in SPECS:
        desc = parameters.descriptor(spec)
        assert desc.read_only == spec.read_only and desc.description
        if spec.low is not None and isinstance(spec.default, int) and not isinstance(spec.default, bool):
            assert (desc.integer_range[0].from_value, desc.integer_range[0].to_value) == (spec.low, spec.high)
        if spec.low is not None and isinstance(spec.default, float):
            assert desc.floating_point_range[0].from_value == spec.low


def test_parameter_defaults_are_the_engines_defaults():
    import dataclasses

    from semla_ros.engine import EngineSpec

    defaults = {spec.name: spec.default for spec in SPECS}
    assert parameters.engine_spec(defaults) == EngineSpec()          # one source of defaults
    covered = set(parameters.SETTING_BY_PARAMETER.values())
    assert covered == {f.name for f in dataclasses.fields(EngineSpec().settings)}
    assert set(parameters.ENGINE_PARAMETERS) == {f.name for f in dataclasses.fields(EngineSpec)} - {"settings"}


def test_coverage_parameters_are_the_coverage_settings_with_their_defaults():
    import dataclasses

    from semla_ros.core.coverage import CoverageSettings

    defaults = {spec.name: spec.default for spec in SPECS}
    assert parameters.coverage_settings(defaults) == CoverageSettings()          # one source of defaults
    assert set(parameters.COVERAGE_BY_PARAMETER.values()) == {f.name for f in dataclasses.fields(CoverageSettings)}
    assert set(parameters.COVERAGE_BY_PARAMETER) <= set(SPEC_BY_NAME)
    assert parameters.coverage_changes({"coverage_window": 7, "top_k": 2}) == {"window": 7}


def test_defaults_validate():
    assert validate({s.name: s.default for s in SPECS}) is None


@pytest.mark.parametrize("name,value,why", [
    ("distance", "manhattan", "not one of"),
    ("threshold_mode", "percent", "not one of"),
    ("top_k", 0, "outside"),
    ("ema_alpha", 0.0, "outside"),
    ("ema_alpha", 1.5, "outside"),
    ("temperature", float("nan"), "not finite"),
    ("overlay_alpha", -0.1, "outside"),
    ("cooldown_s", -1.0, "outside"),
    ("device", "gpu", "auto, cpu, cuda"),
    ("device", "cuda:x", "auto, cpu, cuda"),
    ("navigator", "clip", "openclip:"),
    ("navigator", "openclip:ViT-L-14", "openclip:MODEL/TAG"),
    ("model_config", " ", "empty"),
    ("backend", "onnx", "not one of"),
    ("classes", [], "at least one"),
    ("classes", ["car", " "], "non-empty"),
    ("classes", ["car", "road", "car"], "duplicate"),
    ("allow_random_weights", 1, "expected bool"),
])
def test_bad_values_are_refused_with_a_reason(name, value, why):
    reason = validate({name: value})
    assert reason is not None and reason.startswith(name) and why in reason, reason


def test_good_values_pass():
    assert validate({"device": "cuda:1", "navigator": "openclip:ViT-B-16/laion2b_s34b_b88k",
                     "classes": ["a", "b"], "model_config": "/x/model_config.json"}) is None
    assert validate({"navigator": "openclip:ViT-L-14//data/clip/ViT-L-14.pt"}) is None
    assert validate({"navigator": "openclip:ViT-L-14/openai=/data/clip/ViT-L-14.pt"}) is None
    assert parameters.engine_spec({s.name: s.default for s in SPECS} | {"classes": [" road ", "sky"]}).classes == \
        ("road", "sky")


def test_declare_reports_bad_overrides_and_keeps_defaults():
    import rclpy

    context = rclpy.context.Context()
    rclpy.init(context=context, args=["--ros-args", "-p", "top_k:=0", "-p", "device:=gpu",
                                      "-p", "ema_alpha:=0.3", "-p", "distance:=cosine"])
    try:
        node = rclpy.create_node("declare_probe", context=context)
        values, problems = parameters.declare(node)
        assert values["top_k"] == 5 and values["ema_alpha"] == 0.3 and values["distance"] == "cosine"
        assert any(p.startswith("top_k") for p in problems)
        assert any(p.startswith("device") for p in problems)
        assert len(problems) == 2
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)


def test_config_file_is_the_rendering_of_the_declared_settings():
    text = (REPO / "config" / "semla.yaml").read_text()
    assert parameters.with_rendered_parameters(text) == text, \
        "config/semla.yaml is stale: python -m semla_ros.ros.parameters --write-config config/semla.yaml"
    assert text.count(parameters.BEGIN) == 1 and text.count(parameters.END) == 1


def test_rendering_owns_only_the_block_between_the_markers(tmp_path):
    before, after = "# hand-written head\n", "    # hand-written tail\n    qos_overrides:\n      /x: {}\n"
    stale = f"{before}{parameters.BEGIN}\n    top_k: 99\n{parameters.END}\n{after}"
    path = tmp_path / "semla.yaml"
    path.write_text(stale)
    assert parameters.main(["--check-config", str(path)]) == 1
    assert parameters.main(["--write-config", str(path)]) == 0
    text = path.read_text()
    assert text == before + parameters.render_parameters() + after
    assert yaml.safe_load(text)["/**"]["ros__parameters"]["qos_overrides"] == {"/x": {}}
    assert parameters.main(["--check-config", str(path)]) == 0
    with pytest.raises(ValueError, match="no generated block"):
        parameters.with_rendered_parameters("top_k: 5\n")

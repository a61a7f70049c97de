"""The node's parameters: one table with descriptors, and the one validation function.

Why one table: the declaration (types, ranges, read-only), the validation that rejects bad values
with a reason, the mapping onto the segmenter's live settings and config/semla.yaml all describe
the same thing; keeping them in one place is what stops them drifting apart.
Read-only parameters need a restart (they decide which model, library and threads exist);
everything the engine can change between two frames is live.
"""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any, Mapping

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

from semla_ros.core.coverage import CoverageSettings
from semla_ros.core.navigator import NavigatorSpec
from semla_ros.core.settings import METRICS, THRESHOLD_MODES, TRIGGERS, SegmenterSettings
from semla_ros.engine.spec import BACKENDS, PRECISIONS, EngineSpec

QOS_CHOICES = ("sensor_data", "default", "system_default")
_ENGINE = EngineSpec()
_SETTINGS = SegmenterSettings()
_COVERAGE = CoverageSettings()


@dataclass(frozen=True)
class Spec:
    name: str
    default: Any
    description: str
    read_only: bool = False
    low: float | None = None          # inclusive range, checked by ROS and by validate()
    high: float | None = None
    choices: tuple[str, ...] = ()
    setting: str | None = None        # SegmenterSettings field this parameter drives live


SPECS: tuple[Spec, ...] = (
    # --- model (restart needed) ---
    Spec("model_config", _ENGINE.model_config, "CAT-Seg configuration: a registry name (tiny, vitb16_384, "
         "vitl14_336) or the path of a CatSegConfig JSON file", read_only=True),
    Spec("checkpoint", _ENGINE.checkpoint, "CAT-Seg weights (.pth detectron2 or .safetensors). '' needs "
         "allow_random_weights", read_only=True),
    Spec("allow_random_weights", _ENGINE.allow_random_weights, "Run with seeded random weights when checkpoint is '' "
         "(tests and the synthetic demo only: the masks mean nothing)", read_only=True),
    Spec("random_seed", _ENGINE.random_seed, "Seed for random weights", read_only=True, low=0, high=2**31 - 1),
    Spec("library_path", _ENGINE.library_path, "Adapter library directory (SemLA loradb layout). '' = base model only; "
         "reload with the ~/reload_library service", read_only=True),
    Spec("navigator", _ENGINE.navigator, "Domain embedder: 'openclip:<model>/<pretrained tag "
         "or local checkpoint path>' or 'tower' (frozen CAT-Seg image tower, demo/tests)", read_only=True),
    Spec("navigator_normalize", _ENGINE.navigator_normalize, "L2-normalise navigator embeddings (must match the library)",
         read_only=True),
    Spec("backend", _ENGINE.backend, "Inference backend", read_only=True, choices=BACKENDS),
    Spec("device", _ENGINE.device, "'auto' (cuda if available), 'cpu', 'cuda' or 'cuda:N'", read_only=True),
    Spec("precision", _ENGINE.precision, "Network precision", read_only=True, choices=PRECISIONS),
    Spec("engine_cache_dir", _ENGINE.engine_cache_dir, "Where ONNX exports and TensorRT engines are cached ('' = the "
         "backend's default under ~/.cache/semla_ros, never /tmp)", read_only=True),
    Spec("sliding_window", _ENGINE.sliding_window, "Sliding-window inference instead of whole image", read_only=True),
    # --- vocabulary (live: re-encodes the text with the active fused text tower) ---
    Spec("classes", list(_ENGINE.classes), "Class names; mask value i is classes[i]. mono8 up to "
         "255 classes, mono16 beyond"),
    # --- retrieval (live) ---
    Spec("top_k", _SETTINGS.top_k, "Adapters fused per swap (paper default 5; best 7)", low=1, high=64, setting="top_k"),
    Spec("temperature", _SETTINGS.temperature, "Softmax temperature over 1/distance (paper default 0.05; best 0.01)",
         low=1e-6, high=100.0, setting="temperature"),
    Spec("distance", _SETTINGS.metric, "Distance between embedding and adapter centroids",
         choices=METRICS, setting="metric"),
    # --- shift debouncing (live) ---
    Spec("ema_alpha", _SETTINGS.ema_alpha, "EMA weight of the newest embedding", low=1e-6, high=1.0, setting="ema_alpha"),
    Spec("switch_threshold", _SETTINGS.switch_threshold, "Swap when ||EMA - reference|| exceeds this (absolute units, or a "
         "fraction of the library's median inter-centroid distance when threshold_mode=relative)",
         low=1e-9, high=1e9, setting="switch_threshold"),
    Spec("threshold_mode", _SETTINGS.threshold_mode, "How switch_threshold is read", choices=THRESHOLD_MODES,
         setting="threshold_mode"),
    Spec("min_consecutive", _SETTINGS.min_consecutive, "Embedded frames in a row over the threshold before a swap", low=1,
         high=10000, setting="min_consecutive"),
    Spec("cooldown_s", _SETTINGS.cooldown_s, "Minimum seconds between two swaps", low=0.0, high=86400.0,
         setting="cooldown_s"),
    Spec("trigger", _SETTINGS.trigger, "What confirms a shift: retrieval (the fusion retrieval would build for the EMA "
         "differs materially from the active one), distance (||EMA - reference|| > switch_threshold), frame "
         "(re-fuse on every embedded frame: per-image SemLA)", choices=TRIGGERS, setting="trigger"),
    Spec("dwell_s", _SETTINGS.dwell_s, "Seconds (frame stamps) a shift must hold before a swap", low=0.0, high=3600.0,
         setting="dwell_s"),
    Spec("switch_margin", _SETTINGS.switch_margin, "Retrieval trigger: the new top-1 adapter must be closer to the EMA "
         "than the active top-1 by this much (read like switch_threshold)", low=0.0, high=1e9, setting="switch_margin"),
    Spec("weight_change", _SETTINGS.weight_change, "Retrieval trigger, same top-1: total-variation distance of the "
         "fusion weights that counts as a different fusion", low=1e-6, high=1.0, setting="weight_change"),
    Spec("embed_every_n", _SETTINGS.embed_every_n, "Embed every Nth processed frame with the navigator", low=1, high=10000,
         setting="embed_every_n"),
    Spec("warmup_frames", _SETTINGS.warmup_frames, "Embedded frames averaged before the startup fusion", low=1, high=10000,
         setting="warmup_frames"),
    # --- adapter library (live) ---
    Spec("adapter_cache_mb", _SETTINGS.adapter_cache_mb, "Memory for adapter factors read from the library (LRU); "
         "an adapter is read from disk when a fusion first needs it", low=0.0, high=1048576.0,
         setting="adapter_cache_mb"),
    # --- input / output ---
    Spec("input_transport", "raw", "Subscribe to 'image' (raw) or 'image/compressed'", read_only=True,
         choices=("raw", "compressed")),
    Spec("input_qos", "sensor_data", "Input QoS: sensor_data (best effort), default (reliable), "
         "system_default", read_only=True, choices=QOS_CHOICES),
    Spec("input_qos_depth", 1, "Input queue depth (1: only the newest frame matters)", read_only=True,
         low=1, high=100),
    Spec("output_qos", "default", "QoS of mask, support_score and overlay", read_only=True,
         choices=QOS_CHOICES),
    Spec("output_qos_depth", 5, "Output queue depth", read_only=True, low=1, high=100),
    Spec("max_input_pixels", 4096 * 4096, "Frames with more pixels are dropped as bad (guards memory)",
         low=1, high=2**31 - 1),
    Spec("frame_time", "header", "Time of a frame for the shift timers: its header stamp (the node clock for "
         "unstamped frames) or the node clock at arrival (sim time with use_sim_time)", choices=("header", "clock")),
    Spec("overlay_alpha", 0.5, "Weight of the class colours in the overlay image", low=0.0, high=1.0),
    Spec("diagnostics_period_s", 1.0, "Period of /diagnostics", read_only=True, low=0.05, high=60.0),
    # --- library coverage: gap detection on `coverage` and /diagnostics (live, except the capture folder) ---
    Spec("coverage_max_relative_distance", _COVERAGE.max_relative_distance, "A frame is uncovered when its distance "
         "to the nearest adapter centroid exceeds this times the library's median centroid spacing",
         low=1e-6, high=1e6),
    Spec("coverage_min_scale_free_support", _COVERAGE.min_scale_free_support, "A frame is also uncovered when its "
         "scale-free support is below this (0 = off)", low=0.0, high=1e6),
    Spec("coverage_window", _COVERAGE.window, "Embedded frames the uncovered share is taken over", low=1, high=10000),
    Spec("coverage_suspect_fraction", _COVERAGE.suspect_fraction, "Uncovered share of the window for GAP_SUSPECTED "
         "(<= coverage_gap_fraction)", low=1e-6, high=1.0),
    Spec("coverage_gap_fraction", _COVERAGE.gap_fraction, "Uncovered share of a full window for GAP (diagnostics "
         "WARN)", low=1e-6, high=1.0),
    Spec("coverage_capture_dir", _COVERAGE.capture_dir, "Save uncovered frames and their embeddings here while a "
         "gap is suspected, ready to label ('' = off)", read_only=True),
    Spec("coverage_capture_period_s", _COVERAGE.capture_period_s, "At most one captured frame per this many seconds",
         low=0.0, high=86400.0),
    Spec("coverage_capture_max_frames", _COVERAGE.capture_max_frames, "The capture folder never holds more frames "
         "than this (earlier runs' frames count)", low=0, high=10_000_000),
)

SPEC_BY_NAME = {spec.name: spec for spec in SPECS}
SETTING_BY_PARAMETER = {spec.name: spec.setting for spec in SPECS if spec.setting}
# Parameters named coverage_<field> set that CoverageSettings field.
COVERAGE_BY_PARAMETER = {f"coverage_{f.name}": f.name for f in dataclasses.fields(CoverageSettings)}
# Parameters named like an EngineSpec field set that field.
ENGINE_PARAMETERS = tuple(f.name for f in dataclasses.fields(EngineSpec) if f.name in SPEC_BY_NAME)

_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def descriptor(spec: Spec) -> ParameterDescriptor:
    """ROS descriptor: ROS itself enforces type, range and read-only; choices are in the text."""
    text = spec.description
    if spec.choices:
        text += f" (one of: {', '.join(spec.choices)})"
    desc = ParameterDescriptor(description=text, read_only=spec.read_only)
    if spec.choices:
        desc.additional_constraints = "one of: " + ", ".join(spec.choices)
    if spec.low is not None and isinstance(spec.default, bool) is False:
        if isinstance(spec.default, int):
            desc.integer_range = [IntegerRange(from_value=int(spec.low), to_value=int(spec.high), step=1)]
        elif isinstance(spec.default, float):
            desc.floating_point_range = [FloatingPointRange(from_value=float(spec.low),
                                                            to_value=float(spec.high), step=0.0)]
    return desc


def validate(changes: Mapping[str, Any]) -> str | None:
    """Check proposed values; return the reason to reject them, or None when all are acceptable."""
    for name, value in changes.items():
        spec = SPEC_BY_NAME.get(name)
        if spec is None:
            continue  # parameters we do not own (use_sim_time, ...) are ROS's business
        if isinstance(spec.default, bool) != isinstance(value, bool):
            return f"{name}: expected {type(spec.default).__name__}, got {value!r}"
        if isinstance(spec.default, float) and isinstance(value, (int, float)):
            if not math.isfinite(value):
                return f"{name}: {value} is not finite"
        if spec.low is not None and isinstance(value, (int, float)) and not spec.low <= value <= spec.high:
            return f"{name}: {value} outside [{spec.low}, {spec.high}]"
        if spec.choices and value not in spec.choices:
            return f"{name}: '{value}' is not one of {', '.join(spec.choices)}"
        if name == "model_config" and not str(value).strip():
            return "model_config: empty (give a registry name or a config JSON path)"
        if name == "device" and not _DEVICE.match(str(value)):
            return f"device: '{value}' is not auto, cpu, cuda or cuda:N"
        if name == "navigator":
            try:
                NavigatorSpec.parse(str(value))
            except ValueError as error:
                return f"navigator: {error}"
        if name == "classes":
            names = clean_classes(value)
            if not names or any(not c for c in names):
                return "classes: needs at least one non-empty class name"
            if len(set(names)) != len(names):
                duplicates = sorted({c for c in names if names.count(c) > 1})
                return f"classes: duplicate names {duplicates}"
            if len(names) > 65535:
                return f"classes: {len(names)} classes do not fit a mono16 mask"
    return None


def validate_in_context(values: Mapping[str, Any], changes: Mapping[str, Any]) -> str | None:
    """validate(changes), then the settings the changes would leave in force (`values` are the current
    ones): cross-field rules (e.g. suspect_fraction <= gap_fraction) are refused before anything is stored."""
    reason = validate(changes)
    if reason:
        return reason
    merged = {**values, **changes}
    try:
        SegmenterSettings().replace(**settings_changes(merged))
        coverage_settings(merged)
    except ValueError as error:
        return str(error)
    return None


def clean_classes(value) -> list[str]:
    """Class names as the engine uses them (surrounding blanks removed): the one place they are cleaned."""
    return [str(c).strip() for c in value]


def settings_changes(changes: Mapping[str, Any]) -> dict[str, Any]:
    """The subset of parameter changes that are segmenter settings, under the settings' names."""
    return {SETTING_BY_PARAMETER[name]: value for name, value in changes.items()
            if name in SETTING_BY_PARAMETER}


def coverage_changes(changes: Mapping[str, Any]) -> dict[str, Any]:
    """The subset of parameter changes that are coverage settings, under the settings' names."""
    return {COVERAGE_BY_PARAMETER[name]: value for name, value in changes.items() if name in COVERAGE_BY_PARAMETER}


def coverage_settings(values: Mapping[str, Any]) -> CoverageSettings:
    """The CoverageSettings the parameter values describe (ValueError for an inconsistent combination)."""
    return CoverageSettings().replace(**coverage_changes(values))


def engine_spec(values: Mapping[str, Any]) -> EngineSpec:
    """The EngineSpec the parameter values describe."""
    fields = {name: values[name] for name in ENGINE_PARAMETERS}
    fields["classes"] = tuple(clean_classes(fields["classes"]))
    return EngineSpec(**fields, settings=SegmenterSettings().replace(**settings_changes(values)))


def declare(node) -> tuple[dict[str, Any], list[str]]:
    """Declare every parameter; return the values in force and the problems found in overrides.

    An override that ROS or validate() rejects is reported, and the default is used in its place,
    so a typo in a params file shows up in the log and diagnostics instead of killing the node.
    """
    from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException

    problems = []
    values = {}
    for spec in SPECS:
        try:
            value = node.declare_parameter(spec.name, spec.default, descriptor(spec)).value
        except (InvalidParameterValueException, InvalidParameterTypeException) as error:
            problems.append(f"{spec.name}: {error}")
            value = node.declare_parameter(spec.name, spec.default, descriptor(spec),
                                           ignore_override=True).value
        reason = validate({spec.name: value})
        if reason:
            problems.append(reason)
        values[spec.name] = value
    return values, problems

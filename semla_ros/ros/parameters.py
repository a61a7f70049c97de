"""The node's parameters: one table with descriptors, the one validation function, and config/semla.yaml.

Why one table: the declaration (types, ranges, read-only), the validation that rejects bad values
with a reason, the mapping onto the segmenter's live settings and config/semla.yaml all describe
the same thing. Every entry comes from a declared setting (core/fields.py): EngineSpec (model side),
SegmenterSettings (retrieval, debouncing, cache), CoverageSettings (as coverage_<name>) and the node's
own NodeSettings below, so a setting added there is a parameter here, with its range, and in the yaml.
Read-only parameters need a restart (they decide which model, library and threads exist);
everything the engine can change between two frames is live.

    python -m semla_ros.ros.parameters --write-config config/semla.yaml   # regenerate the documented block
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping

import yaml
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

from semla_ros.core import fields
from semla_ros.core.coverage import CoverageSettings
from semla_ros.core.fields import FieldInfo, setting
from semla_ros.core.navigator_spec import NavigatorSpec
from semla_ros.core.settings import SegmenterSettings
from semla_ros.engine.spec import EngineSpec
from semla_ros.ros import cameras

Qos = Literal["sensor_data", "default", "system_default"]


@dataclass(frozen=True)
class NodeSettings:
    """The node's own parameters: topics, QoS, frame time, overlay, diagnostics (no engine part reads them)."""

    image_topics: tuple[str, ...] = setting(
        ("",), live=False, help="Cameras this node serves: one namespace each ('' = the node's own)",
        doc="Cameras this node serves with one model, navigator, library and fusion, e.g. [front, left, right]: "
            "camera `front` subscribes `front/image` and publishes `front/mask`, `front/support_score`, "
            "`front/class_map`, `front/overlay` and `front/coverage` with its input's header; `fusion` and "
            "/diagnostics stay one for the node. The domain is decided from all cameras' frames. Default [''] "
            "is one camera in the node's own namespace (`image` -> `mask`). Remap a driver's topic onto a "
            "camera's input (`-r front/image:=/cam_front/image_raw`).")
    input_transport: Literal["raw", "compressed"] = setting(
        "raw", live=False, help="Subscribe to 'image' (raw) or 'image/compressed'",
        doc="raw: subscribe to `image` (rgb8, bgr8, rgba8, bgra8, mono8, mono16; any row padding). "
            "compressed: subscribe to `image/compressed` (jpeg/png).")
    input_qos: Qos = setting(
        "sensor_data", live=False, help="Input QoS: sensor_data (best effort), default (reliable), system_default",
        doc="Input QoS: sensor_data = best effort; default = reliable; system_default = rmw's.")
    input_qos_depth: int = setting(
        1, live=False, low=1, high=100, help="Input queue depth (1: only the newest frame matters)",
        doc="Input queue depth; 1: only the newest frame matters (the node keeps a one-slot mailbox anyway).")
    output_qos: Qos = setting(
        "default", live=False, help="QoS of mask, support_score and overlay",
        doc="QoS of mask, support_score and overlay. `fusion` is always reliable + transient local (late "
            "subscribers get the active fusion).")
    output_qos_depth: int = setting(5, live=False, low=1, high=100, help="Output queue depth")
    max_input_pixels: int = setting(
        4096 * 4096, low=1, high=2**31 - 1, help="Frames with more pixels are dropped as bad (guards memory)",
        doc="Frames with more pixels are dropped and counted as bad (frames_bad_too_large); default 4096x4096, so "
            "an 8K frame (7680x4320) is refused.")
    frame_time: Literal["header", "clock"] = setting(
        "header",
        help="Time of a frame for the shift timers: its header stamp (the node clock for unstamped frames) or the "
             "node clock at arrival (sim time with use_sim_time)",
        doc="Time of a frame for the shift timers: header = its header stamp (frames stamped 0 use the node clock "
            "at arrival, said once in the log and /diagnostics); clock = the node clock at arrival (ROS time: the "
            "bag's /clock with use_sim_time).")
    inference_workers: int = setting(
        0, live=False, low=0, high=16,
        help="Threads segmenting frames side by side on the one model (0: one per camera, at most the CPU cores)",
        doc="Inference threads sharing the one model: each takes a turn (the newest frame of every camera), its "
            "decisions are made in the order the turns were taken, the forwards of different turns run side by "
            "side, and each camera's masks are published in its frames' order. 0 (default) = one per camera, at "
            "most the CPU cores: 1 for one camera. More than one lets a node serving several cameras use the "
            "cores that one node per camera would (docs/cameras.md); each forward in flight holds its own "
            "activations.")
    overlay_alpha: float = setting(
        0.5, low=0.0, high=1.0, help="Weight of the class colours in the overlay image",
        doc="Weight of the class colours in `overlay` (published only while someone subscribes).")
    diagnostics_period_s: float = setting(1.0, live=False, low=0.05, high=60.0,
                                          help="Period of /diagnostics, seconds")

    def __post_init__(self):
        fields.validate(self)


QOS_CHOICES: tuple[str, ...] = fields.field_info(NodeSettings, "input_qos").choices
# ROS names that differ from the setting's: (settings class, field) -> parameter.
RENAMED = {(SegmenterSettings, "metric"): "distance"}
PREFIXES = {CoverageSettings: "coverage_"}


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
    info: FieldInfo | None = None     # the declared setting it comes from
    owner: type | None = None         # and its settings class


@dataclass(frozen=True)
class Section:
    """A block of config/semla.yaml: a title, an introduction, and the fields of one settings class
    (names=None: those of its fields no earlier section of that class named)."""

    title: str
    owner: type
    names: tuple[str, ...] | None = None
    intro: str = ""


SECTIONS = (
    Section("model (read-only)", EngineSpec, ("model_config", "checkpoint", "allow_random_weights", "random_seed",
                                              "library_path", "navigator", "navigator_normalize", "backend",
                                              "device", "precision", "engine_cache_dir", "sliding_window")),
    Section("vocabulary (LIVE)", EngineSpec),
    Section("retrieval (LIVE)", SegmenterSettings, ("top_k", "temperature", "metric")),
    Section("shift debouncing (LIVE)", SegmenterSettings,
            ("ema_alpha", "trigger", "switch_threshold", "threshold_mode", "switch_margin", "weight_change",
             "min_consecutive", "dwell_s", "cooldown_s", "embed_every_n", "embed_rest_every_n", "warmup_frames"),
            intro="Times are the frames' own (header stamps, see frame_time), so a bag replayed at any rate gives "
                  "the same swaps; a stamp jumping backwards (a looping bag) restarts the EMA, warm-up and timers "
                  "and keeps the active fusion. Defaults: the best measured on the shift scenarios "
                  "(docs/shifts.md)."),
    Section("adapter library (LIVE)", SegmenterSettings),
    Section("input / output", NodeSettings),
    Section("library coverage (LIVE, except the folder)", CoverageSettings,
            intro="Gap detection: a frame is \"uncovered\" when its embedding is farther from the nearest adapter "
                  "centroid than coverage_max_relative_distance x the library's median centroid spacing (or its "
                  "scale-free support is below coverage_min_scale_free_support). Published per embedded frame on "
                  "`coverage` (semla_ros/CoverageStatus): GAP_SUSPECTED at coverage_suspect_fraction of the last "
                  "coverage_window embedded frames, GAP (and a diagnostics WARN) at coverage_gap_fraction of a "
                  "full window."),
)
_NESTED = {"settings"}   # EngineSpec.settings: its fields are parameters of their own


def _section_fields(section: Section) -> list[FieldInfo]:
    declared = [f for f in fields.fields(section.owner) if f.name not in _NESTED]
    if section.names is not None:
        return [next(f for f in declared if f.name == name) for name in section.names]
    named = {n for s in SECTIONS if s.owner is section.owner and s.names for n in s.names}
    return [f for f in declared if f.name not in named]


def parameter_name(owner: type, name: str) -> str:
    return RENAMED.get((owner, name), PREFIXES.get(owner, "") + name)


def _spec(owner: type, info: FieldInfo) -> Spec:
    if info.kind in (int, float) and (info.low is None or info.high is None or info.low_open or info.high_open):
        raise TypeError(f"{owner.__name__}.{info.name}: a ROS parameter needs an inclusive range (low and high)")
    default = list(info.default) if info.kind is tuple else info.default
    return Spec(parameter_name(owner, info.name), default, info.help, read_only=not info.live, low=info.low,
                high=info.high, choices=tuple(info.choices),
                setting=info.name if owner is SegmenterSettings else None, info=info, owner=owner)


SPECS: tuple[Spec, ...] = tuple(_spec(section.owner, info) for section in SECTIONS for info in _section_fields(section))

SPEC_BY_NAME = {spec.name: spec for spec in SPECS}
SETTING_BY_PARAMETER = {spec.name: spec.setting for spec in SPECS if spec.setting}
# Parameters named coverage_<field> set that CoverageSettings field.
COVERAGE_BY_PARAMETER = {spec.name: spec.info.name for spec in SPECS if spec.owner is CoverageSettings}
# Parameters named like an EngineSpec field set that field.
ENGINE_PARAMETERS = tuple(spec.name for spec in SPECS if spec.owner is EngineSpec)


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
        reason = fields.check(dataclasses.replace(spec.info, name=name), value)
        if reason:
            return reason
        if name == "navigator":
            try:
                NavigatorSpec.parse(str(value))
            except ValueError as error:
                return f"navigator: {error}"
        if name == "image_topics":
            problem = cameras.camera_problem(value)
            if problem:
                return problem
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
    given = {name: values[name] for name in ENGINE_PARAMETERS}
    given["classes"] = tuple(clean_classes(given["classes"]))
    return EngineSpec(**given, settings=SegmenterSettings().replace(**settings_changes(values)))


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


# ---------------------------------------------------------------------------------- config/semla.yaml
BEGIN = "# >>> generated from the declared settings: python -m semla_ros.ros.parameters --write-config <file>"
END = "# <<< end of the generated parameters"
_INDENT, _WIDTH = "    ", 118


def _comment(text: str) -> list[str]:
    """Comment lines of `text` (its own line breaks kept; continuation lines indented like their first)."""
    out = []
    for line in text.split("\n"):
        lead = line[:len(line) - len(line.lstrip())]
        out += textwrap.wrap(line.strip(), _WIDTH - len(_INDENT) - 2, initial_indent=lead,
                             subsequent_indent=lead + "  " * bool(lead), break_on_hyphens=False) or [""]
    return [f"{_INDENT}# {line}".rstrip() for line in out]


def _scalar(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        plain = value and yaml.safe_load(f"k: {value}") == {"k": value} and not value.startswith(("[", "{", "#"))
        return value if plain and "," not in value else json.dumps(value)
    return repr(value)


def _value(name: str, value) -> list[str]:
    if not isinstance(value, (list, tuple)):
        return [f"{_INDENT}{name}: {_scalar(value)}"]
    lines, line = [], f"{_INDENT}{name}: ["
    pad = " " * len(line)
    items = [_scalar(v) for v in value]
    for i, item in enumerate(items):
        piece = item + ("]" if i == len(items) - 1 else ",")
        if len(line) + len(piece) + 1 > _WIDTH and not line.endswith("["):
            lines.append(line)
            line = pad
        line += ("" if line.endswith("[") or line == pad else " ") + piece
    return lines + [line]


def _facts(spec: Spec) -> str:
    info = spec.info
    facts = ["LIVE" if not spec.read_only else "READ-ONLY"]
    if info.choices:
        facts.append("one of: " + " | ".join(map(str, info.choices)))
    if info.range_text():
        facts.append(f"{info.kind.__name__} in {info.range_text()}")
    return ", ".join(facts) + "."


def render_parameters() -> str:
    """The documented parameter block of config/semla.yaml, from the declared settings (between BEGIN and END)."""
    lines = [BEGIN, "/**:", "  ros__parameters:"]
    for k, section in enumerate(SECTIONS):
        if k:
            lines.append("")
        lines.append(f"{_INDENT}# {'-' * 64} {section.title}")
        if section.intro:
            lines += _comment(section.intro)
        for info in _section_fields(section):
            spec = SPEC_BY_NAME[parameter_name(section.owner, info.name)]
            doc = info.doc if info.doc.endswith((".", ")")) else info.doc + "."
            lines += _comment(doc) + [f"{_INDENT}# {_facts(spec)}"] + _value(spec.name, spec.default)
    return "\n".join(lines + [END]) + "\n"


def with_rendered_parameters(text: str) -> str:
    """`text` (a config file) with its block between BEGIN and END replaced by render_parameters();
    everything before and after the markers stays as it is."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"no generated block: the file needs the lines {BEGIN!r} ... {END!r}")
    after = text[end + len(END):]
    return text[:start] + render_parameters() + after[1:] if after.startswith("\n") else \
        text[:start] + render_parameters() + after


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m semla_ros.ros.parameters", description=__doc__.split("\n")[0])
    parser.add_argument("--write-config", type=Path, metavar="YAML", help="regenerate the parameter block of YAML")
    parser.add_argument("--check-config", type=Path, metavar="YAML", help="exit 1 when YAML's block is stale")
    args = parser.parse_args(argv)
    if args.write_config:
        text = args.write_config.read_text()
        args.write_config.write_text(with_rendered_parameters(text))
    if args.check_config:
        text = args.check_config.read_text()
        if with_rendered_parameters(text) != text:
            print(f"{args.check_config}: stale; run --write-config", file=sys.stderr)
            return 1
    if not (args.write_config or args.check_config):
        print(render_parameters(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())

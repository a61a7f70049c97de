"""Settings declared once (core/fields.py): validation from the metadata, argparse options, and one setting
showing up with the same range in the settings, the ROS parameter table, the command-line tools and the yaml."""
from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pytest

from semla_ros.core import fields
from semla_ros.core.coverage import CoverageSettings
from semla_ros.core.fields import add_options, option_values, setting
from semla_ros.core.settings import TRIGGERS, SegmenterSettings
from semla_ros.engine.spec import EngineSpec
from semla_ros.evaluation.protocol import ProtocolSettings
from semla_ros.relabel.cluster import ClusterSettings
from semla_ros.relabel.job import RelabelSettings
from semla_ros.training.loop import LoopSettings
from semla_ros.training.lora import TrainSettings

REPO = Path(__file__).resolve().parents[1]
DECLARED = (SegmenterSettings, CoverageSettings, ProtocolSettings, ClusterSettings, RelabelSettings, LoopSettings,
            TrainSettings, EngineSpec)


@dataclass(frozen=True)
class Toy:
    count: int = setting(3, low=1, high=10, help="a count")
    rate: float = setting(0.5, low=0.0, low_open=True, help="a rate")
    mode: Literal["a", "b"] = setting("a", help="a mode")
    name: str = setting("x", pattern=r"[a-z]+", pattern_help="lower-case letters", help="a name")
    limit: int | None = setting(None, low=0, help="optional")
    flag: bool = setting(False, help="a flag")
    items: tuple[str, ...] = setting(("p", "q"), help="some items")

    def __post_init__(self):
        fields.validate(self)


@pytest.mark.parametrize("changes,message", [
    (dict(count=0), "count: 0 outside [1, 10]"),
    (dict(count=11), "count: 11 outside [1, 10]"),
    (dict(count=2.0), "count: expected int"),
    (dict(count=True), "count: expected int"),
    (dict(rate=0.0), "rate: 0.0 outside (0, inf)"),
    (dict(rate=math.nan), "rate: nan is not finite"),
    (dict(rate="1"), "rate: expected float"),
    (dict(mode="c"), "mode: 'c' is not one of a, b"),
    (dict(name="X1"), "name: 'X1' is not lower-case letters"),
    (dict(limit=-1), "limit: -1 outside [0, inf)"),
    (dict(flag=1), "flag: expected bool"),
    (dict(items="p"), "items: expected a list"),
])
def test_a_bad_value_names_the_field_the_value_and_what_is_allowed(changes, message):
    with pytest.raises(ValueError) as error:
        Toy(**changes)
    assert str(error.value).startswith(message), str(error.value)


def test_good_values_pass_numpy_numbers_included():
    toy = Toy(count=np.int64(10), rate=np.float32(2.0), mode="b", name="abc", limit=None, flag=np.bool_(True))
    assert toy.count == 10
    assert Toy(limit=0).limit == 0


def test_the_declared_settings_keep_their_defaults_and_refuse_bad_values():
    for cls in DECLARED:
        assert fields.fields(cls), cls           # every field declared, resolvable, defaults valid
        cls()
    assert SegmenterSettings().top_k == 5 and SegmenterSettings().trigger == "evidence"
    assert fields.field_info(SegmenterSettings, "trigger").choices == TRIGGERS
    for bad in (dict(top_k=0), dict(top_k=65), dict(ema_alpha=1.5), dict(trigger="cusum"), dict(dwell_s=-1.0)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            SegmenterSettings(**bad)
    with pytest.raises(ValueError, match="unknown SegmenterSettings fields"):
        SegmenterSettings().replace(top_kk=3)
    with pytest.raises(ValueError, match="device"):
        EngineSpec(device="gpu")
    with pytest.raises(ValueError, match="backend"):
        EngineSpec(backend="onnx")
    with pytest.raises(ValueError, match="scope"):
        RelabelSettings(scope="everything")
    with pytest.raises(ValueError, match="loss"):
        LoopSettings(loss="l2")
    with pytest.raises(ValueError, match="min_size"):
        ClusterSettings(min_size=0)
    with pytest.raises(ValueError, match="rate_hz"):
        ProtocolSettings(rate_hz=0.0)


def test_argparse_options_come_from_the_declaration():
    parser = argparse.ArgumentParser()
    add_options(parser, Toy)
    args = parser.parse_args([])
    assert Toy(**option_values(args, Toy)) == Toy()                  # defaults from the fields
    args = parser.parse_args(["--count", "7", "--mode", "b", "--flag", "--items", "u", "v", "--limit", "2"])
    assert Toy(**option_values(args, Toy)) == Toy(count=7, mode="b", flag=True, items=("u", "v"), limit=2)
    with pytest.raises(SystemExit):
        parser.parse_args(["--mode", "c"])                           # choices from the Literal
    help_text = parser.format_help()
    assert "a count; [1, 10]" in help_text and "(default: 3)" in help_text

    given = argparse.ArgumentParser()
    add_options(given, SegmenterSettings, defaults=False, exclude=("adapter_cache_mb",))
    assert option_values(given.parse_args([]), SegmenterSettings) == {}
    assert option_values(given.parse_args(["--dwell-s", "0.5"]), SegmenterSettings) == {"dwell_s": 0.5}
    with pytest.raises(SystemExit):
        given.parse_args(["--adapter-cache-mb", "1"])


def _dests(parser: argparse.ArgumentParser) -> set[str]:
    out = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                out |= _dests(sub)
        out.add(action.dest)
    return out


def test_semla_relabel_takes_every_segmenter_setting_and_they_reach_the_engine_spec():
    from semla_ros.cli.relabel import build_parser, engine_spec, relabel_settings

    parser = build_parser()
    assert {f.name for f in dataclasses.fields(SegmenterSettings)} <= _dests(parser)
    args = parser.parse_args(["drive.mcap", "--out", "o", "--model", "tiny", "--library", "lib",
                              "--trigger", "distance", "--dwell-s", "0.25", "--switch-margin", "0.1",
                              "--weight-change", "0.3", "--switch-threshold", "0.01", "--threshold-mode", "absolute",
                              "--min-consecutive", "1", "--top-k", "2", "--min-cluster-size", "4",
                              "--cluster-scale", "0.7", "--no-compare"])
    settings = engine_spec(args, []).settings
    assert settings == SegmenterSettings(trigger="distance", dwell_s=0.25, switch_margin=0.1, weight_change=0.3,
                                         switch_threshold=0.01, threshold_mode="absolute", min_consecutive=1, top_k=2)
    assert relabel_settings(args) == RelabelSettings(cluster=ClusterSettings(scale=0.7, min_size=4), compare=False)
    default = engine_spec(parser.parse_args(["d", "--out", "o", "--model", "tiny", "--library", "lib"]), [])
    assert default.settings == SegmenterSettings()
    assert (default.navigator, default.device, default.checkpoint) == ("tower", "cpu", "")   # offline defaults
    with pytest.raises(ValueError, match="device: 'gpu' is not auto, cpu, cuda or cuda:N"):
        engine_spec(parser.parse_args(["d", "--out", "o", "--model", "tiny", "--library", "lib", "--device", "gpu"]),
                    [])


def test_semla_eval_and_the_benchmarks_read_their_defaults_from_the_settings():
    from semla_ros.bench import fusion, library, onnx, tensorrt
    from semla_ros.cli.evaluate import NOT_REPLAYED, build_parser, settings_from

    parser = build_parser()
    args = parser.parse_args(["run", "--data", "d", "--model", "tiny", "--out", "o", "--trigger", "frame",
                              "--no-leave-one-out", "--max-images", "3"])
    settings = settings_from(args)
    assert settings.segmenter == SegmenterSettings(trigger="frame")
    assert (settings.leave_one_out, settings.max_images, settings.rate_hz) == (False, 3, ProtocolSettings().rate_hz)
    replayed = {f.name for f in dataclasses.fields(SegmenterSettings)} - set(NOT_REPLAYED)
    assert replayed <= _dests(parser) and not set(NOT_REPLAYED) & _dests(parser)
    for module in (fusion, library, onnx, tensorrt):
        source = Path(module.__file__).read_text()
        assert '"--top-k", type=int, default=' not in source, module.__name__


def test_one_setting_has_one_range_in_every_layer():
    pytest.importorskip("rclpy", reason="ROS 2 Python packages (rclpy) not installed")
    from semla_ros.cli.relabel import build_parser
    from semla_ros.ros import parameters

    yaml_text = (REPO / "config" / "semla.yaml").read_text()
    relabel_help = " ".join(build_parser().format_help().split())
    for info in fields.fields(SegmenterSettings):
        spec = parameters.SPEC_BY_NAME[parameters.parameter_name(SegmenterSettings, info.name)]
        assert (spec.default, spec.low, spec.high, spec.choices) == (info.default, info.low, info.high, info.choices)
        assert spec.read_only == (not info.live)
        descriptor = parameters.descriptor(spec)
        if info.kind is int:
            assert (descriptor.integer_range[0].from_value, descriptor.integer_range[0].to_value) == \
                (info.low, info.high)
        if info.kind is float:
            assert (descriptor.floating_point_range[0].from_value, descriptor.floating_point_range[0].to_value) == \
                (info.low, info.high)
        if info.range_text():
            assert f"{info.kind.__name__} in {info.range_text()}.\n    {spec.name}: " in yaml_text, info.name
            assert f"{info.range_text()}" in relabel_help, info.name
    top_k = parameters.SPEC_BY_NAME["top_k"]
    assert (top_k.low, top_k.high) == (1, 64)

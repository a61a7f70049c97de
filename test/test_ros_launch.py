"""launch/segment.launch.py and launch/demo.launch.py loaded by launch itself: arguments with descriptions
and choices, and the nodes they start.

launch/launch_ros are not on PyPI, so this runs only where a ROS 2 install provides them; the parameter
precedence and the launch files' structure are tested without them in test_ros_launch_arguments.py.
"""
import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("launch_ros", reason="launch_ros is not installable here (not on PyPI); "
                                         "the launch file is exercised on a real ROS 2 install")

from launch.actions import DeclareLaunchArgument, EmitEvent, OpaqueFunction, RegisterEventHandler  # noqa: E402
from launch_ros.actions import LifecycleNode, Node  # noqa: E402

from launch import LaunchContext  # noqa: E402
from semla_ros.ros.launch_arguments import ARGUMENT_BY_NAME  # noqa: E402

LAUNCH = Path(__file__).resolve().parents[1] / "launch"


def _description(name):
    spec = importlib.util.spec_from_file_location(name.replace(".", "_"), LAUNCH / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.generate_launch_description()


def _expand(description, **given):
    """The actions the OpaqueFunction returns, with the arguments' defaults (and `given`) in the context."""
    context = LaunchContext()
    for entity in description.entities:
        if isinstance(entity, DeclareLaunchArgument):
            context.launch_configurations[entity.name] = given.get(entity.name,
                                                                   entity.default_value[0].text
                                                                   if entity.default_value else "")
    opaque = next(e for e in description.entities if isinstance(e, OpaqueFunction))
    return opaque.execute(context) or []


def test_segment_arguments_have_descriptions_and_choices():
    arguments = {e.name: e for e in _description("segment.launch.py").entities
                 if isinstance(e, DeclareLaunchArgument)}
    assert set(arguments) == set(ARGUMENT_BY_NAME)
    for argument in arguments.values():
        assert argument.description and argument.description != "no description given"
    assert set(arguments["backend"].choices) == {"", "auto", "torch", "onnxruntime", "tensorrt"}
    assert "info" in arguments["log_level"].choices
    assert Path(arguments["params_file"].default_value[0].text).name == "semla.yaml"
    assert arguments["namespace"].default_value[0].text == "semla"


def test_segment_runs_the_node_with_the_params_file_first():
    [node] = [e for e in _expand(_description("segment.launch.py"), device="cpu") if isinstance(e, Node)]
    assert node.node_package == "semla_ros" and node.node_executable == "semla_segmenter"


def test_segment_managed_starts_the_lifecycle_node_and_configures_it():
    actions = _expand(_description("segment.launch.py"), managed="true")
    [node] = [e for e in actions if isinstance(e, LifecycleNode)]
    assert node.node_executable == "semla_segmenter_managed"
    assert [type(e) for e in actions] == [LifecycleNode, RegisterEventHandler, EmitEvent]


def test_demo_declares_its_arguments():
    arguments = {e.name for e in _description("demo.launch.py").entities if isinstance(e, DeclareLaunchArgument)}
    assert arguments == {"sequence", "rate_hz", "device", "log_level"}

"""launch/segment.launch.py: arguments with descriptions and choices, the node and its remapping.

launch/launch_ros are not on PyPI, so this runs only where a ROS 2 install provides them.
"""
import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("launch_ros", reason="launch_ros is not installable here (not on PyPI); "
                                         "the launch file is exercised on a real ROS 2 install")

from launch.actions import DeclareLaunchArgument  # noqa: E402
from launch_ros.actions import Node  # noqa: E402

LAUNCH_FILE = Path(__file__).resolve().parents[1] / "launch" / "segment.launch.py"


def _description():
    spec = importlib.util.spec_from_file_location("segment_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.generate_launch_description()


def test_arguments_have_descriptions_and_choices():
    arguments = {e.name: e for e in _description().entities if isinstance(e, DeclareLaunchArgument)}
    assert set(arguments) == {"image_topic", "params_file", "namespace", "backend", "device", "log_level"}
    for argument in arguments.values():
        assert argument.description and argument.description != "no description given"
    assert set(arguments["backend"].choices) == {"torch", "tensorrt"}
    assert "info" in arguments["log_level"].choices
    assert Path(arguments["params_file"].default_value[0].text).name == "semla.yaml"
    assert arguments["namespace"].default_value[0].text == "semla"


def test_runs_the_segmenter_node():
    nodes = [e for e in _description().entities if isinstance(e, Node)]
    assert len(nodes) == 1
    node = nodes[0]
    assert node.node_package == "semla_ros" and node.node_executable == "semla_segmenter"

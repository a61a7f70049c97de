"""The launch arguments of segment.launch.py and how they become the node's parameters.

Why a plain module: launch_ros is only on a ROS 2 install, and the one rule that matters here must be
testable anywhere: a launch argument the user did not give never overrides the params file. Every
node-parameter argument defaults to '' ("not given"); the node gets the params file first and then
only the arguments that were given, so those win over the file (what a user typing them expects)
and nothing else does. Standard library only: the launch file runs under the system Python, which
may not see the ML packages of the node's environment.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

NOT_GIVEN = ""


@dataclass(frozen=True)
class Argument:
    name: str
    description: str
    default: str = NOT_GIVEN
    choices: tuple[str, ...] = ()
    parameter: str | None = None   # the node parameter this argument sets when given
    is_list: bool = False           # a string-array parameter: '[a, b]' or 'a,b' on the command line


# Choices agree with engine.spec.BACKENDS and the launch levels of rcutils (test_ros_launch_arguments.py).
ARGUMENTS: tuple[Argument, ...] = (
    Argument("image_topic", "Input sensor_msgs/Image topic (image_topic/compressed when input_transport is "
             "compressed) of the single camera", default="/camera/image_raw"),
    Argument("image_topics", "Several cameras, one model: their namespaces, e.g. [front,left,right] (camera front "
             "reads <namespace>/front/image and publishes <namespace>/front/mask, ...); '' = as in params_file",
             parameter="image_topics", is_list=True),
    Argument("params_file", "Parameter file of the node (every parameter documented in config/semla.yaml; "
             "config/semla_official.yaml is the official SemLA set-up). Default: config/semla.yaml"),
    Argument("namespace", "Namespace of the node and its topics (mask, support_score, fusion, class_map, "
             "overlay)", default="semla"),
    Argument("checkpoint", "CAT-Seg weights (.pth of the CAT-Seg release, e.g. model_large.pth, or .safetensors); "
             "'' = as in params_file", parameter="checkpoint"),
    Argument("library", "Adapter library directory (SemLA loradb layout); '' = as in params_file",
             parameter="library_path"),
    Argument("model_config", "CAT-Seg configuration: tiny, vitb16_384, vitl14_336 or a config JSON path; "
             "'' = as in params_file", parameter="model_config"),
    Argument("navigator", "Domain embedder, e.g. openclip:ViT-L-14/openai=/path/ViT-L-14.pt or tower; "
             "'' = as in params_file", parameter="navigator"),
    Argument("backend", "Inference backend; '' = as in params_file",
             choices=(NOT_GIVEN, "auto", "torch", "onnxruntime", "tensorrt"),
             parameter="backend"),
    Argument("device", "auto (cuda if available), cpu, cuda or cuda:N; '' = as in params_file",
             parameter="device"),
    Argument("log_level", "Logging level of the node (debug shows per-frame timings and the engine's records)",
             default="info", choices=("debug", "info", "warn", "error", "fatal")),
    Argument("managed", "true: the lifecycle node (semla_segmenter_managed), driven to active by launch's lifecycle "
             "events (configure, then activate once inactive); false: the node configures and activates itself",
             default="false", choices=("true", "false")),
)
ARGUMENT_BY_NAME = {argument.name: argument for argument in ARGUMENTS}


def executable(values: Mapping[str, str]) -> str:
    """The executable the `managed` argument asks for."""
    return "semla_segmenter_managed" if values.get("managed") == "true" else "semla_segmenter"


def text_list(text: str) -> list[str]:
    """'[front, left,right]' or 'front,left' -> ['front', 'left', 'right'] (quotes and blanks around names dropped)."""
    inner = text.strip()
    if inner.startswith("[") and inner.endswith("]"):
        inner = inner[1:-1]
    return [item.strip().strip("'\"") for item in inner.split(",")] if inner.strip() else []


def given_parameters(values: Mapping[str, str | list[str]]) -> dict[str, str | list[str]]:
    """The node parameters set by the launch arguments the user gave (non-empty), under their parameter names."""
    return {argument.parameter: text_list(values[argument.name]) if argument.is_list else values[argument.name]
            for argument in ARGUMENTS if argument.parameter and values.get(argument.name, NOT_GIVEN) != NOT_GIVEN}


def node_parameters(params_file: str, values: Mapping[str, str]) -> list:
    """The node's `parameters=[...]`, in precedence order (later entries win): the params file, then
    the given arguments. An argument left at '' is absent, so the file's value stays in force."""
    given = given_parameters(values)
    return [params_file, given] if given else [params_file]

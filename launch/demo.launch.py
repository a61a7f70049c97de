"""The built-in demo with one command: the demo camera and the segmenter node on the demo assets.

    ros2 launch semla_ros demo.launch.py
    ros2 topic echo /semla/fusion          # one message per adapter swap
    ros2 run rqt_image_view rqt_image_view /semla/overlay

First the demo assets are built (a small CAT-Seg and one LoRA per domain of the procedural world; a
few minutes on a CPU the first time, cached afterwards under ~/.cache/semla_ros/demo) and the node's
params file is written (`python3 -m semla_ros.demo.node_parameters`, the same parameters `semla-demo`
uses). When that step succeeds, the camera (/demo/image, looping through the domains) and the node
(/semla, image remapped to /demo/image) start; when it fails, the launch stops with its output above.
`python3` is the interpreter of the node's environment (the venv of the README's install recipe).
"""
import os
import tempfile

from launch.actions import (
    DeclareLaunchArgument,
    EmitEvent,
    ExecuteProcess,
    LogInfo,
    OpaqueFunction,
    RegisterEventHandler,
)
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription

PARAMS_FILE = os.path.join(tempfile.gettempdir(), f"semla_demo_node_params_{os.getpid()}.yaml")


def _start(context):
    value = {name: LaunchConfiguration(name).perform(context)
             for name in ("sequence", "rate_hz", "device", "log_level")}
    camera_parameters = {"rate_hz": float(value["rate_hz"]), "loop": True}
    if value["sequence"]:
        camera_parameters["sequence"] = value["sequence"]
    camera = Node(package="semla_ros", executable="semla_demo_camera", name="demo_camera", namespace="demo",
                  output="screen", parameters=[camera_parameters])
    segmenter = Node(package="semla_ros", executable="semla_segmenter", name="semla_segmenter", namespace="semla",
                     output="screen", emulate_tty=True, parameters=[PARAMS_FILE],
                     remappings=[("image", "/demo/image")],
                     arguments=["--ros-args", "--log-level", value["log_level"]])
    assets = ExecuteProcess(cmd=["python3", "-m", "semla_ros.demo.node_parameters", PARAMS_FILE,
                                 "--device", value["device"]], name="demo_assets", output="screen")

    def after_assets(event, _context):
        if event.returncode == 0:
            return [camera, segmenter]
        return [LogInfo(msg=f"demo assets failed (exit code {event.returncode}); see the output above"),
                EmitEvent(event=Shutdown(reason="demo assets failed"))]

    return [assets, RegisterEventHandler(OnProcessExit(target_action=assets, on_exit=after_assets))]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        DeclareLaunchArgument("sequence", default_value="",
                              description="Domains and seconds the camera plays, e.g. clear:8,fog:9,night:9 "
                                          "('' = the demo camera's default sequence)"),
        DeclareLaunchArgument("rate_hz", default_value="10.0", description="Camera frame rate"),
        DeclareLaunchArgument("device", default_value="cpu",
                              description="Device of the segmenter: cpu, cuda, cuda:N or auto"),
        DeclareLaunchArgument("log_level", default_value="info",
                              choices=["debug", "info", "warn", "error", "fatal"],
                              description="Logging level of the segmenter node"),
        OpaqueFunction(function=_start),
    ])

"""The `ros2 run semla_ros ...` executables: signals and `--help` first, then the node module.

Why a separate module: `--help` must print usage and exit 0 without starting ROS, and a SIGINT while the
node module imports rclpy and torch must end the process with exit code 0 (semla_ros.ros.process), so
nothing heavy is imported before both are settled.
"""
from __future__ import annotations

import sys

from semla_ros.ros.process import exit_on_signal_while_starting, wants_help

SEGMENTER_USAGE = """\
usage: ros2 run semla_ros {executable} [-h] [--ros-args --params-file FILE -p NAME:=VALUE -r image:=TOPIC]

{what}
Launch file: ros2 launch semla_ros segment.launch.py image_topic:=/camera/image_raw [managed:=true]
  (config/semla.yaml documents every parameter; managed:=true starts semla_segmenter_managed and drives it
  to active with lifecycle events)

Topics (relative to the node's namespace, /semla under the launch file):
  subscribes  image (sensor_msgs/Image), or image/compressed with input_transport:=compressed
  publishes   mask, overlay (sensor_msgs/Image), support_score, fusion, class_map, coverage (semla_ros/msg),
              /diagnostics (diagnostic_msgs/DiagnosticArray)
  QoS of image, mask, support_score, overlay, coverage: qos_overrides.<topic>.<publisher|subscription>.<policy>
Services: ~/adapt_now, ~/reload_library (std_srvs/Trigger); lifecycle: ~/change_state, ~/get_state, ...
  ros2 lifecycle set /semla/semla_segmenter configure   (then activate, deactivate, cleanup, shutdown)

Parameters (name, default, live or restart):
{parameters}
"""
SEGMENTER_WHAT = {
    "semla_segmenter": "Open-vocabulary segmentation (CAT-Seg) adapting to the camera's domain (SemLA). Starts "
                       "active:\nconfigures (loads the model) and activates itself.",
    "semla_segmenter_managed": "The managed (lifecycle) semla_segmenter: starts unconfigured; configure loads "
                               "the model,\nactivate subscribes and publishes, deactivate pauses (model kept), "
                               "cleanup frees the model.",
}

DEMO_CAMERA_USAGE = """\
usage: ros2 run semla_ros semla_demo_camera [-h] [--ros-args -p NAME:=VALUE]

The built-in demo world's camera: plays a sequence of domains at a fixed rate.
Launch file: ros2 launch semla_ros demo.launch.py (the camera and the segmenter on the demo assets)

Topics: publishes image (sensor_msgs/Image rgb8) and ground_truth (mono8 class ids, same header)
Parameters (all read-only):
  sequence              domains and seconds, e.g. clear:8,fog:9,night:9 (default: the demo sequence)
  rate_hz               frame rate (10.0)
  height, width         frame size in pixels
  seed_base             seed of the first rendered frame
  frame_id              header.frame_id of the frames (demo_camera)
  loop                  start the sequence again at its end (true)
  frame_log             append one JSON line per frame (stamp, index, domain, seed) to this file ('')
  wait_for_subscribers  hold frame 0 until image has this many subscribers (0)
"""


def segmenter_usage(executable: str) -> str:
    from semla_ros.ros import parameters  # the one table of parameters; imported for the help only

    rows = [f"  {spec.name:<34} {spec.default!r:<22} {'restart' if spec.read_only else 'live'}"
            for spec in parameters.SPECS]
    return SEGMENTER_USAGE.format(executable=executable, what=SEGMENTER_WHAT[executable], parameters="\n".join(rows))


def segmenter(argv: list[str] | None = None) -> int:
    """`semla_segmenter`: the node, configured and activated at start."""
    return _segmenter("semla_segmenter", sys.argv if argv is None else argv, managed=False)


def segmenter_managed(argv: list[str] | None = None) -> int:
    """`semla_segmenter_managed`: the same node left unconfigured for a lifecycle manager."""
    return _segmenter("semla_segmenter_managed", sys.argv if argv is None else argv, managed=True)


def _segmenter(executable: str, argv: list[str], managed: bool) -> int:
    exit_on_signal_while_starting()
    if wants_help(argv):
        print(segmenter_usage(executable))
        return 0
    from semla_ros.ros.node import main

    return main(argv, managed=managed)


def demo_camera(argv: list[str] | None = None) -> int:
    """`semla_demo_camera`."""
    argv = sys.argv if argv is None else argv
    exit_on_signal_while_starting()
    if wants_help(argv):
        print(DEMO_CAMERA_USAGE)
        return 0
    from semla_ros.ros.demo_camera import main

    return main(argv)

"""Run the semla_segmenter node with its parameter file, remapped onto a camera topic.

    ros2 launch semla_ros segment.launch.py image_topic:=/camera/color/image_raw device:=cuda
"""
import os

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def _default_params_file() -> str:
    """config/semla.yaml of the installed package, or of this source tree when run from it."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

        try:
            return os.path.join(get_package_share_directory("semla_ros"), "config", "semla.yaml")
        except PackageNotFoundError:
            pass
    except ImportError:
        pass
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "config", "semla.yaml")


def generate_launch_description() -> LaunchDescription:
    arguments = [
        DeclareLaunchArgument("image_topic", default_value="/camera/image_raw",
                              description="Input sensor_msgs/Image topic (image_topic/compressed when "
                                          "input_transport is compressed)"),
        DeclareLaunchArgument("params_file", default_value=_default_params_file(),
                              description="Parameter file of the node (every parameter documented there)"),
        DeclareLaunchArgument("namespace", default_value="semla",
                              description="Namespace of the node and its topics (mask, support_score, "
                                          "fusion, overlay)"),
        DeclareLaunchArgument("backend", default_value="torch", choices=["torch", "tensorrt"],
                              description="Inference backend"),
        DeclareLaunchArgument("device", default_value="auto",
                              description="auto (cuda if available), cpu, cuda or cuda:N"),
        DeclareLaunchArgument("log_level", default_value="info",
                              choices=["debug", "info", "warn", "error", "fatal"],
                              description="Logging level of the node"),
    ]
    image_topic = LaunchConfiguration("image_topic")
    node = Node(
        package="semla_ros",
        executable="semla_segmenter",
        name="semla_segmenter",
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        emulate_tty=True,
        parameters=[LaunchConfiguration("params_file"),
                    {"backend": LaunchConfiguration("backend"), "device": LaunchConfiguration("device")}],
        remappings=[("image", image_topic), ("image/compressed", [image_topic, "/compressed"])],
        arguments=["--ros-args", "--log-level", LaunchConfiguration("log_level")],
    )
    return LaunchDescription(arguments + [node])

"""Run the semla_segmenter node with its parameter file, remapped onto a camera topic.

    ros2 launch semla_ros segment.launch.py image_topic:=/camera/color/image_raw \
        checkpoint:=/opt/semla/weights/model_large.pth library:=/opt/semla/loradb
    ros2 launch semla_ros segment.launch.py \
        params_file:=$(ros2 pkg prefix semla_ros)/share/semla_ros/config/semla_official.yaml
    ros2 launch semla_ros segment.launch.py managed:=true   # lifecycle node, configured + activated by events
    ros2 launch semla_ros segment.launch.py image_topics:=[front,left,right]   # three cameras, one model

With image_topics, camera `front` reads /semla/front/image and publishes /semla/front/mask, support_score,
class_map, overlay and coverage (`fusion` and /diagnostics stay one for the node); image_topic (the single
camera's remapping of `image`) then does not apply. A driver publishing elsewhere is remapped in the caller's
launch file (`remappings=[("front/image", "/cam_front/color/image_raw"), ...]`) or relayed.

The arguments and the precedence rule live in semla_ros.ros.launch_arguments: the params file comes
first, then only the node-parameter arguments that were given, so a launch default never overrides a
value in the user's params file.
"""
import os

from launch.actions import DeclareLaunchArgument, EmitEvent, OpaqueFunction, RegisterEventHandler
from launch.events import matches_action
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from lifecycle_msgs.msg import Transition

from launch import LaunchDescription
from semla_ros.ros.launch_arguments import ARGUMENTS, executable, node_parameters


def _default_params_file() -> str:
    """config/semla.yaml of the installed package, or of this source tree when run from it."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

        try:
            return os.path.join(get_package_share_directory("semla_ros"), "config", "semla.yaml")
        except (PackageNotFoundError, OSError):   # not installed, or no ROS environment (AMENT_PREFIX_PATH)
            pass
    except ImportError:
        pass
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "config", "semla.yaml")


def _node(context):
    values = {argument.name: LaunchConfiguration(argument.name).perform(context) for argument in ARGUMENTS}
    params_file = values["params_file"] or _default_params_file()
    image_topic = values["image_topic"]
    managed = executable(values) == "semla_segmenter_managed"
    node = (LifecycleNode if managed else Node)(
        package="semla_ros",
        executable=executable(values),
        name="semla_segmenter",
        namespace=values["namespace"],
        output="screen",
        emulate_tty=True,
        parameters=node_parameters(params_file, values),
        remappings=[("image", image_topic), ("image/compressed", image_topic + "/compressed")],
        arguments=["--ros-args", "--log-level", values["log_level"]],
    )
    return [node, *_drive_to_active(node)] if managed else [node]


def _drive_to_active(node):
    """launch_ros' lifecycle events, as nav2's lifecycle manager does with autostart: configure at start,
    activate once the configure has reached inactive (a failed configure leaves it unconfigured)."""
    def change(transition_id):
        return EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node), transition_id=transition_id))

    return [RegisterEventHandler(OnStateTransition(target_lifecycle_node=node, start_state="configuring",
                                                   goal_state="inactive",
                                                   entities=[change(Transition.TRANSITION_ACTIVATE)])),
            change(Transition.TRANSITION_CONFIGURE)]


def generate_launch_description() -> LaunchDescription:
    defaults = {"params_file": _default_params_file()}
    arguments = [DeclareLaunchArgument(a.name, default_value=defaults.get(a.name, a.default),
                                       description=a.description, choices=list(a.choices) or None)
                 for a in ARGUMENTS]
    return LaunchDescription(arguments + [OpaqueFunction(function=_node)])

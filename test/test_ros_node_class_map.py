"""The class map (semla_ros/ClassMap on `class_map`, transient-local): what mask values mean, published with
the first mask of every vocabulary and stamped with that mask's header. Node in its own process.

What is asserted: before any change, one map (version 1, the start classes, mono8) whose header is the
first mask's; a live `classes` change brings version 2 whose header is the first mask segmented with the
new vocabulary (every later mask uses only its ids, an earlier one used more); setting the same
vocabulary again publishes nothing; a subscriber that joins late gets exactly the map in force.
"""
from __future__ import annotations

import pytest

pytest.importorskip("rclpy", reason="ROS 2 Python packages (rclpy) not installed")

from ros_harness import TEST_CLASSES, tiny_node_params  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def _stamp(header) -> tuple[int, int]:
    return header.stamp.sec, header.stamp.nanosec


def test_class_map_before_and_after_a_vocabulary_change(tmp_path, probe, run_node, run_camera):
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from semla_ros.msg import ClassMap

    latched = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    node = run_node(tiny_node_params(navigator="tower"))
    maps = probe.collect(ClassMap, "/t/class_map", latched)
    masks = probe.collect(Image, "/t/mask", QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE))
    probe.watch_diagnostics()
    probe.wait_running(node)
    assert maps == [], "a class map before any frame was segmented"
    run_camera("day:0", 5)
    probe.spin_until(lambda: len(masks) >= 3 and maps, 60, "masks and a class map")
    first = maps[0]
    assert (list(first.class_names), first.vocabulary_version, first.mask_encoding) == (TEST_CLASSES, 1, "mono8")
    assert first.header == min(masks, key=lambda m: _stamp(m.header)).header
    assert any(max(m.data) >= 2 for m in masks), "precondition: the 4-class masks use ids past 1"

    client = probe.node.create_client(SetParameters, "/t/semla_segmenter/set_parameters")
    probe.spin_until(client.service_is_ready, 10, "set_parameters")

    def set_classes(names):
        future = client.call_async(SetParameters.Request(
            parameters=[Parameter("classes", value=names).to_parameter_msg()]))
        probe.spin_until(future.done, 60, "the reply")
        assert future.result().results[0].successful, future.result().results[0].reason

    set_classes(["road", "sky"])
    probe.spin_until(lambda: len(maps) >= 2, 60, "the class map of the new vocabulary")
    second = maps[1]
    assert (list(second.class_names), second.vocabulary_version, second.mask_encoding) == (["road", "sky"], 2,
                                                                                          "mono8")
    seen = len(masks)
    probe.spin_until(lambda: len(masks) >= seen + 3, 60, "masks after the change")
    boundary = _stamp(second.header)
    assert any(m.header == second.header for m in masks), "the map's header is not a mask's header"
    after = [m for m in masks if _stamp(m.header) >= boundary]
    before = [m for m in masks if _stamp(m.header) < boundary]
    assert after and all(max(m.data) <= 1 for m in after)
    assert any(max(m.data) >= 2 for m in before)

    set_classes(["road", "sky"])   # the same vocabulary: no new map
    seen = len(masks)
    probe.spin_until(lambda: len(masks) >= seen + 3, 60, "masks after setting the same vocabulary")
    assert len(maps) == 2

    late = probe.collect(ClassMap, "/t/class_map", latched)
    probe.spin_until(lambda: late, 10, "the latched class map for a late subscriber")
    probe.spin_for(0.5)
    assert len(late) == 1 and late[0].vocabulary_version == 2 and late[0].header == second.header
    code, _ = node.stop()
    assert code == 0, node.log()

"""input_transport=compressed: the node subscribes to image/compressed, decodes (core/frames.py),
masks at the decoded size with the input header; undecodable data is dropped and counted."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

pytest.importorskip("rclpy", reason="ROS 2 Python packages (rclpy) not installed")

from ros_harness import FRAME_SIZE, tiny_node_params  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]   # each test starts the node in its own process


def test_compressed_input(tmp_path, probe, run_node):
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CompressedImage, Image

    from semla_ros.ros.synthetic_camera import render

    height, width = FRAME_SIZE
    node = run_node(tiny_node_params(navigator="tower", input_transport="compressed",
                                     input_qos="default", input_qos_depth=10))
    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    publisher = probe.node.create_publisher(CompressedImage, "/t/image/compressed", reliable)
    masks = probe.collect(Image, "/t/mask", reliable)
    probe.watch_diagnostics()
    probe.wait_running(node)
    probe.spin_until(lambda: publisher.get_subscription_count() > 0, 10, "the node's subscription")
    ok, jpeg = cv2.imencode(".jpg", np.ascontiguousarray(render("day", height, width)[..., ::-1]))
    assert ok

    def send(data, frame_id):
        msg = CompressedImage(format="jpeg", data=data)
        msg.header.frame_id = frame_id
        msg.header.stamp = probe.node.get_clock().now().to_msg()
        publisher.publish(msg)
        return msg.header

    first = send(jpeg.tobytes(), "jpeg-1")
    probe.spin_until(lambda: len(masks) >= 1, 60, "the mask of the first jpeg")
    send(b"\xff\xd8 definitely not a jpeg", "garbage")
    second = send(jpeg.tobytes(), "jpeg-2")
    probe.spin_until(lambda: len(masks) >= 2, 60, "the mask of the second jpeg")
    probe.spin_until(lambda: probe.diag().get("frames_bad_decode_failed") == "1", 10, "the garbage counted")
    code, _ = node.stop()
    assert code == 0
    assert [m.header for m in masks] == [first, second]
    assert all((m.height, m.width, m.encoding) == (height, width, "mono8") for m in masks)

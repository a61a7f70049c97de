"""The node's frame time for the shift timers: header stamps, the node clock for unstamped frames or on request."""
from __future__ import annotations

import pytest

pytest.importorskip("rclpy", reason="ROS 2 Python packages (rclpy) not installed")

from std_msgs.msg import Header  # noqa: E402

from semla_ros.ros.node import frame_seconds  # noqa: E402


def header(sec, nanosec):
    h = Header()
    h.stamp.sec, h.stamp.nanosec = sec, nanosec
    return h


def test_header_stamp_is_the_frames_time():
    assert frame_seconds(header(1_700_000_000, 250_000_000), 5.0, "header") == (1_700_000_000.25, False)
    # a bag played at any rate keeps its stamps: the same frame has the same time whatever the clock says
    assert frame_seconds(header(12, 0), 999.0, "header") == frame_seconds(header(12, 0), 0.5, "header")


def test_unstamped_frames_fall_back_to_the_node_clock_and_say_so():
    assert frame_seconds(header(0, 0), 42.5, "header") == (42.5, True)


def test_clock_mode_uses_the_node_clock_at_arrival():
    assert frame_seconds(header(12, 0), 42.5, "clock") == (42.5, False)

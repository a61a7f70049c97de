"""Bad frames are dropped and counted; the good frames around them still get masks.

The node runs in its own process (tiny model, no library). This process publishes, reliably and in
order: good, unsupported encoding, good, wrong step, good, zero size, good, truncated data, good,
an 8K frame (7680x4320 mono8 with all its 33 MB), good - waiting for each good frame's mask
before going on. Asserted: a mask for every good frame with its header and size; no mask for any
bad frame; /diagnostics counts exactly one bad frame of each kind (frames_bad == 5) and
frames_processed == 6; the node reports a WARN (no library) but never ERROR and keeps running.
"""
from __future__ import annotations

import array

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="ROS 2 Python packages (rclpy) not installed")

from ros_harness import FRAME_SIZE, tiny_node_params  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]   # each test starts the node in its own process


def _image(height, width, encoding, channels, step=None, data=None, frame_id="good"):
    from sensor_msgs.msg import Image

    step = width * channels if step is None else step
    msg = Image(height=height, width=width, encoding=encoding, step=step)
    msg.header.frame_id = frame_id
    msg.data = array.array("B", bytes(step * height) if data is None else data)
    return msg


def test_bad_frames_dropped_and_counted(tmp_path, probe, run_node):
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    height, width = FRAME_SIZE
    node = run_node(tiny_node_params(navigator="tower", input_qos="default", input_qos_depth=20))
    reliable = QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE)
    publisher = probe.node.create_publisher(Image, "/t/image", reliable)
    masks = probe.collect(Image, "/t/mask", reliable)
    probe.watch_diagnostics()
    probe.wait_running(node)
    probe.spin_until(lambda: publisher.get_subscription_count() > 0, 10, "the node's subscription")

    rng = np.random.default_rng(0)
    good_rgb = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8).tobytes()
    bad_frames = {
        "unsupported_encoding": _image(height, width, "yuv422", 2, frame_id="bad"),
        "bad_step": _image(height, width, "rgb8", 3, step=width * 3 - 3,
                           data=bytes((width * 3 - 3) * height), frame_id="bad"),
        "zero_size": _image(0, 0, "rgb8", 3, frame_id="bad"),
        "truncated": _image(height, width, "rgb8", 3, data=good_rgb[:-100], frame_id="bad"),
        "too_large": _image(4320, 7680, "mono8", 1, frame_id="bad"),
    }
    sent_good = []

    def send_good(index):
        msg = _image(height, width, "rgb8", 3, data=good_rgb, frame_id=f"good-{index}")
        msg.header.stamp = probe.node.get_clock().now().to_msg()
        sent_good.append(msg.header.frame_id)
        publisher.publish(msg)
        probe.spin_until(lambda: any(m.header.frame_id == msg.header.frame_id for m in masks), 90,
                         f"the mask of {msg.header.frame_id}")

    send_good(0)
    for index, (_kind, bad) in enumerate(bad_frames.items(), start=1):
        publisher.publish(bad)
        send_good(index)

    expected = {f"frames_bad_{kind}": "1" for kind in bad_frames}
    probe.spin_until(lambda: all(probe.diag().get(k) == v for k, v in expected.items())
                     and probe.diag().get("frames_processed") == "6", 30,
                     "diagnostics to count the bad frames")
    diag = probe.diag()
    code, _ = node.stop()
    assert code == 0, node.log()
    assert [m.header.frame_id for m in masks] == sent_good  # one mask per good frame, in order
    assert all((m.height, m.width, m.encoding) == (height, width, "mono8") for m in masks)
    assert diag["frames_bad"] == "5" and diag["frames_processed"] == "6"
    assert diag["frames_received"] == "11"
    assert diag["level"] == 1, diag  # WARN: no library configured; bad frames are not an error
    assert diag["state"] == "running"
    log = node.log()
    assert "dropped bad frame" in log and "unsupported_encoding" in log  # the throttled log line

"""The demo camera: the sequence it plays and the real node's topics."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from semla_ros.demo import world
from semla_ros.demo.sequence import DomainSequence

REPO = Path(__file__).resolve().parents[1]


def test_sequence_maps_frames_to_domains_and_wraps():
    seq = DomainSequence.parse("clear:1,fog:0.5, night:2", rate_hz=10)
    assert seq.frames_per_segment() == [10, 5, 20] and seq.num_frames == 35 and seq.duration_s == 3.5
    assert [seq.domain_at(i) for i in (0, 9, 10, 14, 15, 34, 35)] == \
        ["clear", "clear", "fog", "fog", "night", "night", "clear"]
    assert seq.seed_at(3) != seq.seed_at(4)


@pytest.mark.parametrize("text,reason", [
    ("clear:2,mars:3", "unknown domain 'mars'"), ("clear", "domain:seconds"),
    ("clear:abc", "not a number"), ("clear:0.01", "shorter than one frame"), ("", "empty"),
])
def test_bad_sequence_is_a_clear_error(text, reason):
    with pytest.raises(ValueError, match=reason):
        DomainSequence.parse(text)


@pytest.mark.ros   # the demo camera in its own process
def test_camera_node_publishes_image_and_exact_ground_truth(ros_domain_id, tmp_path):
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    log = tmp_path / "frames.jsonl"
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    camera = subprocess.Popen(
        [sys.executable, "-m", "semla_ros.ros.demo_camera", "--ros-args", "-r", "__ns:=/cam",
         "-p", "sequence:=fog:0.3,night:0.3", "-p", "rate_hz:=20.0", "-p", "height:=48", "-p", "width:=64",
         "-p", f"frame_log:={log}"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    rclpy.init()
    node = rclpy.create_node("camera_probe")
    got: dict[str, dict] = {"image": {}, "truth": {}}
    qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
    key = lambda m: (m.header.stamp.sec, m.header.stamp.nanosec)  # noqa: E731
    node.create_subscription(Image, "/cam/image", lambda m: got["image"].__setitem__(key(m), m), qos)
    node.create_subscription(Image, "/cam/ground_truth", lambda m: got["truth"].__setitem__(key(m), m), qos)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(set(got["image"]) & set(got["truth"])) < 15:
            rclpy.spin_once(node, timeout_sec=0.1)
    finally:
        camera.terminate()
        out = camera.communicate(timeout=10)[0]
        node.destroy_node()
        rclpy.shutdown()
    both = sorted(set(got["image"]) & set(got["truth"]))
    assert len(both) >= 15, out
    frames = {(r["sec"], r["nanosec"]): r for r in map(json.loads, log.read_text().splitlines())}
    domains = set()
    for stamp in both:
        img, truth, rec = got["image"][stamp], got["truth"][stamp], frames[stamp]
        assert img.encoding == "rgb8" and truth.encoding == "mono8"
        assert img.header.frame_id == truth.header.frame_id == "demo_camera"
        expected = world.render(rec["domain"], rec["seed"], size=(48, 64))
        np.testing.assert_array_equal(np.frombuffer(truth.data, np.uint8).reshape(48, 64), expected.labels)
        np.testing.assert_array_equal(np.frombuffer(img.data, np.uint8).reshape(48, 64, 3), expected.image)
        domains.add(rec["domain"])
    assert domains == {"fog", "night"}

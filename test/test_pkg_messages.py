"""The custom messages: importable, and carried between two real processes."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.ros

PUBLISHER = textwrap.dedent(
    """
    import time, rclpy
    from rclpy.qos import QoSProfile, DurabilityPolicy, ReliabilityPolicy
    from semla_ros.msg import SupportScore, AdapterFusion

    rclpy.init()
    node = rclpy.create_node("msg_test_pub")
    latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                         reliability=ReliabilityPolicy.RELIABLE)
    score_pub = node.create_publisher(SupportScore, "support_score", 10)
    fusion_pub = node.create_publisher(AdapterFusion, "fusion", latched)
    fusion = AdapterFusion()
    fusion.header.frame_id = "cam"
    fusion.header.stamp.sec = 42
    fusion.adapter_names = ["fog", "rain"]
    fusion.weights = [0.25, 0.75]
    fusion.distances = [4.25, 4.0]
    fusion.support_score = 0.2421
    fusion.reason = AdapterFusion.REASON_SHIFT
    fusion.fusion_ms = 12.5
    fusion.swap_count = 3
    fusion_pub.publish(fusion)  # latched: a late subscriber still gets it
    deadline = time.time() + 20
    i = 0
    while time.time() < deadline:
        msg = SupportScore()
        msg.header.frame_id = "cam"
        msg.header.stamp.sec = i
        msg.support_score = 0.5
        msg.ema_distance = 0.125
        msg.switch_threshold = 0.75
        msg.consecutive_over_threshold = 2
        msg.active_adapters = 2
        msg.embedded_this_frame = True
        score_pub.publish(msg)
        i += 1
        time.sleep(0.05)
    node.destroy_node()
    rclpy.shutdown()
    """
)

SUBSCRIBER = textwrap.dedent(
    """
    import sys, time, rclpy
    from rclpy.qos import QoSProfile, DurabilityPolicy, ReliabilityPolicy
    from semla_ros.msg import SupportScore, AdapterFusion

    rclpy.init()
    node = rclpy.create_node("msg_test_sub")
    got = {}
    latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                         reliability=ReliabilityPolicy.RELIABLE)
    node.create_subscription(SupportScore, "support_score", lambda m: got.setdefault("score", m), 10)
    node.create_subscription(AdapterFusion, "fusion", lambda m: got.setdefault("fusion", m), latched)
    deadline = time.time() + 18
    while time.time() < deadline and len(got) < 2:
        rclpy.spin_once(node, timeout_sec=0.1)
    s, f = got["score"], got["fusion"]
    print("SCORE", s.header.frame_id, s.support_score, s.ema_distance, s.switch_threshold,
          s.consecutive_over_threshold, s.active_adapters, s.embedded_this_frame)
    print("FUSION", f.header.frame_id, f.header.stamp.sec, ",".join(f.adapter_names),
          ",".join(f"{w:.2f}" for w in f.weights), ",".join(f"{d:.2f}" for d in f.distances),
          f"{f.support_score:.4f}", f.reason, f.fusion_ms, f.swap_count)
    node.destroy_node()
    rclpy.shutdown()
    """
)


def test_messages_import_with_constants():
    from semla_ros.msg import AdapterFusion, SupportScore

    assert AdapterFusion.REASON_STARTUP == "startup"
    assert {AdapterFusion.REASON_SHIFT, AdapterFusion.REASON_MANUAL, AdapterFusion.REASON_RELOAD} == {
        "shift", "manual", "reload"}
    fields = SupportScore.get_fields_and_field_types()
    assert list(fields)[0] == "header" and fields["support_score"] == "float"
    assert list(AdapterFusion.get_fields_and_field_types())[0] == "header"


def test_publish_in_one_process_receive_in_another(ros_domain_id):
    pub = subprocess.Popen([sys.executable, "-c", PUBLISHER])
    try:
        out = subprocess.run([sys.executable, "-c", SUBSCRIBER], capture_output=True, text=True, timeout=60)
    finally:
        pub.terminate()
        pub.wait(timeout=10)
    assert out.returncode == 0, out.stderr
    lines = dict(line.split(" ", 1) for line in out.stdout.strip().splitlines())
    assert lines["SCORE"] == "cam 0.5 0.125 0.75 2 2 True"
    assert lines["FUSION"] == "cam 42 fog,rain 0.25,0.75 4.25,4.00 0.2421 shift 12.5 3"

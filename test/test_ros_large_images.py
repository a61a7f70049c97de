"""Full-size camera frames (640x480 rgb8, larger than Fast DDS's default shared-memory segment)
must arrive with sensor-data QoS when the publisher uses the shipped transport profile."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET

import pytest

from semla_ros.ros.dds_profile import (
    BUILTIN_TRANSPORTS_VARIABLE,
    LARGE_IMAGE_PROFILE,
    PROFILE_VARIABLE,
    with_large_image_transport,
)

pytestmark = pytest.mark.ros

SCRIPT = textwrap.dedent("""
    import sys, time, rclpy, numpy as np
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image
    rclpy.init()
    node = rclpy.create_node("large_" + sys.argv[1])
    if sys.argv[1] == "pub":
        pub = node.create_publisher(Image, "image", qos_profile_sensor_data)
        msg = Image(height=480, width=640, encoding="rgb8", step=1920)
        msg.data = np.random.default_rng(0).integers(0, 255, 480 * 640 * 3, dtype=np.uint8).tobytes()
        start = time.time()
        for k in range(150):
            pub.publish(msg)
            time.sleep(max(0.0, start + (k + 1) / 30 - time.time()))
    else:
        got = []
        node.create_subscription(Image, "image", lambda m: got.append(len(m.data)), qos_profile_sensor_data)
        start = time.time()
        while time.time() - start < 8:
            rclpy.spin_once(node, timeout_sec=0.05)
        print(len(got), set(got))
""")


def test_profile_is_valid_xml_and_never_overrides_a_users_choice():
    root = ET.parse(LARGE_IMAGE_PROFILE).getroot()
    assert root.tag.endswith("profiles")
    env = {PROFILE_VARIABLE: "/etc/my_profile.xml"}
    assert with_large_image_transport(env)[PROFILE_VARIABLE] == "/etc/my_profile.xml"
    assert with_large_image_transport({})[PROFILE_VARIABLE] == str(LARGE_IMAGE_PROFILE)
    builtin = {BUILTIN_TRANSPORTS_VARIABLE: "LARGE_DATA"}   # the user's Fast DDS transport choice stands
    assert with_large_image_transport(dict(builtin)) == builtin


def test_full_size_rgb8_frames_arrive_with_sensor_qos(ros_domain_id):
    env = dict(os.environ)
    env.pop(PROFILE_VARIABLE, None)
    pub_env = with_large_image_transport(dict(env))
    sub = subprocess.Popen([sys.executable, "-c", SCRIPT, "sub"], env=env, stdout=subprocess.PIPE, text=True)
    pub = subprocess.Popen([sys.executable, "-c", SCRIPT, "pub"], env=pub_env)
    try:
        out, _ = sub.communicate(timeout=60)
    finally:
        pub.kill()
        pub.wait()
    count, sizes = out.strip().split(" ", 1)
    # 150 frames published at 30 Hz; without the profile ~0-2 arrive here.
    assert int(count) >= 50, out
    assert sizes == "{921600}"


def test_bench_large_images_measures_a_setup(ros_domain_id, capsys):
    """`semla-bench large_images` on one short run: a row with frames delivered of published."""
    from semla_ros.bench.large_images import main

    assert main(["--setups", "xml profile", "--sizes", "640x480", "--rates", "10", "--seconds", "1",
                 "--domain", os.environ["ROS_DOMAIN_ID"]]) == 0
    [row] = [line for line in capsys.readouterr().out.splitlines() if line.startswith("xml profile")]
    delivered, published = row.split()[-4], row.split()[-2]
    assert published == "10" and 1 <= int(delivered) <= 10, row

"""Several cameras, one node (parameter image_topics): the node in its own process, two synthetic cameras in two
more, on /t/front/image and /t/left/image.

What is asserted (tiny model, seeded random weights, the 4-adapter test library, both cameras in 'day'):
- masks and support scores arrive on both cameras' topics (/t/front/mask, /t/left/mask, ...), each with the
  header of a frame that camera published (stamp + frame_id), the input's size; a class_map per camera;
- one model for both: exactly one fusion on /t/fusion (the startup one, day adapters), made from embeddings of
  both cameras' frames (support scores with embedded_this_frame on each camera), and the interleaved stamps
  of the two cameras never look like time running backwards (time_resets 0);
- per-camera counts in /diagnostics (camera_front_frames_processed == masks on /t/front/mask, ...), and the
  network calls (`forwards`, `batched_frames`: the frames of a turn go through the network together);
- two inference workers (`inference_workers: 2`) share the model: each camera's masks leave in its frames'
  order, no frame gets two masks, and /diagnostics says 2;
- stopping the front camera (its process exits) does not stop the left camera's masks;
- bad frames sent on the front camera are dropped and counted for that camera (camera_front_frames_bad),
  while the left camera's masks keep coming and its bad count stays 0; the node exits 0 on SIGINT.
Nothing waits for a time: every step waits for the messages or counts it needs.
"""
from __future__ import annotations

import array
import signal

import pytest

pytest.importorskip("rclpy", reason="ROS 2 Python packages (rclpy) not installed")

from ros_harness import FRAME_SIZE, build_test_library, tiny_node_params  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]   # starts the node and two cameras in their own processes

CAMERAS = ("front", "left")
BAD_FRAMES = 3


def _key(header):
    return (header.stamp.sec, header.stamp.nanosec, header.frame_id)


def test_two_cameras_one_node(tmp_path, probe, run_node, run_camera):
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from semla_ros.msg import AdapterFusion, ClassMap, SupportScore
    from semla_ros.ros.node import CLASS_MAP_QOS, FUSION_QOS

    library = tmp_path / "library"
    build_test_library(library)
    node = run_node(tiny_node_params(
        image_topics=list(CAMERAS), inference_workers=2, input_qos="default", input_qos_depth=5,
        navigator="tower", library_path=str(library), threshold_mode="relative", switch_threshold=0.3,
        ema_alpha=0.8, min_consecutive=2, cooldown_s=0.0, embed_every_n=1, warmup_frames=1, top_k=2,
        temperature=0.05, trigger="distance", dwell_s=0.0))
    reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
    images = {c: probe.collect(Image, f"/t/{c}/image", reliable) for c in CAMERAS}
    masks = {c: probe.collect(Image, f"/t/{c}/mask", reliable) for c in CAMERAS}
    scores = {c: probe.collect(SupportScore, f"/t/{c}/support_score", reliable) for c in CAMERAS}
    class_maps = {c: probe.collect(ClassMap, f"/t/{c}/class_map", CLASS_MAP_QOS) for c in CAMERAS}
    fusions = probe.collect(AdapterFusion, "/t/fusion", FUSION_QOS)
    probe.watch_diagnostics()
    probe.wait_running(node)

    cameras = {c: run_camera("day:0", 5, "--topic", f"/t/{c}/image", "--frame-id", c, "--reliable",
                             "--min-subscribers", "2", "--wait-subscribers", "30",   # the node and this probe
                             "--ros-args", "-r", f"__node:=camera_{c}", capture=True)
               for c in CAMERAS}
    probe.spin_until(lambda: all(len(masks[c]) >= 4 and any(s.embedded_this_frame for s in scores[c])
                                 for c in CAMERAS) and fusions, 120,
                     "4 masks and an embedded frame on each camera, and the startup fusion")

    # Stop the front camera: the left one's masks go on.
    cameras["front"].send_signal(signal.SIGINT)
    assert cameras["front"].wait(10) == 0
    left_before = len(masks["left"])
    probe.spin_until(lambda: len(masks["left"]) >= left_before + 3, 60, "3 more left masks after front stopped")

    # Bad frames on the front camera: dropped and counted for it; the left camera keeps going.
    height, width = FRAME_SIZE
    publisher = probe.node.create_publisher(Image, "/t/front/image", reliable)
    probe.spin_until(lambda: publisher.get_subscription_count() > 0, 10, "the node's front subscription")
    for _ in range(BAD_FRAMES):
        bad = Image(height=height, width=width, encoding="rgb8", step=width * 3)
        bad.header.frame_id = "front"
        bad.data = array.array("B", bytes(width * 3 * height - 100))   # truncated
        publisher.publish(bad)
    left_before = len(masks["left"])
    probe.spin_until(lambda: probe.diag().get("camera_front_frames_bad") == str(BAD_FRAMES)
                     and len(masks["left"]) >= left_before + 3, 60,
                     "the front camera's bad frames counted and 3 more left masks")
    cameras["left"].send_signal(signal.SIGINT)
    assert cameras["left"].wait(10) == 0
    # The node publishes a frame's mask, then its score, then counts it; masks and scores are two topics, received
    # in any order. So wait until one diagnostics message's count equals both: the lists then hold exactly the
    # frames that message counted (the probe does not spin after this wait), whether or not it is the last one.
    probe.spin_until(lambda: all(probe.diag().get(f"camera_{c}_frames_processed") == str(len(masks[c]))
                                 == str(len(scores[c])) for c in CAMERAS), 30,
                     "diagnostics, masks and scores to agree")
    diag = probe.diag()
    code, _ = node.stop(signal.SIGINT)
    assert code == 0, node.log()

    for camera in CAMERAS:
        published = {_key(m.header): m for m in images[camera]}
        keys = [_key(m.header) for m in masks[camera]]
        assert len(set(keys)) == len(keys), f"a {camera} frame got two masks"
        assert keys == sorted(keys), f"{camera}'s masks left out of its frames' order (two workers)"
        assert set(keys) <= set(published), f"a {camera} mask carries a header no {camera} frame had"
        assert all(m.header.frame_id == camera for m in masks[camera])
        assert all((m.height, m.width, m.encoding) == (*FRAME_SIZE, "mono8") for m in masks[camera])
        assert [_key(s.header) for s in scores[camera]] == keys
        assert [list(m.class_names) for m in class_maps[camera]] == [["road", "sky", "building", "car"]]
        assert class_maps[camera][0].header.frame_id == camera
        assert diag[f"camera_{camera}_frames_processed"] == str(len(keys))
    assert diag["camera_front_frames_bad"] == str(BAD_FRAMES) and diag["camera_left_frames_bad"] == "0"
    assert diag["frames_bad_truncated"] == str(BAD_FRAMES)
    assert int(diag["frames_processed"]) == len(masks["front"]) + len(masks["left"])
    # The frames of a turn went through the network together: one forward per turn (both cameras' frames have
    # one size), so more frames than forwards exactly when some forward took both cameras' frames.
    processed, forwards, batched = (int(diag[k]) for k in ("frames_processed", "forwards", "batched_frames"))
    assert 0 < forwards <= processed and (processed > forwards) == (batched > 0), (processed, forwards, batched)

    # One model, one fusion for both cameras; both cameras' frames fed the navigator.
    assert [f.reason for f in fusions] == [AdapterFusion.REASON_STARTUP]
    assert all(name.startswith("day-") for name in fusions[0].adapter_names)
    assert diag["swaps"] == "1" and diag["time_resets"] == "0"
    assert diag["inference_workers"] == "2"
    assert all(scores[c][-1].active_adapters == 2 for c in CAMERAS)

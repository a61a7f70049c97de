"""The camera list (image_topics): validation, topic names, the one frame time the shared segmenter sees, and
the turn of frames the inference thread segments together."""
from semla_ros.ros import parameters
from semla_ros.ros.cameras import MergedFrameTime, RoundFrame, camera_problem, label, take_round, topic
from semla_ros.ros.mailbox import CameraMailboxes


def test_camera_names_are_validated_as_parameters():
    assert parameters.validate({"image_topics": [""]}) is None              # the default: one camera
    assert parameters.validate({"image_topics": ["front", "left", "/robot/rear"]}) is None
    assert "twice" in parameters.validate({"image_topics": ["front", "front"]})
    assert "only as the single camera" in parameters.validate({"image_topics": ["", "front"]})
    assert "not a ROS namespace" in parameters.validate({"image_topics": ["front/"]})
    assert "not a ROS namespace" in parameters.validate({"image_topics": ["~/front"]})
    assert "at least one" in camera_problem([])
    assert "at most" in camera_problem([f"c{i}" for i in range(17)])


def test_topics_and_labels():
    assert topic("", "mask") == "mask"                         # single camera: today's topics
    assert topic("front", "mask") == "front/mask"
    assert topic("/robot/rear", "image/compressed") == "/robot/rear/image/compressed"
    assert label("/robot/rear") == "robot_rear" and label("front") == "front"


def test_merged_time_never_runs_back_across_cameras_but_a_camera_loop_passes():
    merged = MergedFrameTime()
    assert [merged("front", 10.0), merged("left", 9.9), merged("front", 10.2), merged("left", 10.1)] == \
        [10.0, 10.0, 10.2, 10.2]       # left is a little behind: held at the latest time, never backwards
    assert merged("left", 10.3) == 10.3
    assert merged("front", 0.5) == 0.5  # front's own stamps ran back (its bag looped): the segmenter sees it
    assert merged("front", 0.6) == 0.6


def test_merged_time_passes_a_single_camera_unchanged():
    merged = MergedFrameTime()
    times = [1.0, 1.1, 1.1, 5.0, 0.2, 0.3]
    assert [merged("", t) for t in times] == times


def _round(mailbox, merged, problem=lambda frame: None):
    return take_round(mailbox.take_ready(timeout=0), lambda frame: (frame["t"], "clock" in frame), merged, problem)


def test_a_turn_takes_every_ready_camera_oldest_first_with_merged_times():
    mailbox, merged = CameraMailboxes(["front", "left", "rear"]), MergedFrameTime()
    mailbox.put("front", {"t": 10.2})
    mailbox.put("left", {"t": 9.0})
    mailbox.put("left", {"t": 10.1})      # replaces left's untaken frame: the newest wins
    mailbox.put("rear", {"t": 10.0})
    frames, rejected = _round(mailbox, merged)
    assert rejected == []
    assert [(f.camera, f.frame["t"], f.time_s, f.unstamped) for f in frames] == \
        [("rear", 10.0, 10.0, False), ("left", 10.1, 10.1, False), ("front", 10.2, 10.2, False)]
    # A camera that stopped is not in the next turn and holds up nobody; a late stamp is held at the latest time.
    mailbox.put("left", {"t": 10.15})
    mailbox.put("front", {"t": 10.3})
    frames, _ = _round(mailbox, merged)
    assert [(f.camera, f.time_s) for f in frames] == [("left", 10.2), ("front", 10.3)]
    assert _round(mailbox, merged) == ([], [])   # nothing ready: an empty turn
    mailbox.put("rear", {"t": 10.4, "clock": True})   # no header stamp: the clock's time, said as such
    assert _round(mailbox, merged)[0] == [RoundFrame("rear", {"t": 10.4, "clock": True}, 10.4, True)]


def test_a_bad_frame_is_set_aside_for_its_camera_only():
    mailbox, merged = CameraMailboxes(["front", "left", "rear"]), MergedFrameTime()
    for camera, t in (("front", 1.0), ("left", 1.1), ("rear", 1.2)):
        mailbox.put(camera, {"t": t, "bad": camera == "left"})
    frames, rejected = _round(mailbox, merged, lambda frame: "not rgb" if frame["bad"] else None)
    assert [f.camera for f in frames] == ["front", "rear"]
    assert rejected == [("left", {"t": 1.1, "bad": True}, "not rgb")]
    assert merged("left", 1.1) == 1.2   # the bad frame's time was never handed out

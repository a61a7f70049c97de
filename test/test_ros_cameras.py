"""The camera list (image_topics): validation, topic names, and the one frame time the shared segmenter sees."""
from semla_ros.ros import parameters
from semla_ros.ros.cameras import MergedFrameTime, camera_problem, label, topic


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

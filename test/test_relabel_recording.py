"""Recorded drives read without ROS: bags (MCAP and sqlite3, raw and compressed images) and image folders;
a corrupt message or file costs its frame only; a missing topic is a clear error."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image as PILImage
from relabel_helpers import write_drive

from semla_ros.core.frames import BadFrame, compressed_to_rgb, image_to_rgb
from semla_ros.demo import world
from semla_ros.relabel.recording import BagRecording, Frame, RecordingError, Skipped, open_recording


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_bag_frames_keep_stamps_and_labels_and_skip_a_corrupt_message(tmp_path, storage):
    bag = tmp_path / "drive"
    truth = write_drive(bag, "clear:0.4,night:0.4", storage=storage, corrupt_after={1})
    rec = open_recording(bag, "/demo/image", "/demo/ground_truth")
    assert isinstance(rec, BagRecording) and rec.count == 9 and rec.msgtype == "sensor_msgs/msg/Image"
    items = list(rec.frames())
    assert [it.index for it in items] == list(range(9))
    skipped = [it for it in items if isinstance(it, Skipped)]
    assert [s.index for s in skipped] == [2] and "SerdeError" in skipped[0].reason
    frames = [it for it in items if isinstance(it, Frame)]
    for f in frames:
        domain, seed = truth[f.index]
        expected = world.render(domain, seed)
        np.testing.assert_array_equal(f.image, expected.image)
        np.testing.assert_array_equal(f.label, expected.labels)
        assert f.frame_id == "demo_camera" and f.image.flags.writeable
    stamps = [f.stamp_ns for f in frames]
    assert stamps == sorted(stamps) and stamps[1] - stamps[0] == 100_000_000
    assert [f.index for f in rec.frames(skip=lambda i: i % 2 == 0)] == [1, 3, 5, 7]


def test_a_missing_or_wrong_topic_names_what_the_bag_has(tmp_path):
    bag = tmp_path / "drive"
    write_drive(bag, "clear:0.2")
    with pytest.raises(RecordingError, match=r"no topic '/camera/image_raw'.*'/demo/ground_truth', '/demo/image'"):
        open_recording(bag, "/camera/image_raw")
    with pytest.raises(RecordingError, match="choose the image topic"):
        open_recording(bag)   # two image topics
    with pytest.raises(RecordingError, match="labels topic '/nope'"):
        open_recording(bag, "/demo/image", "/nope")
    with pytest.raises(RecordingError, match="does not exist"):
        open_recording(tmp_path / "absent.mcap")
    (tmp_path / "broken.mcap").write_bytes(b"not an mcap file at all")
    with pytest.raises(RecordingError, match="not a readable rosbag2 bag"):
        open_recording(tmp_path / "broken.mcap")


def _types():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.LATEST).types


def test_raw_encodings_honour_the_row_stride():
    t = _types()
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    header = t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=1, nanosec=2), frame_id="c")

    def msg(pixels, encoding, pad=0, bigendian=0):
        rows = np.ascontiguousarray(pixels).reshape(pixels.shape[0], -1).view(np.uint8)
        data = np.concatenate([rows, np.zeros((rows.shape[0], pad), np.uint8)], axis=1).reshape(-1)
        return t["sensor_msgs/msg/Image"](header=header, height=pixels.shape[0], width=pixels.shape[1],
                                          encoding=encoding, is_bigendian=bigendian, step=rows.shape[1] + pad,
                                          data=data)

    np.testing.assert_array_equal(image_to_rgb(msg(rgb, "rgb8", pad=3)), rgb)
    np.testing.assert_array_equal(image_to_rgb(msg(rgb[..., ::-1], "bgr8", pad=1)), rgb)
    np.testing.assert_array_equal(image_to_rgb(msg(np.dstack([rgb, np.full((5, 7), 9, np.uint8)]), "rgba8")), rgb)
    grey16 = (np.arange(35, dtype=np.uint16).reshape(5, 7) * 1000)
    out = image_to_rgb(msg(grey16, "mono16", pad=2))
    np.testing.assert_array_equal(out[..., 0], np.round(grey16.astype(float) * 255 / 65535).astype(np.uint8))
    big = image_to_rgb(msg(grey16.astype(">u2"), "mono16", bigendian=1))
    np.testing.assert_array_equal(big, out)
    bad = msg(rgb, "rgb8")
    bad.data = bad.data[:-5]
    with pytest.raises(BadFrame, match="truncated"):
        image_to_rgb(bad)
    with pytest.raises(BadFrame, match="unsupported_encoding: 'yuv422'"):
        image_to_rgb(msg(rgb, "yuv422"))


def test_compressed_images_decode_and_garbage_is_refused():
    t = _types()
    rgb = world.render("fog", 3).image
    header = t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=0, nanosec=0), frame_id="c")
    ok, png = cv2.imencode(".png", rgb[..., ::-1])
    msg = t["sensor_msgs/msg/CompressedImage"](header=header, format="png", data=png.reshape(-1))
    np.testing.assert_array_equal(compressed_to_rgb(msg), rgb)
    ok, jpg = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
    msg.data, msg.format = jpg.reshape(-1), "jpeg"
    assert np.abs(compressed_to_rgb(msg).astype(int) - rgb).mean() < 6
    msg.data = np.frombuffer(b"\xff\xd8 definitely not a jpeg", np.uint8)
    with pytest.raises(BadFrame, match="decode_failed"):
        compressed_to_rgb(msg)


def test_image_folder_frames_are_stamped_by_rate_and_an_unreadable_file_is_skipped(tmp_path):
    images = tmp_path / "drive" / "images"
    images.mkdir(parents=True)
    for i in range(4):
        PILImage.fromarray(world.render("rain", i).image).save(images / f"f{i}.png")
    (images / "f2.png").write_bytes(b"\x89PNG broken")
    rec = open_recording(tmp_path / "drive", rate_hz=4.0)
    items = list(rec.frames())
    assert [type(it).__name__ for it in items] == ["Frame", "Frame", "Skipped", "Frame"]
    assert [it.name for it in items if isinstance(it, Frame)] == ["f0", "f1", "f3"]
    assert items[3].stamp_ns == 750_000_000 and items[3].label is None
    with pytest.raises(RecordingError, match="apply to bags only"):
        open_recording(tmp_path / "drive", topic="/x")

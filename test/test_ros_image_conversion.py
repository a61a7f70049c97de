"""Image conversion used by the node: every supported encoding, with and without row padding,
and each kind of malformed frame the node must drop."""
import array

import cv2
import numpy as np
import pytest

pytest.importorskip("rclpy", reason="ROS 2 Python packages (rclpy, sensor_msgs, cv_bridge) not installed")
from cv_bridge import CvBridge  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from semla_ros.ros.image_conversion import (  # noqa: E402
    SUPPORTED_ENCODINGS,
    BadFrame,
    compressed_to_rgb,
    image_to_rgb,
    mask_to_image,
    rgb_problem,
    rgb_to_image,
)

MAX_PIXELS = 4096 * 4096
RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, size=(7, 11, 3), dtype=np.uint8)  # odd sizes catch stride mistakes


def _expected_and_pixels(encoding):
    """The encoded pixels for `encoding` and the RGB image the conversion must return."""
    if encoding == "rgb8":
        return RGB, RGB
    if encoding == "bgr8":
        return RGB[..., ::-1], RGB
    if encoding == "rgba8":
        return np.dstack([RGB, np.full(RGB.shape[:2], 77, np.uint8)]), RGB
    if encoding == "bgra8":
        return np.dstack([RGB[..., ::-1], np.full(RGB.shape[:2], 77, np.uint8)]), RGB
    if encoding == "mono8":
        gray = RGB[..., 1]
        return gray, np.repeat(gray[..., None], 3, axis=2)
    if encoding == "mono16":
        gray16 = RNG.integers(0, 65536, size=RGB.shape[:2], dtype=np.uint16)
        gray8 = np.clip(np.round(gray16.astype(np.float64) * 255.0 / 65535.0), 0, 255).astype(np.uint8)
        return gray16, np.repeat(gray8[..., None], 3, axis=2)
    raise AssertionError(encoding)


def _message(pixels, encoding, padding=0, bigendian=False):
    """Pack pixels row by row with `padding` junk bytes after each row, like a camera driver would."""
    height, width = pixels.shape[:2]
    dtype = pixels.dtype.newbyteorder(">" if bigendian else "<")
    rows = np.ascontiguousarray(pixels, dtype=dtype).reshape(height, -1).view(np.uint8)
    junk = np.full((height, padding), 0xAB, np.uint8)
    data = np.hstack([rows, junk]) if padding else rows
    msg = Image(height=height, width=width, encoding=encoding, is_bigendian=int(bigendian),
                step=rows.shape[1] + padding)
    msg.data = array.array("B", data.tobytes())
    return msg


@pytest.mark.parametrize("padding", [0, 5, 64])
@pytest.mark.parametrize("encoding", SUPPORTED_ENCODINGS)
def test_every_encoding_with_and_without_step_padding(encoding, padding):
    pixels, expected = _expected_and_pixels(encoding)
    rgb = image_to_rgb(_message(pixels, encoding, padding), MAX_PIXELS)
    assert rgb.dtype == np.uint8 and rgb.shape == expected.shape and rgb.flags.c_contiguous
    np.testing.assert_array_equal(rgb, expected)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8"])
def test_unpadded_frames_agree_with_cv_bridge(encoding):
    pixels, _ = _expected_and_pixels(encoding)
    msg = _message(pixels, encoding)
    np.testing.assert_array_equal(image_to_rgb(msg, MAX_PIXELS), CvBridge().imgmsg_to_cv2(msg, "rgb8"))


def test_big_endian_mono16():
    pixels, expected = _expected_and_pixels("mono16")
    np.testing.assert_array_equal(image_to_rgb(_message(pixels, "mono16", 3, bigendian=True), MAX_PIXELS),
                                  expected)


def _bad(kind, msg, max_pixels=MAX_PIXELS):
    with pytest.raises(BadFrame) as info:
        image_to_rgb(msg, max_pixels)
    assert info.value.kind == kind, info.value
    return info.value


def test_malformed_frames_are_rejected_by_kind():
    good = _message(RGB, "rgb8", padding=4)
    image_to_rgb(good, MAX_PIXELS)

    for encoding in ("yuv422", "32FC1", "8UC3", "", "RGB8"):
        bad = _message(RGB, "rgb8")
        bad.encoding = encoding
        _bad("unsupported_encoding", bad)

    bad = _message(RGB, "rgb8")
    bad.step = RGB.shape[1] * 3 - 1
    assert "step" in str(_bad("bad_step", bad))

    _bad("zero_size", Image(height=0, width=0, encoding="rgb8", step=0))
    _bad("zero_size", Image(height=5, width=0, encoding="mono8", step=0))

    truncated = _message(RGB, "rgb8", padding=4)
    truncated.data = truncated.data[:-10]
    _bad("truncated", truncated)

    longer = _message(RGB, "rgb8")
    longer.data.extend(b"\x00" * 3)
    _bad("bad_length", longer)

    # 8K frame: rejected from its declared size before its data is touched.
    eight_k = Image(height=4320, width=7680, encoding="mono8", step=7680)
    _bad("too_large", eight_k)
    assert image_to_rgb(_message(RGB, "rgb8"), RGB.shape[0] * RGB.shape[1]).shape == RGB.shape
    _bad("too_large", _message(RGB, "rgb8"), max_pixels=RGB.shape[0] * RGB.shape[1] - 1)


# Smooth colours survive JPEG; red top half / blue bottom half shows the channel order.
SMOOTH = np.zeros((16, 24, 3), np.uint8)
SMOOTH[:8, :, 0] = 220
SMOOTH[8:, :, 2] = 200


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_compressed_color_and_gray(fmt):
    ok, encoded = cv2.imencode("." + fmt, SMOOTH[..., ::-1])
    assert ok
    rgb = compressed_to_rgb(CompressedImage(format=fmt, data=encoded.tobytes()), MAX_PIXELS)
    assert rgb.shape == SMOOTH.shape and rgb.dtype == np.uint8
    error = np.abs(rgb.astype(int) - SMOOTH.astype(int))
    assert error.max() == 0 if fmt == "png" else error.mean() < 10  # JPEG blurs the colour edge
    ok, encoded = cv2.imencode("." + fmt, SMOOTH[..., 0])
    gray = compressed_to_rgb(CompressedImage(format=fmt, data=encoded.tobytes()), MAX_PIXELS)
    assert gray.shape == SMOOTH.shape
    for channel in range(3):
        error = np.abs(gray[..., channel].astype(int) - SMOOTH[..., 0].astype(int))
        assert error.max() == 0 if fmt == "png" else error.mean() < 10


def test_compressed_garbage_and_empty():
    with pytest.raises(BadFrame) as info:
        compressed_to_rgb(CompressedImage(format="jpeg", data=b"not a jpeg at all"), MAX_PIXELS)
    assert info.value.kind == "decode_failed"
    with pytest.raises(BadFrame) as info:
        compressed_to_rgb(CompressedImage(format="jpeg", data=b""), MAX_PIXELS)
    assert info.value.kind == "zero_size"
    ok, encoded = cv2.imencode(".png", RGB)
    with pytest.raises(BadFrame) as info:
        compressed_to_rgb(CompressedImage(format="png", data=encoded.tobytes()), 10)
    assert info.value.kind == "too_large"


def _jpeg_declaring(width, height):
    """A valid small JPEG whose SOF0 header is rewritten to declare width x height."""
    ok, encoded = cv2.imencode(".jpg", SMOOTH[..., ::-1])
    data = bytearray(encoded.tobytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


def test_compressed_size_checked_from_the_header_before_decoding():
    """Issue 15, finding 1: a tiny file declaring a huge image is refused as too_large from its header.

    The 5000x5000 PNG has no pixel data at all: had it been decoded first, it would be decode_failed.
    """
    from ros_harness import png_bytes

    for data, fmt in ((png_bytes(40000, 40000, with_pixels=False), "png"),   # cv2.error escaped before
                      (png_bytes(5000, 5000, with_pixels=False), "png"),
                      (_jpeg_declaring(60000, 60000), "jpeg"),
                      (_jpeg_declaring(4097, 4096), "jpeg")):
        with pytest.raises(BadFrame) as info:
            compressed_to_rgb(CompressedImage(format=fmt, data=data), MAX_PIXELS)
        assert info.value.kind == "too_large", info.value
    assert "25000000 pixels" in str(_bad_compressed(png_bytes(5000, 5000, with_pixels=False), MAX_PIXELS))
    # Within the limit, the same header-only file is what it is: undecodable.
    assert _bad_compressed(png_bytes(64, 48, with_pixels=False), MAX_PIXELS).kind == "decode_failed"
    assert compressed_to_rgb(CompressedImage(format="png", data=png_bytes(64, 48, with_pixels=True)),
                             MAX_PIXELS).shape == (48, 64, 3)


def _bad_compressed(data, max_pixels):
    with pytest.raises(BadFrame) as info:
        compressed_to_rgb(CompressedImage(format="png", data=data), max_pixels)
    return info.value


@pytest.mark.parametrize("num_classes,encoding", [(19, "mono8"), (255, "mono8"), (256, "mono16"), (1000, "mono16")])
def test_mask_keeps_header_size_and_round_trips_through_cv_bridge(num_classes, encoding):
    ids = RNG.integers(0, num_classes, size=(7, 11))
    header = Header(frame_id="camera_optical")
    header.stamp.sec, header.stamp.nanosec = 12, 345
    msg = mask_to_image(ids, num_classes, header)
    assert (msg.encoding, msg.height, msg.width) == (encoding, 7, 11)
    assert msg.header.frame_id == "camera_optical" and msg.header.stamp.nanosec == 345
    assert msg.step * msg.height == len(msg.data)
    np.testing.assert_array_equal(CvBridge().imgmsg_to_cv2(msg), ids)


def test_mask_rejects_ids_that_do_not_fit():
    with pytest.raises(ValueError):
        mask_to_image(np.array([[300]]), 19, Header())


def test_overlay_image_round_trip():
    msg = rgb_to_image(RGB, Header(frame_id="x"))
    assert msg.encoding == "rgb8" and msg.step == 33
    np.testing.assert_array_equal(image_to_rgb(msg, MAX_PIXELS), RGB)


def test_a_converted_frame_the_segmenter_cannot_take_is_named():
    assert rgb_problem(RGB) is None
    assert "dtype float32" in rgb_problem(RGB.astype(np.float32))
    assert "shape (7, 11)" in rgb_problem(RGB[..., 0])
    assert "shape (0, 11, 3)" in rgb_problem(RGB[:0])

"""Image-message pixels <-> numpy, without ROS: one set of rules for live frames (the node) and recorded
ones (offline relabelling of bags read with `rosbags`).

Messages are duck-typed (`encoding, height, width, step, is_bigendian, data` for sensor_msgs/Image,
`format, data` for CompressedImage), so rclpy messages and rosbags' dataclasses both work. Why not
cv_bridge: the PyPI `cv-bridge==1.13` ignores `step` (a padded row would shear the picture silently),
cannot convert 16-bit to 8-bit, packs outputs with `ndarray.tostring` (gone in NumPy 2.3), and the
offline path must decode the same way without a ROS install. So the buffer is viewed with its real
row stride, checked against its declared size first, mono16 is scaled by 255/65535 exactly as the C++
cv_bridge does, and OpenCV does the colour conversion cv_bridge would do. A compressed frame's size is
read from its header (Pillow reads only the header) and checked before decoding: a 65-byte PNG can
declare 40000x40000 pixels. Anything malformed raises `BadFrame` with a short category the node counts.
"""
from __future__ import annotations

import io

import cv2
import numpy as np
import PIL.Image

# encoding -> (dtype, channels, OpenCV conversion to RGB or None)
LAYOUTS = {
    "rgb8": (np.uint8, 3, None), "bgr8": (np.uint8, 3, cv2.COLOR_BGR2RGB),
    "rgba8": (np.uint8, 4, cv2.COLOR_RGBA2RGB), "bgra8": (np.uint8, 4, cv2.COLOR_BGRA2RGB),
    "mono8": (np.uint8, 1, cv2.COLOR_GRAY2RGB), "mono16": (np.uint16, 1, cv2.COLOR_GRAY2RGB),
}
SUPPORTED_ENCODINGS = tuple(LAYOUTS)
# Largest class count that still fits a mono8 mask (ids 0..254; 255 stays free as "no class").
MONO8_MAX_CLASSES = 255
NO_LIMIT = 2 ** 62


class BadFrame(ValueError):
    """A frame that cannot be used; `kind` is the diagnostics counter it lands in."""

    KINDS = ("unsupported_encoding", "zero_size", "too_large", "bad_step", "truncated",
             "bad_length", "decode_failed")

    def __init__(self, kind: str, detail: str):
        if kind not in self.KINDS:
            raise ValueError(f"unknown bad-frame kind {kind!r}")
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


def check_size(height: int, width: int, max_pixels: int = NO_LIMIT) -> None:
    if height <= 0 or width <= 0:
        raise BadFrame("zero_size", f"image is {width}x{height}")
    if height * width > max_pixels:
        raise BadFrame("too_large", f"image is {width}x{height} = {width * height} pixels, "
                                    f"above max_input_pixels={max_pixels}")


def image_pixels(msg, max_pixels: int = NO_LIMIT) -> np.ndarray:
    """The pixels of an Image message in their own dtype, (H,W) or (H,W,C) (labels: mono8 class ids)."""
    encoding = msg.encoding
    if encoding not in LAYOUTS:
        raise BadFrame("unsupported_encoding", f"'{encoding}' (supported: {', '.join(SUPPORTED_ENCODINGS)})")
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    check_size(height, width, max_pixels)
    scalar, channels, _ = LAYOUTS[encoding]
    dtype = np.dtype(scalar).newbyteorder(">" if msg.is_bigendian else "<")
    row_bytes = width * channels * dtype.itemsize
    if step < row_bytes:
        raise BadFrame("bad_step", f"step {step} < width*bytes_per_pixel {row_bytes} for {encoding}")
    data = np.frombuffer(memoryview(msg.data).cast("B"), dtype=np.uint8) if not isinstance(msg.data, np.ndarray) \
        else msg.data.reshape(-1).view(np.uint8)
    expected = step * height
    if data.size < expected:
        raise BadFrame("truncated", f"{data.size} data bytes, step*height needs {expected}")
    if data.size > expected:
        raise BadFrame("bad_length", f"{data.size} data bytes, step*height is {expected}")
    rows = data.reshape(height, step)[:, :row_bytes].copy()   # owned, writable, contiguous
    pixels = rows.view(dtype).reshape((height, width, channels) if channels > 1 else (height, width))
    return pixels.astype(dtype.newbyteorder("="), copy=False)


def image_to_rgb(msg, max_pixels: int = NO_LIMIT) -> np.ndarray:
    """A contiguous HxWx3 uint8 RGB array of an Image message, or BadFrame."""
    pixels = image_pixels(msg, max_pixels)
    if msg.encoding == "mono16":   # the C++ cv_bridge's 16 -> 8 bit depth conversion
        pixels = cv2.convertScaleAbs(pixels, alpha=255.0 / 65535.0)
    conversion = LAYOUTS[msg.encoding][2]
    return np.ascontiguousarray(pixels if conversion is None else cv2.cvtColor(pixels, conversion))


def compressed_size(data) -> tuple[int, int]:
    """(width, height) a compressed image's header declares, read without decoding any pixel.

    Pillow refuses headers above its own decompression-bomb limit (about 179 megapixels) before we
    see the size; that is reported as too_large as well.
    """
    try:
        with PIL.Image.open(io.BytesIO(bytes(data))) as header:
            return header.size
    except PIL.Image.DecompressionBombError as error:
        raise BadFrame("too_large", f"image header: {error}") from None
    except Exception as error:  # Pillow's parsers raise many types (OSError, SyntaxError, struct.error, ...)
        raise BadFrame("decode_failed", f"unreadable image header in {len(data)} bytes "
                                        f"({type(error).__name__}: {error})") from None


def compressed_to_rgb(msg, max_pixels: int = NO_LIMIT) -> np.ndarray:
    """HxWx3 uint8 RGB of a CompressedImage (jpeg/png); the size is checked before decoding."""
    data = np.frombuffer(bytes(msg.data), dtype=np.uint8)
    if data.size == 0:
        raise BadFrame("zero_size", "compressed image has no data")
    width, height = compressed_size(data)
    check_size(height, width, max_pixels)
    try:
        decoded = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except cv2.error as error:
        raise BadFrame("decode_failed", f"OpenCV could not decode {data.size} bytes of '{msg.format}': "
                                        f"{str(error).strip().splitlines()[-1]}") from None
    if decoded is None or decoded.size == 0:
        raise BadFrame("decode_failed", f"could not decode {data.size} bytes of '{msg.format}'")
    if sorted(decoded.shape[:2]) != sorted((height, width)):  # EXIF orientation may swap the axes
        raise BadFrame("decode_failed", f"decoded {decoded.shape[1]}x{decoded.shape[0]}, the header said "
                                        f"{width}x{height}")
    if decoded.dtype != np.uint8:
        decoded = cv2.convertScaleAbs(decoded, alpha=255.0 / 65535.0)
    if decoded.ndim == 3 and decoded.shape[2] == 1:
        decoded = decoded[:, :, 0]
    channels = 1 if decoded.ndim == 2 else decoded.shape[2]
    conversion = {1: cv2.COLOR_GRAY2RGB, 3: cv2.COLOR_BGR2RGB, 4: cv2.COLOR_BGRA2RGB}.get(channels)
    if conversion is None:
        raise BadFrame("decode_failed", f"decoded image has {channels} channels")
    return np.ascontiguousarray(cv2.cvtColor(decoded, conversion))


def mask_encoding(num_classes: int) -> str:
    """mono8 while every class id fits a byte, mono16 beyond (documented in config/semla.yaml)."""
    return "mono8" if num_classes <= MONO8_MAX_CLASSES else "mono16"


def mask_pixels(class_ids: np.ndarray, num_classes: int) -> tuple[np.ndarray, str]:
    """(little-endian contiguous pixels, encoding) of a class-id mask; ValueError if the ids do not fit."""
    encoding = mask_encoding(num_classes)
    dtype = np.dtype(np.uint8 if encoding == "mono8" else "<u2")
    if class_ids.size and int(class_ids.max()) > np.iinfo(dtype).max:
        raise ValueError(f"class id {int(class_ids.max())} does not fit {encoding}")
    return np.ascontiguousarray(class_ids.astype(dtype, copy=False)), encoding

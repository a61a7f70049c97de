"""Pixels of recorded sensor_msgs/Image and CompressedImage messages, without ROS.

The node converts live messages with cv_bridge (`ros/image_conversion.py`); a recording read with
`rosbags` holds the same fields in plain dataclasses, decoded here with numpy and OpenCV under the
node's rules: the same encodings, the row stride (`step`) honoured and checked against the buffer
length, mono16 scaled by 255/65535. Anything malformed raises `BadMessage`; the relabelling job
skips and counts that frame instead of stopping.
"""
from __future__ import annotations

import cv2
import numpy as np

# encoding -> (dtype, channels, conversion to RGB or None)
ENCODINGS = {
    "rgb8": (np.uint8, 3, None), "bgr8": (np.uint8, 3, cv2.COLOR_BGR2RGB),
    "rgba8": (np.uint8, 4, cv2.COLOR_RGBA2RGB), "bgra8": (np.uint8, 4, cv2.COLOR_BGRA2RGB),
    "mono8": (np.uint8, 1, cv2.COLOR_GRAY2RGB), "mono16": (np.uint16, 1, cv2.COLOR_GRAY2RGB),
}


class BadMessage(ValueError):
    """A recorded message that cannot be used; the message says why."""


def image_pixels(msg) -> np.ndarray:
    """The pixel array of an Image message, (H,W) or (H,W,C) in its own dtype (labels: mono8 ids)."""
    if msg.encoding not in ENCODINGS:
        raise BadMessage(f"unsupported encoding {msg.encoding!r} (supported: {', '.join(ENCODINGS)})")
    dtype, channels, _ = ENCODINGS[msg.encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise BadMessage(f"image is {width}x{height}")
    dtype = np.dtype(dtype).newbyteorder(">" if msg.is_bigendian else "<")
    row_bytes = width * channels * dtype.itemsize
    data = np.asarray(msg.data, dtype=np.uint8).reshape(-1)
    if step < row_bytes or data.size != step * height:
        raise BadMessage(f"{data.size} data bytes do not hold {height} rows of step {step} "
                         f"(>= {row_bytes} bytes per row for {width} px {msg.encoding})")
    rows = data.reshape(height, step)[:, :row_bytes].copy()   # writable, contiguous, owned
    pixels = rows.view(dtype).reshape((height, width, channels) if channels > 1 else (height, width))
    return pixels.astype(dtype.newbyteorder("="), copy=False)


def image_to_rgb(msg) -> np.ndarray:
    """HxWx3 uint8 RGB of a raw Image message."""
    pixels = image_pixels(msg)
    if msg.encoding == "mono16":
        pixels = cv2.convertScaleAbs(pixels, alpha=255.0 / 65535.0)
    conversion = ENCODINGS[msg.encoding][2]
    return np.ascontiguousarray(pixels if conversion is None else cv2.cvtColor(pixels, conversion))


def compressed_to_rgb(msg) -> np.ndarray:
    """HxWx3 uint8 RGB of a CompressedImage message (jpeg, png)."""
    data = np.asarray(msg.data, dtype=np.uint8).reshape(-1)
    if data.size == 0:
        raise BadMessage("compressed image has no data")
    decoded = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if decoded is None or decoded.size == 0:
        raise BadMessage(f"could not decode {data.size} bytes of {msg.format!r}")
    if decoded.dtype != np.uint8:
        decoded = cv2.convertScaleAbs(decoded, alpha=255.0 / 65535.0)
    channels = 1 if decoded.ndim == 2 else decoded.shape[2]
    conversion = {1: cv2.COLOR_GRAY2RGB, 3: cv2.COLOR_BGR2RGB, 4: cv2.COLOR_BGRA2RGB}.get(channels)
    if conversion is None:
        raise BadMessage(f"decoded image has {channels} channels")
    return np.ascontiguousarray(cv2.cvtColor(decoded, conversion))

"""sensor_msgs <-> numpy for the node: decoding follows `core/frames.py` (one set of rules for live and
recorded frames, see why there), outputs are built here directly (header, size, encoding, step, bytes).
"""
from __future__ import annotations

import array

import numpy as np
from sensor_msgs.msg import Image

from semla_ros.core.frames import (  # noqa: F401 (re-exported)
    MONO8_MAX_CLASSES,
    SUPPORTED_ENCODINGS,
    BadFrame,
    compressed_size,
    compressed_to_rgb,
    image_to_rgb,
    mask_encoding,
    mask_pixels,
)


def rgb_problem(rgb) -> str | None:
    """Why a converted frame cannot be segmented (the segmenter takes HxWx3 uint8 RGB), or None."""
    image = np.asarray(rgb)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        return f"not an HxWx3 uint8 RGB image: dtype {image.dtype}, shape {image.shape}"
    return None


def array_to_image(pixels: np.ndarray, encoding: str, header) -> Image:
    """Pack a contiguous uint8/uint16 array into an Image with the given header (no padding)."""
    msg = Image()
    msg.header = header
    msg.height, msg.width = int(pixels.shape[0]), int(pixels.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    pixels = np.ascontiguousarray(pixels, dtype=pixels.dtype.newbyteorder("<"))
    msg.step = int(pixels.strides[0])
    msg.data = array.array("B", pixels.tobytes())
    return msg


def mask_to_image(class_ids: np.ndarray, num_classes: int, header) -> Image:
    """Class-id mask at the input's size and header; raises ValueError if ids do not fit."""
    pixels, encoding = mask_pixels(class_ids, num_classes)
    return array_to_image(pixels, encoding, header)


def rgb_to_image(rgb: np.ndarray, header) -> Image:
    return array_to_image(rgb, "rgb8", header)

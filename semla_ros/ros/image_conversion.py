"""sensor_msgs <-> numpy conversions for the node, all in one place.

Input frames go through cv_bridge (the ROS convention): its encoding table gives dtype and
channel count and its `cvtColor2` does the colour conversion. Two things are done here because
the PyPI `cv-bridge==1.13.0.post0` gets them wrong: it ignores `step` (a padded row would shear
the picture silently) and it cannot convert 16-bit to 8-bit. So the message buffer is viewed
with its real row stride, checked against its declared size first, and mono16 is scaled by
255/65535 exactly as the C++ cv_bridge does. Anything malformed raises `BadFrame` with a short
category the node counts in its diagnostics, so a bad frame is dropped instead of crashing or
producing a wrong mask.

A compressed frame's size is checked from its header before it is decoded: a 65-byte PNG can
declare 40000x40000 pixels, and a 300 kB one 268 megapixels that decode to hundreds of MB.
Pillow reads only the header (`Image.open` is lazy); OpenCV has no header-only call in Python.

Outputs are built directly (header, size, encoding, step, bytes): cv_bridge 1.13's
`cv2_to_imgmsg` relies on `ndarray.tostring`, which NumPy 2.3 removed (vision_opencv #535).
"""
from __future__ import annotations

import array
import io

import cv2
import numpy as np
import PIL.Image
from cv_bridge import CvBridge
from cv_bridge.boost.cv_bridge_boost import cvtColor2
from sensor_msgs.msg import CompressedImage, Image

SUPPORTED_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16")

# Largest class count that still fits a mono8 mask (ids 0..254; 255 stays free as "no class").
MONO8_MAX_CLASSES = 255

_BRIDGE = CvBridge()


class BadFrame(ValueError):
    """A frame the node cannot use; `kind` is the diagnostics counter it lands in."""

    KINDS = ("unsupported_encoding", "zero_size", "too_large", "bad_step", "truncated",
             "bad_length", "decode_failed")

    def __init__(self, kind: str, detail: str):
        assert kind in self.KINDS, kind
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


def _check_pixels(height: int, width: int, max_pixels: int) -> None:
    if height <= 0 or width <= 0:
        raise BadFrame("zero_size", f"image is {width}x{height}")
    if height * width > max_pixels:
        raise BadFrame("too_large", f"image is {width}x{height} = {width * height} pixels, "
                                    f"above max_input_pixels={max_pixels}")


def image_to_rgb(msg: Image, max_pixels: int) -> np.ndarray:
    """Return the frame as a contiguous HxWx3 uint8 RGB array, or raise BadFrame."""
    encoding = msg.encoding
    if encoding not in SUPPORTED_ENCODINGS:
        raise BadFrame("unsupported_encoding",
                       f"'{encoding}' (supported: {', '.join(SUPPORTED_ENCODINGS)})")
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    _check_pixels(height, width, max_pixels)
    dtype_name, channels = _BRIDGE.encoding_to_dtype_with_channels(encoding)
    dtype = np.dtype(dtype_name).newbyteorder(">" if msg.is_bigendian else "<")
    row_bytes = width * channels * dtype.itemsize
    if step < row_bytes:
        raise BadFrame("bad_step", f"step {step} < width*bytes_per_pixel {row_bytes} for {encoding}")
    expected = step * height
    size = len(msg.data)
    if size < expected:
        raise BadFrame("truncated", f"{size} data bytes, step*height needs {expected}")
    if size > expected:
        raise BadFrame("bad_length", f"{size} data bytes, step*height is {expected}")

    rows = np.frombuffer(msg.data, dtype=np.uint8, count=expected).reshape(height, step)
    pixels = rows[:, :row_bytes]
    if dtype.itemsize > 1 or not pixels.flags.c_contiguous:
        pixels = np.ascontiguousarray(pixels)
    image = pixels.view(dtype).reshape((height, width, channels) if channels > 1 else (height, width))

    if encoding == "mono16":
        # Same scaling as the C++ cv_bridge's 16 -> 8 bit depth conversion.
        image = cv2.convertScaleAbs(image.astype(np.uint16, copy=False), alpha=255.0 / 65535.0)
        encoding = "mono8"
    rgb = cvtColor2(image, encoding, "rgb8")
    return np.ascontiguousarray(rgb)


def compressed_size(data) -> tuple[int, int]:
    """(width, height) a compressed image's header declares, read without decoding any pixel.

    Pillow refuses headers above its own decompression-bomb limit (about 179 megapixels) before we
    see the size; that is reported as too_large as well.
    """
    try:
        with PIL.Image.open(io.BytesIO(data)) as header:
            return header.size
    except PIL.Image.DecompressionBombError as error:
        raise BadFrame("too_large", f"image header: {error}") from None
    except Exception as error:  # Pillow's parsers raise many types (OSError, SyntaxError, struct.error, ...)
        raise BadFrame("decode_failed", f"unreadable image header in {len(data)} bytes "
                                        f"({type(error).__name__}: {error})") from None


def compressed_to_rgb(msg: CompressedImage, max_pixels: int) -> np.ndarray:
    """Decode a CompressedImage (jpeg/png) through cv_bridge into HxWx3 uint8 RGB, or raise BadFrame.

    The pixel count comes from the header and is checked before decoding (see the module docstring).
    """
    if len(msg.data) == 0:
        raise BadFrame("zero_size", "compressed image has no data")
    width, height = compressed_size(msg.data)
    _check_pixels(height, width, max_pixels)
    try:
        decoded = _BRIDGE.compressed_imgmsg_to_cv2(msg, "passthrough")
    except cv2.error as error:
        raise BadFrame("decode_failed", f"OpenCV could not decode {len(msg.data)} bytes of '{msg.format}': "
                                        f"{str(error).strip().splitlines()[-1]}") from None
    if decoded is None or decoded.size == 0:
        raise BadFrame("decode_failed", f"could not decode {len(msg.data)} bytes of '{msg.format}'")
    if sorted(decoded.shape[:2]) != sorted((height, width)):  # EXIF orientation may swap the axes
        raise BadFrame("decode_failed", f"decoded {decoded.shape[1]}x{decoded.shape[0]}, the header said "
                                        f"{width}x{height}")
    if decoded.dtype != np.uint8:
        decoded = cv2.convertScaleAbs(decoded, alpha=255.0 / 65535.0)
    channels = 1 if decoded.ndim == 2 else decoded.shape[2]
    source = {1: "mono8", 3: "bgr8", 4: "bgra8"}.get(channels)
    if source is None:
        raise BadFrame("decode_failed", f"decoded image has {channels} channels")
    if channels == 1 and decoded.ndim == 3:
        decoded = decoded[:, :, 0]
    return np.ascontiguousarray(cvtColor2(decoded, source, "rgb8"))


def mask_encoding(num_classes: int) -> str:
    """mono8 while every class id fits a byte, mono16 beyond (documented in config/semla.yaml)."""
    return "mono8" if num_classes <= MONO8_MAX_CLASSES else "mono16"


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
    encoding = mask_encoding(num_classes)
    dtype = np.uint8 if encoding == "mono8" else np.uint16
    if class_ids.size and int(class_ids.max()) >= np.iinfo(dtype).max + 1:
        raise ValueError(f"class id {int(class_ids.max())} does not fit {encoding}")
    return array_to_image(class_ids.astype(dtype, copy=False), encoding, header)


def rgb_to_image(rgb: np.ndarray, header) -> Image:
    return array_to_image(rgb, "rgb8", header)

"""The cameras one node serves (parameter `image_topics`): their topic names and one frame time for all.

Why one node for several cameras: they share one model, one navigator, one adapter library and one active
fusion (the robot is in one domain), instead of a copy of each per camera. Each camera is a namespace
relative to the node's, as image_pipeline's camera namespaces: camera `front` subscribes `front/image`
(`front/image/compressed`) and publishes `front/mask`, `front/support_score`, `front/class_map`,
`front/overlay` and `front/coverage`; '' is the node's own namespace (`image` -> `mask`, the single-camera
default). A driver's own topic is remapped onto it (`-r front/image:=/cam_front/color/image_raw`).

Standard library only (no rclpy): tested without ROS.
"""
from __future__ import annotations

import math
import re

MAX_CAMERAS = 16
# A relative or absolute ROS name of tokens (letters, digits, '_', not starting with a digit), or '' (the node's
# own namespace). '~' is left out: a private camera namespace would hide the topics under the node's name.
_NAME = re.compile(r"/?[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*")


def camera_problem(names) -> str | None:
    """Why `names` cannot be the node's camera list ("image_topics: ..."), or None."""
    names = list(names)
    if not names:
        return "image_topics: needs at least one camera ('' is the node's own namespace)"
    if len(names) > MAX_CAMERAS:
        return f"image_topics: {len(names)} cameras, at most {MAX_CAMERAS}"
    for name in names:
        if name != "" and not _NAME.fullmatch(name):
            return f"image_topics: {name!r} is not a ROS namespace (letters, digits, '_', separated by '/')"
    if len(set(names)) != len(names):
        return f"image_topics: a camera is named twice ({names})"
    if len(names) > 1 and "" in names:
        return "image_topics: '' (the node's own namespace) only as the single camera"
    return None


def topic(camera: str, name: str) -> str:
    """The camera's topic `name` (relative to the node's namespace unless the camera's is absolute)."""
    return f"{camera}/{name}" if camera else name


def label(camera: str) -> str:
    """The camera in diagnostics keys: its namespace with '/' as '_' (`front`, `left_rear`)."""
    return camera.strip("/").replace("/", "_")


class MergedFrameTime:
    """One frame time for the shared segmenter, from several cameras' header stamps.

    The segmenter treats time running backwards as a looping bag (its debouncer starts over). Frames of
    several cameras come in turns, so the stamp of one camera's frame can be a little older than that of
    the frame processed just before it from another camera. Each frame's time is therefore its own stamp
    or, when that is older, the latest time handed out; only a camera whose own stamps run backwards (its
    bag looped) passes its time through, so the segmenter sees that jump. With one camera the stamps pass
    unchanged.
    """

    def __init__(self):
        self._latest = -math.inf
        self._own: dict[str, float] = {}

    def __call__(self, camera: str, time_s: float) -> float:
        looped = time_s < self._own.get(camera, -math.inf)
        self._own[camera] = time_s
        merged = time_s if looped else max(time_s, self._latest)
        self._latest = merged
        return merged

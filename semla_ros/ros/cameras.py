"""The cameras one node serves (parameter `image_topics`): their topic names and one frame time for all.

Why one node for several cameras: they share one model, one navigator, one adapter library and one active
fusion (the robot is in one domain), instead of a copy of each per camera. Each camera is a namespace
relative to the node's, as image_pipeline's camera namespaces: camera `front` subscribes `front/image`
(`front/image/compressed`) and publishes `front/mask`, `front/support_score`, `front/class_map`,
`front/overlay` and `front/coverage`; '' is the node's own namespace (`image` -> `mask`, the single-camera
default). A driver's own topic is remapped onto it (`-r front/image:=/cam_front/color/image_raw`).

One turn of an inference worker (`take_round`): the newest frame of every camera that has one, oldest stamp
first, each with its merged frame time; a frame that cannot be segmented is set aside for its camera alone. The
node hands the turn's frames to the segmenter together (`decide_batch`, then `segment`), so frames of one size
go through the network in one forward, and publishes each result on its own camera's topics with its own header.

Standard library only (no rclpy): tested without ROS.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Iterable

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


@dataclass(frozen=True)
class RoundFrame:
    """A frame of a turn, ready for the segmenter: its camera, the frame, its time for the debouncer (merged
    across cameras) and whether that time fell back to the clock (no header stamp)."""

    camera: Hashable
    frame: Any
    time_s: float
    unstamped: bool


def take_round(ready: Iterable[tuple[Hashable, Any]], seconds: Callable[[Any], tuple[float, bool]],
               frame_time: Callable[[Hashable, float], float], problem: Callable[[Any], str | None] = lambda _: None,
               ) -> tuple[list[RoundFrame], list[tuple[Hashable, Any, str]]]:
    """The frames of one turn, to be segmented together, and those set aside.

    `ready` is (camera, frame) from the mailboxes (one per camera that has one), `seconds(frame)` its own time
    and whether that fell back to the clock, `frame_time` the merged time (a MergedFrameTime), `problem(frame)`
    why a frame cannot be segmented (None: it can). Returns the good frames oldest first with their merged
    times, and (camera, frame, problem) of each frame set aside: only that camera loses its frame this turn.
    """
    good, rejected = [], []
    for camera, frame in ready:
        why = problem(frame)
        if why is None:
            good.append((camera, frame, *seconds(frame)))
        else:
            rejected.append((camera, frame, why))
    good.sort(key=lambda item: item[2])   # stable: cameras with equal stamps keep their order
    return [RoundFrame(camera, frame, frame_time(camera, time_s), unstamped)
            for camera, frame, time_s, unstamped in good], rejected
